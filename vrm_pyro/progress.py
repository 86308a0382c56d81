"""Progress reporting: a tqdm bar on a terminal, one line per stage in a log file or CI.

``progress(total, desc)`` is used as a context manager around a stage of work (encoding a
split, fitting a model). On an interactive terminal it is a tqdm bar; when stderr is not a
terminal (a log file, CI, a notebook's captured output) carriage-return bars would only make
noise, so it prints one line when the stage starts and one when it ends, with the time taken.
"""

from __future__ import annotations

import sys
import time


class LineProgress:
    """The non-interactive stand-in for a tqdm bar: a line at the start and at the end of a stage."""

    def __init__(self, total: int, desc: str, stream=None):
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream or sys.stderr
        self.postfix: dict = {}
        self.start = time.perf_counter()
        print(f"{desc}: started ({total:,} steps)", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, values: dict) -> None:
        self.postfix = dict(values)

    def close(self) -> None:
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"{self.desc}: done in {time.perf_counter() - self.start:.1f} s{extra}", file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, values: dict) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def progress(total: int, desc: str, enabled: bool = True):
    """A progress reporter for ``total`` steps: tqdm on a terminal, :class:`LineProgress` otherwise."""
    if not enabled:
        return _Silent()
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    return LineProgress(total, desc)


__all__ = ["LineProgress", "progress"]
