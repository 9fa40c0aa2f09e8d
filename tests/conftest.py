"""Test-wide settings: offline, loopback-only Ray, CPU DeepSpeed with a cached op build."""

import os
from pathlib import Path

# Before Ray is imported anywhere: keep a local Ray instance on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "s1ray" / "torch_extensions"))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Train V2 polls its workers every 2 s by default, so every Train run of the suite (in-process,
# in sweep trials, in job subprocesses, which inherit this) noticed its end up to 2 s late.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.pop("RAY_ADDRESS", None)
# Endpoint keys are read in the process that sends the request (a Ray worker inherits the
# environment Ray started with), so the HTTP tests' key is set before any Ray starts.
os.environ.setdefault("S1RAY_TEST_KEY", "sk-test-endpoint-key-0123456789")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_local():
    """One private 2-CPU Ray instance on loopback for the whole test session."""
    import ray

    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig

    init_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def save_tiny_model():
    """save_tiny_model(folder, seed=0) -> (model, tokenizer): a tiny:tiny Llama saved as an HF folder."""
    def save(folder: Path, seed: int = 0):
        from s1ray.models.loading import build_tiny_model, load_tokenizer

        tok = load_tokenizer("tiny:tiny")
        model = build_tiny_model("tiny", len(tok), seed=seed)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        return model, tok
    return save


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR of its own (Unix socket paths must stay under 108 bytes)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="s1r-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)

