"""The stage progress display's figures (s2d_ray.progress): ETA from the rate after the first
finished unit, the line printed off a terminal, and the board the workers add to."""

from __future__ import annotations

from s2d_ray.progress import Eta, StageProgress, _Board, _clock


def test_eta_ignores_start_up_and_follows_the_rate_since_the_first_finished_unit():
    eta = Eta()
    assert eta(0, 100, now=60.0) is None  # engines starting: no rate yet
    assert eta(10, 100, now=70.0) is None  # the first batch: start-up time says nothing of the rate
    assert eta(30, 100, now=80.0) == 35.0  # 20 units in 10 s -> 70 left in 35 s
    assert eta(100, 100, now=90.0) == 0.0


def test_a_stage_line_off_a_terminal_shows_done_total_kept_rate_elapsed_and_eta():
    p = StageProgress("sample (cot x4)", total=64, counts=("kept",))
    p._start = 0.0
    assert p.line({"rows": 0, "kept": 0}, now=5.0) == "sample (cot x4): 0/64 rows (0%), kept 0, 0:05 elapsed"
    p.line({"rows": 16, "kept": 9, "tokens": 1600}, now=40.0)
    line = p.line({"rows": 32, "kept": 20, "tokens": 3200}, now=50.0)
    assert line == "sample (cot x4): 32/64 rows (50%), kept 20, 64 tok/s, 0:50 elapsed, ETA 0:20"


def test_a_training_line_shows_step_loss_and_eta():
    p = StageProgress("train", total=18, unit="steps")
    p._start = 0.0
    p.line({"done": 1, "loss": 1.3}, now=45.0)
    assert p.line({"done": 3, "loss": 0.7439}, now=105.0) == "train: 3/18 steps (17%), loss 0.7439, 1:45 elapsed, ETA 7:30"


def test_the_board_sums_counts_and_keeps_the_latest_values():
    board = _Board(("kept",))
    assert board.read() == {"kept": 0}
    board.add({"rows": 4, "tokens": 100})
    board.add({"rows": 4, "tokens": 50, "kept": 3})
    board.put({"done": 2, "loss": 1.0})
    board.put({"done": 3, "loss": 0.5})
    assert board.read() == {"kept": 3, "rows": 8, "tokens": 150, "done": 3, "loss": 0.5}


def test_clock():
    assert [_clock(s) for s in (0, 59.9, 61, 3600 + 62)] == ["0:00", "0:59", "1:01", "1:01:02"]


def test_without_the_command_line_no_board_is_made():
    with StageProgress("eval", total=8) as board:
        assert board is None
