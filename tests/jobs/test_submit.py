"""End to end, as the README tells a cluster user: start a head node, `ray job submit` an s1ray
job from the repository with jobs/runtime_env.yaml, wait for SUCCEEDED, read its outputs, stop.

The node listens on 127.0.0.1 only (checked while the job runs) and is stopped by its own
process tree, never with ``ray stop`` (which would also stop other Ray instances here).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
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
    try:
        node = start_head(num_cpus=1)
    except RuntimeError:  # a port picked as free was taken meanwhile by another process: once more
        node = start_head(num_cpus=1)
    try:
        yield node
    finally:
        left = node.stop()
        shutil.rmtree(node.tmpdir, ignore_errors=True)
        assert left == [], f"Ray processes of the test head node still alive: {left}"


MATH500 = "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?"


def write_fixture(d: Path) -> Path:
    """A tiny question source (with one duplicate, one contaminated, one too short, one broken
    line), an evaluation set, and the curate config the job runs; returns the config path."""
    rows = [
        {"problem": "What is the smallest prime number greater than 50 that ends in 3?", "solution": "\\boxed{53}"},
        {"problem": "what is the SMALLEST prime number greater than 50 that ends in  3 ?", "solution": "\\boxed{53}"},
        {"problem": MATH500, "solution": "There are $\\boxed{2}$."},
        {"problem": "Tom has 3 apples and buys 4 more at the shop. How many apples does he have?",
         "solution": "\\boxed{7}"},
        {"problem": "Compute $7$.", "solution": "\\boxed{7}"},
    ]
    lines = [json.dumps(r) for r in rows] + ['{"problem": "broken json", ']
    (d / "pool.jsonl").write_text("\n".join(lines) + "\n")
    (d / "math500.jsonl").write_text(json.dumps({"problem": MATH500, "solution": "\\boxed{2}"}) + "\n")
    config = d / "curate.yaml"
    config.write_text(yaml.safe_dump({
        "sources": [{"name": "pool", "path": str(d / "pool.jsonl"), "preset": "math"}],
        "eval_sets": [{"name": "math500", "path": str(d / "math500.jsonl"), "preset": "math"}],
        "output_dir": str(d / "out"), "batch_size": 8,
    }))
    return config


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


def test_submit_curate_job_to_a_local_head(head, tmp_path):
    config = write_fixture(tmp_path)
    sid = f"s1ray-test-{uuid.uuid4().hex[:8]}"
    # The README's command; the entrypoint first prints where `s1ray` is imported from.
    entry = ("python -c 'import s1ray; print(\"S1RAY_FROM\", s1ray.__file__)' && "
             f"python jobs/curate.py --config {config} plot=false")
    t0 = time.monotonic()
    # working_dir "." in jobs/runtime_env.yaml: the repository, as the command runs from its root.
    submit, sockets = submit_and_watch(head, ["--submission-id", sid, "--runtime-env", "jobs/runtime_env.yaml",
                                              "--", "bash", "-c", entry], timeout=240)
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

    # Code came from the uploaded working_dir, not the machine's installed copy.
    origin = next(line.split()[1] for line in logs.splitlines() if line.startswith("S1RAY_FROM"))
    assert "working_dir_files" in origin and str(head.tmpdir) in origin, origin
    # The driver joined this cluster (RAY_ADDRESS set by the job server), not a private one
    # (s1ray says so; Ray's own "Connecting to existing Ray cluster" is an INFO line, --verbose only).
    assert "[s1ray] joined the Ray cluster at" in logs and "private local Ray instance" not in logs

    # The job's own summary (printed last by s1ray.cli) agrees with the files it wrote.
    summary = json.loads(logs[logs.rindex("\n{\n") + 1:logs.rindex("}") + 1])
    assert summary["input"] == 6 and summary["quarantined"] == 1 and summary["kept"] == 2
    assert summary["accounting"]["ok"]
    pool = pd.read_parquet(summary["paths"]["scored_pool"])
    assert len(pool) == 5 and int(pool["keep"].sum()) == 2
    kept = set(pool.loc[pool["keep"], "question"])
    assert kept == {"What is the smallest prime number greater than 50 that ends in 3?",
                    "Tom has 3 apples and buys 4 more at the shop. How many apples does he have?"}
    assert json.loads(Path(summary["paths"]["report_json"]).read_text())["kept"] == 2
    print(f"job {sid}: {elapsed:.1f}s", file=sys.stderr)
