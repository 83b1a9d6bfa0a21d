"""Test-side control of worker processes: start them warm, release them, read their progress,
kill them, and never leave one behind."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PROCS = Path(__file__).resolve().parent
SAVER = PROCS / "saver.py"
READY_TIMEOUT = 60.0  # importing torch on a loaded two-core machine can take a while


@dataclass(frozen=True)
class Outcome:
    """One save as the worker reported it."""

    task: str
    step: int
    ok: bool
    seconds: float
    snapshot_id: str = ""
    error: str = ""


class Worker:
    """One ``saver.py`` process; lines of its stdout arrive in a queue read by a thread."""

    def __init__(self, *args: str) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(SAVER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: IO[str], is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.lines.append(line.rstrip("\n"))
                self._queue.put(line.rstrip("\n"))
            else:
                self.stderr.append(line)
        if is_stdout:
            self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def describe(self) -> str:
        return (
            f"worker {self.pid} (exit status {self.proc.poll()}) said:\n"
            + "\n".join(self.lines[-20:])
            + "\nstderr:\n"
            + "".join(self.stderr[-60:])
        )

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with ``prefix`` (earlier lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} within {timeout}s; " + self.describe())
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=10)
                self._join()
                raise AssertionError(f"worker ended before {prefix!r}; " + self.describe())
            if line.startswith(prefix):
                return line

    def release(self, config: dict[str, Any]) -> None:
        """Hand the worker its job list (it has been waiting on stdin since ``ready``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._join()

    def finish(self, timeout: float) -> int:
        """Wait for the worker to exit by itself; kill it and fail after ``timeout``."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker still running after {timeout}s; " + self.describe()
            ) from None
        self._join()
        return rc

    def _join(self) -> None:
        for t in self._threads:
            t.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # the pipe's other end is dead
                    pipe.close()

    def close(self) -> None:
        """Kill the worker if it still runs (for ``finally`` blocks)."""
        if self.proc.poll() is None:
            self.kill()
        else:
            self._join()

    def outcomes(self) -> list[Outcome]:
        return parse_outcomes(self.lines)


def parse_outcomes(lines: list[str]) -> list[Outcome]:
    """The ``committed`` and ``failed`` lines of a worker's output."""
    out = []
    for line in lines:
        parts = line.split(" ", 4)
        if parts[0] == "committed":
            out.append(Outcome(parts[1], int(parts[2]), True, float(parts[4]), parts[3]))
        elif parts[0] == "failed":
            out.append(Outcome(parts[1], int(parts[2]), False, float(parts[3]), "", parts[4]))
    return out


class ForkedWorker:
    """A worker forked by a :class:`ForkServer`; its output goes to a file."""

    def __init__(self, server: ForkServer, pid: int, out: Path) -> None:
        self.server = server
        self.pid = pid
        self.out = out
        self.status: int | None = None

    @property
    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def outcomes(self) -> list[Outcome]:
        return parse_outcomes(self.lines)

    def describe(self) -> str:
        return f"worker {self.pid} (exit status {self.status}) wrote:\n" + "\n".join(
            self.lines[-60:]
        )

    def kill(self) -> int:
        """SIGKILL the worker and wait until it is gone; return its exit status."""
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
        return self.finish(timeout=30)

    def finish(self, timeout: float) -> int:
        """Wait for the worker to exit by itself; kill it and fail after ``timeout``."""
        if self.status is None:
            self.server.release({"op": "wait", "pid": self.pid})
            try:
                line = self.server.wait_for(f"exit {self.pid} ", timeout)
            except AssertionError:
                os.kill(self.pid, signal.SIGKILL)
                self.status = int(self.server.wait_for(f"exit {self.pid} ", 30).split()[2])
                raise AssertionError(
                    f"worker still running after {timeout}s; " + self.describe()
                ) from None
            self.status = int(line.split()[2])
        return self.status


class ForkServer(Worker):
    """``saver.py --fork-server``: imports once, then forks a worker per :meth:`start`."""

    def __init__(self) -> None:
        super().__init__("--fork-server")
        self._children: list[ForkedWorker] = []
        try:
            self.wait_for("ready", READY_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def start(self, config: dict[str, Any], out: Path) -> ForkedWorker:
        self.release({"op": "start", "config": config, "out": str(out)})
        pid = int(self.wait_for("pid ", 30).split()[1])
        child = ForkedWorker(self, pid, out)
        self._children.append(child)
        return child

    def close(self) -> None:
        try:
            for child in self._children:
                if child.status is None and self.proc.poll() is None:
                    child.kill()
        finally:
            super().close()


class WarmPool:
    """Keeps ``size`` workers importing in the background, so a test waits for torch's import
    (seconds) only once instead of once per worker."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._spares: list[Worker] = []
        self._taken: list[Worker] = []
        self._fill()

    def _fill(self) -> None:
        while len(self._spares) < self._size:
            self._spares.append(Worker())

    def take(self) -> Worker:
        """A worker that has printed ``ready`` and waits for its job list."""
        worker = self._spares.pop(0)
        self._fill()
        self._taken.append(worker)
        worker.wait_for("ready", READY_TIMEOUT)
        return worker

    def close(self) -> None:
        for w in self._spares + self._taken:
            w.close()
        self._spares.clear()
        self._taken.clear()
