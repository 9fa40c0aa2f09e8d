"""The curate stage contract: one object per stage, declared at the bottom of its own module.

A stage *scores*: it adds columns to the pool and never removes a row, so scores are computed
once and thresholds change cheaply. Its *verdict* (:attr:`Stage.drop`) then reads those columns
and the stage's config section and gives each row keep ('') or a named drop reason, in the
manner of datatrove's filters. The pipeline, the cache keys, the funnel report and the
scored-pool column docs all iterate :data:`s1ray.curate.stages.STAGES`; nothing else lists
stages. Resources: a stage that runs actors declares them in its config section
(``num_cpus``/``num_gpus``/``concurrency``) and maps them through
:func:`s1ray.resources.map_pool`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa

# Rows an earlier stage drops carry this column (True) while a ``kept_rows_only`` stage runs.
DROPPED_EARLIER = "_dropped_earlier"

Verdict = Callable[[pa.Table, Any], list[tuple[str, np.ndarray]]]


@dataclass(frozen=True)
class Stage:
    """One curate stage.

    ``name`` is also its config section in ``CurateConfig`` (a model of type ``config``, or
    ``None`` when ``optional`` and absent, which disables it; so does ``enabled: false``).
    ``score(ds, cfg)`` returns ``ds`` with ``columns`` added (``cfg``: the whole CurateConfig).
    ``drop(batch, section)`` returns ``[(drop_stage, reason per row)]``, '' = keep, for each of
    ``verdicts`` (the names rows are dropped under in the funnel, by default ``(name,)``).
    ``depends_on`` names the config sections whose values change its scores (its own, unless
    only its verdict reads it), so its cache is reused exactly when they are unchanged. ``kept_rows_only`` stages
    score only rows every earlier stage keeps (model time is not spent on duplicates); their
    cache also depends on every earlier stage. ``resumable(cfg)``: each output row depends on
    its input row only, so finished blocks can be saved and a re-run scores the rest.
    """

    name: str
    config: type
    score: Callable[[Any, Any], Any]
    drop: Verdict
    columns: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    optional: bool = False
    kept_rows_only: bool = False
    resumable: Callable[[Any], bool] = field(default=lambda cfg: False)

    @property
    def drop_stages(self) -> tuple[str, ...]:
        return self.verdicts or (self.name,)

    def section(self, cfg: Any) -> Any:
        return getattr(cfg, self.name, None)

    def enabled(self, cfg: Any) -> bool:
        section = self.section(cfg)
        return section is not None and bool(getattr(section, "enabled", True))
