"""The real Hugging Face clients, driven by tests/test_hub.py over stdin/stdout (one JSON
command per line, one JSON answer per line), in a process of their own: ``HF_ENDPOINT`` and
``HF_HOME`` are read when huggingface_hub is imported, as in a user's program.

Tensors come back as the SHA-256 of their bytes (name -> hex) and files as the SHA-256 of
their content, so the test compares them bit for bit with the originals without moving them.
The huggingface_hub operations need nothing else installed: the same script drives the 0.x
client in a virtual environment of its own (``WS_HUB0_PYTHON``, made by scripts/test.sh).
"""

from __future__ import annotations

import hashlib
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _digests(state: Mapping[str, Any]) -> dict[str, str]:
    import torch  # here: the huggingface_hub 0.x client runs without torch

    out = {}
    for name, t in state.items():
        raw = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        out[name] = hashlib.sha256(raw).hexdigest()
    return out


def _files(folder: str) -> dict[str, str]:
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def model(repo: str, revision: str | None = None) -> Any:
    from transformers import AutoModel

    return _digests(AutoModel.from_pretrained(repo, revision=revision).state_dict())


def tokenizer(repo: str, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(repo, revision=revision)("hello world")["input_ids"]


def sentence(repo: str, revision: str | None = None) -> Any:
    from sentence_transformers import SentenceTransformer

    vec = SentenceTransformer(repo, revision=revision, device="cpu").encode(["hello world"])
    return hashlib.sha256(vec.tobytes()).hexdigest()


def snapshot(repo: str, revision: str | None = None, allow: list[str] | None = None) -> Any:
    from huggingface_hub import snapshot_download

    return _files(snapshot_download(repo, revision=revision, allow_patterns=allow))


def download(repo: str, filename: str, revision: str | None = None) -> Any:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo, filename, revision=revision)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def info(repo: str, revision: str | None = None) -> Any:
    from huggingface_hub import HfApi

    i = HfApi().model_info(repo, revision=revision, files_metadata=True)
    return {"sha": i.sha, "files": sorted(s.rfilename for s in i.siblings or [])}


def tree(repo: str, revision: str | None = None) -> Any:
    from huggingface_hub import HfApi

    return sorted(
        (type(e).__name__, e.path)
        for e in HfApi().list_repo_tree(repo, revision=revision, recursive=True)
    )


def ls(path: str, revision: str | None = None) -> Any:
    from huggingface_hub import HfFileSystem

    return sorted(HfFileSystem().ls(path, detail=False, revision=revision))


def fs_read(path: str, revision: str | None = None) -> Any:
    from huggingface_hub import HfFileSystem

    with HfFileSystem().open(path, "rb", revision=revision) as f:
        return hashlib.sha256(f.read()).hexdigest()


def st_metadata(repo: str, revision: str | None = None) -> Any:
    from huggingface_hub import HfApi

    meta = HfApi().get_safetensors_metadata(repo, revision=revision)
    return {"sharded": meta.sharded, "tensors": len(meta.weight_map)}


def shard_files(repo: str, revision: str) -> Any:
    from transformers.utils.hub import cached_file, get_checkpoint_shard_files

    index = cached_file(repo, "model.safetensors.index.json", revision=revision)
    files, _ = get_checkpoint_shard_files(repo, index, revision=revision)  # type: ignore[no-untyped-call]
    return sorted(Path(f).name for f in files)


def peft(base: str, repo: str, revision: str | None = None) -> Any:
    from peft import PeftModel
    from transformers import AutoModel

    m = PeftModel.from_pretrained(AutoModel.from_pretrained(base), repo, revision=revision)
    return _digests({k: v for k, v in m.state_dict().items() if "lora_" in k})


def hotswap(base: str, repo: str, first: str, second: str) -> Any:
    from peft import PeftModel
    from peft.utils.hotswap import hotswap_adapter
    from transformers import AutoModel

    m = PeftModel.from_pretrained(AutoModel.from_pretrained(base), repo, revision=first)
    hotswap_adapter(m, repo, adapter_name="default", revision=second)
    return _digests({k: v for k, v in m.state_dict().items() if "lora_" in k})


def error(op: str, *args: Any) -> Any:
    """The class of the error ``op`` raises (None if it raises nothing)."""
    try:
        OPS[op](*args)
    except Exception as e:  # the point: which of the client's classes it is
        return type(e).__name__
    return None


OPS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        model,
        tokenizer,
        sentence,
        snapshot,
        download,
        info,
        tree,
        ls,
        fs_read,
        st_metadata,
        shard_files,
        peft,
        hotswap,
        error,
    )
}


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        op, args = json.loads(line)
        try:
            answer = {"ok": OPS[op](*args)}
        except Exception as e:
            answer = {"error": type(e).__name__, "detail": traceback.format_exc()[-3000:]}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
