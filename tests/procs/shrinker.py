"""Worker: read a store while another thread truncates and restores one of its object files.

``python tests/procs/shrinker.py STORE SECONDS`` restores every snapshot of the store (with
digests verified) and streams it through ``/safetensors`` from a uvicorn server in this process,
from 4 threads, while a fifth truncates an object file to half and writes it back, over and
over. It prints ``ok N good M refused`` and exits 0 if every read either returned the exact
bytes or raised a typed error; a process killed by SIGBUS exits with -7 instead.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import torch
from served import serve

from weightstore.errors import CorruptObject, StorageError


def main() -> int:
    root, seconds = Path(sys.argv[1]), float(sys.argv[2])
    with serve(root, f"sqlite:///{root / 'index.sqlite'}") as served:
        store = served.store
        snaps = store.log()
        expected = {s.id: store.restore(s.id) for s in snaps}
        files = {s.id: served.client().get(f"/snapshots/{s.id}/safetensors").content for s in snaps}
        digests = {i: hashlib.sha256(b).hexdigest() for i, b in files.items()}
        victim = root / "objects" / snaps[0].tensors[0].digest[:2] / snaps[0].tensors[0].digest
        original = victim.read_bytes()
        stop = time.monotonic() + seconds
        counts = {"good": 0, "refused": 0}
        wrong: list[str] = []
        lock = threading.Lock()

        def shrink() -> None:
            while time.monotonic() < stop:
                with victim.open("r+b") as f:
                    f.truncate(len(original) // 2)
                time.sleep(0.001)
                victim.write_bytes(original)
                time.sleep(0.001)

        def read(kind: str) -> None:
            client = served.client()
            while time.monotonic() < stop:
                for s in snaps:
                    try:
                        if kind == "restore":
                            got = store.restore(s.id, verify=True)
                            ok = all(torch.equal(got[k], v) for k, v in expected[s.id].items())
                        else:
                            body = client.get(f"/snapshots/{s.id}/safetensors").content
                            if len(body) < len(files[s.id]):
                                raise StorageError("short body: the response was cut")
                            ok = hashlib.sha256(body).hexdigest() == digests[s.id]
                    except (CorruptObject, StorageError, httpx.HTTPError):
                        with lock:
                            counts["refused"] += 1
                        continue
                    with lock:
                        counts["good" if ok else "refused"] += 1
                        if not ok:
                            wrong.append(f"{kind} {s.short_id}")
            client.close()

        threads = [threading.Thread(target=shrink)] + [
            threading.Thread(target=read, args=(k,)) for k in ("restore", "restore", "http", "http")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        victim.write_bytes(original)
    if wrong:
        print("wrong bytes:", wrong)
        return 1
    print(f"ok {counts['good']} good {counts['refused']} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
