"""DeepSpeed's accelerator follows the job's ``use_gpu`` inside the worker, not the environment
the worker inherited from the driver (this suite's conftest sets DS_ACCELERATOR=cpu, and a local
Ray hands the driver's environment to every worker)."""

import os

import pytest
from deepspeed.accelerator import real_accelerator

from s1ray.train.accelerator import select_deepspeed_accelerator


@pytest.fixture
def fresh_choice(monkeypatch):
    """DeepSpeed's process-wide choice, restored after the test."""
    monkeypatch.setattr(real_accelerator, "ds_accelerator", real_accelerator.ds_accelerator)
    monkeypatch.setenv("DS_ACCELERATOR", os.environ.get("DS_ACCELERATOR", "cpu"))


def test_a_gpu_job_gets_cuda_though_the_environment_says_cpu(fresh_choice, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    real_accelerator.get_accelerator()  # DeepSpeed has already chosen, from the inherited value
    assert real_accelerator.get_accelerator()._name == "cpu"
    assert select_deepspeed_accelerator(True) == "cuda"
    accel = real_accelerator.get_accelerator()
    assert accel._name == "cuda" and accel.communication_backend_name() == "nccl"
    assert os.environ["DS_ACCELERATOR"] == "cuda"  # what DeepSpeed's ops and subprocesses read


def test_a_cpu_job_gets_cpu_though_the_environment_says_cuda(fresh_choice, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    monkeypatch.setattr(real_accelerator, "ds_accelerator", None)
    assert select_deepspeed_accelerator(False) == "cpu"
    assert real_accelerator.get_accelerator().communication_backend_name() == "gloo"
    assert os.environ["DS_ACCELERATOR"] == "cpu"


def test_inside_a_ray_worker_the_job_setting_wins(ray_local):
    """The real path: a Ray worker started by this driver inherits DS_ACCELERATOR=cpu."""
    @ray_local.remote(num_cpus=0.25)
    def in_worker(use_gpu: bool) -> tuple[str, str]:
        inherited = os.environ.get("DS_ACCELERATOR", "")
        return inherited, select_deepspeed_accelerator(use_gpu)

    assert os.environ["DS_ACCELERATOR"] == "cpu"
    assert ray_local.get(in_worker.remote(True)) == ("cpu", "cuda")
    assert ray_local.get(in_worker.remote(False))[1] == "cpu"
