"""Paths and URIs: one place that turns a user's location into a filesystem, keeps its scheme,
copies remote directories into the local cache, and tells whether every node can see it.

A location is a local path (``runs/x``, ``/mnt/shared/x``, ``file:///x``) or any URI that
pyarrow's filesystems open (``s3://``, ``gs://``, ``abfs://``, ``hdfs://`` ...). Everything
handed to Ray (Train's ``storage_path``, Data reads, a model for another node) is a full URI
or an absolute path, never a scheme-less ``bucket/key`` (pyarrow: "URI has empty scheme").
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from s2d_ray.errors import S2DError

# Filesystem types (/proc/mounts) that other hosts can mount too: NFS (EFS, Filestore),
# SMB, Lustre (FSx), CephFS, GlusterFS, and FUSE mounts of object stores (gcsfuse, s3fs,
# mountpoint-s3, blobfuse).
SHARED_FS_TYPES = ("nfs", "nfs4", "cifs", "smb3", "lustre", "ceph", "glusterfs", "beegfs", "gpfs", "wekafs")


def has_scheme(location: str) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a plain path."""
    return "://" in location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if not has_scheme(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    try:
        return pafs.FileSystem.from_uri(location)
    except Exception as e:  # noqa: BLE001 - unknown scheme, missing credentials: one line
        raise S2DError(f"{location}: cannot open this location ({e})") from None


def is_local(location: str) -> bool:
    """A path on this machine's disks (plain path or file://), as opposed to remote storage."""
    return not has_scheme(location) or location.startswith("file://")


def join(location: str, *parts: str) -> str:
    """``location``/``parts`` with the scheme kept (local paths become absolute)."""
    base = location.rstrip("/") if has_scheme(location) else os.path.abspath(os.path.expanduser(location))
    return "/".join([base, *parts])


def _listing_key(fs: pafs.FileSystem, path: str) -> str:
    """A fingerprint of a remote directory's files (name, size, mtime): a copy is reused only
    while the source is unchanged (a re-trained model at the same URI is fetched again)."""
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    files = sorted((i.path, i.size, i.mtime_ns or 0) for i in infos if i.is_file)
    return hashlib.sha256(repr(files).encode()).hexdigest()[:16] if files else ""


def fetch_dir(uri: str, cache: Path) -> Path:
    """Copy directory ``uri`` (any pyarrow filesystem) under ``cache`` once per content version.

    Concurrent callers on one node (train workers, engine actors) share one copy: the copy
    is written under a temporary name and renamed when complete."""
    fs, path = filesystem(uri)
    try:
        key = _listing_key(fs, path)
    except Exception as e:  # noqa: BLE001 - permissions, network: the same to a user
        raise S2DError(f"{uri}: cannot list ({e})") from None
    if not key:
        raise S2DError(f"{uri}: no files there")
    final = cache / hashlib.sha256(uri.encode()).hexdigest()[:12] / key
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except Exception as e:  # noqa: BLE001
        shutil.rmtree(tmp, ignore_errors=True)
        raise S2DError(f"{uri}: cannot copy ({e})") from None
    try:
        os.rename(tmp, final)
    except OSError:  # another process on this node finished the same copy first
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in final.parent.iterdir():  # older versions of the same URI
        if stale != final and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def mount_type(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The filesystem type of the mount that holds ``path`` (None where unknown)."""
    try:
        with open(mounts_file) as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    path = os.path.realpath(path)
    best: tuple[int, str | None] = (-1, None)
    for point, kind in mounts:
        point = point.replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > best[0]:
            best = (len(point), kind)
    return best[1]


def is_shared_mount(path: str, mounts_file: str = "/proc/mounts") -> bool:
    """Whether a local path lies on a network filesystem other hosts can mount too."""
    kind = mount_type(path, mounts_file) or ""
    return kind in SHARED_FS_TYPES or kind.startswith("fuse.")
