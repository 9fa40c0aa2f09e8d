"""Budget forcing at the model's context: the arithmetic, exact, on a scripted token-id model.

The model behaves like vLLM at its ``max_model_len``: a prompt that reaches the context is refused
(the bug this guards against), and generation stops at the context ("length" below the cap).
"""

from __future__ import annotations

import pytest

from s1ray.evaluate.budget_forcing import answer_reserve, budget_force, rejection_sample
from s1ray.evaluate.config import BudgetForcingConfig, EvaluateConfig
from s1ray.evaluate.metrics import markdown_table, summarize
from s1ray.models.generation import Generation, GenerationConfig

BF = BudgetForcingConfig(think_start="<T>", answer_start="<A>", final_answer="FA:", end_of_thinking=["<E>"],
                         answer_stop=["<F>"], wait="W", max_answer_tokens=6)
END = 0  # the end-of-thinking token id


class Chars:
    """A tokenizer with one token per character (token id = the character's code)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


class ContextModel:
    """Writes "t" tokens and ends its thinking (id 0) after ``stop_after[draw]`` of them; answers
    with "7" tokens. Refuses prompts that reach ``context`` and never generates past it, as vLLM."""

    accepts_token_ids = True

    def __init__(self, context: int | None, stop_after: int | list[int] = 5):
        self.context_length = context
        self.stop_after = stop_after if isinstance(stop_after, list) else [stop_after]
        self.cfg = GenerationConfig(model="scripted", max_new_tokens=1000)
        self.tokenizer = Chars()
        self.requests: list[tuple[int, int]] = []  # (prompt tokens, max tokens) of every row sent
        self.draw = 0

    def encode(self, text):
        return [ord(c) for c in text]

    def prompt_lengths(self, prompts):
        return [len(p) for p in prompts]

    def generate(self, prompts, max_new_tokens=None, stop=None, **kw):
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        out = []
        for p, limit in zip(prompts, limits):
            if limit <= 0:  # not sent, as the real backends do
                out.append(Generation("", 0, "length", token_ids=[]))
                continue
            self.requests.append((len(p), limit))
            if self.context_length is not None and len(p) >= self.context_length:
                raise ValueError(f"prompt of {len(p)} tokens reaches max_model_len {self.context_length}")
            room = limit if self.context_length is None else min(limit, self.context_length - len(p))
            if stop == BF.answer_stop:
                k = min(room, 3)
                out.append(Generation("7" * k, k, "length" if k < 3 else "stop", token_ids=[ord("7")] * k))
                continue
            k = self.stop_after[self.draw % len(self.stop_after)]
            if k + 1 <= room:
                out.append(Generation("t" * k, k + 1, "stop", token_ids=[ord("t")] * k))
            else:
                out.append(Generation("t" * room, room, "length", token_ids=[ord("t")] * room))
        if self.cfg.temperature > 0:
            self.draw += 1
        return out

    def assert_within_context(self):
        assert self.requests and all(n + m <= self.context_length for n, m in self.requests), self.requests


RESERVE = len("\n<A>FA:") + BF.max_answer_tokens  # 7 + 6 = 13 tokens kept for ending and answering


def prompt(n_tokens: int) -> str:
    """A prompt that is ``n_tokens`` long with the think-start appended."""
    return "q" * (n_tokens - len(BF.think_start))


def test_reserve_is_the_longest_prefix_plus_the_answer():
    assert answer_reserve(ContextModel(100), BF) == RESERVE
    small = BF.model_copy(update={"answer_reserve_tokens": 2})
    assert answer_reserve(ContextModel(100), small) == 7 + 2


def test_waits_never_reach_past_the_context_and_fitting_rows_are_unchanged():
    context = 60
    prompts = [prompt(10), prompt(25), prompt(41)]  # room to think: 37, 22, 6 tokens
    model = ContextModel(context, stop_after=5)
    out = budget_force(model, prompts, BF, max_thinking_tokens=30, num_waits=3)
    model.assert_within_context()
    free = budget_force(ContextModel(None, stop_after=5), prompts[:1], BF, max_thinking_tokens=30, num_waits=3)
    # Row 0 fits (4 tries of 5+1 tokens = 24 <= 30 and <= 37): exactly what an unclamped run gives.
    assert out[0].to_dict() == free[0].to_dict() and out[0].stop_reason == "end" and out[0].continuations == 3
    # Row 1: each try adds 5 "t" + 1 "W" to the sequence (the end token is dropped): after three
    # Waits 18 of 22 tokens are used, and the fourth try is cut at 4 tokens by the context.
    assert out[1].stop_reason == "context" and out[1].forced_stop and out[1].continuations == 3
    assert out[1].thinking_tokens == 18 + 4 and 25 + len(out[1].thinking_ids) == context - RESERVE
    # Row 2: 6 tokens of room, the model ends after 5+1; a "W" would leave none, so it is cut there.
    assert out[2].stop_reason == "context" and out[2].continuations == 0 and out[2].thinking_tokens == 6
    assert "W" not in out[2].thinking
    for r in out[1:]:  # forced like a budget cut: "Final Answer:" follows, and a whole answer
        assert r.generation.endswith("\n<A>FA:777") and r.answer_tokens == 3 and r.error is None


def test_token_conditional_caps_far_past_the_context_are_clamped():
    """Token-conditional runs cap thinking at factor x budget (16 x 16K = 262K in s1's config)."""
    model = ContextModel(100, stop_after=500)  # never ends by itself
    out = budget_force(model, [prompt(30), prompt(50)], BF, max_thinking_tokens=[16 * 64, 16 * 64], num_waits=0,
                       min_thinking_tokens=0)
    model.assert_within_context()
    assert [r.thinking_tokens for r in out] == [100 - RESERVE - 30, 100 - RESERVE - 50]
    assert all(r.stop_reason == "context" and r.answer == "777" for r in out)
    assert len(model.requests) == 2 + 2  # one thinking round, one answer round: nothing re-sent full


def test_budget_cut_before_the_context_stays_a_budget_stop():
    model = ContextModel(100, stop_after=500)
    [r] = budget_force(model, [prompt(10)], BF, max_thinking_tokens=20)
    assert r.stop_reason == "budget" and r.thinking_tokens == 20 and r.forced_stop


def test_a_prompt_that_fills_the_context():
    model = ContextModel(50)
    near, full = budget_force(model, [prompt(45), prompt(50)], BF, max_thinking_tokens=30)
    assert model.requests == []  # nothing fits: nothing is sent
    # No room to think: cut at once; the answer gets what is left (50 - 45 - 7 = -2: none).
    assert near.thinking_tokens == 0 and near.stop_reason == "context"
    assert near.answer == "" and "no room for an answer" in near.error
    assert full.thinking_tokens == 0 and full.stop_reason == "context" and "no room for an answer" in full.error
    roomy = budget_force(model, [prompt(36)], BF, max_thinking_tokens=30)[0]  # 36 + 7 + 6 = 49: 1 to think
    assert roomy.thinking_tokens == 1 and roomy.answer == "777" and roomy.error is None
    model.assert_within_context()


def test_reserve_larger_than_the_context_is_a_clear_error():
    with pytest.raises(ValueError, match="answer_reserve_tokens.*context of 10 tokens"):
        budget_force(ContextModel(10), [prompt(5)], BF, max_thinking_tokens=5)


def test_rejection_sampling_rejects_context_cuts_and_is_bounded():
    budgets = [40, 40, 40]
    prompts = [prompt(10), prompt(60), prompt(90)]  # room: 77, 27, -3 tokens
    model = ContextModel(100, stop_after=[30])  # every draw wants 30+1 tokens
    out, draws = rejection_sample(model, prompts, BF, budgets, max_samples=None, temperature=1.0, hard_cap=[0, 0, 0],
                                  max_rounds=4)
    model.assert_within_context()
    # Row 0 fits at once; row 1 is cut by the context (27 < 31) every time, so never accepted
    # although 27 <= 40; row 2 cannot think at all and is given up at once.
    assert draws == [1, 4, 1]
    assert [r.gave_up for r in out] == [None, "max_rounds", "context"]
    assert [r.stop_reason for r in out] == ["end", "context", "context"]
    assert out[1].thinking_tokens == 27 and out[1].answer == "777"
    capped, draws = rejection_sample(ContextModel(100, stop_after=[30]), prompts[1:2], BF, [40], max_samples=2,
                                     temperature=1.0, hard_cap=[640])
    assert draws == [2] and capped[0].gave_up == "max_samples"


def test_rejection_sampling_s1_rule_ends_even_when_no_draw_ever_fits():
    model = ContextModel(None, stop_after=[50])
    out, draws = rejection_sample(model, [prompt(10)], BF, [5], max_samples=None, temperature=1.0, hard_cap=[0],
                                  max_rounds=7)
    assert draws == [7] and out[0].gave_up == "max_rounds" and out[0].thinking_tokens == 6  # budget + 1


def test_summary_counts_context_stops_and_give_ups():
    def row(reason, gave_up=None, method="rejection_sampling"):
        return {"benchmark": "b", "method": method, "budget": 40, "correct": False, "thinking_tokens": 10,
                "forced_stop": reason in ("budget", "context"), "stop_reason": reason, "gave_up": gave_up}

    samples = [row("end"), row("context", "max_rounds"), row("context", "context"), row("budget", "max_samples"),
               row("context", method="budget_forcing"), row("budget", method="budget_forcing")]
    out = summarize(samples, n_boot=10)
    rs, bf = out["b"]["rejection_sampling"]["budgets"][0], out["b"]["budget_forcing"]["budgets"][0]
    assert (rs["forced_stops"], rs["context_stops"]) == (3, 2)
    assert rs["gave_up"] == {"context": 1, "max_rounds": 1, "max_samples": 1}
    assert (bf["forced_stops"], bf["context_stops"], bf["gave_up"]) == (2, 1, {})
    table = markdown_table(out)
    assert "| 2 (1) | - |" in table and "| 3 (2) | context: 1, max_rounds: 1, max_samples: 1 |" in table


def test_configs_name_the_field_when_the_reserve_leaves_no_room():
    gen = {"backend": "vllm", "model": "m", "engine_kwargs": {"max_model_len": 32768}}
    base = {"generation": gen, "benchmarks": [{"name": "aime24"}], "budgets": [512]}
    with pytest.raises(ValueError, match="max_answer_tokens .answer_reserve_tokens unset. = 32768"):
        EvaluateConfig.model_validate({**base, "budget_forcing": {"max_answer_tokens": 32768}})
    ok = EvaluateConfig.model_validate({**base, "budget_forcing": {"max_answer_tokens": 32768,
                                                                   "answer_reserve_tokens": 2048}})
    assert ok.budget_forcing.answer_floor == 2048 and ok.rejection.max_rounds == 100
    assert BudgetForcingConfig(max_answer_tokens=4, answer_reserve_tokens=2048).answer_floor == 4
    with pytest.raises(ValueError, match="disagree"):
        GenerationConfig(model="m", max_model_len=4096, engine_kwargs={"max_model_len": 2048})
