"""Typed configs loaded from YAML with dotted ``key=value`` overrides.

Every command has one pydantic model (``extra="forbid"``), so a misspelt key or a wrong
type fails before any work starts, with a message that names the key.

Secrets are marked by type, not guessed from names: a field typed :data:`Secret` (pydantic's
``SecretStr``) is masked wherever a config is printed or saved, and a saved config that still
holds the mask is refused on load. Every other value is printed as itself, so a printed or
saved config (``--print-config``, ``config.yaml``, ``pipeline_config.yaml``, ...) re-runs the
same job. s1ray's own configs hold no secret values at all: they name the environment variable
that holds one (``endpoint.api_key_env``), read where it is used.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import types
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, ValidationError, ValidationInfo, field_validator

T = TypeVar("T", bound="StrictModel")

MASK = "**********"  # how pydantic writes a SecretStr in JSON mode (printed and saved configs)


def _not_the_mask(value: SecretStr) -> SecretStr:
    if value.get_secret_value() == MASK:
        raise ValueError(f"holds {MASK!r}, the mask a printed or saved config shows instead of the secret: "
                         "set the real value (or, better, read it from an environment variable)")
    return value


# The type of a config field that holds a secret value: masked when printed or saved.
Secret = Annotated[SecretStr, AfterValidator(_not_the_mask)]

# Words that mark an environment variable NAME as a secret's (deployment manifests must take
# those from secret references, not literal values): "OPENAI_API_KEY", "HF_TOKEN". Config
# fields are never classified by name: see :data:`Secret`.
SECRET_MARKERS = ("key", "token", "secret", "password", "passwd", "apikey", "credentials")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and key."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, types are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            check_bool_for_number(field.annotation, value)
        return value


def _number_types(annotation: Any) -> tuple[bool, bool]:
    """(takes int/float, takes bool) for a field annotation, through Optional/Union/Annotated."""
    if annotation in (int, float):
        return True, False
    if annotation is bool:
        return False, True
    if get_origin(annotation) in (Union, types.UnionType) or getattr(annotation, "__metadata__", None) is not None:
        found = [_number_types(a) for a in get_args(annotation)]
        return any(f[0] for f in found), any(f[1] for f in found)
    return False, False


def check_bool_for_number(annotation: Any, value: Any) -> None:
    """pydantic turns ``true`` into 1 for an int field (``quality.min_words: true`` became 1):
    refuse a bool where only numbers are meant, also inside a list of numbers."""
    number, boolean = _number_types(annotation)
    if isinstance(value, bool) and number and not boolean:
        raise ValueError(f"expected a number, got the bool {value!r}")
    if get_origin(annotation) in (list, tuple, set) and isinstance(value, (list, tuple)):
        item_args = [a for a in get_args(annotation) if a is not Ellipsis]
        if len(item_args) == 1:
            for v in value:
                check_bool_for_number(item_args[0], v)


class RayConfig(StrictModel):
    """Where to run. ``address`` falls back to ``RAY_ADDRESS``, else a local cluster."""

    address: str | None = None
    num_cpus: int | None = None  # only for a local cluster
    # A local Ray's servers (GCS, raylet, workers, object transfer, agents, metrics, dashboard):
    # on 127.0.0.1 only, or on the machine's network address for other machines to join
    # ("network": see docs/security.md for what that exposes). Ignored when joining a cluster.
    listen: Literal["loopback", "network"] = "loopback"
    include_dashboard: bool = False
    # Can the cluster add nodes? None: a local Ray cannot; a joined one can when its autoscaler
    # (v2) says so or $S1RAY_AUTOSCALING=1. Fixed clusters get actor pools shrunk to fit.
    autoscaling: bool | None = None


def _split_override(item: str) -> tuple[list[str], Any]:
    """``"a.0.b=1"`` -> (["a", "0", "b"], 1); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = safe_load_bounded(raw) if raw.strip() else ""
    except YAMLAliasBomb as e:
        raise ConfigError(f"override {item!r}: {e}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[x, y]"]`` into a nested dict; values are parsed as YAML.

    Kept for callers that merge overrides themselves; ``load_config`` uses ``apply_overrides``,
    which also indexes into lists (``benchmarks.0.limit=100``).
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        parts, value = _split_override(item)
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1]] = value
    return nested


def _field_default(cls: Any, name: str) -> Any:
    """The default of field ``name`` of model ``cls`` as plain data (None when there is none)."""
    field = getattr(cls, "model_fields", {}).get(name) if isinstance(cls, type) else None
    if field is None or field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
    return value


