"""storage_path on S3: a Ray Train run checkpoints there and a re-run resumes from there.

An S3-compatible server (moto's, in this process, on 127.0.0.1 only) stands in for the bucket;
Ray reaches it through the pyarrow ``S3FileSystem`` handed to ``build_trainer`` / ``run_train``.
The run uses the 32B configs' policy at toy size: a model-only checkpoint at the end of every
epoch, ``num_to_keep: 1``. The dummy credentials below are moto's, not an account's.
"""

import json

import pytest

from s1ray.config import ConfigError
from s1ray.train.config import TrainConfig
from s1ray.train.hooks import FailOnce, StepTrace
from s1ray.train.trainer import build_trainer, prepare_data, ray_storage, run_train

pytestmark = pytest.mark.slow

BUCKET = "s1ray-test"


@pytest.fixture(scope="module")
def s3():
    """(filesystem for Ray, filesystem to inspect the bucket): a moto S3 server on loopback, one bucket."""
    import logging

    from moto.server import ThreadedMotoServer
    from pyarrow.fs import S3FileSystem

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = dict(endpoint_override=f"{host}:{port}", scheme="http", region="us-west-2",
                   access_key="moto-test", secret_key="moto-test")  # moto accepts any key
    S3FileSystem(**options, allow_bucket_creation=True).create_dir(BUCKET)  # the bucket exists before the run
    fs = S3FileSystem(**options)
    yield fs
    server.stop()


def listing(fs, prefix: str) -> set[str]:
    from pyarrow.fs import FileSelector

    infos = fs.get_file_info(FileSelector(prefix, recursive=True, allow_not_found=True))
    return {i.path.removeprefix(prefix + "/") for i in infos if i.is_file}


def checkpoint_dirs(files: set[str]) -> set[str]:
    """The checkpoint folders among a run's files (not checkpoint_manager_snapshot.json beside them)."""
    return {p.split("/", 1)[0] for p in files if "/" in p and p.startswith(("checkpoint_", "final_"))}


def steps_done(trace) -> list[int]:
    return [json.loads(line)["step"] for line in (trace / "rank0.jsonl").read_text().splitlines()]


def test_checkpoints_on_s3_and_a_rerun_resumes_from_there(tmp_path, s3, ray_local, save_tiny_model, make_s1k,
                                                          monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    save_tiny_model(tmp_path / "tiny-model", seed=0)
    name = "s3-run"
    cfg = TrainConfig.model_validate({
        "data": {"name": "s1k", "path": str(make_s1k(16)), "preset": "s1k"}, "model": str(tmp_path / "tiny-model"),
        "dtype": "float32", "epochs": 3, "lr": 1e-2, "global_batch_size": 4, "num_workers": 1, "block_size": 256,
        "storage_path": f"s3://{BUCKET}/s1ray/runs", "run_name": name, "output_dir": str(tmp_path / "model"),
        "checkpoint_every_steps": None, "checkpoint_every_epochs": 1, "checkpoint_optimizer_state": False,
        "num_to_keep": 1, "max_failures": 0, "metrics_every_steps": 100, "logging": {"progress_bar": False}})
    trace = tmp_path / "trace"
    run_prefix = f"{BUCKET}/s1ray/runs/{name}"

    # First attempt: fails just after the end-of-epoch-1 checkpoint was uploaded.
    spe = prepare_data(cfg)[1]["stats"]["data/steps_per_epoch"]
    assert spe >= 2
    hooks = (StepTrace(str(trace)), FailOnce(spe + 1, str(tmp_path / "failed.marker")))
    with pytest.raises(Exception, match=f"injected failure at step {spe + 1}"):
        build_trainer(cfg, hooks=hooks, storage_filesystem=s3).fit()
    first = listing(s3, run_prefix)
    epoch1 = f"checkpoint_{spe:07d}"
    assert {f"{epoch1}/hf_model/model.safetensors", f"{epoch1}/resume_state.json"} <= first
    assert checkpoint_dirs(first) == {epoch1}  # once per epoch only
    assert not (tmp_path / "model").exists()

    # Same run name, same bucket: resumes from the S3 checkpoint, finishes, exports locally.
    summary = run_train(cfg, hooks=hooks, storage_filesystem=s3)
    assert summary["metrics"]["step"] == 3 * spe
    done = steps_done(trace)
    assert all(done.count(s) == 1 for s in range(1, spe + 1))  # before the checkpoint: done once
    assert done.count(spe + 1) == 2  # the failed step, redone after the resume
    assert summary["checkpoint"] == f"{run_prefix}/final_{3 * spe:07d}"
    kept = checkpoint_dirs(listing(s3, run_prefix))
    assert kept == {f"final_{3 * spe:07d}"}, kept  # num_to_keep: 1 -- Ray deleted the epoch checkpoints from S3
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(summary["model_dir"])  # the export was copied out of S3


def test_storage_filesystem_needs_a_uri(s1k_module_file):
    cfg = TrainConfig.model_validate({"data": {"name": "s1k", "path": str(s1k_module_file), "preset": "s1k"},
                                      "model": "tiny:tiny", "storage_path": "bucket/runs"})
    with pytest.raises(ConfigError, match="needs a URI such as s3://"):
        ray_storage(cfg, filesystem=object())
    remote = cfg.model_copy(update={"storage_path": "s3://bucket/runs"})
    fs = object()
    assert ray_storage(remote, fs) == ("bucket/runs", fs)  # Ray wants the path on the filesystem
    assert ray_storage(remote) == ("s3://bucket/runs", None)  # pyarrow resolves the URI itself
