"""One progress display per stage: rows done / total, kept so far, tokens/s, elapsed and ETA for
sampling and evaluation; step / total steps, loss and ETA for training.

The workers that do the work add their counts to a small Ray actor (a *board*: counts, never
rows); the driver reads it twice a second and draws a tqdm bar on a terminal, or prints a plain
line every ``S2D_PROGRESS_SECONDS`` (30) seconds when stderr is not one (a log file, CI, a pipe).
It draws only under the command line (:func:`s2d_ray.console.active`); library callers get
``None`` for a board, which the workers skip.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from s2d_ray import console


class _Board:
    """Counts the workers add (``add``: sums such as rows, kept, tokens) or set (``put``: the
    latest values, such as training's step and loss)."""

    def __init__(self, counts: tuple[str, ...] = ()) -> None:
        self.sums: Counter = Counter({name: 0 for name in counts})
        self.values: dict[str, Any] = {}

    def add(self, counts: dict[str, float]) -> None:
        self.sums.update(counts)

    def put(self, values: dict[str, Any]) -> None:
        self.values.update(values)

    def read(self) -> dict[str, Any]:
        return {**self.sums, **self.values}


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Eta:
    """Remaining time from the rate since the first finished unit (engine start-up and model
    loading come before it and say nothing about the rate)."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None

    def __call__(self, done: float, total: float, now: float) -> float | None:
        if done <= 0:
            return None
        if self.first is None or done < self.first[1]:
            self.first = (now, done)
            return None
        t0, d0 = self.first
        if done == d0 or now <= t0:
            return None if done < total else 0.0
        return (total - done) * (now - t0) / (done - d0)


class StageProgress:
    """``with StageProgress("sample + filter", total=64, unit="rows") as board:`` - pass ``board``
    (a Ray actor handle, or None) to the workers; they call ``board.add.remote({...})``."""

    def __init__(self, title: str, total: int, unit: str = "rows", counts: tuple[str, ...] = ()) -> None:
        """``counts``: figures shown from the start, at 0 (e.g. ``kept`` while sampling)."""
        self.title, self.total, self.unit, self.counts = title, total, unit, counts
        self.board = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._eta = Eta()
        self._last: dict[str, Any] = {}
        self._start = time.perf_counter()

    def __enter__(self):
        if not console.active() or console.verbose():
            return None
        import ray

        self.board = ray.remote(num_cpus=0)(_Board).remote(self.counts)
        interactive = sys.stderr.isatty()
        if interactive:
            from tqdm import tqdm

            # tqdm's own remaining time starts from the first update, so engine start-up made it
            # read hours; the bar shows the same ETA as the plain lines (Eta) instead.
            self._bar = tqdm(total=self.total, desc=self.title, unit=self.unit.rstrip("s") or "it",
                             file=sys.stderr, dynamic_ncols=True, leave=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        else:
            console.say(f"{self.title}: {self.total} {self.unit} to go")
        self._thread = threading.Thread(target=self._loop, args=(interactive,), daemon=True, name="s2d-progress")
        self._thread.start()
        return self.board

    def _loop(self, interactive: bool) -> None:
        every = 0.5 if interactive else float(os.environ.get("S2D_PROGRESS_SECONDS", "30"))
        while not self._stop.wait(every):
            self._draw(self._read())

    def _read(self) -> dict[str, Any]:
        import ray

        try:
            self._last = ray.get(self.board.read.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a slow or gone board shows the last figures
            pass
        return self._last

    def line(self, figures: dict[str, Any], now: float | None = None) -> str:
        """``sample + filter: 24/64 rows (38%), kept 12, 45 tok/s, 0:30 elapsed, ETA 0:50``."""
        now = time.perf_counter() if now is None else now
        done = figures.get("done", figures.get("rows", 0))
        parts = [f"{self.title}: {done}/{self.total} {self.unit} ({100 * done / max(1, self.total):.0f}%)"]
        parts += self._extras(figures, now)
        eta = self._eta(done, self.total, now)
        parts.append(f"{_clock(now - self._start)} elapsed" + (f", ETA {_clock(eta)}" if eta is not None else ""))
        return ", ".join(parts)

    def _extras(self, figures: dict[str, Any], now: float) -> list[str]:
        out = []
        if "kept" in figures:
            out.append(f"kept {figures['kept']}")
        if "loss" in figures:
            out.append(f"loss {figures['loss']:.4f}")
        if "tokens" in figures and now > self._start:
            out.append(f"{figures['tokens'] / (now - self._start):.0f} tok/s")
        return out

    def _draw(self, figures: dict[str, Any]) -> None:
        if self._bar is not None:
            done = figures.get("done", figures.get("rows", 0))
            now = time.perf_counter()
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
            eta = self._eta(done, self.total, now)
            extras = self._extras(figures, now) + ([f"ETA {_clock(eta)}"] if eta is not None else [])
            self._bar.set_postfix_str(", ".join(extras), refresh=True)
        else:
            console.say(self.line(figures))

    def __exit__(self, *exc) -> None:
        if self.board is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        figures = self._read()
        if self._bar is not None:
            self._draw(figures)
            self._bar.close()
        elif exc[0] is None:
            console.say(self.line(figures))
        import ray

        ray.kill(self.board)
