"""``weightstore demo``: the question "why not keep a copy of the weights per task?" answered
with figures measured on a real run (memory, swap latency, training compute, generality)."""

from weightstore.demo.config import DemoConfig
from weightstore.demo.run import run_demo

__all__ = ["DemoConfig", "run_demo"]
