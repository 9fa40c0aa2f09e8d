"""The Tune sweep end to end on CPU with tiny:tiny: a 2x2 sweep that is killed after its first
finished trial and resumed (finished trials are not redone), a failing criterion retried and
shown in the table, and no trial loading a scoring model."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from s1ray.config import load_config
from s1ray.sweep.config import SweepConfig

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def scored_pool(n: int = 12) -> pd.DataFrame:
    """A scored pool in the shape the scoring stages write, without `solver_failures`
    (so the "difficulty" criterion fails in selection: the failing trial of the test)."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 5 + 2 * i
        steps = " ".join(f"{a} + {k} = {a + k}." for k in range(1 + i % 4))
        rows.append({
            "id": f"q{i:03d}", "source": "synthetic", "source_type": "synthetic/add", "origin": f"test:{i}",
            "question": f"What is {a} + {b}?", "solution": f"\\boxed{{{a + b}}}", "answer": str(a + b),
            "choices": None, "cot_type": "math", "thinking": [f"Add {a} and {b}. {steps} Sum {a + b}."],
            "attempt": f"\\boxed{{{a + b}}}", "attempt_correct": True, "domain": ["algebra", "arith"][i % 2],
            "metadata": "{}", "thinking_tokens": 20 + 7 * i,
        })
    return pd.DataFrame(rows)


def write_setup(tmp: Path) -> Path:
    pool = tmp / "pool.parquet"
    scored_pool().to_parquet(pool)
    bench = tmp / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                             for i in (2, 3)))
    cfg = {
        "name": "t2x2", "pool": str(pool), "storage_path": str(tmp / "sweeps"),
        "space": {"sizes": [4, 8], "criteria": ["s1", "random", "difficulty"], "seeds": [0]},
        "analysis": {"epsilon": 0.5, "reference": "full"},
        "max_failures": 1, "stages": 2, "intermediate_limit": 1,
        "train": {"model": "tiny:tiny", "epochs": 1, "global_batch_size": 2, "block_size": 128,
                  "checkpoint_every_steps": 1000, "metrics_every_steps": 1000,
                  "deepspeed": {"zero_stage": 2}, "logging": {"tensorboard": False, "progress_bar": False}},
        "evaluate": {"benchmarks": [{"name": "jsonl", "path": str(bench)}], "budgets": [4],
                     "generation": {"max_new_tokens": 4, "batch_size": 4},
                     "budget_forcing": {"max_answer_tokens": 4}, "bootstrap_samples": 10, "progress": False},
    }
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def finished_trials(sweep: Path) -> list[Path]:
    return [p.parent for p in sweep.glob("trials/*/trial_state.json") if json.loads(p.read_text())["finished"]]


