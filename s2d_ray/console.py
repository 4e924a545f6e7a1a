"""What a user of the command line watches: s2d's own lines and one progress display per stage
on the terminal; vLLM's, Ray's, DeepSpeed's and Hugging Face's logs in the run's log file.

`s2d` calls :func:`start` once per command. From then on

* Python logging in this process goes to the log file (INFO and up); the terminal shows
  warnings and errors only (libraries that attach their own console handlers - Ray, Ray Data,
  vLLM - are turned down to WARNING on the terminal and copied to the file);
* the output of Ray's workers (engine actors, train workers, Serve replicas) reaches this
  process through Ray's log forwarding: every line goes to the file, and only lines that say
  WARNING/ERROR/CRITICAL, and tracebacks, to the terminal (through Ray's own printer, with its
  prefixes and de-duplication);
* :mod:`s2d_ray.progress` draws the stages' progress.

``--verbose`` (or ``S2D_LOG=debug``) leaves every library's terminal output as it was and still
writes the file. Library use without the command line (tests, notebooks) changes nothing.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from s2d_ray.storage import is_local

# Loggers of the libraries s2d drives; they are turned down on the terminal, not in the file.
LIBRARIES = ("ray", "vllm", "deepspeed", "transformers", "torch", "lm_eval", "datasets", "urllib3", "filelock",
             "fsspec", "botocore", "s3fs", "huggingface_hub", "accelerate", "peft")
_LOUD = re.compile(r"\b(WARNING|WARN|ERROR|CRITICAL|FATAL)\b|^\s*[\w.]*(Error|Exception): |Traceback \(most recent call last\)")
_QUIET_WORDS = re.compile(r"^\s*(INFO|DEBUG)\b|\bINFO\b [\w./:]+ --|\[INFO\]|\bINFO\s+\d\d-\d\d ")
_TQDM = "__ray_tqdm_magic_token__"


@dataclass
class _Console:
    path: Path
    verbose: bool
    file: TextIO
    lock: threading.Lock
    in_traceback: set  # worker pids whose traceback is being forwarded
    copied: list  # library loggers the file handler was added to
    seen: set = field(default_factory=set)  # warnings already shown (each engine start repeats them)
    restore: Any = None  # puts Ray's own printer of worker output back


_STATE: _Console | None = None


def active() -> bool:
    """Whether the command line set up the console (progress displays draw only then)."""
    return _STATE is not None


def verbose() -> bool:
    return bool(_STATE and _STATE.verbose)


def log_path(output_dir: str, command: str) -> Path:
    """``OUTPUT_DIR/logs/COMMAND-TIME.log`` for a local output directory; for one in cloud storage
    (a log file is appended to line by line), ``~/.cache/s2d/logs/``; ``S2D_LOG_DIR`` overrides."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if os.environ.get("S2D_LOG_DIR"):
        base = Path(os.environ["S2D_LOG_DIR"]).expanduser()
    elif output_dir and is_local(output_dir):
        base = Path(output_dir.removeprefix("file://")).expanduser() / "logs"
    else:
        base = Path("~/.cache/s2d/logs").expanduser()
    return base / f"{command}-{stamp}.log"


def start(path: Path, verbose: bool = False) -> Path:
    """Send this command's logs to ``path``; the terminal keeps s2d's lines, warnings and errors."""
    global _STATE
    verbose = verbose or os.environ.get("S2D_LOG", "").lower() in ("debug", "verbose", "info")
    # Held in memory until the run is under way (attach): a run refused before it starts (a
    # local output_dir on a multi-host cluster) leaves nothing in its output directory.
    stream = io.StringIO()
    _STATE = _Console(path, verbose, stream, threading.Lock(), set(), [])
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name("s2d-file")
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    terminal = _TerminalHandler(sys.stderr)
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    terminal.set_name("s2d-terminal")
    root.addHandler(terminal)
    # Libraries' warnings.warn() calls speak to developers (e.g. Ray Data's note that a write cap
    # of 2 tasks met 1 input): the log file has them, --verbose shows them.
    logging.captureWarnings(True)
    if not sys.stderr.isatty():  # Ray colours its worker-line prefixes; a log or a pipe shows the codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if not verbose:
        terminal.addFilter(lambda record: record.name != "py.warnings")
    quiet_libraries()
    say(f"s2d: logs go to {path}" + (" (and the terminal: verbose)" if verbose else " (--verbose shows them here)"))
    return path