def _model_in(annotation: Any) -> Any:
    """The pydantic model (or list item model) named by a field annotation, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _child_model(cls: Any, part: str | int) -> Any:
    if isinstance(part, int) or not isinstance(cls, type) or not issubclass(cls, BaseModel):
        return cls  # a list index keeps the item model found from the list's annotation
    field = cls.model_fields.get(part)
    return _model_in(field.annotation) if field is not None else None


def apply_overrides(data: dict[str, Any], overrides: Iterable[str], cls: Any = None) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a copy of ``data``.

    A numeric part indexes a list (``benchmarks.0.limit=100``); a list or section the file does
    not set starts from the model's default, so ``benchmarks.0.limit=5`` also works without a file.
    """
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        parts, value = _split_override(item)
        node: Any = data
        model = cls
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.lstrip("-").isdigit():
                    raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth]) or 'value'} is a list; "
                                      f"index it with a number (e.g. {'.'.join(parts[:depth])}.0)")
                index = int(part)
                if not -len(node) <= index < len(node):
                    raise ConfigError(f"override {item!r}: index {index} is out of range "
                                      f"({'.'.join(parts[:depth])} has {len(node)} item(s))")
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])} is a value, not a section")
            if last:
                node[part] = value
                break
            child_model = _child_model(model, part)
            if part not in node or node[part] is None:
                default = _field_default(model, part)
                if not isinstance(default, list) and parts[depth + 1].lstrip("-").isdigit():
                    raise ConfigError(f"override {item!r}: {where} is not set, so it has no item "
                                      f"{parts[depth + 1]} to change; set the whole list ({where}=[...])")
                node[part] = default if isinstance(default, list) else {}
            elif not isinstance(node[part], (dict, list)):
                raise ConfigError(f"override {item!r}: {where} is a value ({node[part]!r}), not a section")
            node = node[part]
            model = child_model
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``; nested dicts merge, everything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class MissingFieldsError(ConfigError):
    """Required keys are missing; ``missing`` lists them (the CLI adds how to pass a config)."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def _model_at(cls: Any, loc: tuple) -> Any:
    model = cls
    for part in loc:
        if model is None:
            return None
        model = _child_model(model, part)
    return model


def did_you_mean(cls: Any, loc: tuple) -> str:
    """`` (did you mean 'lr'?)`` for an unknown key close to a real one at the same place."""
    parent = _model_at(cls, loc[:-1]) if cls is not None else None
    if parent is None or not isinstance(parent, type) or not issubclass(parent, BaseModel) or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(".".join([*map(str, loc[:-1]), c])) for c in close) + "?)"


def _format_validation_error(err: ValidationError, origin: str, cls: Any = None) -> str:
    lines = [f"invalid config ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{did_you_mean(cls, tuple(e['loc']))}")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key missing")
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            lines.append(f"  {key}: {e['msg']} (got {shown[:80]})")
    return "\n".join(lines)


MAX_YAML_VALUES = 100_000  # values a config may expand to through aliases (a real one has < 1,000)


class YAMLAliasBomb(yaml.YAMLError):
    pass


def safe_load_bounded(text: str, max_values: int = MAX_YAML_VALUES) -> Any:
    """``yaml.safe_load`` that refuses a document whose aliases expand to more than ``max_values``
    values ("billion laughs": 9 levels of 9 aliases each is 81 aliases but 387 million values,
    which every later copy of the config would expand in memory)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        open_nodes: set[int] = set()

        def size(n: yaml.Node) -> int:  # shared (aliased) nodes counted once per use, computed once
            if id(n) in open_nodes:
                raise YAMLAliasBomb("an alias refers to the value that contains it (a recursive config)")
            if id(n) not in sizes:
                open_nodes.add(id(n))
                if isinstance(n, yaml.SequenceNode):
                    total = 1 + sum(size(c) for c in n.value)
                elif isinstance(n, yaml.MappingNode):
                    total = 1 + sum(size(k) + size(v) for k, v in n.value)
                else:
                    total = 1
                sizes[id(n)] = total
                open_nodes.discard(id(n))
            if sizes[id(n)] > max_values:
                raise YAMLAliasBomb(f"its aliases (*name) expand to more than {max_values} values; "
                                    "write the values out instead of nesting aliases")
            return sizes[id(n)]

        size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block read_text forever
            raise ConfigError(f"config file {path} is not a regular file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        data = safe_load_bounded(text) or {}
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
        if not found and default is None:  # "${ROOT}/x" would silently become "/x"
            raise ConfigError(f"{origin}: {where or 'value'}: environment variable {name} is set but empty "
                              f"(give it a value, or write ${{{name}:-default}})")
        return found

    return _ENV_REF.sub(one, value)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML file (optional) and ``key=value`` overrides (list indices allowed)."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides, cls)
    origin = str(path) if path else "command line"
    data = expand_env(data, origin)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        message = _format_validation_error(e, origin, cls)
        missing = [".".join(map(str, x["loc"])) for x in e.errors() if x["type"] == "missing"]
        if missing:
            raise MissingFieldsError(message, missing) from None
        raise ConfigError(message) from None


def is_secret_key(name: Any) -> bool:
    """Does an environment variable name look like a secret's (``*_env`` names one: no)?"""
    words = re.split(r"[_\-.\s]+", str(name).lower())
    return words[-1] != "env" and any(w in SECRET_MARKERS for w in words)


def _escape_env(value: Any) -> Any:
    """``${VAR}`` in a value written as ``$${VAR}``: loading the dump gives the value back."""
    if isinstance(value, dict):
        return {k: _escape_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_env(v) for v in value]
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: "$" + m.group(0), value)
    return value


def dump_config(cfg: BaseModel) -> str:
    """YAML of a config that loads back to an equal config; :data:`Secret` fields masked."""
    return yaml.safe_dump(_escape_env(cfg.model_dump(mode="json")), sort_keys=False, allow_unicode=True)


def secret_from_env(var: str | None) -> str | None:
    """Secrets come from environment variables only; configs name the variable."""
    return os.environ.get(var) if var else None
