"""Storage benchmark of weightstore against safetensors, zstd-3 and ZipNN on real weights.

Data: the real all-MiniLM-L6-v2 (22.7 M parameters) plus fine-tunes of it made here on the CPU
by ``scripts/_finetune.py`` (cached under ``--cache``), each in fp32 and in bf16 (the same
weights cast; the int64 ``position_ids`` buffer stays int64):

(a) one model: the base alone;
(b) fine-tuned copy: a full fine-tune, stored after the base (counts only its own bytes);
(c) 10 checkpoints: a fine-tuning run's 10 checkpoints, stored in order after the base;
(d) frozen backbone + new head: the base backbone bit-for-bit plus a new classifier head.

Every ratio is stored bytes / raw tensor bytes of what the workload adds. weightstore's
stored bytes of a save are the growth of ``<store>/objects/`` (sum of file sizes), so they do
not depend on how ``stats()`` attributes bytes. Baselines: a plain safetensors file per
snapshot; that file compressed with zstd level 3; ZipNN per tensor (bytes mode, the tensor's
dtype; XOR delta against the parent's tensor for (b)-(d), ZipNN's own ``delta_compressed_type
="byte"``). Speeds are MB/s (10^6 bytes) of raw tensor bytes, best of 3, wall clock. Every
weightstore restore and every ZipNN round trip is checked bit-exact.

    python scripts/bench_storage.py [--json PATH] [--cache DIR] [--quick]

Progress goes to stderr; the tables (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _finetune
import numpy as np
import safetensors.torch
import torch
import zstandard

SD = dict[str, torch.Tensor]
T = TypeVar("T")

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
ZIPNN_DTYPE = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
WORKLOADS = ("one model", "fine-tuned copy", "10 checkpoints", "frozen backbone + new head")
TARGETS: dict[tuple[str, str], float] = {
    ("one model", "fp32"): 0.80,
    ("one model", "bf16"): 0.65,
    ("fine-tuned copy", "fp32"): 0.40,
    ("fine-tuned copy", "bf16"): 0.15,
    ("10 checkpoints", "fp32"): 0.30,
    ("10 checkpoints", "bf16"): 0.05,
    ("frozen backbone + new head", "fp32"): 0.0002,
    ("frozen backbone + new head", "bf16"): 0.0002,
}
CHAIN_DEPTHS = (1, 4, 8, 16)
REPEATS = 3
MB = 1e6


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def raw_bytes(sd: SD) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's raw little-endian bytes (works for bf16, which numpy lacks)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def best_of(fn: Callable[[], T], repeats: int = REPEATS) -> tuple[float, T]:
    """Smallest wall-clock time of ``repeats`` calls, and the last call's result."""
    times, results = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t0)
        del results[:-1]
    return min(times), results[-1]


def assert_bit_exact(got: SD, want: SD, what: str) -> None:
    assert list(got) == list(want) or set(got) == set(want), f"{what}: tensor names differ"
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}: {name} dtype/shape differ"
        gb = g.contiguous().reshape(-1).view(torch.uint8)
        wb = w.contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(gb, wb), f"{what}: {name} bytes differ"


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """The workloads of one dtype."""

    dtype: str
    base: SD
    ft: SD
    ckpts: list[SD]
    frozen: SD
    ckpt_steps: list[int]

    def snapshots(self) -> dict[str, list[SD]]:
        """What each workload adds on top of the stored base (for (a): the base itself)."""
        return {
            WORKLOADS[0]: [self.base],
            WORKLOADS[1]: [self.ft],
            WORKLOADS[2]: self.ckpts,
            WORKLOADS[3]: [self.frozen],
        }

    def parents(self) -> dict[str, list[SD | None]]:
        """The tensors each snapshot deltas against: the base, or the previous checkpoint."""
        return {
            WORKLOADS[0]: [None],
            WORKLOADS[1]: [self.base],
            WORKLOADS[2]: [self.base, *self.ckpts[:-1]],
            WORKLOADS[3]: [self.base],
        }


def load_data(cache: Path, quick: bool, manifest: dict[str, Any]) -> dict[str, Data]:
    out = {}
    for label, dtype in DTYPES.items():

        def get(name: str, dtype: torch.dtype = dtype) -> SD:
            return _finetune.load_workload(cache, quick, name, dtype)

        out[label] = Data(
            label,
            get("base"),
            get("ft"),
            [get(n) for n in _finetune.checkpoint_names()],
            get("frozen_head"),
            list(manifest["checkpoint_steps"]),
        )
    return out


