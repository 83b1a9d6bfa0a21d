"""The Hub-compatible routes, measured side by side on the packaged all-MiniLM-L6-v2 folder:

- ``AutoModel.from_pretrained`` through ``weightstore serve`` (cold HF cache, then warm at the
  commit) vs from the local folder;
- one download of the weights file: ``hf_hub_download`` through the server, a plain GET of
  ``/resolve``, and a plain GET from a static-file server of the same file (the baseline), MB/s;
- HEAD of ``/resolve`` (what every ``from_pretrained`` sends per file): p50 / p99 over 500;
- store bytes of 10 full-folder checkpoints (every weight changed a little, side files the
  same) vs 10 copies of the folder.

    python scripts/bench_hub.py

Servers are real processes on 127.0.0.1 (``weightstore serve``, uvicorn with starlette's
StaticFiles); clients run in this process after the servers start.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import load_file, save_file

from weightstore.demo.minilm_model import model_dir
from weightstore.store import WeightStore

CHECKPOINTS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.returncode}") from None
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def checkpoints(base: Path, tmp: Path) -> list[Path]:
    """``CHECKPOINTS`` copies of the folder, each a small step away from the one before."""
    weights = load_file(str(base / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(CHECKPOINTS):
        folder = tmp / f"ckpt-{i}"
        shutil.copytree(base, folder)
        if i:
            for name, t in weights.items():
                if t.is_floating_point():
                    weights[name] = t + 1e-4 * t.std() * torch.randn(t.shape, generator=g)
            save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        out.append(folder)
    return out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    base = model_dir()
    folders = checkpoints(base, tmp)
    root = tmp / "store"
    with WeightStore.open(root, create=True) as store:
        for i, folder in enumerate(folders):
            snap = store.import_folder("team/minilm", folder, step=i * 100)
        commit = snap.id[:40]
    copies = sum(folder_bytes(f) for f in folders)
    kept = store_bytes(root)

    port, static_port = free_port(), free_port()
    env = {**os.environ, "WEIGHTSTORE_PATH": str(root)}
    server = subprocess.Popen(
        ["weightstore", "serve", "--public-read", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    static_app = (
        "import sys, uvicorn; from starlette.applications import Starlette; "
        "from starlette.routing import Mount; from starlette.staticfiles import StaticFiles; "
        "app = Starlette(routes=[Mount('/', StaticFiles(directory=sys.argv[1]))]); "
        "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')"
    )
    static = subprocess.Popen(
        [sys.executable, "-c", static_app, str(folders[-1]), str(static_port)]
    )
    url, static_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{static_port}"
    try:
        wait(f"{url}/healthz", server)
        wait(f"{static_url}/config.json", static)
        os.environ["HF_ENDPOINT"] = url
        os.environ["HF_HOME"] = str(tmp / "hf")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        from huggingface_hub import hf_hub_download
        from transformers import AutoModel

        AutoModel.from_pretrained(str(folders[-1]))  # imports and first-use costs, not timed
        timings = {}
        start = time.perf_counter()
        AutoModel.from_pretrained(str(folders[-1]))
        timings["local folder"] = time.perf_counter() - start
        start = time.perf_counter()
        AutoModel.from_pretrained("team/minilm")
        timings["server, cold cache"] = time.perf_counter() - start
        start = time.perf_counter()
        AutoModel.from_pretrained("team/minilm", revision=commit)
        timings["server, warm cache at the commit"] = time.perf_counter() - start

        size = (folders[-1] / "model.safetensors").stat().st_size
        start = time.perf_counter()
        hf_hub_download("team/minilm", "model.safetensors", cache_dir=tmp / "hf2")
        hub_dl = time.perf_counter() - start
        with httpx.Client(timeout=60) as h:
            gets = {}
            for name, address in (
                ("weightstore /resolve GET", f"{url}/team/minilm/resolve/main/model.safetensors"),
                ("static file server GET", f"{static_url}/model.safetensors"),
            ):
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    assert len(h.get(address).content) == size
                    best = min(best, time.perf_counter() - start)
                gets[name] = best
            heads = {}
            for name in ("config.json", "model.safetensors"):
                lat = []
                for _ in range(500):
                    start = time.perf_counter()
                    h.head(f"{url}/team/minilm/resolve/main/{name}").raise_for_status()
                    lat.append(time.perf_counter() - start)
                lat.sort()
                heads[name] = (statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99)] * 1e3)
    finally:
        server.terminate()
        static.terminate()
        server.wait(30)
        static.wait(30)

    print(f"machine load (1 min): {os.getloadavg()[0]:.2f}")
    print("\nfrom_pretrained of all-MiniLM-L6-v2 (seconds, after imports)")
    local = timings["local folder"]
    for name, t in timings.items():
        print(f"  {name:36s} {t:7.3f} s   {t / local:5.2f}x local")
    print(f"\none {size / 1e6:.1f} MB weights file")
    print(f"  {'hf_hub_download through weightstore':36s} {mbps(size, hub_dl):7.0f} MB/s")
    static_t = gets["static file server GET"]
    for name, t in gets.items():
        print(f"  {name:36s} {mbps(size, t):7.0f} MB/s   {static_t / t:5.2f}x static")
    print("\nHEAD /resolve (ms, 500 requests, one keep-alive connection)")
    for name, (p50, p99) in heads.items():
        print(f"  {name:36s} p50 {p50:6.2f}   p99 {p99:6.2f}")
    print(f"\n{CHECKPOINTS} full-folder checkpoints")
    print(f"  {'copies of the folder':36s} {copies / 1e6:8.1f} MB")
    print(
        f"  {'weightstore (objects + index)':36s} {kept / 1e6:8.1f} MB   "
        f"{kept / copies:.3f} of copies"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
