"""``weightstore demo``: the question "why not keep a copy of the weights per task?" answered
with figures measured on a real run (memory, swap latency, training compute, generality)."""

from typing import TYPE_CHECKING, Any

from weightstore.demo.config import DemoConfig

if TYPE_CHECKING:
    from weightstore.demo.run import run_demo

__all__ = ["DemoConfig", "run_demo"]


def __getattr__(name: str) -> Any:
    # On first use: the run brings torch, which the CLI's other commands start without.
    if name == "run_demo":
        from weightstore.demo.run import run_demo

        return run_demo
    raise AttributeError(f"module 'weightstore.demo' has no attribute {name!r}")