# --------------------------------------------------------------------------- baselines


def safetensors_bytes(sd: SD) -> bytes:
    return safetensors.torch.save(sd)


class ZipNNCodec:
    """ZipNN per tensor, bytes mode with the tensor's dtype; optional XOR delta (ZipNN's own).

    ZipNN handles float32/bfloat16/float16/fp8 only, so integer tensors (the int64
    ``position_ids``) go through zstd-3 (XORed against the parent when there is one).
    ``compress()`` reuses its input buffer, so each call gets a fresh copy.
    """

    def __init__(self, threads: int = 0) -> None:
        from zipnn import ZipNN

        self._ZipNN = ZipNN
        self._threads = threads
        self._codecs: dict[tuple[str, bool], Any] = {}
        self._zc = zstandard.ZstdCompressor(level=3)
        self._zd = zstandard.ZstdDecompressor()

    def _codec(self, dtype: torch.dtype, delta: bool) -> Any:
        key = (ZIPNN_DTYPE[dtype], delta)
        if key not in self._codecs:
            self._codecs[key] = self._ZipNN(
                input_format="byte",
                bytearray_dtype=key[0],
                threads=self._threads,
                delta_compressed_type="byte" if delta else 0,
            )
        return self._codecs[key]

    @staticmethod
    def _ref_of(name: str, t: torch.Tensor, parent: SD | None) -> bytes | None:
        if parent is None or name not in parent:
            return None
        p = parent[name]
        return tensor_bytes(p) if p.dtype == t.dtype and p.shape == t.shape else None

    def compress(self, sd: SD, parent: SD | None = None) -> dict[str, bytes]:
        out = {}
        for name, t in sd.items():
            ref = self._ref_of(name, t, parent)
            data = bytearray(tensor_bytes(t))
            if t.dtype in ZIPNN_DTYPE:
                codec = self._codec(t.dtype, ref is not None)
                blob = (
                    codec.compress(data)
                    if ref is None
                    else codec.compress(data, delta_second_data=ref)
                )
            else:
                if ref is not None:
                    data = bytearray(
                        np.bitwise_xor(
                            np.frombuffer(data, np.uint8), np.frombuffer(ref, np.uint8)
                        ).tobytes()
                    )
                blob = self._zc.compress(bytes(data))
            out[name] = bytes(blob)
        return out

    def decompress(
        self, blobs: dict[str, bytes], like: SD, parent: SD | None = None
    ) -> dict[str, bytes]:
        out = {}
        for name, blob in blobs.items():
            t = like[name]
            ref = self._ref_of(name, t, parent)
            if t.dtype in ZIPNN_DTYPE:
                codec = self._codec(t.dtype, ref is not None)
                data = (
                    codec.decompress(blob)
                    if ref is None
                    else codec.decompress(blob, delta_second_data=ref)
                )
            else:
                data = self._zd.decompress(blob)
                if ref is not None:
                    data = np.bitwise_xor(
                        np.frombuffer(data, np.uint8), np.frombuffer(ref, np.uint8)
                    ).tobytes()
            out[name] = bytes(data)
        return out

    def roundtrip_check(self, blobs: dict[str, bytes], sd: SD, parent: SD | None) -> None:
        back = self.decompress(blobs, sd, parent)
        for name, t in sd.items():
            assert back[name] == tensor_bytes(t), f"ZipNN round trip of {name} is not bit-exact"


# --------------------------------------------------------------------------- weightstore


