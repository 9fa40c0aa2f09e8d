"""s1 formatting, loss mask, truncation, packing boundaries and the batch plan (no Ray)."""

import pytest
import torch

from s1ray.io.readers import SourceConfig, read_source
from s1ray.models.loading import build_tiny_model, load_tokenizer
from s1ray.train.config import DelimiterConfig
from s1ray.train.data import (IGNORE, build_examples, build_rows, collate, epoch_plan, micro_batch_cost,
                              non_padding_fraction, pack_bins, waiting_fraction)


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
    for batching in ("pad", "group", "pack", "balance"):
        plan = epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=1, seed=3, workers=2)
        used = [i for step in plan for mb in step for i in mb]
        assert sorted(used) == list(range(50))
        assert all(len(step) == 4 for step in plan) and len(plan) == 7  # ceil(ceil(50/2)/4)
        assert plan == epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=1, seed=3, workers=2)
        assert plan != epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=2, seed=3, workers=2)
        assert plan != epoch_plan(lengths, batching, micro=2, micro_per_step=4, epoch=1, seed=4, workers=2)


def test_length_grouping_reduces_padding():
    import random

    rnd = random.Random(0)
    lengths = [int(rnd.lognormvariate(6, 0.8)) + 10 for _ in range(2000)]
    naive = non_padding_fraction(lengths, epoch_plan(lengths, "pad", 8, 2, 0, 0))
    grouped = non_padding_fraction(lengths, epoch_plan(lengths, "group", 8, 2, 0, 0))
    assert naive < 0.6 and grouped > 0.9


def s1k_like_lengths(n: int = 1000) -> list[int]:
    """Log-normal quantiles: mean ~9.5K tokens, max ~23K (s1K-1.1's traces)."""
    import math
    from statistics import NormalDist

    return [int(math.exp(9.1197 + 0.2805 * NormalDist().inv_cdf((i + 0.5) / n))) for i in range(n)]


def rank_spread(plan, lengths, workers, accum):
    """Mean over steps and accumulation slots of (slowest rank's micro-batch / mean rank's)."""
    out = []
    for step in plan:
        for k in range(accum):
            costs = [micro_batch_cost(step[r * accum + k], lengths) for r in range(workers)]
            if all(costs):
                out.append(max(costs) / (sum(costs) / workers))
    return sum(out) / len(out)


@pytest.mark.parametrize("workers,accum", [(16, 1), (4, 4)])
def test_balanced_steps_keep_ranks_in_step(workers, accum):
    """Every rank's k-th micro-batch of a step is about as long as the others'; each example still once."""
    lengths = s1k_like_lengths()
    plans = {b: epoch_plan(lengths, b, 1, workers * accum, epoch=0, seed=0, workers=workers)
             for b in ("pad", "group", "balance")}
    assert sorted(i for step in plans["balance"] for mb in step for i in mb) == list(range(len(lengths)))
    spread = {b: rank_spread(p, lengths, workers, accum) for b, p in plans.items()}
    assert spread["pad"] > 1.25 and spread["balance"] < 1.05, spread
    if accum > 1:  # group sorts too, but hands a rank its micro-batches in a row: rank 0 gets the longest
        assert spread["balance"] - 1 < (spread["group"] - 1) / 2, spread
    # the steps are still shuffled: not in order of length
    heads = [max(lengths[i] for i in step[0]) for step in plans["balance"][:-1]]
    assert heads != sorted(heads, reverse=True)


def test_waiting_fraction_predicts_the_time_lost_to_the_slowest_rank():
    assert waiting_fraction([10, 30], 2, "pad") == pytest.approx(1 - 20 / 30)  # one step: 30 vs 20 ideal
    assert waiting_fraction([50] * 64, 16, "pad") == 0.0
    # with an attention term the long example costs more: 10 + 0.01*100 = 11 vs 30 + 9 = 39
    assert waiting_fraction([10, 30], 2, "pad", attention=0.01) == pytest.approx(1 - 25 / 39)
    lengths = s1k_like_lengths()
    pad = waiting_fraction(lengths, 16, "pad", epochs=2)
    balance = waiting_fraction(lengths, 16, "balance", epochs=2)
    assert 0.3 < pad < 0.45 and balance < 0.08
    assert waiting_fraction(lengths, 16, "balance", group_size_multiplier=1000) < balance
