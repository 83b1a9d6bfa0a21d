"""The demo's settings: which workload, how much training, how many timed repetitions."""

from __future__ import annotations

from dataclasses import dataclass

from weightstore.errors import InvalidInput

WORKLOADS = ("digits", "minilm")


@dataclass(frozen=True)
class DemoConfig:
    """``steps``: optimizer steps per task; ``checkpoints``: saves per task, evenly spaced, the
    last at the task's end; ``iterations``: timed repetitions per latency figure;
    ``threads``: torch's intra-op threads while training and measuring. ``None`` leaves the
    workload's own default."""

    workload: str = "digits"
    seed: int = 0
    steps: int | None = None
    checkpoints: int | None = None
    iterations: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise InvalidInput(
                f"unknown workload {self.workload!r}: choose one of {', '.join(WORKLOADS)}"
            )
        if self.steps is not None and self.steps < 1:
            raise InvalidInput("steps must be >= 1")
        if self.checkpoints is not None and self.checkpoints < 1:
            raise InvalidInput("checkpoints must be >= 1")
        if self.steps is not None and (self.checkpoints or 1) > self.steps:
            raise InvalidInput("checkpoints cannot outnumber steps")
        if self.threads is not None and self.threads < 1:
            raise InvalidInput("threads must be >= 1")
        if self.iterations is not None and self.iterations < 2:
            raise InvalidInput("iterations must be >= 2 (p50 and p95 need a few runs)")