def dir_bytes(path: Path) -> int:
    """Sum of the sizes of the files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, f)).st_size
    return total


def weightstore_status() -> str | None:
    """``None`` when weightstore can be benchmarked, else why not."""
    try:
        from weightstore import WeightStore  # noqa: F401
        from weightstore.settings import CodecSettings, StoreSettings  # noqa: F401
    except Exception as exc:  # the library is being written alongside this script
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class Saved:
    """One save: the snapshot id, the bytes it added under objects/, and its wall time."""

    id: str
    growth: int
    seconds: float


class Store:
    """A weightstore under test; the one place this benchmark touches its API."""

    def __init__(self, path: Path, max_chain_depth: int | None = None) -> None:
        from weightstore import WeightStore
        from weightstore.settings import CodecSettings, StoreSettings

        settings = (
            StoreSettings()
            if max_chain_depth is None
            else StoreSettings(codec=CodecSettings(max_chain_depth=max_chain_depth))
        )
        self.path = path
        self.objects = path / "objects"
        self.store = WeightStore.open(path, settings=settings)

    def save(self, task: str, sd: SD, step: int | None = None, parent: str | None = None) -> Saved:
        before = dir_bytes(self.objects)
        t0 = time.perf_counter()
        if parent is None:
            snap = self.store.save(task, sd, step=step)
        else:
            snap = self.store.save(task, sd, step=step, parent=parent)
        seconds = time.perf_counter() - t0
        return Saved(snap.id, dir_bytes(self.objects) - before, seconds)

    def restore(self, ref: str) -> SD:
        return self.store.restore(ref)

    def stats_summary(self) -> dict[str, Any]:
        try:
            s = self.store.stats()
            return {
                "objects": s.objects,
                "objects_by_encoding": dict(s.objects_by_encoding),
                "total_logical_bytes": s.total.logical_bytes,
                "total_stored_bytes": s.total.stored_bytes,
                "tasks": {
                    str(r.task): {"logical_bytes": r.logical_bytes, "stored_bytes": r.stored_bytes}
                    for r in s.tasks
                },
            }
        except Exception as exc:  # stats is informative only
            return {"error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self.store.close()


@contextlib.contextmanager
def fresh_store(tmp: Path, name: str, max_chain_depth: int | None = None) -> Iterator[Store]:
    path = tmp / name
    shutil.rmtree(path, ignore_errors=True)
    store = Store(path, max_chain_depth)
    try:
        yield store
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


def restore_checked(store: Store, ref: str, want: SD, what: str) -> float:
    """Best-of-3 restore time of ``ref``; every restore is checked bit-exact."""
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        got = store.restore(ref)
        best = min(best, time.perf_counter() - t0)
        assert_bit_exact(got, want, what)
        del got
    return best


# --------------------------------------------------------------------------- measurements


@dataclass
class Results:
    ratios: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    speed: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    restore: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    chain: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    weightstore_error: str | None = None
    notes: list[str] = field(default_factory=list)


def measure_baselines(data: Data, zipnn: ZipNNCodec, res: Results) -> None:
    zc = zstandard.ZstdCompressor(level=3)
    for workload, snaps in data.snapshots().items():
        parents = data.parents()[workload]
        raw = sum(raw_bytes(sd) for sd in snaps)
        st = zs = zn = zn_plain = 0
        for sd, parent in zip(snaps, parents, strict=True):
            file = safetensors_bytes(sd)
            st += len(file)
            zs += len(zc.compress(file))
            blobs = zipnn.compress(sd, parent)
            zipnn.roundtrip_check(blobs, sd, parent)
            zn += sum(map(len, blobs.values()))
            if parent is not None:
                plain = zipnn.compress(sd, None)
                zn_plain += sum(map(len, plain.values()))
        row = res.ratios.setdefault(workload, {}).setdefault(data.dtype, {})
        row.update(
            {
                "raw_bytes": raw,
                "snapshots": len(snaps),
                "safetensors_bytes": st,
                "safetensors": st / raw,
                "zstd3_bytes": zs,
                "zstd3": zs / raw,
                "zipnn_bytes": zn,
                "zipnn": zn / raw,
                "zipnn_delta": parents[0] is not None,
            }
        )
        if parents[0] is not None:
            row.update({"zipnn_plain_bytes": zn_plain, "zipnn_plain": zn_plain / raw})
        log(
            f"  {data.dtype} {workload}: safetensors {st / raw:.4f} zstd-3 {zs / raw:.4f} "
            f"ZipNN {zn / raw:.4f}"
        )


def measure_baseline_speed(data: Data, zipnn: ZipNNCodec, tmp: Path, res: Results) -> None:
    sd = data.base
    raw = raw_bytes(sd)
    speed = res.speed.setdefault(data.dtype, {})

    path = tmp / f"base-{data.dtype}.safetensors"
    enc, _ = best_of(lambda: safetensors.torch.save_file(sd, str(path)))
    dec, _ = best_of(lambda: safetensors_load_clone(path))
    speed["safetensors"] = {
        "encode_MBps": raw / enc / MB,
        "decode_MBps": raw / dec / MB,
        "encode_s": enc,
        "decode_s": dec,
    }

    file = safetensors_bytes(sd)
    zc, zd = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    enc, blob = best_of(lambda: zc.compress(file))
    dec, back = best_of(lambda: zd.decompress(blob))
    assert back == file, "zstd round trip is not bit-exact"
    speed["zstd-3"] = {
        "encode_MBps": raw / enc / MB,
        "decode_MBps": raw / dec / MB,
        "encode_s": enc,
        "decode_s": dec,
    }

    enc, blobs = best_of(lambda: zipnn.compress(sd))
    dec, _ = best_of(lambda: zipnn.decompress(blobs, sd))
    zipnn.roundtrip_check(blobs, sd, None)
    speed["ZipNN"] = {
        "encode_MBps": raw / enc / MB,
        "decode_MBps": raw / dec / MB,
        "encode_s": enc,
        "decode_s": dec,
    }


def safetensors_load_clone(path: Path) -> SD:
    sd = safetensors.torch.load_file(str(path))
    return {k: v.clone() for k, v in sd.items()}


def safetensors_restore_time(sd: SD, path: Path) -> float:
    safetensors.torch.save_file(sd, str(path))
    seconds, back = best_of(lambda: safetensors_load_clone(path))
    assert_bit_exact(back, sd, f"safetensors {path.name}")
    path.unlink()
    return seconds


def measure_weightstore(data: Data, tmp: Path, res: Results) -> None:
    dt = data.dtype
    ratios = {w: res.ratios.setdefault(w, {}).setdefault(dt, {}) for w in WORKLOADS}
    raw_base = raw_bytes(data.base)

    # (a) one model, and its encode/decode speed: save into a fresh store, best of 3.
    best_save, best_restore = float("inf"), float("inf")
    growth = 0
    for i in range(REPEATS):
        with fresh_store(tmp, f"a-{dt}-{i}") as store:
            saved = store.save("base", data.base)
            growth = saved.growth
            best_save = min(best_save, saved.seconds)
            if i == 0:
                best_restore = restore_checked(store, saved.id, data.base, f"{dt} base")
                ratios[WORKLOADS[0]]["weightstore_stats"] = store.stats_summary()
    ratios[WORKLOADS[0]].update({"weightstore_bytes": growth, "weightstore": growth / raw_base})
    res.speed.setdefault(dt, {})["weightstore"] = {
        "encode_MBps": raw_base / best_save / MB,
        "decode_MBps": raw_base / best_restore / MB,
        "encode_s": best_save,
        "decode_s": best_restore,
    }
    log(
        f"  {dt} one model: weightstore {growth / raw_base:.4f}, "
        f"save {raw_base / best_save / MB:.0f} MB/s, "
        f"restore {raw_base / best_restore / MB:.0f} MB/s"
    )

    base_st = safetensors_restore_time(data.base, tmp / f"base-{dt}.safetensors")
    res.restore.setdefault(dt, {})["one model"] = {
        "weightstore_s": best_restore,
        "safetensors_s": base_st,
        "ratio": best_restore / base_st,
    }

    # (b) fine-tuned copy, (d) frozen backbone + new head: each after the base, own store.
    pairs = ((WORKLOADS[1], "ft", data.ft), (WORKLOADS[3], "frozen", data.frozen))
    for workload, task, sd in pairs:
        with fresh_store(tmp, f"{task}-{dt}") as store:
            store.save("base", data.base)
            saved = store.save(task, sd, parent="base")
            restore_checked(store, saved.id, sd, f"{dt} {task}")
            ratios[workload].update(
                {
                    "weightstore_bytes": saved.growth,
                    "weightstore": saved.growth / raw_bytes(sd),
                    "weightstore_stats": store.stats_summary(),
                }
            )
        log(f"  {dt} {workload}: weightstore {ratios[workload]['weightstore']:.6f}")

    # (c) 10 checkpoints, default settings, then the chain-depth sweep.
    last_st = safetensors_restore_time(data.ckpts[-1], tmp / f"last-{dt}.safetensors")
    default_depth = _default_chain_depth()
    chain = res.chain.setdefault(dt, {})
    for depth in (None, *[d for d in CHAIN_DEPTHS if d != default_depth]):
        label = f"default ({default_depth})" if depth is None else str(depth)
        with fresh_store(tmp, f"c-{dt}-{label}", depth) as store:
            store.save("base", data.base)
            saves = [
                store.save("run", sd, step=step, parent="base" if i == 0 else None)
                for i, (sd, step) in enumerate(zip(data.ckpts, data.ckpt_steps, strict=True))
            ]
            total, ids = sum(s.growth for s in saves), [s.id for s in saves]
            for sd, sid in zip(data.ckpts[:-1], ids[:-1], strict=True):  # each once
                assert_bit_exact(store.restore(sid), sd, f"{dt} checkpoint {sid[:12]}")
            last = restore_checked(store, ids[-1], data.ckpts[-1], f"{dt} last checkpoint")
            stats = store.stats_summary()
        raw = sum(raw_bytes(sd) for sd in data.ckpts)
        entry = {
            "stored_bytes": total,
            "raw_bytes": raw,
            "ratio": total / raw,
            "restore_last_s": last,
            "safetensors_restore_s": last_st,
            "restore_ratio": last / last_st,
            "per_save_bytes": [s.growth for s in saves],
            "per_save_s": [s.seconds for s in saves],
            "stats": stats,
        }
        chain[str(default_depth if depth is None else depth)] = entry
        if depth is None:
            ratios[WORKLOADS[2]].update(
                {"weightstore_bytes": total, "weightstore": total / raw, "weightstore_stats": stats}
            )
            res.restore[dt]["last of 10 checkpoints"] = {
                "weightstore_s": last,
                "safetensors_s": last_st,
                "ratio": last / last_st,
            }
        log(
            f"  {dt} 10 checkpoints, max_chain_depth {label}: {total / raw:.4f}, "
            f"restore last {last:.3f}s (safetensors {last_st:.3f}s)"
        )


def _default_chain_depth() -> int:
    from weightstore.settings import CodecSettings

    return CodecSettings().max_chain_depth


# --------------------------------------------------------------------------- report


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.6f}" if x < 0.01 else f"{x:.3f}"


def fmt_target(x: float) -> str:
    return f"{x:g}" if x < 0.01 else f"{x:.2f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def ratio_table(res: Results) -> str:
    rows = []
    for workload in WORKLOADS:
        for dt in DTYPES:
            r = res.ratios.get(workload, {}).get(dt)
            if r is None:
                continue
            zipnn = fmt_ratio(r["zipnn"])
            if r.get("zipnn_delta"):
                zipnn += f" (no delta {fmt_ratio(r['zipnn_plain'])})"
            ws = r.get("weightstore")
            target = TARGETS[(workload, dt)]
            verdict = "" if ws is None else (" pass" if ws <= target else " MISS")
            st = f"{fmt_ratio(r['safetensors'])} ({r['safetensors_bytes'] / MB:.1f} MB)"
            rows.append(
                [
                    workload,
                    dt,
                    st,
                    fmt_ratio(r["zstd3"]),
                    zipnn,
                    "stub" if ws is None else fmt_ratio(ws),
                    f"<= {fmt_target(target)}{verdict}",
                ]
            )
    return md_table(
        ["workload", "dtype", "safetensors", "zstd-3", "ZipNN", "weightstore", "target"], rows
    )


def speed_table(res: Results) -> str:
    rows = []
    for dt, tools in res.speed.items():
        for tool in ("weightstore", "safetensors", "zstd-3", "ZipNN"):
            s = tools.get(tool)
            if s:
                rows.append([dt, tool, f"{s['encode_MBps']:.0f}", f"{s['decode_MBps']:.0f}"])
    return md_table(["dtype", "codec", "encode MB/s", "decode MB/s"], rows)


def restore_table(res: Results) -> str:
    rows = []
    for dt, what in res.restore.items():
        for name, r in what.items():
            rows.append(
                [
                    name,
                    dt,
                    f"{r['weightstore_s'] * 1e3:.0f}",
                    f"{r['safetensors_s'] * 1e3:.0f}",
                    f"{r['ratio']:.2f}x",
                ]
            )
    return md_table(
        ["restore", "dtype", "weightstore ms", "safetensors load+clone ms", "ours/baseline"], rows
    )


def chain_table(res: Results) -> str:
    rows = []
    for dt, depths in res.chain.items():
        for depth in sorted(depths, key=int):
            c = depths[depth]
            rows.append(
                [
                    depth,
                    dt,
                    fmt_ratio(c["ratio"]),
                    f"{c['restore_last_s'] * 1e3:.0f}",
                    f"{c['restore_ratio']:.2f}x",
                ]
            )
    return md_table(
        [
            "max_chain_depth",
            "dtype",
            "stored ratio",
            "restore last ms",
            "vs safetensors load+clone",
        ],
        rows,
    )


def report(res: Results, manifest: dict[str, Any]) -> str:
    threads = torch.get_num_threads()
    parts = [
        "## Stored bytes / raw tensor bytes (all-MiniLM-L6-v2, 22.7 M parameters)",
        "",
        ratio_table(res),
        "",
        "safetensors: a file per snapshot. zstd-3: that file, zstd level 3, independently. "
        "ZipNN: per tensor (bytes mode, the tensor's dtype; the int64 position_ids, which ZipNN "
        "rejects, via zstd-3); for (b)-(d) on the XOR delta against the base / previous "
        "checkpoint (no delta: the same snapshot compressed alone). "
        "weightstore: growth of objects/ per save, default settings.",
    ]
    ft = manifest.get("figures", {})
    if ft:
        parts.append(
            f"Fine-tunes: full fine-tune {ft['ft']['steps']} steps (eval acc "
            f"{ft['ft']['eval_accuracy']:.2f}); checkpoints every "
            f"{manifest['checkpoint_steps'][0]} steps to {manifest['checkpoint_steps'][-1]} "
            f"(eval acc {ft['checkpoints']['eval_accuracy']:.2f}); frozen backbone head "
            f"(eval acc {ft['frozen_head']['eval_accuracy']:.2f}); AdamW lr 2e-5, wd 0.01."
        )
    if res.weightstore_error:
        parts += ["", f"weightstore: stubbed ({res.weightstore_error})"]
    parts += [
        "",
        f"## Speed (MB/s of raw tensor bytes, (a) one model, best of {REPEATS})",
        "",
        speed_table(res),
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, torch threads {threads}; zstd-3 "
        "single-threaded; ZipNN and weightstore with their default thread counts.",
    ]
    if res.restore:
        parts += ["", "## Restore time vs safetensors.load_file + clone", "", restore_table(res)]
    if res.chain:
        parts += ["", "## 10 checkpoints: delta chain depth", "", chain_table(res)]
    parts += [f"- {n}" for n in res.notes]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/bench-cache"),
        help="where the fine-tuned workloads are cached",
    )
    parser.add_argument("--quick", action="store_true", help="few fine-tune steps (smoke run)")
    parser.add_argument(
        "--skip-weightstore",
        action="store_true",
        help="baselines only, even if weightstore imports",
    )
    args = parser.parse_args()
    t_start = time.perf_counter()

    manifest = _finetune.ensure_workloads(args.cache, args.quick)
    log("loading workloads")
    datas = load_data(args.cache, args.quick, manifest)
    res = Results()
    res.weightstore_error = (
        "skipped (--skip-weightstore)" if args.skip_weightstore else weightstore_status()
    )
    zipnn = ZipNNCodec()

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp_name:
        tmp = Path(tmp_name)
        for data in datas.values():
            log(f"{data.dtype}: baselines")
            measure_baselines(data, zipnn, res)
            measure_baseline_speed(data, zipnn, tmp, res)
            if res.weightstore_error is None:
                log(f"{data.dtype}: weightstore")
                measure_weightstore(data, tmp, res)
            else:
                log(f"{data.dtype}: weightstore stubbed: {res.weightstore_error}")

    seconds = time.perf_counter() - t_start
    log(f"done in {seconds:.0f}s")
    print(report(res, manifest))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "ratios": res.ratios,
            "speed": res.speed,
            "restore": res.restore,
            "chain_depth": res.chain,
            "weightstore_error": res.weightstore_error,
            "targets": {f"{w} / {d}": t for (w, d), t in TARGETS.items()},
            "finetune": manifest,
            "seconds": seconds,
            "quick": args.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
