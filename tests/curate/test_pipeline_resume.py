"""``s1ray curate``'s model scoring stage killed mid-way (SIGKILL of the driver) resumes from its
saved parts: scored rows are not sent to the models again and the outputs equal an
uninterrupted run's."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq

spec = importlib.util.spec_from_file_location("resume_driver", Path(__file__).parents[1] / "io" / "resume_driver.py")
rd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rd)

TOPICS = ["apples", "triangles", "primes", "trains", "coins", "clocks", "dice", "ladders", "tanks", "ropes",
          "squares", "cubes"]


def curate_config(tmp_path: Path, out: str) -> dict:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({
        "question": f"A puzzle about {t}: how many {t} are left when {i + 3} of {4 * i + 9} are taken away?",
        "answer": str(3 * i + 6), "thinking": [f"We subtract {i + 3} {t} from {4 * i + 9}."]}) + "\n"
        for i, t in enumerate(TOPICS)))
    gen = {"model": "tiny:tiny", "max_new_tokens": 4, "batch_size": 4, "num_cpus": 0.5}
    return {
        # 2 CPUs, as on this machine: every light step of the stage must fit beside the model pools
        # for blocks to reach the driver (and its checkpoint) before the end.
        "ray": {"num_cpus": 2},
        "sources": [{"name": "t", "path": str(pool)}], "output_dir": str(tmp_path / out), "batch_size": 4,
        "scoring": {"lengths": {"tokenizer": "tiny:tiny"}, "domains": {"enabled": False},
                    "difficulty": {"solvers": [{"name": "tiny", "generation": gen}]}, "pool": {"batch_size": 4}},
    }


def test_scoring_killed_midway_resumes_without_regenerating(tmp_path, ray_tmp):
    marker, ref_marker = uuid.uuid4().hex, uuid.uuid4().hex
    rows = list(range(len(TOPICS)))

    # 1. Uninterrupted reference run: every row enters the scoring stage once. It runs beside
    # step 2's job (its own Ray instance, RAY_TMPDIR and marker): independent jobs, started together.
    ref_cfg = curate_config(tmp_path, "ref")
    (ray_tmp / "ref").mkdir()
    ref_proc = rd.start_job("curate", ref_cfg, tmp_path, tmp_path / "calls-ref", -1, ray_tmp / "ref", ref_marker)
    try:
        # 2. Same config, other output dir: 1 of 3 blocks passes the gate; SIGKILL once its part is saved.
        cfg = curate_config(tmp_path, "run")
        out = Path(cfg["output_dir"])
        proc = rd.start_job("curate", cfg, tmp_path, tmp_path / "calls-1", 1, ray_tmp, marker)
        try:
            rd.wait_until(lambda: bool(list(out.glob("cache/scoring-*/parts/part-*.parquet"))), proc, "a saved part")
        finally:
            rd.kill_job(proc, marker)
        assert not rd.job_processes(marker)  # the killed driver's Ray cluster is gone too
    finally:
        rd.finish_job(ref_proc, tmp_path, tmp_path / "calls-ref", ref_marker)
    assert sorted(rd.recorded(tmp_path / "calls-ref")) == rows
    stage_dirs = list(out.glob("cache/scoring-*"))
    assert len(stage_dirs) == 1 and not (stage_dirs[0] / "_SUCCESS").exists()
    assert (out / ".s1ray.lock").exists() and not (out / "manifest.json").exists()  # the killed run's lock stays
    saved = {r for f in stage_dirs[0].glob("parts/part-*.parquet") for r in pq.read_table(f)["row_index"].to_pylist()}
    assert saved and saved < set(rows) and saved <= set(rd.recorded(tmp_path / "calls-1"))

    # 3. Re-run: only the rows not saved enter the stage, each once; then it is stored whole.
    proc = rd.start_job("curate", cfg, tmp_path, tmp_path / "calls-2", -1, ray_tmp, marker)
    result = rd.finish_job(proc, tmp_path, tmp_path / "calls-2", marker)
    assert sorted(rd.recorded(tmp_path / "calls-2")) == sorted(set(rows) - saved)
    printed = (tmp_path / "calls-2.out").read_text()
    assert f"resuming: {len(saved)} of {len(rows)} rows already done, {len(rows) - len(saved)} to go" in printed
    assert (stage_dirs[0] / "_SUCCESS").exists() and not (stage_dirs[0] / "parts").exists()

    ref_out = Path(ref_cfg["output_dir"])
    ref_pool, pool = (pq.read_table(d / "scored_pool.parquet") for d in (ref_out, out))
    assert pool.num_rows == len(rows) and pool.equals(ref_pool)
    assert pool.column("solver_tiny_tokens").null_count < pool.num_rows  # the solver really ran
    assert (out / "kept.jsonl").read_text() == (ref_out / "kept.jsonl").read_text()
    ref_funnel, funnel = (json.loads((d / "funnel.json").read_text()) for d in (ref_out, out))
    for f in (ref_funnel, funnel):
        f.pop("seconds"), f.pop("stages"), f.pop("run_id")
    assert funnel == ref_funnel
    from s1ray.io.outputs import verify_outputs

    assert verify_outputs(out) == [] and not (out / ".s1ray.lock").exists()  # the dead run's lock was broken
    assert Path(result["paths"]["scored_pool"]) == out / "scored_pool.parquet"

    # The stage is stored whole like a computed one, so the next run reuses it as is.
    ref_stage = next(ref_out.glob("cache/scoring-*"))
    assert ref_stage.name == stage_dirs[0].name  # same fingerprint: output_dir is not part of it
    assert pq.read_table(stage_dirs[0] / "data").equals(pq.read_table(ref_stage / "data").sort_by("row_index"))
