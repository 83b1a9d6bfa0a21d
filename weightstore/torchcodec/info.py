"""Which decode paths this process would use, so a user can see why a swap is slow."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from weightstore.codec import Codec
from weightstore.codec.fused import library_path
from weightstore.settings import DECODER_ENV, CodecSettings
from weightstore.torchcodec.gpu import nvcomp_available


@dataclass(frozen=True)
class DecodeInfo:
    """``decoder``: the CPU decoder a codec made with ``settings`` uses (``compiled``,
    ``numpy+libzstd`` or ``numpy+python-zstandard``); ``extension``: where the compiled
    kernel is, or None when it was not built; ``forced``: the ``WEIGHTSTORE_DECODER`` value
    if set; ``nvcomp``: nvCOMP's version when installed; ``gpu_decode``: whether objects can
    be decoded on a GPU (CUDA and nvCOMP both present)."""

    decoder: str
    extension: str | None
    forced: str | None
    libzstd: str | None
    python_zstandard: str
    nvcomp: str | None
    cuda_devices: list[str]
    gpu_decode: bool
    threads: int
    cpu_count: int
    torch: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def decode_info(threads: int, settings: CodecSettings | None = None) -> DecodeInfo:
    """Probe the decode paths (loads libzstd and the extension, imports nothing optional but
    nvCOMP's package when it is installed)."""
    import zstandard

    codec = Codec(settings)
    cuda = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    nvcomp = nvcomp_available()
    return DecodeInfo(
        decoder=codec.decoder,
        extension=library_path(),
        forced=os.environ.get(DECODER_ENV),
        libzstd=codec.zstd_version,
        python_zstandard=str(zstandard.__version__),
        nvcomp=nvcomp,
        cuda_devices=cuda,
        gpu_decode=bool(cuda) and nvcomp is not None,
        threads=threads,
        cpu_count=os.cpu_count() or 1,
        torch=str(torch.__version__),
    )
