"""jobs/: one thin entrypoint per command, runnable as `python jobs/<x>.py`, and example configs
that name their command on the first line and validate against that command's config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from s1ray import cli
from s1ray.config import load_config

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "jobs").glob("*.py"))
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


def command_of(script: Path) -> str:
    return re.search(r'main\(\["(\w+)", \*sys\.argv\[1:\]\]\)', script.read_text()).group(1)


def test_every_command_has_one_entrypoint():
    commands = [command_of(s) for s in SCRIPTS]
    assert sorted(commands) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_entrypoint_does_not_shadow_the_standard_library(script):
    # `python jobs/x.py` puts jobs/ first on sys.path: jobs/select.py would replace `select`.
    assert script.stem not in sys.stdlib_module_names


def test_entrypoint_runs_as_a_script():
    out = subprocess.run([sys.executable, "jobs/select_subset.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: s1ray select")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_example_config_names_its_command_and_validates(config):
    first = config.read_text().splitlines()[0]
    m = re.fullmatch(r"# s1ray (\w+) --config (\S+)", first)
    assert m, f"{config.name}: first line must be `# s1ray <command> --config jobs/configs/{config.name}`"
    command, path = m.groups()
    assert path == f"jobs/configs/{config.name}"
    load_config(cli._import(cli.COMMANDS[command][0]), config)  # raises ConfigError naming the key
