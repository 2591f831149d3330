"""What a person sees of a kfp.local run: a line per step with its duration, a live bar for the training
loops, an estimate of the time left; kfp.local's own chatter (every step's resolved inputs, its streamed
logs) goes to a log file, and to the screen as well only with --verbose.

kfp.local prints from this process: task lines through `logging` and each step's piped output through
`print`, both to `sys.stdout` as it is at that moment. So the run's stdout and stderr are swapped for
a `StepStream` that writes everything to the log and reads kfp's task lines (kfp pinned to 2.17.3;
tests/pipelines/test_console.py runs the real runner, so a change of its wording fails a test). The
steps report their loops through yanjin.progress into a file this module tails.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..progress import PROGRESS_ENV

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
HEAVY = ("train-model", "adapt-domain")   # the steps whose length varies with the data: they get bars
BAR_WIDTH = 24
REDRAW_S = 1.0


def display_names(pipeline) -> dict[str, str]:
    """kfp task name (train-model-2) -> the display name the graph gave it ("v2: Fine-tune ...")."""
    spec = pipeline.pipeline_spec
    names = {}
    for dag in [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]:
        names.update({key: task.task_info.name for key, task in dag.tasks.items()})
    return names


def component_of(task: str) -> str:
    return re.sub(r"-\d+$", "", task)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Estimate:
    """Time left: the steps still to run at their length in an earlier run on this machine (`history`),
    else at the mean of this run's steps of their kind (a running loop counts at its projected length);
    None until every kind still to run has a basis. A first run's estimate is rough: a Pro adapts for
    minutes where V1's domain step takes seconds."""
    tasks: list[str]                                 # every task of the graph that will run (branches aside)
    history: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)

    def left(self, running: str | None, running_for: float, bar_fraction: float | None) -> float | None:
        projected = None  # the running loop's whole length, projected from how far its bar is
        if running and bar_fraction and bar_fraction > 0.02:
            projected = running_for / bar_fraction
        samples: dict[str, list[float]] = {}
        for task, seconds in list(self.done.items()) + ([(running, projected)] if projected else []):
            samples.setdefault(component_of(task), []).append(seconds)

        light = [sec for task, sec in self.done.items() if component_of(task) not in HEAVY]

        def expect(task: str) -> float | None:
            """An earlier run's length of this very task, else this run's mean of its kind (train, export, ...);
            a light step of a kind not seen yet, the mean light step."""
            if task in self.history:
                return self.history[task]
            same = samples.get(component_of(task)) or (light if component_of(task) not in HEAVY else None)
            return sum(same) / len(same) if same else None

        total = 0.0
        for task in self.tasks:
            if task in self.done:
                continue
            guess = projected if task == running and projected else expect(task)
            if guess is None:
                return None
            total += max(0.0, guess - running_for) if task == running else guess
        return total


class Console:
    """Draws the run: finished steps as lines, the running step (and its loop's bar on a terminal) as a
    status line redrawn in place; without a terminal, epoch lines instead of a bar."""

    def __init__(self, out: TextIO, names: dict[str, str], estimate: Estimate, prefix: str = ""):
        self.out, self.names, self.estimate, self.prefix = out, names, estimate, prefix
        self.tty = out.isatty() if hasattr(out, "isatty") else False
        self.running: str | None = None
        self.started = 0.0
        self.bar: dict | None = None
        self.lock = threading.Lock()
        self.status_shown = False
        self.drawn_at = 0.0
        self.failed: list[str] = []

    def name(self, task: str) -> str:
        return self.prefix + self.names.get(task, task)

    def _clear(self) -> None:
        if self.tty and self.status_shown:
            self.out.write("\r\x1b[K")
            self.status_shown = False

    def _line(self, text: str) -> None:
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        """A line of the caller's own, shown while the run's output is going to the log."""
        with self.lock:
            self._line(text)

    def task_started(self, task: str) -> None:
        with self.lock:
            self.running, self.started, self.bar = task, time.monotonic(), None
            if not self.tty and component_of(task) in HEAVY:
                self._line(f"  … {self.name(task)}")
            self._draw(force=True)

    def task_finished(self, task: str, status: str) -> None:
        with self.lock:
            seconds = time.monotonic() - self.started if task == self.running else 0.0
            self.estimate.done[task] = seconds
            ok = status == "SUCCESS"
            if not ok:
                self.failed.append(task)
            self._line(f"  {'✓' if ok else '✗'} {self.name(task):<58} {duration(seconds):>7}"
                       + ("" if ok else f"  {status}"))
            self.running, self.bar = None, None

    def event(self, e: dict) -> None:
        with self.lock:
            if e["kind"] == "note":
                self._line(f"      {e['text']}")
            elif e["kind"] == "bar":
                self.bar = e
            self._draw(force=e["kind"] == "note")

    def tick(self) -> None:
        with self.lock:
            self._draw()

    def _left(self) -> str:
        running_for = time.monotonic() - self.started if self.running else 0.0
        fraction = None
        if self.bar and self.running and component_of(self.running) in HEAVY:
            fraction = self._loop_fraction()
        left = self.estimate.left(self.running, running_for, fraction)
        return "estimating time left…" if left is None else f"about {duration(left)} left"

    def _loop_fraction(self) -> float | None:
        """How far the running step is: its epochs (desc "… epoch 2/3") and the bar within the epoch."""
        b = self.bar
        match = re.search(r"(\d+)/(\d+)\s*$", b["desc"])
        if not match or "distil" in b["desc"] or "recover" in b["desc"]:  # Lite's two phases: no whole-step fraction
            return None
        current, of = int(match.group(1)), int(match.group(2))
        return ((current - 1) + b["n"] / max(1, b["total"])) / max(1, of)

    def _draw(self, force: bool = False) -> None:
        """Redraw the status line: at most once a second (a terminal's byte stream stays small) unless forced."""
        if not self.tty or not self.running or (not force and time.monotonic() - self.drawn_at < REDRAW_S):
            return
        self.drawn_at = time.monotonic()
        text = f"  ▸ {self.name(self.running)}  {duration(time.monotonic() - self.started)}"
        if self.bar:
            b = self.bar
            filled = int(BAR_WIDTH * b["n"] / max(1, b["total"]))
            text += (f"  {b['desc']} [{'█' * filled}{'░' * (BAR_WIDTH - filled)}] {b['n']}/{b['total']}"
                     + (f" {b['postfix']}" if b["postfix"] else ""))
        text += f"  · {self._left()}"
        try:
            width = os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 120
        self.out.write("\r\x1b[K" + text[: max(20, width - 1)])
        self.out.flush()
        self.status_shown = True

    def close(self) -> None:
        with self.lock:
            self._clear()
            self.out.flush()


