"""Conformance: the training example, its loss mask, the loss reduction and the step count.

s1 (data/tokenization.py): user turn = the question as is; assistant turn =
``"<|im_start|>think\\n" + "\\n".join(traces).strip() + "\\n<|im_start|>answer\\n" + answer.strip()``
with ``answer = "Answer: " + attempt`` when the attempt holds no "Answer:"; the whole text through
the model's chat template. Loss only on the assistant turn (train/sft.py: completion-only collator
after "<|im_start|>assistant\\n"). The loss is the mean over each example's tokens, averaged over
examples (HF Trainer default, one example per device on 16 devices, train/sft.sh), 5 epochs at
global batch 16: 315 optimizer steps for 1,000 examples.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from s1ray.models.loading import load_tokenizer
from s1ray.train.config import DelimiterConfig, TrainConfig
from s1ray.train.data import IGNORE, build_examples, build_rows, collate, format_chat, steps_per_epoch
from s1ray.train.loss import example_counts, lm_loss

CONFIGS = Path(__file__).parents[2] / "jobs" / "configs"
RECORD = {"id": "r0", "question": "What is six times seven? ", "thinking": ["  First: 6*7.", "So 42.  "],
          "attempt": " The product is 42. ", "solution": "42", "answer": "42"}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny:tiny")


def _s1_text(record, tokenizer):
    """Oracle: s1's process_cot_example, as s1 states it."""
    answer = record["attempt"]
    answer = "Answer: " + answer if "Answer:" not in answer else answer
    return tokenizer.apply_chat_template([
        {"role": "user", "content": record["question"]},
        {"role": "assistant", "content": "<|im_start|>think\n" + "\n".join(record["thinking"]).strip()
         + "\n<|im_start|>answer\n" + answer.strip()}], tokenize=False)


def test_s1_format_is_s1s_text(tok):
    prompt, completion = format_chat(RECORD, tok, DelimiterConfig(format="s1"))
    assert prompt + completion == _s1_text(RECORD, tok)
    # s1 prefixes the unstripped attempt, then strips: the attempt's leading space stays
    assert completion.startswith("<|im_start|>think\nFirst: 6*7.\nSo 42.\n<|im_start|>answer\nAnswer:  The product")
    kept = dict(RECORD, attempt="Answer: 42")  # already holds "Answer:": unchanged
    assert format_chat(kept, tok, DelimiterConfig(format="s1"))[1].count("Answer:") == 1


def test_s1ray_default_format_differs(tok):
    assert DelimiterConfig().format == "s1ray"
    _, completion = format_chat(RECORD, tok, DelimiterConfig())
    assert "So 42." not in completion and "Answer:" not in completion  # first trace only, no prefix


def test_loss_mask_is_the_assistant_turn(tok):
    examples, _ = build_examples([RECORD], tok, DelimiterConfig(format="s1"), block_size=4096)
    ex = examples[0]
    prompt, completion = format_chat(RECORD, tok, DelimiterConfig(format="s1"))
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert all(lab == IGNORE for lab in ex["labels"][:n_prompt])
    assert tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]) == completion
    assert tok.decode(ex["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n")


def _toy():
    """Two examples, 3 and 9 supervised targets, packed in one row (positions restart at 0)."""
    torch.manual_seed(0)
    lens = (4, 10)
    labels, pos = [], []
    for n in lens:
        labels += [IGNORE] + list(range(1, n))
        pos += list(range(n))
    labels_t, pos_t = torch.tensor([labels]), torch.tensor([pos])
    logits = torch.randn(1, sum(lens), 16)
    return logits, labels_t, pos_t, lens


def _per_token(logits, labels):
    return F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=IGNORE, reduction="none")


