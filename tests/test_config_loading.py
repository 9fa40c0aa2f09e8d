"""Typed configs: YAML + dotted overrides; bad keys and types fail naming the key; secret fields masked
by type; a dumped config loads back equal."""

import pytest

from s1ray.config import (MASK, ConfigError, RayConfig, Secret, StrictModel, dump_config, load_config,
                          parse_overrides, secret_from_env)


class Endpoint(StrictModel):
    base_url: str = "http://localhost"
    api_key: Secret | None = None
    api_key_env: str | None = "OPENAI_API_KEY"


class Train(StrictModel):
    lr: float = 1e-5
    epochs: int = 1
    tags: list[str] = []


class Job(StrictModel):
    name: str
    train: Train = Train()
    endpoint: Endpoint = Endpoint()
    ray: RayConfig = RayConfig()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: demo\ntrain:\n  lr: 0.001\n  epochs: 2\n")
    cfg = load_config(Job, path, ["train.epochs=5", "train.tags=[a, b]", "ray.num_cpus=2"])
    assert cfg.name == "demo" and cfg.train.lr == 0.001 and cfg.train.epochs == 5
    assert cfg.train.tags == ["a", "b"] and cfg.ray.num_cpus == 2


def test_parse_overrides_nests_and_parses_yaml_values():
    assert parse_overrides(["a.b=1", "a.c=x", "d=true", "e="]) == {"a": {"b": 1, "c": "x"}, "d": True, "e": ""}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides(["a..b=1"])


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: demo\ntrain:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        load_config(Job, path)
    with pytest.raises(ConfigError, match=r"train\.nope: unknown key"):
        load_config(Job, None, ["name=x", "train.nope=1"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError) as e:
        load_config(Job, None, ["name=x", "train.epochs=many"])
    assert "train.epochs" in str(e.value) and "many" in str(e.value)
    with pytest.raises(ConfigError, match="name"):
        load_config(Job, None, [])  # missing required key


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Job, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Job, bad)


