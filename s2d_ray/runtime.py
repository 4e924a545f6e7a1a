"""Ray start-up and placement plumbing shared by every stage (sampling, training, evaluation,
serving): joining the cluster, actor thread options, and refusing storage other nodes cannot see."""

from __future__ import annotations

import os
from typing import Any, Iterable

from s2d_ray import console
from s2d_ray.errors import S2DError
from s2d_ray.storage import is_local, is_shared_mount


def init_ray(locations: Iterable[tuple[str, str]] = ()) -> None:
    """Join the cluster given by RAY_ADDRESS (e.g. inside `ray job submit`) or start a local one,
    then check that every ``(field, location)`` is visible to all nodes (``require_shared``)."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # A local Ray's workers import user code (sample.method: module:Class) from the
        # directory `s2d` runs in, as the driver does; on a cluster, --working-dir does this.
        path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
        runtime_env = None if address else {"env_vars": {"PYTHONPATH": path}}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, configure_logging=False)
        console.route_worker_logs()  # the command line's log file; a no-op for library use
    ctx = ray.data.DataContext.get_current()
    # Under the command line s2d draws one progress display per stage (s2d_ray.progress);
    # Ray Data's own bars (and, off a terminal, its periodic progress logs) are for --verbose.
    ctx.enable_progress_bars = not console.active() or console.verbose()
    if not ctx.enable_progress_bars:  # and Ray Data's advice to turn its bars back on is not for them
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")
    ctx.verbose_stats_logs = False
    for name, location in locations:
        require_shared(name, location)
    console.attach()  # the run's log file, now that its output location is accepted


def cluster_hosts() -> set[str]:
    """IP addresses of the alive nodes (nodes on one host share its disks)."""
    import ray

    return {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def require_shared(name: str, location: str, hosts: set[str] | None = None) -> None:
    """Refuse a local path when the cluster spans several hosts and the path is not on a
    network filesystem: train workers, engine actors and Ray Data tasks on other hosts would
    write where nobody reads, or fail to find it."""
    if not is_local(location):
        return
    hosts = cluster_hosts() if hosts is None else hosts
    path = location.removeprefix("file://")
    if len(hosts) <= 1 or is_shared_mount(os.path.abspath(os.path.expanduser(path))):
        return
    raise S2DError(
        f"{name}: {location} is a local path, but this Ray cluster has nodes on {len(hosts)} hosts "
        f"({', '.join(sorted(hosts))}) that cannot see this machine's disk; use storage every node "
        "reaches: s3://BUCKET/..., gs://BUCKET/..., or a shared mount (NFS, EFS, Filestore)"
    )


# Ray Data's tasks around the engine (read and validate, screen, tag, score) are light: half a
# CPU each; the writes, which drain the engine actors, ask for none, so they always run. At a
# whole CPU each, on a 2-core node, a screening task and the engine actor held both cores while
# the writes waited for one: the pipeline stalled with every finished batch unwritten. (At a
# quarter CPU, Ray started up to eight worker processes per stage, ~1 s of CPU each.)
LIGHT_CPUS = 0.5


def write_options() -> dict[str, Any]:
    """``write_datasink`` options: no CPU asked, and at most one write task per cluster CPU at a
    time (without a cap, Ray Data ran 21 writes at once on 2 cores, a worker process each)."""
    import ray

    return {"ray_remote_args": {"num_cpus": 0}, "concurrency": max(1, int(ray.cluster_resources().get("CPU", 1)))}


def engine_actor_options(cpu_threads: int | None) -> dict[str, Any]:
    """Ray actor options for an actor that holds a vLLM engine (a Ray Data stage's, a Serve
    replica's). ``cpu_threads`` gives a CPU engine that many compute threads (Ray would otherwise
    pin OMP_NUM_THREADS to the actor's num_cpus). And the actor stops its engine itself when it
    exits (s2d_ray.engine.Engine.shutdown, at exit): Ray's default kills a worker's child
    processes first, before the actor's shutdown hooks run, so vLLM's output task read a dead
    engine core and every successful run printed an EngineDeadError traceback and Python's
    resource_tracker KeyErrors. An actor that dies without exiting still loses its engine to
    the engine's own watchdog (s2d_ray.engine._reap_when_orphaned)."""
    env = {"RAY_kill_child_processes_on_worker_exit": "false"}
    if cpu_threads:
        env["OMP_NUM_THREADS"] = str(cpu_threads)
    return {"runtime_env": {"env_vars": env}}
