"""The command line's console (s2d_ray.console): which worker lines reach the terminal, where the
log file goes, and that library loggers write to the file and only warn on the terminal."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from s2d_ray import console

QUIET = [  # what an engine actor, a train worker and Ray Data print at INFO: the log file only
    "INFO 12-01 21:25:10 [core.py:93] Initializing a V1 LLM engine (v0.11.0) with config: model='/m', ...",
    "(EngineCore_DP0 pid=26201) INFO 12-01 21:25:19 [default_loader.py:267] Loading weights took 0.21 seconds",
    "2026-12-01 21:24:55,921\tINFO logging_progress.py:174 -- ======= Running Dataset: dataset_0 =======",
    "[2026-12-01 21:25:10,367] [INFO] [real_accelerator.py:254:get_accelerator] Setting ds_accelerator to cpu",
    "INFO 12-01 21:25:11 [gpu_model_runner.py:2602] Exception handling is per request",  # INFO mentioning a level word
    "[s2d] sample: 4 rows, 512 tokens",
    "Loading weights:  17%|█▋        | 49/291 [00:00<00:00, 489.88it/s]",
    "Setting up process group for: env:// [rank=0, world_size=2]",
]
LOUD = [  # warnings and errors: the terminal too
    "WARNING 12-01 21:25:10 [cpu.py:113] Pin memory is not supported on CPU.",
    "[2026-12-01 21:25:10,367] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
    "ERROR 12-01 21:25:10 [core.py:700] EngineCore failed to start.",
    "[s2d] WARNING: the engine died; restarting this engine actor",
    "RuntimeError: CUDA out of memory",
]


@pytest.fixture
def state(tmp_path):
    return console._Console(tmp_path / "x.log", False, open(tmp_path / "x.log", "w"), threading.Lock(), set(), [])


@pytest.mark.parametrize("line", QUIET)
def test_info_lines_of_workers_stay_in_the_log_file(state, line):
    assert not console._is_loud(state, 1, line)


@pytest.mark.parametrize("line", LOUD)
def test_warnings_and_errors_of_workers_reach_the_terminal(state, line):
    assert console._is_loud(state, 1, line)


def test_a_workers_traceback_reaches_the_terminal_from_its_first_line_to_its_exception(state):
    lines = ["Traceback (most recent call last):", '  File "/x/actor.py", line 3, in f', "    raise ValueError(1)",
             "ValueError: 1", "INFO 12-01 21:25:10 [core.py:93] next"]
    assert [console._is_loud(state, 7, line) for line in lines] == [True, True, True, True, False]
    assert not console._is_loud(state, 8, '  File "/x/other.py", line 3, in f')  # another process's line


def test_the_log_file_is_under_a_local_output_dir_and_in_the_cache_for_cloud_storage(tmp_path, monkeypatch):
    monkeypatch.delenv("S2D_LOG_DIR", raising=False)
    local = console.log_path(str(tmp_path / "run"), "run")
    assert local.parent == tmp_path / "run" / "logs" and local.name.startswith("run-") and local.suffix == ".log"
    assert console.log_path("s3://bucket/run", "sample").parent == Path("~/.cache/s2d/logs").expanduser()
    monkeypatch.setenv("S2D_LOG_DIR", str(tmp_path / "elsewhere"))
    assert console.log_path("s3://bucket/run", "eval").parent == tmp_path / "elsewhere"


def test_library_logs_go_to_the_file_and_only_their_warnings_to_the_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("S2D_LOG", raising=False)
    lib = logging.getLogger("vllm.fake_module")
    own = logging.StreamHandler()  # a library that prints to the terminal itself, as vLLM and Ray do
    lib.addHandler(own)
    lib.propagate = False
    try:
        path = console.start(tmp_path / "logs" / "run.log")
        lib.info("engine started")
        lib.warning("pin memory is not supported")
        logging.getLogger("s2d_ray.x").info("an s2d info line")
        console.say("s2d: a stage header")
        console.stop()
        text = path.read_text()
        assert "engine started" in text and "pin memory is not supported" in text and "a stage header" in text
        err = capsys.readouterr()
        assert "engine started" not in err.err and "pin memory is not supported" in err.err
        assert "a stage header" in err.out and f"logs go to {path}" in err.out
        assert not console.active() and all(h.get_name() != "s2d-file" for h in lib.handlers + logging.getLogger().handlers)
    finally:
        console.stop()
        lib.removeHandler(own)


def test_a_warning_every_engine_start_repeats_is_shown_once_errors_every_time(state):
    first = "(MainProcess pid=5376) WARNING 12-01 21:49:44 [cpu.py:224] Triton is not installed."
    again = "(EngineCore pid=8539) WARNING 12-01 21:51:58 [cpu.py:224] Triton is not installed."
    error = "(MainProcess pid=5376) ERROR 12-01 21:49:44 [core.py:700] EngineCore failed to start."
    assert console._first_time(state, first) and not console._first_time(state, again)
    assert console._first_time(state, error) and console._first_time(state, error)
    assert console._first_time(state, "WARNING [cpu.py:225] Another warning")


def test_worker_output_goes_to_the_file_and_only_its_warnings_and_tracebacks_to_the_terminal(tmp_path, capsys, monkeypatch):
    """Ray forwards each worker's lines to the driver through its stdstream dispatcher (what
    ray.init(log_to_driver=True) prints); under the console they are routed instead."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    monkeypatch.delenv("S2D_LOG", raising=False)
    path = console.start(tmp_path / "run.log")
    saved = list(dispatcher.handlers)
    if not any(name == "ray_print_logs" for name, _ in saved):  # as after ray.init(log_to_driver=True)
        dispatcher.add_handler("ray_print_logs", lambda data: None)
        saved = list(dispatcher.handlers)
    try:
        console.route_worker_logs()
        batch = {"ip": "10.0.0.1", "localhost": "10.0.0.1", "pid": 42, "actor_name": "MapWorker(ProgramStage)",
                 "is_err": True, "lines": [QUIET[0], LOUD[0], "Traceback (most recent call last):", '  File "x.py", line 1',
                                           "ValueError: bad", QUIET[1]]}
        dispatcher.emit(batch)
        dispatcher.emit({**batch, "pid": 43, "lines": [LOUD[0].replace("21:25:10", "21:31:02")]})  # the next engine's
        console.stop()
        assert [name for name, _ in dispatcher.handlers] == [name for name, _ in saved]  # Ray's printer is back
        text = path.read_text()
        assert all(line in text for line in batch["lines"]) and "(MapWorker(ProgramStage) pid=42)" in text
        err = capsys.readouterr().err
        assert QUIET[0] not in err and QUIET[1] not in err
        assert err.count("Pin memory is not supported on CPU.") == 1  # once per command
        assert "Traceback (most recent call last):" in err and "ValueError: bad" in err and 'File "x.py"' in err
    finally:
        console.stop()
        dispatcher.handlers = saved


