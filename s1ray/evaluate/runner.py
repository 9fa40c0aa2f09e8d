"""``s1ray evaluate``: every (question, method, budget) is one row of a Ray Data actor pool.

Each actor loads the model once and runs budget forcing (or a baseline) on its batches with
per-row budgets, then grades. The driver saves every finished block under
``<output_dir>/parts-<key>/`` as it arrives (``key``: a fingerprint of everything that changes
the generations, :func:`evaluation_key`), so a re-run of a job that died generates only the
tasks not saved yet. Then it writes samples JSONL, a summary (JSON + Markdown) and the
test-time scaling plot (accuracy vs average thinking tokens, one point per budget, as in s1's
Figure 1). Delete the parts folder to generate everything again.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from s1ray.config import ConfigError, dump_config
from s1ray.evaluate.benchmarks import format_question, load_benchmark
from s1ray.evaluate.budget_forcing import ForcedResult, budget_force, rejection_sample
from s1ray.evaluate.config import EvaluateConfig
from s1ray.evaluate.metrics import markdown_table, summarize
from s1ray.grading import grade
from s1ray.io.checkpoint import BlockCheckpoint, config_key, jsonable
from s1ray.io.writers import write_jsonl

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("prompt", "generation", "thinking_tokens", "answer", "answer_tokens", "forced_stop",
                  "continuations", "finish_reason", "error", "extracted", "correct", "grade_reason", "draws",
                  "min_thinking_tokens", "stop_reason", "gave_up")


def build_tasks(cfg: EvaluateConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One task per question x method x budget, plus per-benchmark load statistics."""
    tasks, stats = [], {}
    for b in cfg.benchmarks:
        bench = load_benchmark(b)
        stats[bench.name] = {"rows": bench.n_rows, "questions": len(bench.questions),
                             "quarantined": len(bench.quarantined),
                             "quarantine_examples": [q["reason"] + " @ " + q["file"] + ":" + q["row"]
                                                     for q in bench.quarantined[:5]]}
        for q in bench.questions:
            user = format_question(q, cfg.math_instruction, cfg.choice_instruction)
            for method in cfg.methods:
                for budget in cfg.budgets:
                    tasks.append({"id": q["id"], "benchmark": q["benchmark"], "method": method, "budget": budget,
                                  "user": user, "answer_ref": q["answer"], "kind": q["kind"],
                                  "choices": json.dumps(q["choices"]) if q["choices"] else ""})
    # Batches of one method and budget finish together: no batch waits on its longest row's budget.
    tasks.sort(key=lambda t: (t["method"], t["budget"]))
    return tasks, stats


class EvaluateBatch:
    """Ray Data callable class: one generator per actor; runs and grades a batch of tasks."""

    def __init__(self, cfg: EvaluateConfig, generator: Any = None):
        from s1ray.models.generation import make_generator

        self.cfg = cfg
        self.generator = generator if generator is not None else make_generator(cfg.generation)

    def prompt(self, task: dict[str, Any]) -> str:
        user = task["user"]
        if task["method"] == "token_conditional":
            user = f"{user}\n\n{self.cfg.token_conditional_prompt.format(budget=task['budget'])}"
        return self.generator.chat_prompt(user, system=self.cfg.system_prompt)

    def run(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg, bf = self.cfg, self.cfg.budget_forcing
        results: list[ForcedResult | None] = [None] * len(tasks)
        draws = [1] * len(tasks)
        for method in ("budget_forcing", "token_conditional", "rejection_sampling"):
            idx = [i for i, t in enumerate(tasks) if t["method"] == method]
            if not idx:
                continue
            prompts = [self.prompt(tasks[i]) for i in idx]
            budgets = [int(tasks[i]["budget"]) for i in idx]
            uncapped = [max(b + 1, int(b * cfg.uncapped_factor)) for b in budgets]
            if method == "budget_forcing":
                out = budget_force(self.generator, prompts, bf, max_thinking_tokens=budgets)
                got_draws = [1] * len(idx)
            elif method == "token_conditional":
                out = budget_force(self.generator, prompts, bf, max_thinking_tokens=uncapped, num_waits=0,
                                   min_thinking_tokens=0)
                got_draws = [1] * len(idx)
            else:
                out, got_draws = rejection_sample(self.generator, prompts, bf, budgets, cfg.rejection.max_samples,
                                                  cfg.rejection.temperature, uncapped, cfg.rejection.max_rounds)
            for i, r, d in zip(idx, out, got_draws):
                results[i], draws[i] = r, d
        rows = []
        for t, r, d in zip(tasks, results, draws):
            assert r is not None
            choices = json.loads(t["choices"]) if t["choices"] else None
            response = (bf.final_answer or "") + " " + r.answer
            g = grade(response, t["answer_ref"], choices, kind=t["kind"])
            if g.correct is None and r.thinking and cfg.grade_from == "answer_then_generation":
                # nothing in the answer (e.g. cut at max_answer_tokens): look at the whole generation
                g2 = grade(r.generation, t["answer_ref"], choices, kind=t["kind"])
                if g2.correct is not None:
                    g = g2
                    g.reason = "from the full generation: " + g.reason
            min_tok = bf.min_thinking_tokens if t["method"] == "budget_forcing" else None
            rows.append({**t, **r.to_dict(), "extracted": g.extracted, "correct": g.correct,
                         "grade_reason": g.reason, "draws": d, "min_thinking_tokens": min_tok})
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["id"])
        tasks = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()} for i in range(n)]
        rows = self.run(tasks)
        return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}


