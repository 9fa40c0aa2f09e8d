"""Conformance: s1ray's s1 evaluation settings against s1's budget forcing, baselines, prompt and metrics.

s1's evaluation is eval/lm-evaluation-harness/lm_eval/models/vllm_causallms.py (commit 77272c6),
with the commands of eval/commands.sh; the metrics are the paper's Section 3. Each test states
the s1 behaviour it checks. Scripted generators make every stop known in advance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from s1ray.config import load_config
from s1ray.evaluate.benchmarks import format_question
from s1ray.evaluate.budget_forcing import budget_force, rejection_sample
from s1ray.evaluate.config import BudgetForcingConfig, EvaluateConfig
from s1ray.evaluate.metrics import summarize
from s1ray.models.generation import Generation, GenerationConfig

REPO = Path(__file__).resolve().parents[2]
S1_EVAL = load_config(EvaluateConfig, REPO / "jobs" / "configs" / "evaluate_s1_32b.yaml")
S1_BF = S1_EVAL.budget_forcing.model_copy(update={"max_answer_tokens": 4})


class CharTokenizer:
    """One token per character: token counts and ids are easy to follow by hand."""

    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


class ScriptedIds:
    """A token-id backend (like hf and vllm) whose thinking rounds end themselves after ``stop_after``
    tokens, or at the limit; the answer phase writes "7". Records every prompt it gets."""

    accepts_token_ids = True
    supports_min_tokens = True

    def __init__(self, stop_after: list[int], bf: BudgetForcingConfig):
        self.cfg = GenerationConfig(model="scripted", max_new_tokens=1000)
        self.tokenizer = CharTokenizer()
        self.stop_after, self.bf, self.prompts, self.round = stop_after, bf, [], 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def generate(self, prompts, max_new_tokens=None, stop=None, **kwargs):
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        self.prompts.append([list(p) for p in prompts])
        out = []
        for p, limit in zip(prompts, limits):
            if stop == self.bf.answer_stop:  # the answer phase
                out.append(Generation("7", 1, "stop", token_ids=[ord("7")]))
                continue
            k = self.stop_after[min(self.round, len(self.stop_after) - 1)]
            body = [ord("x")] * min(k, limit)
            if k < limit:  # the model writes its end-of-thinking token: counted, not kept
                out.append(Generation("x" * k, k + 1, "stop", token_ids=body))
            else:
                out.append(Generation("x" * limit, limit, "length", token_ids=body))
        self.round += 1
        return out


def test_s1_delimiters_and_final_answer_only_after_a_cut():
    """s1: the thinking starts after "<|im_start|>think"; when the budget cut it (finish_reason
    "length") "\\n<|im_start|>answer\\nFinal Answer:" is appended, the newline only if the text does
    not end with one; when the model ended its thinking itself, only "<|im_start|>answer"."""
    assert (S1_BF.think_start, S1_BF.answer_start, S1_BF.final_answer) == (
        "<|im_start|>think", "<|im_start|>answer", "\nFinal Answer:")
    cut, own = budget_force(ScriptedIds([50], S1_BF), ["P", "Q"], S1_BF, max_thinking_tokens=[5, 100])
    assert cut.forced_stop and cut.generation == "<|im_start|>think" + "x" * 5 + "\n<|im_start|>answer\nFinal Answer:7"
    own_gen = budget_force(ScriptedIds([3], S1_BF), ["Q"], S1_BF, max_thinking_tokens=100)[0]
    assert not own_gen.forced_stop and own_gen.generation == "<|im_start|>think" + "xxx" + "<|im_start|>answer7"
    # s1ray's default delimiters end in newlines and say "Final Answer:" after a cut only, too.
    default = BudgetForcingConfig(max_answer_tokens=4)
    r = budget_force(ScriptedIds([50], default), ["P"], default, max_thinking_tokens=5)[0]
    assert r.generation.endswith("x\n<|im_start|>answer\nFinal Answer:7")


def test_s1_newline_rule_when_the_cut_thinking_ends_with_a_newline():
    """s1: "if the text already ends with \\n, no extra newline before the answer delimiter"."""
    class Lines(ScriptedIds):
        def generate(self, prompts, max_new_tokens=None, stop=None, **kwargs):
            out = super().generate(prompts, max_new_tokens, stop, **kwargs)
            return [Generation(g.text.replace("x", "\n"), g.n_tokens, g.finish_reason,
                               token_ids=[10 if t == ord("x") else t for t in g.token_ids]) for g in out]

    r = budget_force(Lines([50], S1_BF), ["P"], S1_BF, max_thinking_tokens=3)[0]
    assert r.generation == "<|im_start|>think\n\n\n<|im_start|>answer\nFinal Answer:7"


def test_s1_wait_rounds_continue_from_token_ids():
    """s1 (thinking_n_ignore): for every row that stopped by itself, strip the stop, append the
    tokens of "Wait" to the token ids and generate again, N times; text is never re-tokenised."""
    model = ScriptedIds([2, 3, 4], S1_BF)
    r = budget_force(model, ["P"], S1_BF, max_thinking_tokens=100, num_waits=2)[0]
    base = model.encode("P" + S1_BF.think_start)
    x, wait = ord("x"), model.encode("Wait")
    assert model.prompts[0] == [base]
    assert model.prompts[1] == [base + [x] * 2 + wait]  # ids kept, stop stripped, "Wait" as ids
    assert model.prompts[2] == [base + [x] * 2 + wait + [x] * 3 + wait]
    assert r.continuations == 2 and r.thinking == "xxWaitxxxWaitxxxx"
    assert r.thinking_tokens == 3 + 4 + 5  # generated tokens, end-of-thinking tokens included
    answer_prompt = model.prompts[3][0]
    assert answer_prompt == base + [x] * 2 + wait + [x] * 3 + wait + [x] * 4 + model.encode("<|im_start|>answer")


def test_s1_rejection_sampling_until_every_row_fits():
    """s1: rejection sampling at temperature 1 resamples every row whose thinking is longer than
    the budget, with no cap on the number of rounds (max_tokens = budget + 1)."""
    assert S1_EVAL.rejection.max_samples is None and S1_EVAL.rejection.temperature == 1.0
    model = ScriptedIds([40] * 6 + [3], S1_BF)
    results, draws = rejection_sample(model, ["P", "Q"], S1_BF, budgets=[10, 50], max_samples=None,
                                      temperature=1.0, hard_cap=[20, 100])
    assert draws == [7, 1] and [r.thinking_tokens for r in results] == [4, 41]
    # s1ray's default: at most 8 draws, the last (over-budget) draw kept.
    results, draws = rejection_sample(ScriptedIds([40], S1_BF), ["P"], S1_BF, budgets=[10], max_samples=8,
                                      temperature=0.7, hard_cap=[20])
    assert draws == [8] and results[0].thinking_tokens == 20


def test_s1_control_counts_runs_not_samples():
    """s1 (Section 3): Control = fraction of evaluation runs (one per budget) whose average thinking
    tokens fall within the budget; s1ray also reports the per-sample fraction, under another name."""
    rows = [{"benchmark": "b", "method": "m", "budget": 100, "thinking_tokens": t, "correct": True}
            for t in (50, 140)] + [{"benchmark": "b", "method": "m", "budget": 200, "thinking_tokens": t,
                                    "correct": True} for t in (250, 190)]
    m = summarize(rows, n_boot=10)["b"]["m"]
    assert m["control"] == 0.5  # run 100: avg 95 within; run 200: avg 220 over
    assert m["control_per_sample"] == 0.5  # 50 and 190 within, 140 and 250 over


def test_s1_prompt_is_the_bare_question_in_float32():
    """s1: AIME/MATH prompts are the bare question, GPQA gives its options and no instruction;
    vLLM ran the model in float32, answers up to 32,768 tokens."""
    math_q = {"kind": "math", "question": "Find x.", "choices": None}
    assert format_question(math_q, S1_EVAL.math_instruction, S1_EVAL.choice_instruction) == "Find x."
    gpqa = {"kind": "choice", "question": "Which?", "choices": ["a", "b"]}
    assert format_question(gpqa, S1_EVAL.math_instruction, S1_EVAL.choice_instruction) == "Which?\n\nA) a\nB) b"
    assert S1_EVAL.generation.dtype == "float32" and S1_EVAL.budget_forcing.max_answer_tokens == 32768
    default = EvaluateConfig.model_validate({"generation": {"model": "m"}, "benchmarks": [{"name": "aime24"}],
                                             "budgets": [8]})
    assert "boxed" in format_question(math_q, default.math_instruction, default.choice_instruction)


@pytest.mark.parametrize("name", ["evaluate_s1_32b.yaml", "pipeline_s1_32b.yaml", "sweep_s1_cluster.yaml"])
def test_s1_configs_use_the_s1_evaluation_settings(name):
    import yaml

    raw = yaml.safe_load((REPO / "jobs" / "configs" / name).read_text())
    ev = raw.get("evaluate", raw)
    bf = ev["budget_forcing"]
    assert (bf["think_start"], bf["answer_start"], bf["final_answer"]) == (
        "<|im_start|>think", "<|im_start|>answer", "\nFinal Answer:")
    assert bf["max_answer_tokens"] == 32768
    if ev["generation"]["backend"] == "vllm":  # a sweep evaluates the live model in its training dtype
        assert ev["generation"]["dtype"] == "float32"
    assert ev["math_instruction"] == "" and ev["choice_instruction"] == ""
    assert ev["grade_from"] == "answer"


def test_s1_grades_the_answer_section_only():
    """s1 (tasks/aime/utils.py): the answer is extracted from the answer section only; s1ray's default
    falls back to the whole generation when the answer holds nothing gradable."""
    from s1ray.evaluate.runner import EvaluateBatch

    class Truncated(ScriptedIds):  # thinks "\boxed{7}", then its answer is cut before any number
        def generate(self, prompts, max_new_tokens=None, stop=None, **kwargs):
            if stop == self.bf.answer_stop:
                return [Generation("The answer is", 3, "length", token_ids=[1, 2, 3]) for _ in prompts]
            return [Generation("so \\boxed{7}", 5, "stop", token_ids=[ord(c) for c in "so \\boxed{7}"])
                    for _ in prompts]

    task = {"id": "q1", "benchmark": "b", "method": "budget_forcing", "budget": 50, "user": "1+6?",
            "answer_ref": "7", "kind": "math", "choices": ""}
    for grade_from, expected in (("answer", None), ("answer_then_generation", True)):
        cfg = S1_EVAL.model_copy(update={"grade_from": grade_from, "budget_forcing": S1_BF})
        gen = Truncated([5], S1_BF)
        gen.chat_prompt = lambda user, system=None: user
        [row] = EvaluateBatch(cfg, gen).run([task])
        assert row["correct"] is expected, (grade_from, row["grade_reason"])
