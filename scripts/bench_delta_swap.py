"""Swaps that apply only the compressed difference to what the model holds (issue 18).

    python scripts/bench_delta_swap.py [--mb 64] [--iterations 7] [--staging 0]
        [--apply device] [--device cuda] [--dtype bfloat16]

One task, fine-tuned in 5 checkpoints (each a small nudge of every float: every tensor of a
checkpoint is stored as a delta against the previous one, a chain 4 deep at the newest), on
the CPU (default) with the host cache off, so it cannot help. Timed side by side, same data,
same run:

- ``newest, holding unrelated``: the model holds weights of another task; activating the
  newest checkpoint decodes every tensor's whole chain (root + 4 deltas): today's path;
- ``newest, holding the previous``: the model holds checkpoint 4; only the last link of each
  chain is read and applied to the model's own bytes ("delta in place");
- ``depth-1 child``: checkpoint 2 while holding checkpoint 1, against checkpoint 2 while
  holding unrelated weights (a chain of root + 1 delta);
- ``host cache``: a swap from the host cache against one memcpy of the same bytes (on a GPU:
  one pinned host-to-device copy).

``--device cuda`` puts the model on a GPU (deltas in place applied there by torch ops, nvCOMP
with ``weightstore[gpu]``); ``--apply device`` takes that path on the CPU; ``--dtype
bfloat16`` for a bf16 model; ``--staging 0`` streams swaps into the model.

Targets: >= 3x for the 4-deep chain, >= 1.8x for the depth-1 child, host cache >= 0.8x memcpy.
Every activation is checked bit-exact against the weights saved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from weightstore import StoreSettings, TaskLoader, WeightStore
from weightstore.transfer import host_copy


def checkpoints(mb: int, n: int, dtype: torch.dtype) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    per = mb * (1 << 20) // torch.empty(0, dtype=dtype).element_size() // 8
    state = {
        f"layer.{i}.weight": (torch.randn(per, generator=g) * 0.02).to(dtype) for i in range(8)
    }
    out = [state]
    for _ in range(n - 1):
        state = {
            k: (v.float() + 1e-4 * torch.randn(v.shape, generator=g)).to(dtype)
            for k, v in state.items()
        }
        out.append(state)
    return out


def median_ms(fn: Callable[[], object], prepare: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        prepare()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="model size")
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument(
        "--staging",
        type=int,
        default=None,
        help="the loader's staging budget in bytes (default: its own, 1 GiB, so swaps are "
        "staged; 0 streams them into the model)",
    )
    parser.add_argument(
        "--apply",
        choices=["auto", "device"],
        default="auto",
        help="how deltas in place are applied: auto (the CPU codec for CPU tensors) or "
        "device (torch ops and the device checksum: a GPU's path, here on the CPU)",
    )
    parser.add_argument("--device", default="cpu", help="where the model lives (cpu, cuda)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    ckpts = checkpoints(args.mb, 5, dtype)
    other = {k: torch.randn(v.shape).to(dtype) for k, v in ckpts[0].items()}
    with tempfile.TemporaryDirectory() as tmp:
        store = WeightStore.open(Path(tmp) / "s", settings=StoreSettings(fsync=False))
        for step, sd in enumerate(ckpts, 1):
            store.save("ft", sd, step=step)
        store.save("other", other, step=1)
        depth = store.reader.chains({store.show("ft@5").weights[0].digest})
        model = {k: torch.empty_like(v, device=args.device) for k, v in ckpts[0].items()}
        staging = {} if args.staging is None else {"staging": args.staging}
        loader = TaskLoader(
            store, model, host_cache=0, gpu_cache=0, apply_deltas=args.apply, **staging
        )
        load = os.getloadavg()[0]

        ints = torch.int32 if dtype == torch.float32 else torch.int16

        def check(i: int) -> None:
            assert all(
                torch.equal(model[k].cpu().view(ints), v.view(ints)) for k, v in ckpts[i].items()
            ), "not bit-exact"

        rows = []
        for label, target, held, unrelated_base in (
            ("newest of a 4-deep chain", "ft@5", "ft@4", "other@1"),
            ("depth-1 child", "ft@2", "ft@1", "other@1"),
        ):
            fast = median_ms(activator(loader, target), activator(loader, held), args.iterations)
            loader.activate(held)
            report = loader.activate(target)
            check(int(target[-1]) - 1)
            slow = median_ms(
                activator(loader, target), activator(loader, unrelated_base), args.iterations
            )
            check(int(target[-1]) - 1)
            rows.append((label, slow, fast, report))
        # Host cache against a memcpy of as many bytes.
        cached = TaskLoader(store, model, host_cache=1 << 40, gpu_cache=0)
        cached.prefetch("ft@5").result()
        cached.prefetch("other@1").result()
        host = median_ms(activator(cached, "ft@5"), activator(cached, "other@1"), args.iterations)
        check(4)
        nbytes = sum(v.nbytes for v in ckpts[0].values())
        cuda = args.device.startswith("cuda")
        src = torch.ones(nbytes, dtype=torch.uint8, pin_memory=cuda)
        dst = torch.zeros(nbytes, dtype=torch.uint8, device=args.device)

        def one_copy() -> None:
            if cuda:  # the baseline on a GPU: one pinned host-to-device copy
                dst.copy_(src, non_blocking=True)
                torch.cuda.synchronize()
            else:
                host_copy(src, dst)

        one_copy()
        memcpy = median_ms(one_copy, lambda: None, args.iterations)
        cached.close()
        loader.close()
        store.close()
    mode = "staged" if args.staging is None or args.staging >= nbytes else "streamed"
    print(
        f"{args.mb} MB {args.dtype} model, 8 tensors, on {args.device}, host cache off, {mode}, "
        "deltas applied "
        f"by {'the CPU codec' if args.apply == 'auto' else 'torch ops'}; load {load:.2f}; "
        f"chain depth at the newest: {len(depth[next(iter(depth))]) - 1} deltas; "
        f"median of {args.iterations}"
    )
    print(
        f"{'activate':<28}{'holding unrelated ms':>22}{'holding parent ms':>19}{'ratio':>8}"
        f"{'read (compressed)':>19}  target"
    )
    for (label, slow, fast, report), goal in zip(rows, (3.0, 1.8), strict=True):
        read = f"{report.delta_bytes_read / 1e6:.1f} MB"
        met = "met" if slow / fast >= goal else "MISSED"
        print(
            f"{label:<28}{slow:>22.1f}{fast:>19.1f}{slow / fast:>7.2f}x{read:>19}  >= {goal}x {met}"
        )
    print(
        f"{'host cache swap':<28}{'memcpy ' + f'{memcpy:.1f}':>22}{host:>19.1f}"
        f"{memcpy / host:>7.2f}x{'':>19}  >= 0.8x {'met' if memcpy / host >= 0.8 else 'MISSED'}"
    )


def activator(loader: TaskLoader, ref: str) -> Callable[[], object]:
    def run() -> None:
        loader.activate(ref)
        if loader.device.type == "cuda":
            torch.cuda.synchronize()

    return run


if __name__ == "__main__":
    main()