TASK_KEY = "_task"  # resume key of a task while it runs; not in the samples


def task_keys(tasks: list[dict[str, Any]]) -> list[str]:
    """One key per task: (benchmark, id, method, budget), plus the occurrence number so a
    question that appears twice in a benchmark (same id) still gets two samples."""
    seen: dict[tuple, int] = {}
    keys = []
    for t in tasks:
        k = (t["benchmark"], t["id"], t["method"], int(t["budget"]))
        seen[k] = seen.get(k, -1) + 1
        keys.append(json.dumps([*k, seen[k]]))
    return keys


def _model_fingerprint(model: str) -> Any:
    """A local model folder by its files' names, sizes and times: re-training into the same
    folder must not reuse generations of the old weights (content hashing would read GBs)."""
    path = Path(model)
    if not path.is_dir():
        return model
    return [model] + sorted([str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns]
                            for f in path.rglob("*") if f.is_file())


def evaluation_key(cfg: EvaluateConfig, tasks: list[dict[str, Any]]) -> str:
    """Fingerprint of what changes the samples: model (and its files), generation settings
    except actor placement, grading, budget forcing, methods, budgets, benchmarks, rejection sampling,
    prompts, seed, and the tasks themselves (the benchmark files' content). Not output_dir,
    progress, bootstrap or Ray settings: those leave every sample as it is."""
    gen = cfg.generation.model_dump(mode="json", exclude={"concurrency", "num_cpus", "num_gpus", "accelerator_type"})
    return config_key(
        "evaluate-v1", gen, _model_fingerprint(cfg.generation.model), cfg.grade_from,
        cfg.budget_forcing.model_dump(mode="json"), cfg.methods, cfg.budgets,
        [b.model_dump(mode="json") for b in cfg.benchmarks], cfg.rejection.model_dump(mode="json"),
        cfg.token_conditional_prompt, cfg.uncapped_factor, cfg.system_prompt, cfg.math_instruction,
        cfg.choice_instruction, cfg.seed, tasks)


def parts_dir(cfg: EvaluateConfig, tasks: list[dict[str, Any]]) -> Path:
    return Path(cfg.output_dir) / f"parts-{evaluation_key(cfg, tasks)}"


def run_tasks_ray(cfg: EvaluateConfig, tasks: list[dict[str, Any]], resume: bool = False) -> list[dict[str, Any]]:
    """Run every task on an actor pool; one sample per task, in task order.

    With ``resume``, each finished block is saved under :func:`parts_dir` as it arrives and
    tasks found there are not run again.
    """
    keys = task_keys(tasks)
    keyed = [{**t, TASK_KEY: k} for t, k in zip(tasks, keys)]
    store = BlockCheckpoint(parts_dir(cfg, tasks), (TASK_KEY,), "jsonl",
                            warn=lambda m: _progress(f"warning: {m}")) if resume else None
    by_key: dict[str, dict[str, Any]] = {}
    if store is not None:
        wanted = set(keys)
        for block in store.load()[0]:
            by_key.update((r[TASK_KEY], r) for r in block if r[TASK_KEY] in wanted)
        if by_key:
            _progress(f"resuming: {len(by_key)} of {len(tasks)} tasks already done, "
                      f"{len(tasks) - len(by_key)} to go ({store.folder})")
    todo = [t for t in keyed if t[TASK_KEY] not in by_key]
    if todo:
        for block in _generate(cfg, todo):
            rows = [jsonable(_plain(r)) for r in block.to_pylist()]
            for r in rows:
                if TASK_KEY not in r:
                    raise RuntimeError(f"evaluation row without its {TASK_KEY!r} field (benchmark "
                                       f"{r.get('benchmark')!r}, id {r.get('id')!r}): EvaluateBatch.run must "
                                       "return every task field")
            if store is not None:
                store.save(rows)
            by_key.update((r[TASK_KEY], r) for r in rows)
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(tasks)} tasks got no sample, e.g. {missing[0]}")
    return [{k: v for k, v in by_key[key].items() if k != TASK_KEY} for key in keys]


def _progress(message: str) -> None:
    """Progress on stderr: the CLI prints its JSON summary on stdout."""
    log.info(message)
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def _generate(cfg: EvaluateConfig, tasks: list[dict[str, Any]]):
    """Output blocks of the actor pool as they finish (any order)."""
    import pyarrow as pa
    import ray

    from s1ray.resources import Resources, fit_here, map_pool

    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
    resources = fit_here({"evaluate": Resources.of(cfg.generation)})["evaluate"]
    # One input block per batch: each actor call returns its own output block, which the
    # driver saves at once (blocks of several batches would come back only when all finish).
    bs = cfg.generation.batch_size
    blocks = [pa.Table.from_pylist(tasks[i:i + bs]) for i in range(0, len(tasks), bs)]
    ds = map_pool(ray.data.from_arrow(blocks), EvaluateBatch, resources, batch_size=bs, batch_format="numpy",
                  constructor_kwargs={"cfg": cfg})
    # No prefetch: with it, a finished block is handed over only once the next one is done.
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


