"""Quiet by default: s1ray's messages show, Ray's INFO flood and known noise do not; --verbose restores Ray's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from s1ray.logs import quiet_line

# Lines as a 2-CPU `s1ray train` printed them before (prefix "(Actor pid=...)" is added by Ray).
RAY_LINES = [
    ("PlacementGroupCleaner", "Traceback (most recent call last):"),
    ("PlacementGroupCleaner", "ConnectionError: Found multiple active Ray instances: {'127.0.0.1:41413'}"),
    ("TrainController", "Failed to query Ray Train Controller actor state. State API may be temporarily "
                        "unavailable. Continuing to monitor."),
    ("TrainController", "[2026-11-29 12:54:13,455 W 12752 12883] core_worker.cc:2465: Actor with class name: "
                        "'PreemptionWatcher' has constructor arguments in the object store and max_restarts > 0"),
    ("RayTrainWorker", "Reporting training result 1: TrainingReport(checkpoint=None, metrics={'step': 1})"),
    ("RayTrainWorker", "Progress bars disabled. To enable, set `ray.data.DataContext.get_current()."
                       "enable_progress_bars = True`."),
    ("RayTrainWorker", "✔️  Dataset train_035_0 execution finished in 0.00 seconds"),
    ("DatasetManager", "  self.exclude_resources = exclude_resources"),
    (None, "2026-11-29 12:53:18,075\tINFO streaming_executor.py:120 -- Execution plan of Dataset dataset_1: ..."),
    ("RayTrainWorker", ""),
]
OWN_LINES = [
    ("RayTrainWorker", "train smollm2-local: 100%|██████████| 4/4 [00:04<00:00, loss=10.7831, lr=5.00e-06]"),
    ("RayTrainWorker", "Traceback (most recent call last):"),  # a real failure in the training loop
    ("RayTrainWorker", "RuntimeError: no usable training examples"),
    ("EvaluateBatch", "[evaluate] resuming: 40 of 64 tasks already done"),
    ("TrainController", "[2026-11-29 12:54:13,455 E 12752 12883] core_worker.cc:99: worker died unexpectedly"),
]


@pytest.mark.parametrize("actor,line", RAY_LINES)
def test_ray_bookkeeping_lines_are_dropped(actor, line):
    assert quiet_line(line, actor)


@pytest.mark.parametrize("actor,line", OWN_LINES)
def test_s1ray_progress_and_real_errors_stay(actor, line):
    assert not quiet_line(line, actor)


PROBE = textwrap.dedent('''
    import logging, sys, time
    import ray._private.worker as w
    seen = []
    _orig = w.print_worker_logs
    def recording(data, print_file, ignore_prefix=False):
        seen.extend(data["lines"])
        _orig(data, print_file, ignore_prefix)
    w.print_worker_logs = recording   # the sink Ray prints forwarded worker lines through

    from s1ray.logs import setup_logging
    setup_logging(verbose="-v" in sys.argv)
    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig
    import ray, ray.data
    init_ray(RayConfig(num_cpus=1))
    logging.getLogger("s1ray.probe").info("s1ray says hello")
    print("rows", ray.data.range(20).map_batches(lambda b: b, batch_size=5).count(), flush=True)

    @ray.remote
    def noisy():
        import logging, sys
        logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").warning(
            "Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        print("worker progress line", file=sys.stderr, flush=True)
    ray.get(noisy.remote())
    deadline = time.monotonic() + 60   # forwarding is asynchronous: wait for the last line, in order
    while "worker progress line" not in seen and time.monotonic() < deadline:
        time.sleep(0.2)
    print("SEEN", "worker progress line" in seen, flush=True)
    ray.shutdown()
''')


def _start_probe(tmp_path: Path, *args: str) -> subprocess.Popen:
    tmp_path.mkdir(exist_ok=True)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("S1RAY_VERBOSE", "RAY_ADDRESS")}
    env["RAY_TMPDIR"] = str(tmp_path)
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_quiet_by_default_and_verbose_restores_ray_output(ray_tmp):
    # The two probes are independent processes, each with its own Ray instance and RAY_TMPDIR: run
    # them side by side (most of each is waiting on Ray's start-up and shutdown).
    procs = {"quiet": _start_probe(ray_tmp / "q"), "loud": _start_probe(ray_tmp / "v", "-v")}
    try:
        quiet = _finish(procs["quiet"])
        loud = _finish(procs["loud"])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "SEEN True" in quiet.stdout and "rows 20" in quiet.stdout
    assert "[s1ray] s1ray says hello" in quiet.stderr  # s1ray's own INFO, through its handler
    assert "worker progress line" in quiet.stderr  # what a worker prints still comes through ...
    assert "Failed to query Ray Train Controller" not in quiet.stderr + quiet.stdout  # ... Ray's noise does not
    assert "Execution plan of Dataset" not in quiet.stderr and "Started a local Ray instance" not in quiet.stderr
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "SEEN True" in loud.stdout and "[s1ray] s1ray says hello" in loud.stderr
    assert "Failed to query Ray Train Controller" in loud.stderr + loud.stdout
    assert "Execution plan of Dataset" in loud.stderr + loud.stdout
