"""Ray Tune sweeps over subset size and selection criterion, and the smallest-effective-set analysis.

``config`` (SweepConfig, the search space), ``driver`` (the Tune trial and ``run_sweep``),
``analysis`` (pure pandas: which subset is the smallest within epsilon of the reference).
Names are resolved lazily so ``s1ray.sweep.analysis`` works without importing Ray or the
train/evaluate packages.
"""

from typing import Any

__all__ = ["SweepConfig", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name == "SweepConfig":
        from s1ray.sweep.config import SweepConfig

        return SweepConfig
    if name == "run_sweep":
        from s1ray.sweep.driver import run_sweep

        return run_sweep
    raise AttributeError(f"module 's1ray.sweep' has no attribute {name!r}")
