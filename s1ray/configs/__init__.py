"""The example configs, installed with the package (``s1ray configs list`` / ``copy``).

The YAML files here are copies of ``jobs/configs/*.yaml``, where they are edited (and where
``ray job submit`` finds them in the working copy); ``tests/jobs/test_example_configs.py`` fails
when the two differ. After editing one: ``cp jobs/configs/*.yaml s1ray/configs/``.
Each file's first line is the command that runs it, the next comment line says what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class ExampleConfig:
    name: str
    path: Path
    command: str  # the first line, without "# "
    summary: str  # the second line, without "# "


def config_dir() -> Path:
    return Path(str(resources.files(__name__)))


def _comment(line: str) -> str:
    return line[1:].strip() if line.startswith("#") else ""


def example_configs() -> list[ExampleConfig]:
    out = []
    for path in sorted(config_dir().glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines() + ["", ""]
        out.append(ExampleConfig(path.stem, path, _comment(lines[0]), _comment(lines[1])))
    return out


def find_config(name: str) -> Path | None:
    """The packaged config called ``name`` (``sweep_local`` or ``sweep_local.yaml``), else None."""
    stem = Path(name).name
    stem = stem[:-5] if stem.endswith(".yaml") else stem
    if Path(name).name != name and not name.startswith("jobs/configs/"):
        return None  # a path to some other folder is never swapped for a packaged file
    path = config_dir() / f"{stem}.yaml"
    return path if path.is_file() else None
