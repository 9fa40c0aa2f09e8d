"""``s1ray pipeline``: curate -> select -> train -> evaluate -> report, chained through storage.

Each stage is the same function its own command runs (``s1ray curate``, ``select``,
``train``, ``evaluate``) and reads the previous stage's output *files*, so any stage can be
re-run alone. The pipeline only fills in the paths that connect them: write
``{output_dir}`` in any string of the config and it is replaced by the run's folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from s1ray.config import RayConfig, StrictModel, dump_config
from s1ray.curate.config import CurateConfig
from s1ray.curate.selection import SelectConfig
from s1ray.evaluate.config import EvaluateConfig
from s1ray.io.writers import write_jsonl
from s1ray.train.config import TrainConfig

Stage = Literal["curate", "select", "train", "evaluate"]
STAGES: tuple[Stage, ...] = ("curate", "select", "train", "evaluate")


class PackagedData(StrictModel):
    """A question set shipped in a Python package, written to ``{output_dir}/data/<name>.jsonl``."""

    name: str
    source: Literal["champ", "reasoning_gym"]
    options: dict[str, Any] = {}


def _fill(value: Any, output_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{output_dir}", output_dir)
    if isinstance(value, dict):
        return {k: _fill(v, output_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, output_dir) for v in value]
    return value


class PipelineConfig(StrictModel):
    output_dir: str = "outputs/pipeline"
    stages: list[Stage] = list(STAGES)
    packaged_data: list[PackagedData] = []
    ray: RayConfig = Field(default_factory=RayConfig)
    curate: CurateConfig
    select: SelectConfig
    train: TrainConfig
    evaluate: EvaluateConfig

    @model_validator(mode="before")
    @classmethod
    def _connect_stages(cls, data: Any) -> Any:
        """Default every stage's input to the previous stage's output, before validation."""
        if not isinstance(data, dict):
            return data
        out = str(Path(data.get("output_dir") or "outputs/pipeline").expanduser().resolve())
        data = _fill(dict(data), out)
        ray = data.get("ray") or {}
        sections = {name: dict(data.get(name) or {}) for name in ("curate", "select", "train", "evaluate")}
        for name, section in sections.items():
            if "ray" in cls.model_fields[name].annotation.model_fields:
                section.setdefault("ray", ray)
        sections["curate"].setdefault("output_dir", f"{out}/curate")
        sections["select"].setdefault("input", f"{out}/curate/scored_pool.parquet")
        sections["select"].setdefault("output_dir", f"{out}/select")
        train = sections["train"]
        train.setdefault("data", {"name": "subset", "path": f"{out}/select/subset.parquet", "preset": "s1k"})
        train.setdefault("storage_path", f"{out}/train")
        train.setdefault("output_dir", f"{out}/model")
        train.setdefault("run_name", "sft")
        evaluate = sections["evaluate"]
        evaluate.setdefault("output_dir", f"{out}/evaluate")
        generation = dict(evaluate.get("generation") or {})
        generation.setdefault("model", train["output_dir"])
        evaluate["generation"] = generation
        return {**data, **sections, "output_dir": out}


def write_packaged_data(items: list[PackagedData], out_dir: Path) -> dict[str, str]:
    """Materialise packaged question sets as JSONL so every stage reads plain files."""
    from s1ray.io.packaged import packaged_rows

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for item in items:
        path = out_dir / f"{item.name}.jsonl"
        write_jsonl(packaged_rows(item.source, item.options), path)
        paths[item.name] = str(path)
    return paths


def _banner(stage: str) -> None:
    print(f"\n{'=' * 20} s1ray pipeline: {stage} {'=' * 20}", flush=True)


def run_pipeline(cfg: PipelineConfig, force: bool = False) -> dict[str, Any]:
    """Run the configured stages in order; returns every stage's summary and the report paths.

    A train stage the memory plan predicts will not fit is refused before curation starts (``force``: run anyway).
    """
    from s1ray.cluster import init_ray
    from s1ray.plan.check import check_train
    from s1ray.report import write_pipeline_report

    if "train" in cfg.stages:
        check_train(cfg.train, force)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_config.yaml").write_text(dump_config(cfg))
    init_ray(cfg.ray)
    results: dict[str, Any] = {"seconds": {}}
    if cfg.packaged_data:
        results["data"] = write_packaged_data(cfg.packaged_data, out / "data")
    runners = {
        "curate": ("s1ray.curate.pipeline", "run_curate"),
        "select": ("s1ray.curate.selection", "run_select"),
        "train": ("s1ray.train.trainer", "run_train"),
        "evaluate": ("s1ray.evaluate.runner", "run_evaluate"),
    }
    import importlib

    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        _banner(stage)
        module, fn = runners[stage]
        t = time.perf_counter()
        run = getattr(importlib.import_module(module), fn)
        # the train stage was checked above (the check runs before hours of curation, not after)
        results[stage] = run(cfg.train, force=True) if stage == "train" else run(getattr(cfg, stage))
        results["seconds"][stage] = round(time.perf_counter() - t, 1)
        (out / "pipeline_summary.json").write_text(json.dumps(results, indent=2, default=str))
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    results["report"] = write_pipeline_report(cfg, results, out)
    (out / "pipeline_summary.json").write_text(json.dumps(results, indent=2, default=str))
    print(results["report"]["summary_text"])
    return {"output_dir": str(out), "report": results["report"]["markdown"], "seconds": results["seconds"]}
