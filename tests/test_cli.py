"""`s1ray` CLI: help, config errors with exit code 2 naming the key, overrides, printed configs that
re-run as they are (every example config), secrets masked by type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s1ray import cli
from s1ray.config import MASK, Secret, StrictModel

BIN = Path(sys.executable).parent


class DemoEndpoint(StrictModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # names a variable: shown
    api_key: Secret | None = None  # a value: never shown


class DemoConfig(StrictModel):
    name: str = "demo"
    steps: int = 1
    hub_token: Secret | None = None
    max_new_tokens: int = 512  # a count that merely contains "token": shown
    key_words: str = "concepts"  # names that look secret are not: only the type says so
    token_prompt: str = "think for up to {budget} tokens"
    endpoint: DemoEndpoint = DemoEndpoint()
    mirrors: list[DemoEndpoint] = []


def run_demo(cfg: DemoConfig) -> dict:
    if cfg.name == "unsafe":
        from s1ray.storage import UnsafeStorageError

        raise UnsafeStorageError("checkpoint /x is world-writable (mode 0777): ...")
    return {"name": cfg.name, "steps": cfg.steps, "has_token": cfg.hub_token is not None}


@pytest.fixture
def demo(monkeypatch):
    """A `demo` command wired through the real CLI, with secret-bearing fields."""
    monkeypatch.setitem(cli.COMMANDS, "demo", (f"{__name__}:DemoConfig", f"{__name__}:run_demo", "test command"))


def test_help_lists_every_command_without_importing_heavy_stacks():
    out = subprocess.run([str(BIN / "s1ray"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout
    probe = ("import sys; from s1ray.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('ray', 'torch', 'deepspeed', 'transformers') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_command_help_shows_config_and_overrides(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["select", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--print-config" in out and "key=value" in out


def test_unknown_key_exits_2_and_names_it(capsys):
    assert cli.main(["select", "input=p.parquet", "output_dir=o", "sizee=3"]) == 2
    err = capsys.readouterr().err
    assert "sizee: unknown key" in err and err.startswith("s1ray select:")


def test_unknown_nested_key_and_bad_type_are_named(tmp_path, capsys):
    cfg = tmp_path / "sel.yaml"
    cfg.write_text("input: p.parquet\noutput_dir: o\nparams:\n  math_min_tokenz: 10\n")
    assert cli.main(["select", "--config", str(cfg), "size=lots"]) == 2
    err = capsys.readouterr().err
    assert "params.math_min_tokenz: unknown key" in err
    assert "size:" in err and "'lots'" in err and str(cfg) in err


def test_missing_or_broken_config_file_exits_2(tmp_path, capsys):
    assert cli.main(["select", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    assert cli.main(["select", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_malformed_override_exits_2(capsys):
    assert cli.main(["select", "input=p", "output_dir=o", "size"]) == 2
    assert "'size' is not of the form key=value" in capsys.readouterr().err


def test_overrides_merge_into_the_file_and_print(tmp_path, capsys):
    cfg = tmp_path / "sel.yaml"
    cfg.write_text(yaml.safe_dump({"input": "pool.parquet", "output_dir": "out", "size": 100,
                                   "params": {"math_min_tokens": 4000, "forced": True}}))
    assert cli.main(["select", "--config", str(cfg), "--print-config", "size=7", "params.forced=false",
                     "formats=[parquet]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["size"] == 7 and printed["formats"] == ["parquet"]
    # A nested override changes one key; its siblings from the file stay.
    assert printed["params"]["forced"] is False and printed["params"]["math_min_tokens"] == 4000
    assert printed["input"] == "pool.parquet" and printed["criterion"] == "s1"  # file value, default


def test_print_config_masks_secret_fields_by_type(demo, capsys, tmp_path):
    assert cli.main(["demo", "--print-config", "hub_token=hf_abcdefghijklmnop", "endpoint.api_key=sk-live-123",
                     "mirrors=[{api_key: sk-mirror-456}]", "key_words=basic"]) == 0
    out = capsys.readouterr().out
    for secret in ("hf_abcdefghijklmnop", "sk-live-123", "sk-mirror-456"):
        assert secret not in out
    printed = yaml.safe_load(out)
    assert printed["hub_token"] == MASK and printed["endpoint"]["api_key"] == MASK
    assert printed["mirrors"][0]["api_key"] == MASK
    # Values that merely have secret-looking names print as themselves.
    assert printed["key_words"] == "basic" and printed["token_prompt"] == "think for up to {budget} tokens"
    assert printed["endpoint"]["api_key_env"] == "OPENAI_API_KEY"
    assert printed["max_new_tokens"] == 512 and printed["endpoint"]["base_url"].startswith("http://")
    # The mask never passes for a secret: re-running the printed config names the field to fill in.
    saved = tmp_path / "printed.yaml"
    saved.write_text(out)
    assert cli.main(["demo", "--config", str(saved)]) == 2
    err = capsys.readouterr().err
    assert "hub_token" in err and "mask" in err and "endpoint.api_key" in err


def test_unset_secret_is_shown_as_null(demo, capsys):
    assert cli.main(["demo", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["hub_token"] is None


def test_run_prints_the_json_summary_and_not_the_secret(demo, capsys):
    assert cli.main(["demo", "name=x", "steps=3", "hub_token=hf_secretsecretsecret"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"name": "x", "steps": 3, "has_token": True}
    assert "hf_secretsecretsecret" not in out


def test_refused_storage_is_one_message(demo, capsys):
    assert cli.main(["demo", "name=unsafe"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("s1ray demo: checkpoint /x is world-writable") and "Traceback" not in err


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["curat"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- issue 15: help examples that work, configs list/copy, --config NAME, quiet output ---

from s1ray.config import load_config  # noqa: E402
from s1ray.configs import example_configs, find_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_example_overrides_load_on_the_named_example(command, capsys):
    """`s1ray <command> --help` shows an example whose overrides really load (train.lr=... did not)."""
    config, overrides = cli.EXAMPLES[command]
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert f"s1ray {command} --config {config} {overrides}" in capsys.readouterr().out
    cfg = load_config(cli._import(cli.COMMANDS[command][0]), find_config(config), overrides.split())
    for item in overrides.split():
        key, value = item.split("=", 1)
        node = cfg
        for part in key.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        want = yaml.safe_load(value)
        if isinstance(node, float):
            want = float(want)  # YAML reads 2e-5 as a string; the config's float field converts it
        assert node == want, (item, node)


def test_help_shows_a_list_index_override_that_works(capsys):
    assert cli.main(["evaluate", "--config", "evaluate_smollm2_math500", "--print-config",
                     "benchmarks.0.limit=100"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["benchmarks"][0]["limit"] == 100


def test_wrong_key_gets_did_you_mean(capsys):
    assert cli.main(["train", "--config", "train_smollm2_local", "train.lr=2e-5", "epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "epoch: unknown key (did you mean 'epochs'?)" in err
    assert "train: unknown key" in err  # train's keys are top-level: `lr=`, not `train.lr=`


def test_missing_config_says_to_pass_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert "data: required key missing" in err and "no --config given: pass --config" in err
    assert "s1ray configs list" in err
    assert cli.main(["train", "--config", str(tmp_path / "x.yaml")]) == 2  # a given file: no hint
    assert "no --config given" not in capsys.readouterr().err


def test_configs_list_shows_every_example_with_its_command(capsys):
    assert cli.main(["configs", "list"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.stem for p in (REPO / "jobs" / "configs").glob("*.yaml"))
    assert sorted(e.name for e in example_configs()) == names
    for e in example_configs():
        assert e.command.startswith("s1ray ") and e.command in out and e.name in out


def test_configs_copy_writes_the_example_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["configs", "copy", "sweep_local"]) == 0
    copied = tmp_path / "sweep_local.yaml"
    assert copied.read_text() == (REPO / "s1ray" / "configs" / "sweep_local.yaml").read_text()
    assert cli.main(["configs", "copy", "sweep_local.yaml"]) == 2
    assert "exists" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    assert cli.main(["configs", "copy", "select_s1k", "mine"]) == 0
    assert (tmp_path / "mine" / "select_s1k.yaml").exists()
    assert cli.main(["configs", "copy", "nope"]) == 2
    assert "no example config named 'nope'" in capsys.readouterr().err
    # The copy is a working config: edit a key, run it by path.
    assert cli.main(["sweep", "--config", str(copied), "--print-config", "name=mine"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "mine"


def test_config_name_runs_the_packaged_example_but_a_real_file_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["select", "--config", "select_shared_pool", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["size"] == 20
    (tmp_path / "select_shared_pool").write_text("input: p.parquet\nsize: 3\n")
    assert cli.main(["select", "--config", "select_shared_pool", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["size"] == 3
    assert find_config("some/dir/select_shared_pool.yaml") is None  # another folder's file is not swapped


def test_every_command_has_one_output_rule():
    """Defaults: everything under outputs/ relative to where you run (no ~/s1ray_runs for some)."""
    from s1ray.curate.config import CurateConfig
    from s1ray.curate.selection import SelectConfig
    from s1ray.evaluate.config import EvaluateConfig
    from s1ray.pipeline import PipelineConfig
    from s1ray.sweep.config import SweepConfig
    from s1ray.train.config import TrainConfig

    defaults = {
        "curate": CurateConfig.model_fields["output_dir"].default,
        "select": SelectConfig.model_fields["output_dir"].default,
        "train": TrainConfig.model_fields["storage_path"].default,
        "evaluate": EvaluateConfig.model_fields["output_dir"].default,
        "sweep": SweepConfig.model_fields["storage_path"].default,
        "pipeline": PipelineConfig.model_fields["output_dir"].default,
    }
    expected = {"curate": "outputs/curate", "select": "outputs/select", "train": "outputs/train",
                "evaluate": "outputs/evaluate", "sweep": "outputs/sweeps", "pipeline": "outputs/pipeline"}
    assert defaults == expected
    assert "outputs/" in cli.OUTPUT_RULE


def test_every_example_config_prints_as_a_config_that_loads_back_equal(tmp_path, capsys, monkeypatch):
    """``--print-config`` (and every saved config: same dump) re-runs the same job: each example
    config printed, loaded again from the printed text, equals the original."""
    from s1ray.config import load_config
    from s1ray.configs import example_configs

    monkeypatch.setenv("S1RAY_STORAGE", "/mnt/storage with ${odd} $chars")  # a literal ${...} survives too
    examples = example_configs()
    assert len(examples) >= 10
    for example in examples:
        command = example.command.split()[1]
        cls = cli._import(cli.COMMANDS[command][0])
        original = load_config(cls, example.path)
        assert cli.main([command, "--config", str(example.path), "--print-config"]) == 0, example.name
        printed = tmp_path / f"{example.name}.yaml"
        printed.write_text(capsys.readouterr().out)
        assert load_config(cls, printed) == original, example.name
    curate = yaml.safe_load((tmp_path / "curate_shared_pool.yaml").read_text())
    assert curate["dedup"]["key_words"] in ("concepts", "basic")  # printed as itself, not masked
    evaluate = yaml.safe_load((tmp_path / "evaluate_smollm2_math500.yaml").read_text())
    assert "{" in evaluate["token_conditional_prompt"]
