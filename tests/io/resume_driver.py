"""Kill-and-resume test harness: a driver script plus the helpers that start, kill and clean it up.

As a script (``python resume_driver.py evaluate|curate CONFIG.json CALLS_DIR GATE``) it runs
``s1ray evaluate`` or ``s1ray curate`` in its own local Ray cluster with a hook in front of the
generating step that, per call, claims a number in CALLS_DIR and records the row keys it lets
through (``rows-N.json``). With ``GATE >= 0`` call GATE and all later ones never pass (they
wait until the job is killed), so a test can kill the job once a part file exists and knows it
died before the end: no sleeps, no race.

The job gets its own process group, ``RAY_TMPDIR`` and a marker variable in its environment
(inherited by the Ray processes it starts), so :func:`kill_job` can SIGKILL it and then find
and kill every process of that job by id, never by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

MARKER = "S1RAY_RESUME_TEST_JOB"
HERE = Path(__file__).resolve()


# --- the hook (runs inside Ray workers; shipped by value from this __main__ module) -------------

def claim_and_record(calls_dir: str, gate: int, keys: list[Any]) -> None:
    """Take the next call number; past the gate block until killed, else record ``keys``."""
    folder = Path(calls_dir)
    i = 0
    while True:
        try:
            os.close(os.open(folder / f"claim-{i:05d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            i += 1
    if 0 <= gate <= i:
        while True:  # the test kills the job while we wait here
            time.sleep(0.2)
    tmp = folder / f".rows-{i:05d}.tmp"
    tmp.write_text(json.dumps(keys))
    os.replace(tmp, folder / f"rows-{i:05d}.json")


def _run(kind: str, config: dict[str, Any], calls_dir: str, gate: int) -> dict[str, Any]:
    if kind == "evaluate":
        from s1ray.evaluate import runner
        from s1ray.evaluate.config import EvaluateConfig

        class GatedBatch(runner.EvaluateBatch):
            def run(self, tasks):
                claim_and_record(calls_dir, gate, [t[runner.TASK_KEY] for t in tasks])
                return super().run(tasks)

        runner.EvaluateBatch = GatedBatch  # run_tasks_ray looks the class up at call time
        return runner.run_evaluate(EvaluateConfig.model_validate(config))

    import dataclasses

    import ray

    from s1ray.curate import pipeline
    from s1ray.curate.config import CurateConfig

    index = [s.name for s in pipeline.STAGES].index("scoring")
    stage = pipeline.STAGES[index]

    class Gate:
        """One small actor in front of the stage: a blocked call holds 0.1 CPU, not a task slot."""

        def __call__(self, batch):
            claim_and_record(calls_dir, gate, batch["row_index"].to_pylist())
            return batch

    def gated(ds, cfg):
        ds = ds.map_batches(Gate, batch_format="pyarrow", batch_size=None,
                            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1)
        return stage.score(ds, cfg)

    pipeline.STAGES[index] = dataclasses.replace(stage, score=gated)
    return pipeline.run_curate(CurateConfig.model_validate(config))


# --- helpers for the tests ---------------------------------------------------------------------

def start_job(kind: str, config: dict[str, Any], work: Path, calls_dir: Path, gate: int,
              ray_tmp: Path, marker: str) -> subprocess.Popen:
    """The driver in a new process group with its own Ray temp dir; stdout/stderr to files."""
    calls_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = work / f"{calls_dir.name}.json"
    cfg_path.write_text(json.dumps(config))
    env = {**os.environ, MARKER: marker, "RAY_TMPDIR": str(ray_tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    out = open(work / f"{calls_dir.name}.out", "w")
    err = open(work / f"{calls_dir.name}.err", "w")
    return subprocess.Popen([sys.executable, str(HERE), kind, str(cfg_path), str(calls_dir), str(gate)],
                            env=env, stdout=out, stderr=err, start_new_session=True)


def job_log(proc: subprocess.Popen, work: Path, calls_dir: Path) -> str:
    return (work / f"{calls_dir.name}.err").read_text()[-4000:]


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, what: str, limit_s: float = 600) -> None:
    """Poll ``condition``; fail if the job exits first. ``limit_s`` only stops a broken test from
    hanging forever: the gate holds the job mid-way, so a healthy run always gets there."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"job exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {limit_s} s")
        time.sleep(0.2)


def job_processes(marker: str) -> list[Any]:
    """Live processes (not zombies) of this user whose environment carries ``marker``."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "uids"]):
        try:
            if p.info["uids"] is None or p.info["uids"].real != os.getuid() or p.pid == os.getpid():
                continue
            if p.environ().get(MARKER) == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_job(proc: subprocess.Popen, marker: str) -> None:
    """SIGKILL the driver, then its process group, then any process left with the job's marker
    (Ray processes that moved to another group); waits until none is left."""
    import psutil

    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for _ in range(50):
        left = job_processes(marker)
        if not left:
            return
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=2)
    raise AssertionError(f"processes of the killed job are still alive: {[p.pid for p in job_processes(marker)]}")


def finish_job(proc: subprocess.Popen, work: Path, calls_dir: Path, marker: str, limit_s: float = 600) -> dict:
    """Wait for a job to end by itself, check it succeeded and left no process; its JSON result."""
    try:
        rc = proc.wait(timeout=limit_s)
    finally:
        kill_job(proc, marker)  # a clean exit leaves nothing; this only sweeps after a failure
    assert rc == 0, f"job failed ({rc}):\n{job_log(proc, work, calls_dir)}"
    return json.loads((work / f"{calls_dir.name}.out").read_text().strip().splitlines()[-1])


def recorded(calls_dir: Path) -> list[Any]:
    """Every key the hook let through to generation, over all calls (duplicates kept)."""
    keys = []
    for f in sorted(calls_dir.glob("rows-*.json")):
        keys.extend(json.loads(f.read_text()))
    return keys


if __name__ == "__main__":
    kind, config_path, calls, gate_arg = sys.argv[1:5]
    result = _run(kind, json.loads(Path(config_path).read_text()), calls, int(gate_arg))
    print(json.dumps({k: result[k] for k in ("paths",) if k in result}, default=str))
