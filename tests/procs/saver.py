"""Worker process: open a store and save a list of deterministic state dicts, reporting progress.

Run as ``python tests/procs/saver.py``. It imports everything, prints ``ready``, then reads one
JSON line from stdin (so a test can start it ahead of time and release it at a chosen moment)::

    {"store": PATH, "index_url": URL or null,
     "jobs": [[task, step, seed, version, tag...], ...],  # save workload.state(seed, version)
     "allow_storage_error": false,  # print "failed ..." for a StorageError and go on
     "pause": 0.0,                  # seconds to sleep after each job
     "kill_on_put": null,           # SIGKILL itself at the start of the Nth object put
     "kill_on_file_fsync": null,    # SIGKILL itself at the Nth os.fsync of a regular file
     "tear_config_write": false,    # SIGKILL itself halfway through writing weightstore.json
     "async": false}                # save with save_async (reported as each Future completes)

and prints, flushing after each line::

    opened
    committed <task> <step> <snapshot id> <seconds the save took>
    failed <task> <step> <seconds> <error class>: <message>
    done

Any other error is printed to stderr and ends the process with exit status 1.

``python tests/procs/saver.py --fork-server`` imports everything once and then forks one such
worker per request, so that tests which start many short-lived workers (one per kill point) do
not pay for importing torch each time. Requests and replies are JSON / text lines::

    {"op": "start", "config": {...}, "out": PATH}  ->  pid <pid>
    {"op": "wait", "pid": PID}                      ->  exit <pid> <status: -9 when SIGKILLed>

A forked worker writes its stdout and stderr to ``out`` and never reads stdin. The server itself
starts no threads (``OPENBLAS_NUM_THREADS=1``, no torch op runs before a fork), so forking it is
safe; it exits when its stdin closes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from procs.workload import state
from weightstore import WeightStore
from weightstore.errors import StorageError
from weightstore.objects import local as local_backend
from weightstore.testing.faults import FaultBackend


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def kill_on_put(n: int) -> Callable[[str, str | None], None]:
    """A fault hook that kills its own process with SIGKILL when the ``n``-th object put starts:
    a crash after the index row of an object is written and before its blob is."""
    lock = threading.Lock()
    puts = [0]

    def before(op: str, key: str | None) -> None:
        if op == "put":
            with lock:
                puts[0] += 1
                if puts[0] >= n:
                    os.kill(os.getpid(), signal.SIGKILL)

    return before


def kill_on_file_fsync(n: int) -> None:
    """SIGKILL the process when it makes a regular file durable for the ``n``-th time (an
    fsync, or the local backend's batched syncfs): an object backend's data is then written but
    not yet durable (and, written atomically, not yet visible under its final name). Directory
    fsyncs do not count."""
    real_fsync = os.fsync
    lock = threading.Lock()
    count = 0

    def fsync(fd: Any) -> None:
        nonlocal count
        if stat.S_ISREG(os.fstat(fd).st_mode):
            with lock:
                count += 1
                if count >= n:
                    os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(fd)

    def barrier(path: Path) -> None:
        nonlocal count
        with lock:
            count += 1
            if count >= n:
                os.kill(os.getpid(), signal.SIGKILL)
        real_syncfs(path)

    os.fsync = fsync
    found = local_backend._syncfs  # noqa: SLF001 (the fault point is private)
    if found is not None:
        real_syncfs: Callable[[Path], None] = found
        local_backend._syncfs = barrier  # noqa: SLF001


def tear_config_writes() -> None:
    """SIGKILL the process while ``weightstore.json`` is being replaced: half of the new text
    is in the file being written and the rename has not happened."""
    replace = os.replace

    def torn(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == "weightstore.json":
            text = Path(src).read_text()
            with open(src, "w") as f:
                f.write(text[: len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst, *args, **kwargs)

    os.replace = torn


def run(config: dict[str, Any]) -> None:
    if config.get("tear_config_write"):
        tear_config_writes()
    if config.get("kill_on_file_fsync"):
        kill_on_file_fsync(int(config["kill_on_file_fsync"]))
    hook = kill_on_put(int(config["kill_on_put"])) if config.get("kill_on_put") else None
    store = WeightStore.open(
        config["store"],
        index_url=config.get("index_url"),
        wrap_objects=(lambda b: FaultBackend(b, before=hook)) if hook else None,
    )
    try:
        say("opened")
        if config.get("async"):
            run_async(store, config)
            return
        for task, step, seed, version, *tags in config["jobs"]:
            weights = state(seed, version)
            start = time.monotonic()
            try:
                snap = store.save(task, weights, step=step, tags=tags)
            except StorageError as e:
                if not config.get("allow_storage_error"):
                    raise
                took = time.monotonic() - start
                message = str(e).replace("\n", " ")
                say(f"failed {task} {step} {took:.3f} {type(e).__name__}: {message}")
            else:
                say(f"committed {task} {step} {snap.id} {time.monotonic() - start:.3f}")
            if config.get("pause"):
                time.sleep(config["pause"])
        say("done")
    finally:
        store.close()


def run_async(store: WeightStore, config: dict[str, Any]) -> None:
    """Every job through ``save_async``; a line for each as its Future completes."""
    lock = threading.Lock()

    def report(task: str, step: int, start: float) -> Callable[[Any], None]:
        def done(future: Any) -> None:
            with lock:
                snap = future.result()
                say(f"committed {task} {step} {snap.id} {time.monotonic() - start:.3f}")

        return done

    for task, step, seed, version, *tags in config["jobs"]:
        weights = state(seed, version)
        future = store.save_async(task, weights, step=step, tags=tags)
        future.add_done_callback(report(task, step, time.monotonic()))
        for t in weights.values():  # the caller may change its tensors at once
            t.zero_()
    store.wait()
    say("done")


def work(config: dict[str, Any]) -> int:
    torch.set_num_threads(1)
    try:
        run(config)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0


def serve() -> int:
    say("ready")
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    fd = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    os.close(fd)
                    code = work(request["config"])
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            say(f"pid {pid}")
        elif request["op"] == "wait":
            _, status = os.waitpid(request["pid"], 0)
            say(f"exit {request['pid']} {os.waitstatus_to_exitcode(status)}")
        else:
            raise ValueError(f"unknown request {request!r}")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--fork-server"]:
        return serve()
    say("ready")
    line = sys.stdin.readline()
    if not line:
        return 2  # the test went away before releasing us
    return work(json.loads(line))


if __name__ == "__main__":
    sys.exit(main())