def test_dump_masks_secret_fields_but_not_variable_names(monkeypatch, tmp_path):
    cfg = load_config(Job, None, ["name=x", "endpoint.api_key=sk-very-secret"])
    assert cfg.endpoint.api_key.get_secret_value() == "sk-very-secret" and "sk-very" not in repr(cfg)
    text = dump_config(cfg)
    assert "sk-very-secret" not in text and MASK in text
    assert "OPENAI_API_KEY" in text  # *_env names the variable, it is not a secret
    (tmp_path / "dumped.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"endpoint\.api_key: .*mask"):
        load_config(Job, tmp_path / "dumped.yaml")
    monkeypatch.setenv("MY_TOKEN", "t0k")
    assert secret_from_env("MY_TOKEN") == "t0k" and secret_from_env(None) is None


def test_env_variables_expand_in_string_values(tmp_path, monkeypatch):
    """`${VAR}` / `${VAR:-default}` in values: a cluster config names the shared storage once."""
    monkeypatch.setenv("S1RAY_STORAGE", "/mnt/shared")
    monkeypatch.delenv("S1RAY_UNSET_FOR_TEST", raising=False)
    monkeypatch.setenv("S1RAY_EMPTY_FOR_TEST", "")
    path = tmp_path / "job.yaml"
    path.write_text("name: ${S1RAY_STORAGE}/runs/demo\n"
                    "train:\n  tags: ['${S1RAY_UNSET_FOR_TEST:-local}', 'x${S1RAY_EMPTY_FOR_TEST:-dflt}',\n"
                    "         '$${S1RAY_STORAGE}', '$$x$$ and ${1}']\n")
    cfg = load_config(Job, path)
    assert cfg.name == "/mnt/shared/runs/demo"
    # default when unset or empty (as the shell does); $${...} stays literal; other $ text is untouched
    assert cfg.train.tags == ["local", "xdflt", "${S1RAY_STORAGE}", "$$x$$ and ${1}"]
    # set but empty, without a default: an error, not "${ROOT}/x" silently turned into "/x"
    with pytest.raises(ConfigError, match="S1RAY_EMPTY_FOR_TEST is set but empty") as e:
        load_config(Job, path, ["name=${S1RAY_EMPTY_FOR_TEST}/x"])
    assert "name" in str(e.value) and str(path) in str(e.value)
    # overrides expand too, and replace a file value before it is expanded
    cfg = load_config(Job, path, ["name=${S1RAY_STORAGE}/other"])
    assert cfg.name == "/mnt/shared/other"


def test_unset_env_variable_is_an_error_naming_field_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("S1RAY_UNSET_FOR_TEST", raising=False)
    path = tmp_path / "job.yaml"
    path.write_text("name: demo\ntrain:\n  tags: [a, '${S1RAY_UNSET_FOR_TEST}/x']\n")
    with pytest.raises(ConfigError) as e:
        load_config(Job, path)
    message = str(e.value)
    assert "train.tags.1" in message and "S1RAY_UNSET_FOR_TEST" in message and str(path) in message
    # an override that replaces the field removes the need for the variable
    assert load_config(Job, path, ["train.tags=[a]"]).train.tags == ["a"]


# --- overrides into lists, "did you mean", missing keys (issue 15: a CLI people enjoy) ---

class Bench(StrictModel):
    name: str
    limit: int | None = None


class Eval(StrictModel):
    benchmarks: list[Bench] = [Bench(name="math500")]
    budgets: list[int]
    train: Train = Train()


def test_list_index_overrides_change_one_item(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("budgets: [1, 2]\nbenchmarks:\n  - {name: a}\n  - {name: b, limit: 3}\n")
    cfg = load_config(Eval, path, ["benchmarks.0.limit=100", "benchmarks.-1.name=c", "budgets.1=7"])
    assert [(b.name, b.limit) for b in cfg.benchmarks] == [("a", 100), ("c", 3)]
    assert cfg.budgets == [1, 7]
    # A list the file does not set starts from the model's default list.
    cfg = load_config(Eval, None, ["budgets=[8]", "benchmarks.0.limit=5"])
    assert [(b.name, b.limit) for b in cfg.benchmarks] == [("math500", 5)]


def test_list_index_errors_are_clear(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("budgets: [1]\nbenchmarks: [{name: a}]\n")
    with pytest.raises(ConfigError, match=r"index 2 is out of range \(benchmarks has 1 item"):
        load_config(Eval, path, ["benchmarks.2.limit=1"])
    with pytest.raises(ConfigError, match="benchmarks is a list; index it with a number"):
        load_config(Eval, path, ["benchmarks.limit=1"])
    with pytest.raises(ConfigError, match=r"budgets is not set, so it has no item 0"):
        load_config(Eval, None, ["budgets.0=1"])
    with pytest.raises(ConfigError, match=r"budgets.0 is a value"):
        load_config(Eval, path, ["budgets.0.x=1"])


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as e:
        load_config(Job, None, ["name=x", "train.lrr=0.1", "endpoint.base_ur=h", "zzzz=1"])
    msg = str(e.value)
    assert "train.lrr: unknown key (did you mean 'train.lr'?)" in msg
    assert "endpoint.base_ur: unknown key (did you mean 'endpoint.base_url'?)" in msg
    assert "zzzz: unknown key\n" in msg + "\n" and "zzzz: unknown key (" not in msg


def test_missing_required_keys_are_listed():
    from s1ray.config import MissingFieldsError

    with pytest.raises(MissingFieldsError) as e:
        load_config(Eval, None, [])
    assert e.value.missing == ["budgets"] and "budgets: required key missing" in str(e.value)


def test_dump_loads_back_equal_with_literal_dollar_braces(tmp_path, monkeypatch):
    """Values that hold ``${...}`` after expansion (an escaped ``$${X}``, a variable's value) are
    written escaped, so loading the dump does not expand them a second time."""
    monkeypatch.setenv("S1RAY_ODD_FOR_TEST", "/data/${NOT_A_VAR}")
    path = tmp_path / "job.yaml"
    path.write_text("name: ${S1RAY_ODD_FOR_TEST}\ntrain:\n  tags: ['$${HOME}', 'plain $x', 'a $$${HOME} b']\n")
    cfg = load_config(Job, path)
    assert cfg.name == "/data/${NOT_A_VAR}" and cfg.train.tags == ["${HOME}", "plain $x", "a $${HOME} b"]
    (tmp_path / "dumped.yaml").write_text(dump_config(cfg))
    assert load_config(Job, tmp_path / "dumped.yaml") == cfg
