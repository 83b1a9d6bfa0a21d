"""CPU time of the CLI's commands over a bare interpreter, this tree beside a baseline commit.

    python scripts/bench_cli.py [--baseline REF] [--runs N] [--mb 256]

Each command runs as its own process (as a user runs it), ``--runs`` times; the figure is the
median user+system CPU time of the process (``os.wait4``), minus that of ``python -c pass``
measured in the same run. CPU time, not wall time, because this 2-core machine is shared: a
busy neighbour stretches wall time but not the CPU a command burns.

Targets (issue 16, item 1): ``init``, ``diff``, ``rm``, ``gc --dry-run`` on an empty store and
a bad argument <= 0.6 CPU-s over the bare interpreter; ``save`` / ``export`` of a 256 MB
safetensors file <= 1.5x a copy of that file through ``safetensors.torch`` (``load_file`` +
``save_file``: what a user does without weightstore), start-up included on both sides.
``pull`` fetches two small snapshots from a ``weightstore serve`` on this machine: the remote
client's start-up.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightstore.sources import RawTensor

REPO = Path(__file__).resolve().parent.parent
RUN_CLI = "import sys; from weightstore.cli.main import main; sys.argv[0] = 'weightstore'; main()"


@dataclass
class Case:
    name: str
    args: list[str]  # after `weightstore`
    prepare: Callable[[Path], None] = lambda work: None
    runs: int | None = None
    ok: tuple[int, ...] = (0,)


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit status) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 2, 3):
        sys.stderr.write(err.decode(errors="replace"))
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def series(
    cmd: list[str], env: dict[str, str], cwd: Path, runs: int, prepare: Callable[[], None]
) -> tuple[float, float, int]:
    """Median CPU and wall seconds over ``runs`` (``prepare`` before each), and the status."""
    cpus, walls, code = [], [], 0
    for _ in range(runs):
        prepare()
        cpu, wall, code = measure(cmd, env, cwd)
        cpus.append(cpu)
        walls.append(wall)
    return statistics.median(cpus), statistics.median(walls), code


def make_fixtures(work: Path, mb: int) -> None:
    """A small store (two snapshots of one task), an empty store, and a ``mb`` MB safetensors
    file of float32 weights (normal, std 0.02: incompressible mantissas, as real weights)."""
    import numpy as np
    from safetensors.numpy import save_file

    from weightstore import WeightStore

    rng = np.random.default_rng(0)
    with WeightStore.open(work / "template") as store:
        sd = {
            f"layer.{i}.weight": rng.standard_normal((64, 64), dtype=np.float32) for i in range(8)
        }
        store.save("sentiment", {k: _raw(v) for k, v in sd.items()}, step=1, tags=["best"])
        sd["layer.0.weight"] = sd["layer.0.weight"] + np.float32(1e-3)
        store.save("sentiment", {k: _raw(v) for k, v in sd.items()}, step=2)
    WeightStore.open(work / "empty").close()
    n = mb * (1 << 20) // 4 // 16
    big = {
        f"block.{i}.weight": (rng.standard_normal(n, dtype=np.float32) * 0.02) for i in range(16)
    }
    save_file(big, str(work / "big.safetensors"))


def _raw(a: Any) -> RawTensor:
    import numpy as np

    return RawTensor("float32", tuple(a.shape), a.reshape(-1).view(np.uint8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    """Until the server at ``url`` answers /healthz (the pull case's remote)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("weightstore serve did not start") from None
            time.sleep(0.1)


def reset(work: Path, name: str, source: str) -> Callable[[Path], None]:
    def prepare(_: Path) -> None:
        if (work / name).is_file():
            (work / name).unlink()
        shutil.rmtree(work / name, ignore_errors=True)
        if source:
            shutil.copytree(work / source, work / name, symlinks=True)

    return prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a commit to compare with (git archive of it)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mb", type=int, default=256, help="size of the big file")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(tmp)
        make_fixtures(work, args.mb)
        trees = {"now": REPO}
        if args.baseline:
            before = work / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.baseline, "weightstore", "migrations"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            trees[args.baseline] = before
        big = work / "big.safetensors"
        heavy = max(3, args.runs // 2)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve_args = ["serve", "--public-read", "--port", str(port)]
        server = subprocess.Popen(
            [python, "-c", RUN_CLI, "--store", str(work / "template"), *serve_args],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(server.kill)  # if a measurement fails; stopped below otherwise
        wait_for(url, server)
        cases = [
            Case("--help", ["--help"]),
            Case("bad argument", ["log", "-n", "x"], ok=(2,)),
            Case("init", ["--store", str(work / "new"), "init"], reset(work, "new", "")),
            Case("log -n 5", ["log", "-n", "5"]),
            Case("tasks", ["tasks"]),
            Case("show", ["show", "sentiment@2"]),
            Case("diff", ["diff", "sentiment@1", "sentiment@2"]),
            Case(
                "tag",
                ["--store", str(work / "s"), "tag", "sentiment@1", "first"],
                reset(work, "s", "template"),
            ),
            Case(
                "rm",
                ["--store", str(work / "s"), "rm", "sentiment@1", "--yes"],
                reset(work, "s", "template"),
            ),
            Case("gc --dry-run (empty)", ["--store", str(work / "empty"), "gc", "--dry-run"]),
            Case("verify", ["verify"]),
            Case("report storage", ["report", "storage"]),
            Case(
                "pull (2 small snaps)",
                ["--store", str(work / "mirror"), "pull", url],
                reset(work, "mirror", "empty"),
            ),
            Case(
                f"save {args.mb} MB",
                ["--store", str(work / "s"), "save", "big", str(big), "--step", "1"],
                reset(work, "s", "empty"),
                heavy,
            ),
            Case(
                f"export {args.mb} MB",
                ["--store", str(work / "b"), "export", "big@1", str(work / "out.safetensors")],
                reset(work, "out.safetensors", ""),
                heavy,
            ),
        ]
        load = os.getloadavg()[0]
        bare_env = dict(os.environ, COLUMNS="100", WEIGHTSTORE_PATH=str(work / "template"))
        bare, _, _ = series([python, "-c", "pass"], bare_env, work, args.runs * 2, lambda: None)
        copy_cmd = [
            python,
            "-c",
            "import sys; from safetensors.torch import load_file, "
            "save_file; save_file(load_file(sys.argv[1]), sys.argv[2])",
            str(big),
            str(work / "copy.safetensors"),
        ]
        copy, copy_wall, _ = series(copy_cmd, bare_env, work, heavy, lambda: None)
        results: dict[str, dict[str, tuple[float, float, int]]] = {}
        for label, tree in trees.items():
            env = dict(bare_env, PYTHONPATH=str(tree))
            # The export source: a store holding the big file, written by this tree.
            reset(work, "b", "empty")(work)
            measure(
                [
                    python,
                    "-c",
                    RUN_CLI,
                    "--store",
                    str(work / "b"),
                    "save",
                    "big",
                    str(big),
                    "--step",
                    "1",
                ],
                dict(bare_env, PYTHONPATH=str(REPO)),
                work,
            )
            for case in cases:
                results.setdefault(case.name, {})[label] = series(
                    [python, "-c", RUN_CLI, *case.args],
                    env,
                    work,
                    case.runs or args.runs,
                    functools.partial(case.prepare, work),
                )
        server.terminate()
        server.wait(30)
        print(
            f"machine: {os.cpu_count()} cores, load {load:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end; {args.runs} runs (big files: {heavy}), medians"
        )
        print(f"bare interpreter (python -c pass): {bare * 1e3:.0f} ms CPU; figures are over it")
        print(
            f"baseline copy through safetensors.torch (load_file + save_file, {args.mb} MB): "
            f"{copy:.2f} CPU-s, {copy_wall:.2f} s wall, start-up included"
        )
        labels = list(trees)
        head = f"{'command':<22}" + "".join(f"{f'{lb} CPU-s':>16}" for lb in labels)
        if len(labels) == 2:
            head += f"{'before/now':>12}"
        print(head + f"{'wall s':>9}  target")
        for case in cases:
            row = results[case.name]
            cells = "".join(f"{row[lb][0] - bare:>16.2f}" for lb in labels)
            if len(labels) == 2:
                cells += f"{(row[labels[1]][0] - bare) / max(row['now'][0] - bare, 1e-3):>11.1f}x"
            if case.name.startswith(("save ", "export ")):
                target = f"now/copy {row['now'][0] / copy:.2f} (<= 1.5, start-up included)"
            elif case.name in ("init", "diff", "rm", "gc --dry-run (empty)", "bad argument"):
                target = "<= 0.60" + (" met" if row["now"][0] - bare <= 0.6 else " MISSED")
            else:
                target = ""
            bad = [lb for lb in labels if row[lb][2] not in case.ok]
            if bad:
                target += f"  (exit {row[bad[0]][2]} for {bad[0]})"
            print(f"{case.name:<22}{cells}{row['now'][1]:>9.2f}  {target}")


if __name__ == "__main__":
    main()