@pytest.fixture
def own_tmp():
    """A private folder: pytest's basetemp rotation by concurrent sessions must not delete a running sweep."""
    path = Path(tempfile.mkdtemp(prefix="s1ray-sweep-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sweep_interrupted_resumes_without_redoing_finished_trials(own_tmp, request):
    from s1ray.sweep.driver import run_sweep

    tmp_path = own_tmp

    cfg_path = write_setup(tmp_path)
    sweep = tmp_path / "sweeps" / "t2x2"
    # 1) Run the sweep in its own process (its own local Ray) and kill it hard once a trial finished.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "first_run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "s1ray.cli", "sweep", "--config", str(cfg_path)], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 600  # ~40 s on a quiet machine; generous for a loaded one
        while not finished_trials(sweep) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(1.5)  # let Tune write its experiment state
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, nothing else
        proc.wait(timeout=30)
    done_before = {p.name: p.joinpath("attempts.jsonl").read_text().count("\n") for p in finished_trials(sweep)}
    log.close()
    tail = (tmp_path / "first_run.log").read_text()[-3000:]
    assert done_before, f"no trial finished before the kill (exit code {proc.returncode}):\n{tail}"
    assert len(done_before) < 4, "the sweep finished before it could be interrupted"

    # 2) Resume: same config, same name -> Tuner.restore (in the session's Ray, started only now so
    # that two local Ray instances never run at once).
    request.getfixturevalue("ray_local")
    summary = run_sweep(load_config(SweepConfig, cfg_path))
    assert summary["restored"] is True
    table = pd.read_csv(summary["trials_csv"])
    grid = table[table["criterion"] != "difficulty"]
    assert len(grid) == 4 and (grid["status"] == "completed").all(), table.to_string()
    assert sorted(zip(grid["criterion"], grid["size"].astype(str))) == [("random", "4"), ("random", "8"), ("s1", "4"),
                                                            ("s1", "8")]
    assert set(grid["n_rows"]) == {4, 8}
    assert (grid["stage"] == 2).all()
    # One Train run per trial evaluated itself twice (1 question mid-way, both at the end) and
    # the trial says where its time went.
    for trial_id in grid["trial_id"]:
        evals = sorted((sweep / "trials" / trial_id / "eval").iterdir())
        assert len(evals) == 2, evals
        n = [sum(1 for _ in (e / "samples.jsonl").open()) for e in evals]
        assert n == [1, 2], (trial_id, n)
    for col in ("t_train_startup_s", "t_steps_s", "t_eval_s", "t_trial_s"):
        assert (grid[col] > 0).all(), (col, grid[col].tolist())
    assert (grid["t_trial_s"] > grid["t_steps_s"] + grid["t_eval_s"]).all()
    assert not (sweep / "train").exists()  # Train run folders are removed unless asked to keep them
    # Finished trials were not trained again: no new attempt in their log.
    for trial_id, n_attempts in done_before.items():
        assert (sweep / "trials" / trial_id / "attempts.jsonl").read_text().count("\n") == n_attempts
    # The failing criterion is retried (max_failures=1 -> 2 failed attempts) and shown, never missing.
    # Its retry budget spans the resume: however the kill fell, it fails exactly twice in all; an
    # attempt the kill cut off (a start record with no outcome) is not one of them.
    failed = table[table["criterion"] == "difficulty"]
    assert len(failed) == 2 and (failed["status"] == "failed").all()
    assert failed["error"].str.contains("solver_failures").all()
    for trial_id in failed["trial_id"]:
        records = [json.loads(line) for line in (sweep / "trials" / trial_id / "attempts.jsonl").read_text().splitlines()]
        assert sum("failed" in r for r in records) == 2, records
        assert "solver_failures" in records[-1]["failed"]
    # No trial imported scoring-model code.
    assert (grid["scoring_modules_loaded"] == "[]").all()
    # The analysis: no full-pool trial, so it falls back to the best and says so; all files written.
    assert summary["reference"]["used"] == "best"
    report = Path(summary["paths"]["markdown"]).read_text()
    assert "difficulty" in report and "no completed full-pool trial" in report
    assert Path(summary["paths"]["plot"]).stat().st_size > 1000

    # 3) A restored sweep keeps its search space: a changed space is refused, not silently ignored.
    from s1ray.config import ConfigError

    with pytest.raises(ConfigError, match="different search space"):
        run_sweep(load_config(SweepConfig, cfg_path, ["space.seeds=[0, 1]"]))


def test_a_stopped_trials_placement_group_is_released(ray_local):
    """ASHA ends a trial's actor mid-run; the Train run's placement group must not outlive it."""
    from types import SimpleNamespace

    from ray.util.placement_group import placement_group, placement_group_table

    from s1ray.sweep.driver import ReleaseStoppedTrainRuns, release_placement_group

    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    callback = ReleaseStoppedTrainRuns()
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="t0", last_result={"score": 0.1}))  # no run: no-op
    assert placement_group_table(pg)["state"] == "CREATED"
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="t1", last_result={"placement_group_id": pg.id.hex()}))
    deadline = time.time() + 10
    while placement_group_table(pg)["state"] != "REMOVED" and time.time() < deadline:
        time.sleep(0.1)
    assert placement_group_table(pg)["state"] == "REMOVED"
    assert release_placement_group(pg.id.hex()) is False  # already gone: nothing to do


def test_retry_budget_spans_resumes(tmp_path):
    """An attempt cut off by an interruption is not a failure; recorded failures count across resumes."""
    from s1ray.sweep.driver import log_attempt

    log = tmp_path / "attempts.jsonl"
    log_attempt(tmp_path, 1, "t1")  # attempt 1 ...
    log.open("a").write(json.dumps({"failed": "ValueError: no solver_failures column"}) + "\n")  # ... failed
    log_attempt(tmp_path, 1, "t1")  # attempt 2, then the sweep is killed: no outcome
    log_attempt(tmp_path, 1, "t1")  # resumed: the interrupted attempt did not use the budget
    log.open("a").write(json.dumps({"failed": "ValueError: no solver_failures column"}) + "\n")
    with pytest.raises(RuntimeError, match="retry budget.*solver_failures"):
        log_attempt(tmp_path, 1, "t1")
    assert len(log.read_text().splitlines()) == 5  # the refused attempt wrote nothing
