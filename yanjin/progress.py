"""Progress of a training loop, told to whoever watches: a tqdm bar for a person at a terminal, or JSON
lines for `yanjin pipeline run`, whose steps run as kfp.local subprocesses with piped output.

A bar in a piped subprocess prints every tick as a new line (hundreds of KB for one demo), so under
the pipeline the CLI sets $YANJIN_PROGRESS to a file and draws the bars itself (pipelines/console.py).
That variable is the one channel from the CLI to the step processes kfp.local starts; it is read when a
loop starts, never at import. This module imports no other yanjin module.
"""
from __future__ import annotations

import json
import os
import time
from typing import Iterable, Iterator

PROGRESS_ENV = "YANJIN_PROGRESS"
EVERY_S = 0.5   # at most two updates a second per loop: the file stays small, the bar stays live


def _emit(event: dict) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a") as f:  # one short append per event: lines from two steps never interleave
            f.write(json.dumps(event | {"t": time.time()}) + "\n")


def note(text: str) -> None:
    """A line worth showing a person between bars (e.g. an epoch's validation accuracy)."""
    _emit({"kind": "note", "text": text})


class _Reported:
    """tqdm's face (iterate, set_postfix) over a loop whose progress goes to the progress file."""

    def __init__(self, iterable: Iterable, desc: str, total: int):
        self.iterable, self.desc, self.total = iterable, desc, total
        self.postfix, self.n, self.last = "", 0, 0.0

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def _send(self) -> None:
        self.last = time.monotonic()
        _emit({"kind": "bar", "desc": self.desc, "n": self.n, "total": self.total, "postfix": self.postfix})

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
            if time.monotonic() - self.last >= EVERY_S or self.n == self.total:
                self._send()


def bar(iterable, desc: str, disable: bool = False):
    """A progress bar over `iterable` (which has a len): reported to the pipeline's console when it watches,
    else drawn by tqdm."""
    if os.environ.get(PROGRESS_ENV):
        return _Reported(iterable, desc, len(iterable))
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=disable)
