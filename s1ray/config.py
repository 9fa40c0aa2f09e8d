"""Typed configs loaded from YAML with dotted ``key=value`` overrides.

Every command has one pydantic model (``extra="forbid"``), so a misspelt key or a wrong
type fails before any work starts, with a message that names the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")

# Keys whose values are never printed or written to reports: a key is secret when one of its
# ``_``/``-``/``.``-separated words is a marker ("api_key", "hub_token"), so counts such as
# "max_new_tokens" or "thinking_tokens" stay readable. ``*_env`` keys name a variable: shown.
SECRET_MARKERS = ("key", "token", "secret", "password", "passwd", "apikey", "credentials")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and key."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, types are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(StrictModel):
    """Where to run. ``address`` falls back to ``RAY_ADDRESS``, else a local cluster."""

    address: str | None = None
    num_cpus: int | None = None  # only for a local cluster
    include_dashboard: bool = False


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[x, y]"]`` into a nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``; nested dicts merge, everything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            lines.append(f"  {key}: {e['msg']} (got {shown[:80]})")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


_ENV_REF = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, origin: str = "config", where: str = "") -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in string values, so one config serves every node
    of a cluster (``output_dir: ${S1RAY_STORAGE}/runs/x``). ``$${VAR}`` stays literal. An unset
    variable without a default is an error naming the field; keys are never expanded."""
    if isinstance(value, dict):
        return {k: expand_env(v, origin, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, origin, f"{where}.{i}" if where else str(i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(m: re.Match) -> str:
        escaped, name, default = m.groups()
        if escaped:
            return m.group(0)[1:]
        found = os.environ.get(name)
        if default is not None and not found:  # shell rule: unset or empty takes the default
            return default
        if found is None:
            raise ConfigError(f"{origin}: {where or 'value'}: environment variable {name} is not set "
                              f"(set it, or write ${{{name}:-default}})")
        return found

    return _ENV_REF.sub(one, value)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML file (optional) and ``key=value`` overrides."""
    data = load_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    origin = str(path) if path else "command line"
    data = expand_env(data, origin)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin)) from None


def is_secret_key(key: Any) -> bool:
    words = re.split(r"[_\-.\s]+", str(key).lower())
    return words[-1] != "env" and any(w in SECRET_MARKERS for w in words)


def redact(value: Any) -> Any:
    """A copy of a config dict with secret-looking values replaced, for printing and reports."""
    if isinstance(value, dict):
        return {
            k: ("***" if is_secret_key(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def dump_config(cfg: BaseModel) -> str:
    """YAML of a config with secrets redacted."""
    return yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)


def secret_from_env(var: str | None) -> str | None:
    """Secrets come from environment variables only; configs name the variable."""
    return os.environ.get(var) if var else None
