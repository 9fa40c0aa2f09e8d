"""End to end, as the README tells a cluster user: start a head node, `ray job submit` an s1ray
job from the repository with jobs/runtime_env.yaml, wait for SUCCEEDED, read its outputs, stop.

The node listens on 127.0.0.1 only (checked while the job runs) and is stopped by its own
process tree, never with ``ray stop`` (which would also stop other Ray instances here).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from headnode import BIN, start_head

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head():
    node = start_head(num_cpus=1)
    try:
        yield node
    finally:
        left = node.stop()
        assert left == [], f"Ray processes of the test head node still alive: {left}"


def scored_pool(n: int = 60) -> pd.DataFrame:
    """A small scored pool in the columns `s1ray select` reads, six domains."""
    return pd.DataFrame({
        "id": [f"q{i:03d}" for i in range(n)],
        "question": [f"What is {i} + {i}?" for i in range(n)],
        "solution": [f"{i} + {i} = {2 * i}" for i in range(n)],
        "answer": [str(2 * i) for i in range(n)],
        "source_type": ["qfq/openaimath/Algebra" if i % 3 else "gsm8k" for i in range(n)],
        "cot_type": ["math"] * n,
        "thinking": [[f"add {i} to itself " * (1 + i % 7)] for i in range(n)],
        "attempt": [f"\\boxed{{{2 * i}}}" for i in range(n)],
        "attempt_correct": [i % 4 != 0 for i in range(n)],
        "domain": [f"{10 + i % 6:02d}" for i in range(n)],
        "thinking_tokens": [100 + 37 * i for i in range(n)],
        "solver_failures": [i % 3 for i in range(n)],
        "metadata": ["{}"] * n,
    })


def public_sockets(sockets):
    return [(ip, port, name) for ip, port, name in sockets
            if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]


def submit_and_watch(head, args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, set]:
    """Run `ray job submit ARGS` (blocking, as documented) while sampling the node's listening sockets."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head.dashboard_url, *args]
    seen: set = set()
    with subprocess.Popen(cmd, env=head.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(head.listening())
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, ""), seen


def test_submit_select_job_to_a_local_head(head, tmp_path):
    pool = tmp_path / "pool.parquet"
    scored_pool().to_parquet(pool)
    out = tmp_path / "selected"
    config = tmp_path / "select.yaml"
    config.write_text(yaml.safe_dump({"input": str(pool), "output_dir": str(out), "criterion": "s1",
                                      "size": 12, "formats": ["parquet", "jsonl"], "plot": False}))
    sid = f"s1ray-test-{uuid.uuid4().hex[:8]}"
    # The README's command; the entrypoint first prints where `s1ray` is imported from.
    entry = ("python -c 'import s1ray; print(\"S1RAY_FROM\", s1ray.__file__)' && "
             f"python jobs/select_subset.py --config {config} seed=3")
    t0 = time.monotonic()
    submit, sockets = submit_and_watch(head, ["--submission-id", sid, "--runtime-env", "jobs/runtime_env.yaml",
                                              "--working-dir", ".", "--", "bash", "-c", entry], timeout=240)
    elapsed = time.monotonic() - t0
    assert submit.returncode == 0, f"job failed:\n{submit.stdout[-6000:]}"
    assert sockets and public_sockets(sockets) == [], f"listening beyond loopback: {public_sockets(sockets)}"

    with urllib.request.urlopen(f"{head.dashboard_url}/api/jobs/{sid}", timeout=10) as r:
        info = json.load(r)  # what `ray job status` shows
    assert info["status"] == "SUCCEEDED", info
    # jobs/runtime_env.yaml was applied, the working copy shipped as a package.
    assert info["runtime_env"]["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    assert info["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
    logs = head.ray("job", "logs", "--address", head.dashboard_url, sid).stdout

    # Code came from the uploaded working_dir (runtime env), not the machine's installed copy.
    origin = next(line.split()[1] for line in logs.splitlines() if line.startswith("S1RAY_FROM"))
    assert "working_dir_files" in origin and str(head.tmpdir) in origin, origin
    # The job's own summary (printed by s1ray.cli) and its files agree.
    summary = json.loads(logs[logs.index("{\n"):logs.rindex("}") + 1])
    assert summary["size"] == 12 and summary["pool_size"] == 60
    subset = pd.read_parquet(out / "subset.parquet")
    assert len(subset) == 12 and subset["id"].is_unique
    assert sum(1 for _ in open(out / "subset.jsonl")) == 12
    print(f"job {sid}: {elapsed:.1f}s", file=sys.stderr)