def plot_scaling(summary: dict[str, Any], path: Path) -> None:
    """Accuracy against average thinking tokens, one point per budget and a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(summary)
    fig, axes = plt.subplots(1, len(benches), figsize=(5.2 * len(benches), 4.2), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        for method, m in summary[bench].items():
            xs = [b["avg_thinking_tokens"] for b in m["budgets"]]
            ys = [100 * b["accuracy"] for b in m["budgets"]]
            err = np.array([[100 * (b["accuracy"] - b["ci95"][0]) for b in m["budgets"]],
                            [100 * (b["ci95"][1] - b["accuracy"]) for b in m["budgets"]]])
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=method.replace("_", " "))
            for x, y, b in zip(xs, ys, m["budgets"]):
                ax.annotate(str(b["budget"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        top = max([100 * b["ci95"][1] for m in summary[bench].values() for b in m["budgets"]] + [0])
        ax.set_ylim(0, min(100, max(10, top + 5)))  # an all-zero curve still reads as a percentage
        ax.set_title(bench)
        ax.set_xlabel("average thinking tokens")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Test-time scaling (labels: thinking budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


OUTPUTS = ["samples.jsonl", "summary.json", "summary.md", "scaling.png", "config.yaml"]


def write_outputs(cfg: EvaluateConfig, samples: list[dict[str, Any]], summary: dict[str, Any],
                  stats: dict[str, Any], seconds: float) -> dict[str, str]:
    """Samples, summary, plot and config, staged and swapped in as one unit (:mod:`s1ray.io.outputs`)."""
    from s1ray.io.outputs import staged_outputs

    out = Path(cfg.output_dir)
    with staged_outputs(out, "evaluate", OUTPUTS, cfg) as staged:
        paths = {"samples": "samples.jsonl", "summary_json": "summary.json", "summary_md": "summary.md",
                 "plot": "scaling.png", "config": "config.yaml"}
        p = {k: staged.path(v) for k, v in paths.items()}
        write_jsonl(samples, p["samples"])
        full = {"metrics": summary, "benchmarks": stats, "n_samples": len(samples), "seconds": round(seconds, 1),
                "model": cfg.generation.model, "backend": cfg.generation.backend, "budgets": cfg.budgets,
                "methods": cfg.methods}
        p["summary_json"].write_text(json.dumps(full, indent=2, default=str), encoding="utf-8")
        header = (f"# Evaluation of `{cfg.generation.model}` ({cfg.generation.backend})\n\n"
                  f"{len(samples)} samples, budgets {cfg.budgets} thinking tokens, {seconds:.0f} s.\n\n")
        p["summary_md"].write_text(header + markdown_table(summary), encoding="utf-8")
        plot_scaling(summary, p["plot"])
        p["config"].write_text(dump_config(cfg), encoding="utf-8")
        staged.commit(rows={"samples.jsonl": len(samples)})
    return {k: str(out / v) for k, v in paths.items()}


def check_context(cfg: EvaluateConfig) -> None:
    """Refuse, before any actor starts, an answer reserve that fills the model's whole context
    (known from the config or the model's own config; the config validator sees only the former)."""
    from s1ray.models.generation import configured_context

    if cfg.generation.backend == "openai" and cfg.generation.max_model_len is None:
        return  # an endpoint's context is known only from the config
    context = configured_context(cfg.generation)
    floor = cfg.budget_forcing.answer_floor
    if context is not None and floor >= context:
        raise ConfigError(f"budget_forcing.answer_reserve_tokens ({floor}"
                          f"{'' if cfg.budget_forcing.answer_reserve_tokens is not None else ', default: max_answer_tokens'}"
                          f") leaves no room to think in the context of {cfg.generation.model!r} ({context} tokens); "
                          "set budget_forcing.answer_reserve_tokens to what an answer needs")


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate a model on the configured benchmarks, budgets and methods."""
    from s1ray.cluster import init_ray

    from s1ray.io.outputs import output_lock

    t0 = time.time()
    check_context(cfg)
    tasks, stats = build_tasks(cfg)
    log.info("evaluating %d tasks (%s)", len(tasks), ", ".join(f"{k}: {v['questions']} questions"
                                                                for k, v in stats.items()))
    with output_lock(cfg.output_dir, "evaluate"):  # one run per folder: also its resumable parts
        init_ray(cfg.ray)
        samples = run_tasks_ray(cfg, tasks, resume=True)
        samples.sort(key=lambda s: (s["benchmark"], s["method"], s["budget"], s["id"]))
        summary = summarize(samples, cfg.bootstrap_samples, cfg.seed)
        paths = write_outputs(cfg, samples, summary, stats, time.time() - t0)
    return {"summary": summary, "paths": paths}
