"""tests/gpu/run_on_device.sh, the prepared device check, run here on CPU: it records the machine,
runs tests/gpu (all skipped without CUDA) with its results under $OUT, and returns pytest's status
(5 here: no test ran)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "gpu" / "run_on_device.sh"


def test_script_is_valid_bash():
    for name in ("run_on_device.sh", "fetch_wheels.sh"):
        check = subprocess.run(["bash", "-n", str(REPO / "tests" / "gpu" / name)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_run_on_device_writes_its_results_under_out(tmp_path):
    out, wheels = tmp_path / "out", tmp_path / "no-wheels"
    wheels.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "S1RAY_WHEELS": str(wheels),
           "S1RAY_DEVICE_SITE": str(tmp_path / "site")}
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    # pytest's 5: no test ran (without CUDA the module skips whole) - on a device that is a failure
    assert run.returncode == 5, run.stdout[-3000:] + run.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"env.txt", "gpu-tests.log", "gpu-junit.xml"}
    assert "torch.cuda:" in (out / "env.txt").read_text() and "deepspeed==" in (out / "env.txt").read_text()
    log = (out / "gpu-tests.log").read_text()
    assert "skipped" in log and "no CUDA device" in log
    assert "run_on_device: tests exit status 5, benchmark" in log
    # fewer files than the device tool brings back (8), none deeper than two folders
    assert len(list(out.rglob("*"))) <= 8


def test_a_broken_wheel_stops_the_run(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-0.1-py3-none-any.whl").write_bytes(b"not a zip")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "S1RAY_WHEELS": str(wheels),
           "S1RAY_DEVICE_SITE": str(tmp_path / "site")}
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "installing 1 wheels" in run.stderr