def quiet_libraries() -> None:
    """Copy every library logger that writes to the terminal itself into the file, and turn its
    terminal handlers down to WARNING (not in verbose mode). Called again after libraries that
    configure logging when imported (Ray Data, vLLM, DeepSpeed) have been imported."""
    if _STATE is None:
        return
    file_handler = next(h for h in logging.getLogger().handlers if h.get_name() == "s2d-file")
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or not name.startswith(LIBRARIES):
            continue
        terminal = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler) and h.get_name() != "s2d-file"]
        if not terminal:
            continue
        if not _STATE.verbose:
            for h in terminal:
                h.setLevel(max(h.level, logging.WARNING))
        if not logger.propagate and file_handler not in logger.handlers:
            logger.addHandler(file_handler)
            _STATE.copied.append(logger)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def route_worker_logs() -> None:
    """After ``ray.init``: Ray's workers' output goes to the log file, and to the terminal only
    where it warns or fails (verbose: all of it, as Ray prints it)."""
    if _STATE is None:
        return
    from ray._private import worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    def handle(data: dict[str, Any]) -> None:
        state = _STATE
        if state is None:
            return
        lines = [line for line in data.get("lines", []) if _TQDM not in line]
        who = data.get("actor_name") or data.get("task_name") or ""
        with state.lock:
            for line in lines:
                state.file.write(f"({who} pid={data.get('pid')}) {line}\n")
        if state.verbose:
            ray_worker.print_to_stdstream(data, ignore_prefix=False)
            return
        loud = [line for line in lines if _is_loud(state, data.get("pid"), line) and _first_time(state, line)]
        if loud:
            with above_progress():
                ray_worker.print_to_stdstream({**data, "lines": loud}, ignore_prefix=False)

    def restore() -> None:  # at stop: Ray prints its workers' output again, as it did
        dispatcher.remove_handler("s2d_logs")
        dispatcher.add_handler("ray_print_logs", ray_printer)

    ray_printer = next((h for name, h in dispatcher.handlers if name == "ray_print_logs"), None)
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("s2d_logs")
    dispatcher.add_handler("s2d_logs", handle)
    if ray_printer is not None:
        _STATE.restore = restore
    quiet_libraries()


def _disconnect_ray() -> None:
    """Leave Ray before its printer is put back: actors tearing down after the command's last
    stage (an engine's shutdown lines) would otherwise print to the terminal at exit."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _is_loud(state: _Console, pid: Any, line: str) -> bool:
    """A worker's line the terminal shows: a warning or error (a level word that is not an INFO
    record's text), and a traceback from its first line to its exception line."""
    if pid in state.in_traceback:
        if line and not line[0].isspace():
            state.in_traceback.discard(pid)  # "SomeError: ..." ends it
        return True
    if "Traceback (most recent call last)" in line:
        state.in_traceback.add(pid)
        return True
    return bool(_LOUD.search(line)) and not _QUIET_WORDS.search(line)


_NOISE = re.compile(r"^\((?:[^()]|\([^()]*\))* pid=\d+\)\s*|\[?\d{4}-\d\d-\d\d[ T][\d:,.]+\]?|\b\d\d-\d\d \d\d:\d\d:\d\d\b|\d+")


def _first_time(state: _Console, line: str) -> bool:
    """A warning is shown once per command (every engine start and every train worker repeats
    vLLM's and DeepSpeed's start-up warnings; the log file keeps each); errors always."""
    if key := _NOISE.sub("", line).strip():
        if "Traceback" in line or re.search(r"\b(ERROR|CRITICAL|FATAL)\b|^\s|(Error|Exception): ", line):
            return True
        if key in state.seen:
            return False
        state.seen.add(key)
    return True


@contextmanager
def above_progress():
    """Write to the terminal above a progress bar (tqdm clears it and draws it again after)."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        yield


class _TerminalHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        with above_progress():
            super().emit(record)


def say(message: str) -> None:
    """One of s2d's own lines: on the terminal (stdout) and in the log file."""
    with above_progress():
        print(message, flush=True)
    if _STATE is not None:
        with _STATE.lock:
            _STATE.file.write(message + "\n")


def attach() -> None:
    """Open the log file and write what was held so far (init_ray calls it once the cluster has
    accepted the run's locations)."""
    state = _STATE
    if state is None or not isinstance(state.file, io.StringIO):
        return
    state.path.parent.mkdir(parents=True, exist_ok=True)
    with state.lock:
        held, state.file = state.file.getvalue(), open(state.path, "a", buffering=1, encoding="utf-8", errors="replace")
        state.file.write(held)
    for h in logging.getLogger().handlers:
        if h.get_name() == "s2d-file":
            h.setStream(state.file)


def stop(keep: bool = True) -> None:
    """Close the log file (at the command's end); ``keep=False`` (a refused run) drops what was
    held if the file was never opened."""
    global _STATE
    if keep:
        attach()
    state, _STATE = _STATE, None
    if state is not None:
        for logger in [logging.getLogger(), *state.copied]:
            for h in list(logger.handlers):
                if h.get_name() in ("s2d-file", "s2d-terminal"):
                    logger.removeHandler(h)
        logging.captureWarnings(False)
        if state.restore is not None:
            _disconnect_ray()
            state.restore()
        state.file.close()
