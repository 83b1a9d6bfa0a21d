"""Progress on stderr: byte bars fed by the store's ``progress=`` callbacks, and step bars for
long runs made of phases (``report swap``).

The store calls the callback from its worker threads, so :class:`ByteProgress` serialises
updates with its own lock. Bars are drawn only when stderr is a terminal; elsewhere (pipes,
tests, CI logs) the callback still counts but draws nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class ByteProgress:
    """``with ByteProgress("saving", total) as advance: store.save(..., progress=advance)``.

    ``total`` may be an estimate or None (unknown); on exit the bar is completed at the bytes
    actually counted.
    """

    def __init__(self, description: str, total: int | None, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._completed = 0
        self._total = total
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._description = description

    @property
    def completed(self) -> int:
        """Bytes counted so far."""
        with self._lock:
            return self._completed

    def set_total(self, total: int) -> None:
        """The bytes the work will count, once known."""
        with self._lock:
            self._total = total
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, total=total)

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self._completed += nbytes
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, completed=self._completed)

    def __enter__(self) -> ByteProgress:
        if self._console.is_terminal:
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            progress, self._progress = self._progress, None
            if progress is not None and self._task is not None and exc is None:
                progress.update(self._task, completed=self._completed, total=self._completed)
        if progress is not None:
            progress.stop()


def estimate_bytes(path: Path) -> int | None:
    """About how many tensor bytes a weights file or folder holds (its size on disk), for the
    bar's total; None when it cannot be told."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.glob("*.safetensors")) or None
        return path.stat().st_size
    except OSError:
        return None


class StepProgress:
    """``with StepProgress("measuring", total) as step: work(on_phase=step)``: a bar over
    ``total`` phases named as they start; without a terminal, one line per phase on stderr
    (so a log shows where a long run is)."""

    def __init__(self, description: str, total: int, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True, highlight=False, markup=False)
        self._description = description
        self._total = total
        self._done = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, what: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, completed=self._done, description=f"{self._description}: {what}"
            )
        else:
            line = f"{self._description} ({self._done + 1}/{self._total}): {what}"
            self._console.print(line, soft_wrap=True)
        self._done += 1

    def __enter__(self) -> StepProgress:
        if self._console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