def test_example_mean_is_the_mean_of_per_example_means():
    logits, labels, pos, (a, b) = _toy()
    ce = _per_token(logits, labels)
    # ce[j] predicts token j+1: example 1's targets are tokens 1..3 (ce[0:3]); token 4 starts
    # example 2 and is no target (ce[3] is ignored); example 2's targets are tokens 5..13 (ce[4:])
    first, second = ce[: a - 1].mean(), ce[a:].mean()
    want_example = (first + second) / 2
    want_token = (ce[: a - 1].sum() + ce[a:].sum()) / 12
    assert example_counts(labels.tolist(), pos.tolist()) == [2]
    assert torch.allclose(lm_loss(logits, labels, pos, "example_mean", 2), want_example)
    assert torch.allclose(lm_loss(logits, labels, pos, "token_mean", 12), want_token)
    assert not torch.allclose(want_example, want_token)  # the two settings differ on this batch


def test_example_mean_does_not_depend_on_packing_or_split():
    logits, labels, pos, (a, b) = _toy()
    packed = lm_loss(logits, labels, pos, "example_mean", 2)
    split = (lm_loss(logits[:, :a], labels[:, :a], pos[:, :a], "example_mean", 2)
             + lm_loss(logits[:, a:], labels[:, a:], pos[:, a:], "example_mean", 2))
    assert torch.allclose(packed, split)


def test_token_mean_matches_the_models_own_loss():
    """s1ray's default equals transformers' loss with num_items_in_batch (what the loop used before)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits, labels, pos, _ = _toy()
    hf = ForCausalLMLoss(logits, labels, vocab_size=16, num_items_in_batch=12)
    assert torch.allclose(lm_loss(logits, labels, pos, "token_mean", 12), hf)


def test_padding_never_counts(tok):
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [IGNORE, 6, 7, 8], "position_ids": [0, 1, 2, 3]},
            {"input_ids": [5, 6], "labels": [IGNORE, 6], "position_ids": [0, 1]}]
    batch = collate(rows, pad_id=0)
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 16)
    one = lm_loss(logits[:1], batch["labels"][:1], batch["position_ids"][:1], "example_mean", 2)
    two = lm_loss(logits[1:, :2], batch["labels"][1:, :2], batch["position_ids"][1:, :2], "example_mean", 2)
    assert torch.allclose(lm_loss(logits, batch["labels"], batch["position_ids"], "example_mean", 2), one + two)


def _s1_train_configs():
    out = [TrainConfig.model_validate(yaml.safe_load((CONFIGS / "train_s1_qwen32b.yaml").read_text()))]
    pipe = yaml.safe_load((CONFIGS / "pipeline_s1_32b.yaml").read_text())
    out.append(TrainConfig.model_validate({**pipe["train"], "data": {"name": "s1k", "path": "x"}}))
    return out


def test_s1_configs_train_like_s1_for_315_steps():
    for cfg in _s1_train_configs():
        assert cfg.loss_reduction == "example_mean" and cfg.delimiters.format == "s1"
        assert cfg.batching != "pack" and cfg.micro_batch_size == 1
        layout = cfg.batch_layout()
        assert layout["global_batch_size"] == 16 and layout["num_workers"] * layout["gradient_accumulation"] == 16
        assert (cfg.epochs, cfg.lr, cfg.warmup_ratio, cfg.weight_decay) == (5, 1e-5, 0.05, 1e-4)
        assert (cfg.adam_beta1, cfg.adam_beta2, cfg.block_size) == (0.9, 0.95, 32768)
        per_pass = layout["gradient_accumulation"] * layout["num_workers"]
        assert steps_per_epoch(1000, cfg.micro_batch_size, per_pass) * cfg.epochs == 315


def test_packing_would_not_give_s1s_steps():
    """Why the s1 configs do not pack: 1,000 s1K-sized examples packed into 32K blocks are ~6x fewer rows."""
    examples = [{"id": str(i), "input_ids": [1] * (2000 + 37 * (i % 200)), "labels": [1] * 10}
                for i in range(1000)]
    packed = build_rows(examples, "pack", 32768).num_rows
    assert steps_per_epoch(packed, 1, 16) * 5 < 100
    assert steps_per_epoch(build_rows(examples, "pad", 32768).num_rows, 1, 16) * 5 == 315
