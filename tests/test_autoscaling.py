"""Jobs on an autoscaling cluster that starts empty: Ray's fake multi-node autoscaler on loopback.

The head has 0 CPUs (it runs only drivers, as in cluster.yaml) and the one worker type starts at
0 nodes. A curate job with a scoring stage and a small sweep must ask for their declared
resources (so the autoscaler adds workers) and finish. Sized from the cluster at job start, as
s1ray once did, the scoring actors got 0.01 CPU each and the sweep ran one trial at a time.

The cluster is the ``ray start --head --block`` of tests/jobs/headnode.py with an autoscaling
config (``ray stop`` would kill every Ray of the machine, other test sessions' included), and
every job runs as its own driver process, as ``ray job submit`` would run it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
import headnode  # noqa: E402

pytestmark = pytest.mark.slow

WORKER_CPUS = 2
SCORING_CPUS = 1.0  # declared per scoring actor below; a fitted pool would get ~0.01 on an empty cluster


def autoscaling_config(gcs_port: int) -> dict:
    """The fake provider's cluster config: a 0-CPU head and a CPU worker type from 0 to 3 nodes."""
    return {
        "cluster_name": "s1ray-fake", "max_workers": 3, "head_node_type": "ray.head.default",
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_group": {"resources": {"CPU": WORKER_CPUS}, "node_config": {}, "min_workers": 0, "max_workers": 3},
        },
        "upscaling_speed": 1.0, "idle_timeout_minutes": 5, "auth": {}, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


@pytest.fixture(scope="module")
def cluster():
    tmp = Path(tempfile.mkdtemp(prefix="s1as-", dir="/tmp"))  # short: Ray's socket paths live under it
    port = headnode.free_ports(1)[0]
    config = tmp / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(port)))
    node = headnode.start_head(num_cpus=0, tmpdir=tmp, gcs_port=port, extra_args=(f"--autoscaling-config={config}",),
                               extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_job(node: headnode.HeadNode, command: str, config: dict, work: Path, *overrides: str) -> dict:
    """``s1ray COMMAND`` as a driver of the cluster, with the environment cluster.yaml gives jobs."""
    path = work / f"{command}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**node.env, "RAY_ADDRESS": node.gcs_address, "S1RAY_AUTOSCALING": "1"}
    proc = subprocess.run([sys.executable, "-m", "s1ray.cli", command, "--config", str(path), *overrides],
                          env=env, cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"s1ray {command} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    # The summary is the first JSON object on stdout; workers' log lines may follow it.
    return json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])[0]


def listed(node: headnode.HeadNode, kind: str) -> list[dict]:
    """Every node/actor the cluster has seen, dead ones included (Ray's state API)."""
    out = node.ray("list", kind, "--detail", "--format=json", "--limit=10000", f"--address={node.dashboard_url}")
    assert out.returncode == 0, out.stderr[-2000:]
    return [] if out.stdout.strip().startswith("No resource") else json.loads(out.stdout)


def worker_nodes(node: headnode.HeadNode) -> list[dict]:
    return [n for n in listed(node, "nodes") if not n.get("is_head_node")]


def test_curate_with_a_scoring_stage_scales_up_and_finishes(cluster, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({
        "question": f"How many apples are left when {i + 3} of {4 * i + 9} apples are eaten?",
        "answer": str(3 * i + 6), "thinking": [f"We subtract {i + 3} from {4 * i + 9}."]}) + "\n" for i in range(12)))
    gen = {"model": "tiny:tiny", "max_new_tokens": 4, "batch_size": 4, "num_cpus": SCORING_CPUS}
    cfg = {
        "sources": [{"name": "t", "path": str(pool)}], "output_dir": str(tmp_path / "out"), "batch_size": 4,
        "scoring": {"lengths": {"tokenizer": "tiny:tiny"}, "domains": {"enabled": False},
                    "difficulty": {"solvers": [{"name": "tiny", "generation": gen}]},
                    "pool": {"batch_size": 4, "num_cpus": SCORING_CPUS}},
    }
    before = len(worker_nodes(cluster))
    summary = run_job(cluster, "curate", cfg, tmp_path)
    assert summary["accounting"]["ok"] and summary["input"] == 12 and summary["stages"]["scoring"]["status"] == "computed"
    assert len(worker_nodes(cluster)) > before  # the autoscaler added workers for the job
    pools = [a for a in listed(cluster, "actors") if "ArrowStage" in (a.get("repr_name") or a.get("class_name") or "")
             or "MapWorker" in (a.get("class_name") or "")]
    cpus = sorted({float((a.get("required_resources") or {}).get("CPU", 0)) for a in pools})
    assert pools and cpus == [SCORING_CPUS], f"scoring actors asked for {cpus} CPUs, declared {SCORING_CPUS}"


def test_sweep_starts_every_trial_and_the_autoscaler_holds_them(cluster, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "sweep"))
    from test_driver import scored_pool

    pool = tmp_path / "pool.parquet"
    scored_pool().to_parquet(pool)
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in (2, 3)))
    cfg = {
        "name": "grow", "pool": str(pool), "storage_path": str(tmp_path / "sweeps"),
        "space": {"sizes": [4], "criteria": ["random", "longest"], "seeds": [0]},
        "analysis": {"epsilon": 0.5, "reference": "best"}, "max_failures": 0, "stages": 1,
        "train": {"model": "tiny:tiny", "epochs": 1, "global_batch_size": 2, "block_size": 128,
                  "storage_is_shared": True,  # the fake nodes share this machine's disk
                  "checkpoint_every_steps": 1000, "metrics_every_steps": 1000, "deepspeed": {"zero_stage": 2},
                  "logging": {"tensorboard": False, "progress_bar": False}},
        "evaluate": {"benchmarks": [{"name": "jsonl", "path": str(bench)}], "budgets": [4],
                     "generation": {"max_new_tokens": 4, "batch_size": 4},
                     "budget_forcing": {"max_answer_tokens": 4}, "bootstrap_samples": 10, "progress": False},
    }
    summary = run_job(cluster, "sweep", cfg, tmp_path)
    assert summary["max_concurrent_trials"] == 2  # both trials at once: 0 CPUs now is not the limit
    assert summary["status"] == {"completed": 2}, summary["status"]
    assert worker_nodes(cluster)
