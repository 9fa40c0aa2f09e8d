"""``s1ray curate`` configuration: sources, evaluation sets, and one section per stage.

Each stage declares its own section (its config class lives beside it, see
:mod:`s1ray.curate.stages`), so ``CurateConfig`` is assembled from the stage list: adding a
stage adds its section. A stage's cached output is keyed only by the sections its scores
depend on (and the stages before it): quality flags need no config at all, so changing a
quality threshold (``min_words``, ``require``, ...) never recomputes them; only dedup, which
prefers quality-passing rows as the kept copy, is recomputed.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import create_model

from s1ray.config import RayConfig, StrictModel
from s1ray.curate.decontam import DecontamConfig
from s1ray.curate.dedup import DedupConfig
from s1ray.curate.quality import QualityConfig
from s1ray.curate.scoring import ScoringConfig
from s1ray.curate.script import ScriptConfig
from s1ray.curate.stages import STAGES
from s1ray.io.readers import SourceConfig

__all__ = ["CurateConfig", "QualityConfig", "DedupConfig", "DecontamConfig", "ScriptConfig", "ScoringConfig"]


class CurateBase(StrictModel):
    """Everything but the stage sections."""

    sources: list[SourceConfig]
    eval_sets: list[SourceConfig] = []  # `name` is the benchmark named in flags
    output_dir: str = "outputs/curate"
    cache: bool = True  # reuse completed stage outputs (keyed by config + input fingerprints)
    # Rows per Ray Data batch of the rule stages (vectorised per batch). Large batches keep the
    # driver's per-task scheduling small (~60 tasks per step at 1M rows); a 59K pool still has 4+.
    batch_size: int = 16384
    plot: bool = True
    ray: RayConfig = RayConfig()


def _section(stage: Any) -> tuple[Any, Any]:
    # Optional sections (the model stages) are absent by default: a plain run is rules only.
    return (Optional[stage.config], None) if stage.optional else (stage.config, stage.config())


CurateConfig = create_model("CurateConfig", __base__=CurateBase, __module__=__name__,
                            **{stage.name: _section(stage) for stage in STAGES})
CurateConfig.__doc__ = "``s1ray curate``: sources, eval sets, output, and one section per stage (in run order)."
