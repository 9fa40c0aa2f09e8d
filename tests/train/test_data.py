"""s1 formatting, loss mask, truncation, packing boundaries and the batch plan (no Ray)."""

import pytest
import torch

from s1ray.io.readers import SourceConfig, read_source
from s1ray.models.loading import build_tiny_model, load_tokenizer
from s1ray.train.config import DelimiterConfig
from s1ray.train.data import (IGNORE, build_examples, build_rows, collate, epoch_plan, non_padding_fraction,
                              pack_bins)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny:tiny")


def read(path):
    return read_source(SourceConfig(name="t", path=str(path), preset="s1k")).records


def supervised_text(tok, ex):
    return tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE])


def test_loss_mask_covers_exactly_trace_and_answer(make_s1k, tok):
    recs = read(make_s1k())
    examples, stats = build_examples(recs, tok, DelimiterConfig(), block_size=4096)
    assert stats.n_examples == len(recs) and stats.n_truncated == 0
    rec, ex = recs[3], examples[3]
    want = ("<|im_start|>think\n" + rec["thinking"][0] + "\n<|im_start|>answer\n" + rec["attempt"] + "<|im_end|>\n")
    # labels[0] is never a target; the first supervised token is the start of the assistant content
    assert supervised_text(tok, ex) == want
    prompt = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == IGNORE])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert rec["question"] in prompt and "<|im_start|>system" in prompt and "<|im_start|>user" in prompt
    assert rec["question"] not in supervised_text(tok, ex)


def test_custom_delimiters_and_system_prompt(make_s1k, tok):
    recs = read(make_s1k())
    delims = DelimiterConfig(think="<think>\n", answer="\n</think>\n", system_prompt="Be brief.")
    examples, _ = build_examples(recs[:1], tok, delims, block_size=4096)
    text = supervised_text(tok, examples[0])
    assert text.startswith("<think>\n" + recs[0]["thinking"][0] + "\n</think>\n")
    assert "Be brief." not in text and "Be brief." in tok.decode(examples[0]["input_ids"])


def test_truncation_is_counted_and_rows_without_trace_are_quarantined(make_s1k, tok):
    recs = read(make_s1k(10, edit=lambda rows: rows[0].update(thinking_trajectories=[])))
    lengths = [len(e["input_ids"]) for e in build_examples(recs, tok, DelimiterConfig(), 4096)[0]]
    block = sorted(lengths)[4]  # about half the examples are longer
    examples, stats = build_examples(recs, tok, DelimiterConfig(), block)
    assert stats.n_quarantined == 1 and "no reasoning trace" in stats.quarantined[0]["reason"]
    assert stats.n_truncated == sum(n > block for n in lengths) > 0
    assert stats.as_dict()["truncated_fraction"] == pytest.approx(stats.n_truncated / 9, abs=1e-4)
    assert all(len(e["input_ids"]) <= block for e in examples)
    _, tiny = build_examples(recs, tok, DelimiterConfig(), block_size=20)  # the prompt alone is longer
    assert tiny.n_examples == 0 and tiny.n_truncated_away == 9


def test_packing_bins_fit_and_hold_every_example_once():
    lengths = [50, 10, 30, 70, 20, 90, 5, 40]
    bins = pack_bins(lengths, 100)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)
    assert len(bins) == 4  # sum 315 -> at least 4 bins; first-fit decreasing reaches it


def test_packed_row_gives_the_same_logits_as_separate_examples(make_s1k, tok):
    """Position ids restart per example and no example attends to another."""
    examples, _ = build_examples(read(make_s1k())[:3], tok, DelimiterConfig(), 4096)
    row = build_rows(examples, "pack", block_size=4096).to_pylist()
    assert len(row) == 1 and len(row[0]["example_ids"]) == 3
    model = build_tiny_model("tiny", len(tok)).eval()
    batch = collate([row[0]], tok.pad_token_id)
    starts = [i for i, p in enumerate(row[0]["position_ids"]) if p == 0]
    assert len(starts) == 3
    with torch.no_grad():
        # as in the training loop: no cache, no attention mask -> transformers builds the packed mask
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        no_reset = model(input_ids=batch["input_ids"]).logits[0]
        offset = 0
        for e in sorted(examples, key=lambda e: row[0]["example_ids"].index(e["id"])):
            alone = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
            n = len(e["input_ids"])
            torch.testing.assert_close(packed[offset:offset + n], alone, atol=1e-4, rtol=1e-4)
            if offset:  # without the boundaries the later examples see the earlier ones
                assert (no_reset[offset:offset + n] - alone).abs().max() > 1e-3
            offset += n


def test_padding_never_changes_real_tokens(tok):
    model = build_tiny_model("tiny", len(tok)).eval()
    a = {"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE, 6, 7, 8, 9], "position_ids": [0, 1, 2, 3, 4]}
    b = {"input_ids": [11, 12], "labels": [IGNORE, 12], "position_ids": [0, 1]}
    batch = collate([a, b], tok.pad_token_id)
    assert batch["labels"][1, 2:].eq(IGNORE).all()
    with torch.no_grad():
        both = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([b["input_ids"]])).logits
    torch.testing.assert_close(both[1, :2], alone[0], atol=1e-5, rtol=1e-5)


def test_epoch_plan_uses_each_row_once_deterministically():
    lengths = [10 + (i * 37) % 200 for i in range(50)]
    for batching in ("pad", "group", "pack"):
        plan = epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=1, seed=3)
        used = [i for step in plan for mb in step for i in mb]
        assert sorted(used) == list(range(50))
        assert all(len(step) == 4 for step in plan) and len(plan) == 7  # ceil(ceil(50/2)/4)
        assert plan == epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=1, seed=3)
        assert plan != epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=2, seed=3)


def test_length_grouping_reduces_padding():
    import random

    rnd = random.Random(0)
    lengths = [int(rnd.lognormvariate(6, 0.8)) + 10 for _ in range(2000)]
    naive = non_padding_fraction(lengths, epoch_plan(lengths, "pad", 8, 2, 0, 0))
    grouped = non_padding_fraction(lengths, epoch_plan(lengths, "group", 8, 2, 0, 0))
    assert naive < 0.6 and grouped > 0.9
