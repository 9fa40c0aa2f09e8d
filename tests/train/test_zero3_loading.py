"""ZeRO-3 partitioned loading (zero.Init + from_pretrained, the path training workers take for a
model folder) on CPU: the same script tests/gpu runs on CUDA, here with gloo."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "gpu" / "zero3_from_pretrained.py"


def test_zero3_from_pretrained_partitions_and_matches_the_files(tmp_path, save_tiny_model):
    save_tiny_model(tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "model"), "--device", "cpu"], env=env,
                         capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and report["ok"], (report, out.stderr[-2000:])
    assert report["hf_ds_config"] and report["partitioned"] >= 1 and not report["whole_in_process"]
    assert report["compared_with_files"] == report["parameters"] and not report["differ"]
    assert report["zero3_loss"] == report["plain_loss"]  # float32, one rank: the same arithmetic
