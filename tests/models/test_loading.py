"""Model loading: the packaged SmolLM2 conversion is cached, tiny models are deterministic, bad names are clear."""

import pytest
import torch

from s1ray.models.loading import (ModelLoadError, build_tiny_model, load_model, load_tokenizer,
                                  packaged_model_path, resolve_model_path)


def test_packaged_model_is_converted_once_and_loads_with_plain_transformers():
    first = packaged_model_path("smollm2-135m-instruct")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert packaged_model_path("smollm2-135m-instruct") == first
    assert (first / "config.json").stat().st_mtime_ns == stamp  # cached, not converted again
    tok = load_tokenizer("packaged:smollm2-135m-instruct")
    assert len(tok) == 49152 and tok.pad_token is not None
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_tiny_model_is_deterministic_for_a_seed():
    a, b = build_tiny_model("tiny", vocab_size=100, seed=3), build_tiny_model("tiny", vocab_size=100, seed=3)
    c = build_tiny_model("tiny", vocab_size=100, seed=4)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(a(ids).logits, b(ids).logits)
    assert not torch.equal(a(ids).logits, c(ids).logits)
    assert load_model("tiny:tiny", vocab_size=100).config.vocab_size == 100


def test_unknown_names_fail_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown packaged model"):
        resolve_model_path("packaged:nope")
    with pytest.raises(ModelLoadError, match="unknown tiny model"):
        build_tiny_model("huge", vocab_size=10)
    with pytest.raises(ModelLoadError, match="offline"):
        load_model("no-such-org/no-such-model")


def test_tiny_model_folder_for_engines_that_load_from_disk(tmp_path, monkeypatch):
    """vLLM loads from a folder: ``tiny:tiny`` is saved once (seed 0) and reloads to the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from s1ray.models.loading import build_tiny_model, load_tokenizer

    smollm2 = packaged_model_path("smollm2-135m-instruct")  # tiny:tiny's tokenizer; converted once per cache
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / smollm2.name).symlink_to(smollm2)
    monkeypatch.setenv("S1RAY_CACHE", str(tmp_path))
    folder = resolve_model_path("tiny:tiny")
    assert folder == str(tmp_path / "models" / "tiny-tiny") and resolve_model_path("tiny:tiny") == folder
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    built = build_tiny_model("tiny", len(load_tokenizer("tiny:tiny")))
    for (name, a), (_, b) in zip(loaded.state_dict().items(), built.state_dict().items()):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("models/*.tmp*"))  # saved under a temporary name, then renamed


def test_a_folder_saved_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):
    """Two processes converting at once (fresh machine, several Ray workers): the one that renames
    second finds the other's folder, keeps it and removes its own copy instead of failing."""
    import pathlib

    from s1ray.models.loading import _save_folder

    tok = load_tokenizer("tiny:tiny")
    target = tmp_path / "models" / "tiny-tiny"
    target.parent.mkdir()
    other = build_tiny_model("tiny", len(tok), seed=1)
    real_rename = pathlib.Path.rename

    def other_process_finishes_first(self, dest):  # just before our rename, the other save completes
        if pathlib.Path(dest) == target and not target.exists():
            other.save_pretrained(target)
            tok.save_pretrained(target)
        return real_rename(self, dest)

    monkeypatch.setattr(pathlib.Path, "rename", other_process_finishes_first)
    assert _save_folder(build_tiny_model("tiny", len(tok), seed=0), tok, target) == target
    reloaded = load_model(str(target))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), other.state_dict().values()))
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny-tiny"]  # no temporary copy left