def test_the_log_file_is_held_until_the_run_is_under_way_and_dropped_for_a_refused_run(tmp_path):
    refused = tmp_path / "refused" / "logs" / "run.log"
    console.start(refused)
    console.say("s2d: a line before ray.init")
    console.stop(keep=False)  # e.g. a local output_dir refused on a multi-host cluster
    assert not (tmp_path / "refused").exists()
    accepted = tmp_path / "accepted" / "logs" / "run.log"
    console.start(accepted)
    console.say("s2d: a line before ray.init")
    console.attach()  # init_ray, once the locations are accepted
    logging.getLogger("vllm.after").warning("a line after")
    console.stop()
    text = accepted.read_text()
    assert "a line before ray.init" in text and "a line after" in text


def test_a_failure_line_carries_the_cause_its_first_line_introduces():
    """`s2d: train failed: ...` on one line: Ray Train's ControllerError opens with an
    introduction ("...controller error:") and gives the cause (workers killed for memory) next."""
    from s2d_ray.cli import headline

    oom = RuntimeError("Training failed due to controller error:\n5 worker(s) were killed due to the node running low "
                       "on memory. Memory on the node was 22.82GB used / 23.54GB limit\nTraceback ...")
    assert headline(oom) == ("Training failed due to controller error: 5 worker(s) were killed due to the node running "
                             "low on memory. Memory on the node was 22.82GB used / 23.54GB limit")
    assert headline(ValueError("bad value\n  detail")) == "bad value"
    assert headline(KeyError()) == ""