class StepStream(io.TextIOBase):
    """Stands in for stdout/stderr during the run: all text to the log (and the screen with `echo`), kfp's
    task lines to the console."""

    def __init__(self, log: TextIO, console: Console, echo: TextIO | None):
        self.log, self.console, self.echo, self.partial = log, console, echo, ""
        self.task_lines: dict[str, list[str]] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.echo is not None:
            self.echo.write(text)
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            plain = ANSI.sub("", line)
            if m := STARTED.search(plain):
                self.console.task_started(m.group(1))
            elif m := FINISHED.search(plain):
                self.console.task_finished(m.group(1), m.group(2))
            if self.console.running:
                self.task_lines.setdefault(self.console.running, []).append(plain)
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def _tail(path: Path, console: Console, stop: threading.Event) -> None:
    """Follow the steps' progress file until `stop`; redraw once a second for the clock and the estimate."""
    position = 0
    while not stop.wait(0.25):
        if path.is_file():
            with open(path) as f:
                f.seek(position)
                chunk = f.read()
            complete, _, _ = chunk.rpartition("\n")
            if complete:
                position += len(complete.encode()) + 1
                for line in complete.split("\n"):
                    try:
                        console.event(json.loads(line))
                    except (ValueError, KeyError):
                        continue
        console.tick()


@dataclass
class Watched:
    log: Path
    console: Console
    stream: StepStream

    def attempt(self, fn, errors: tuple = (RuntimeError, ValueError)):
        """fn() while watched: (its result, None), or (None, the error) when it raises one of `errors` (a failed
        step surfaces as one), so the caller reports it once the screen is its own again."""
        try:
            return fn(), None
        except errors as e:
            return None, e

    def failure_lines(self, n: int = 40) -> list[str]:
        """The end of the failed steps' own output: the error a person needs without opening the log."""
        out = []
        for task in self.console.failed:
            out += [f"--- {self.console.name(task)} ({task}), last lines:"] + self.stream.task_lines.get(task, [])[-n:]
        return out


@contextlib.contextmanager
def watched(pipeline, state_root: Path, key: str, prefix: str = "", verbose: bool = False,
            out: TextIO | None = None):
    """Run kfp.local inside this: quiet console, full log under <state>/logs/, step lengths remembered
    in <state>/logs/timings.json (keyed by `key`, e.g. the pipeline and profile) for the next estimate."""
    out = out or sys.stdout
    logs = Path(state_root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path, progress_path = logs / f"pipeline-{stamp}.log", logs / f"progress-{stamp}.jsonl"
    timings_path = logs / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    names = display_names(pipeline)
    tasks = [t for t in names if not t.startswith("condition") and component_of(t) not in ("no-version",)]
    console = Console(out, names, Estimate(tasks, timings.get(key, {})), prefix)
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = str(progress_path)
    stop = threading.Event()
    follower = threading.Thread(target=_tail, args=(progress_path, console, stop), daemon=True, name="progress")
    out.write(f"  (every step's own output: {log_path})\n")
    with open(log_path, "w") as log:
        stream = StepStream(log, console, out if verbose else None)
        follower.start()
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield Watched(log_path, console, stream)
            timings[key] = timings.get(key, {}) | console.estimate.done
            timings_path.write_text(json.dumps(timings, indent=1))
        finally:
            stop.set()
            follower.join()
            console.close()
            if previous is None:
                os.environ.pop(PROGRESS_ENV, None)
            else:
                os.environ[PROGRESS_ENV] = previous
            progress_path.unlink(missing_ok=True)
