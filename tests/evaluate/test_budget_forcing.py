"""Budget forcing: caps are never exceeded, "Wait" is forced exactly K times, the answer phase always runs."""

from __future__ import annotations

import pytest

from s1ray.evaluate.budget_forcing import budget_force, rejection_sample, sampling
from s1ray.evaluate.config import BudgetForcingConfig
from s1ray.models.generation import Generation, GenerationConfig, make_generator

BF = BudgetForcingConfig(max_answer_tokens=4)


class ScriptedModel:
    """A deterministic stand-in backend: writes "t " tokens and tries to end thinking after
    ``stop_after`` of them per call (the end-of-thinking token counts as generated, like a real
    model's). In the answer phase it writes a boxed 7."""

    def __init__(self, stop_after: int | list[int] = 3, max_new_tokens: int = 1000):
        self.stop_after = stop_after
        self.cfg = GenerationConfig(model="scripted", max_new_tokens=max_new_tokens)
        self.calls: list[dict] = []
        self.draw = 0

    def generate(self, prompts, max_new_tokens=None, stop=None):
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        self.calls.append({"prompts": list(prompts), "limits": list(limits), "stop": stop,
                           "temperature": self.cfg.temperature})
        out = []
        for p, limit in zip(prompts, limits):
            if p.endswith(BF.answer_start + (BF.final_answer or "")) or p.endswith(BF.answer_start):
                out.append(Generation(" \\boxed{7}", 4, "stop"))
                continue
            k = self.stop_after if isinstance(self.stop_after, int) else self.stop_after[self.draw % len(self.stop_after)]
            if k + 1 <= limit:  # k thinking tokens, then the end-of-thinking token
                out.append(Generation("t " * k, k + 1, "stop"))
            else:
                out.append(Generation("t " * limit, limit, "length"))
        if self.cfg.temperature > 0:
            self.draw += 1
        return out


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_wait_forced_exactly_k_times(k):
    model = ScriptedModel(stop_after=3)
    [r] = budget_force(model, ["Q: 1+1?"], BF, max_thinking_tokens=1000, num_waits=k)
    assert r.continuations == k
    assert r.thinking == "Wait".join(["t t t "] * (k + 1))
    assert r.thinking_tokens == 4 * (k + 1)
    assert not r.forced_stop
    assert r.answer == " \\boxed{7}" and r.finish_reason == "stop"
    # The model ended its thinking itself: only the delimiter is appended (s1), no "Final Answer:".
    assert r.generation == BF.think_start + r.thinking + BF.answer_start + r.answer
    assert len(model.calls) == k + 2  # k+1 thinking calls, one answer call
    assert all(c["stop"] == BF.end_of_thinking for c in model.calls[:-1])


def test_cap_beats_waits_and_is_never_exceeded():
    model = ScriptedModel(stop_after=3)
    results = budget_force(model, [f"q{i}" for i in range(6)], BF, max_thinking_tokens=[1, 4, 5, 6, 9, 100],
                           num_waits=10)
    for r, cap in zip(results, [1, 4, 5, 6, 9, 100]):
        assert r.thinking_tokens <= cap
        assert r.answer_tokens == 4  # the answer phase always runs
    assert [r.forced_stop for r in results] == [True, False, True, True, True, False]
    # cap 4: the model ends exactly at the cap, so that is its own stop, not a forced one
    assert results[1].thinking == "t t t " and results[1].continuations == 0
    assert results[2].thinking == "t t t Waitt " and results[2].continuations == 1
    assert results[-1].thinking_tokens == 44 and results[-1].continuations == 10  # 11 tries of 3+1 tokens


@pytest.mark.parametrize("stop_after,cap,prefix", [
    (3, 2, "\n" + BF.answer_start + "Final Answer:"),  # cut by the budget, thinking ends mid-line
    (3, 10, BF.answer_start),  # ended by the model: the delimiter only
])
def test_final_answer_only_when_the_budget_cut_the_thinking(stop_after, cap, prefix):
    [r] = budget_force(ScriptedModel(stop_after=stop_after), ["q"], BF, max_thinking_tokens=cap)
    assert r.generation == BF.think_start + r.thinking + prefix + r.answer


def test_final_answer_newline_rule_and_always_setting():
    class Lines(ScriptedModel):  # thinks in lines: the cut thinking already ends with a newline
        def generate(self, prompts, max_new_tokens=None, stop=None):
            out = super().generate(prompts, max_new_tokens, stop)
            return [Generation(g.text.replace("t ", "t\n"), g.n_tokens, g.finish_reason) for g in out]

    [r] = budget_force(Lines(stop_after=5), ["q"], BF, max_thinking_tokens=2)
    assert r.forced_stop and r.generation == BF.think_start + "t\nt\n" + BF.answer_start + "Final Answer:" + r.answer
    always = BudgetForcingConfig(max_answer_tokens=4, final_answer_on="always")
    [r] = budget_force(ScriptedModel(stop_after=1), ["q"], always, max_thinking_tokens=10)
    assert not r.forced_stop and r.generation.endswith(BF.answer_start + "Final Answer:" + r.answer)


def test_min_thinking_tokens_extends_with_wait():
    model = ScriptedModel(stop_after=2)
    [r] = budget_force(model, ["q"], BF, max_thinking_tokens=100, num_waits=0, min_thinking_tokens=8)
    assert r.thinking_tokens >= 8
    assert r.continuations == 2  # 3 -> 6 -> 9 tokens
    assert r.thinking.count("Wait") == 2


def test_final_answer_prefix_is_optional():
    bf = BudgetForcingConfig(final_answer=None, wait=" Hmm,", max_answer_tokens=4)
    model = ScriptedModel(stop_after=1)
    [r] = budget_force(model, ["q"], bf, max_thinking_tokens=50, num_waits=1)
    assert "Final Answer:" not in r.generation and r.thinking == "t  Hmm,t "
    assert model.calls[-1]["prompts"][0].endswith(bf.answer_start)


def test_errors_are_kept_and_answer_still_runs():
    class Failing(ScriptedModel):
        def generate(self, prompts, max_new_tokens=None, stop=None):
            if stop == BF.end_of_thinking:
                return [Generation("", 0, "error", "HTTP 500") for _ in prompts]
            return super().generate(prompts, max_new_tokens, stop)

    [r] = budget_force(Failing(), ["q"], BF, max_thinking_tokens=10)
    assert r.error == "HTTP 500" and r.answer == " \\boxed{7}"


def test_rejection_sampling_draws_until_it_fits():
    model = ScriptedModel(stop_after=[10, 8, 2, 1])
    results, draws = rejection_sample(model, ["q"], BF, budgets=[5], max_samples=6, temperature=0.9,
                                      hard_cap=[50])
    assert draws == [3] and results[0].thinking_tokens == 3
    assert results[0].answer == " \\boxed{7}"
    assert {c["temperature"] for c in model.calls} == {0.9}
    assert model.cfg.temperature == 0.0  # restored afterwards


def test_rejection_sampling_gives_up_after_max_samples():
    model = ScriptedModel(stop_after=[20])
    results, draws = rejection_sample(model, ["q", "r"], BF, budgets=[5, 30], max_samples=3, temperature=0.5,
                                      hard_cap=[10, 60])
    assert draws == [3, 1]
    assert results[0].thinking_tokens == 10 and results[0].forced_stop  # over budget: Control counts it
    assert results[1].thinking_tokens == 21


def test_rejection_sampling_s1_rule_draws_until_every_row_fits():
    """s1 (vllm_causallms.py): resample every row over the budget, no cap on rounds; draws cut at budget + 1."""
    model = ScriptedModel(stop_after=[30, 30, 30, 30, 30, 30, 30, 30, 30, 2])
    results, draws = rejection_sample(model, ["q", "r"], BF, budgets=[5, 40], max_samples=None, temperature=1.0,
                                      hard_cap=[10, 80])
    assert draws == [10, 1]
    assert [r.thinking_tokens for r in results] == [3, 31] and not any(r.forced_stop for r in results)
    assert model.calls[0]["limits"] == [6, 41]  # budget + 1: a longer draw is rejected anyway


def test_sampling_context_restores_on_error():
    model = ScriptedModel()
    with pytest.raises(RuntimeError):
        with sampling(model, 1.0):
            assert model.cfg.temperature == 1.0
            raise RuntimeError
    assert model.cfg.temperature == 0.0


# --- the real HF backend with a tiny model --------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return make_generator(GenerationConfig(model="tiny:tiny", max_new_tokens=64, batch_size=8))


def biased_head(head, token_id: int):
    """The LM head plus a huge bias on one token: the model "wants" to end its thinking."""
    import torch

    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, hidden):
            logits = self.head(hidden)
            logits[..., token_id] += 1e4
            return logits

    return Biased()


@pytest.fixture
def stopping_tiny(tiny):
    im_start = tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")
    original = tiny.model.lm_head
    tiny.model.lm_head = biased_head(original, im_start)
    yield tiny
    tiny.model.lm_head = original


def test_hf_budget_never_exceeded_over_many_prompts(tiny):
    prompts = [tiny.chat_prompt(f"Question number {i}: what is {i} + {i * 7}?") for i in range(16)]
    caps = [[1, 3, 7, 12][i % 4] for i in range(16)]
    results = budget_force(tiny, prompts, BF, max_thinking_tokens=caps, num_waits=2)
    for r, cap in zip(results, caps):
        assert r.thinking_tokens <= cap
        assert r.answer_tokens > 0 and r.finish_reason in ("stop", "length")
        assert BF.answer_start + "Final Answer:" in r.generation
    # The random tiny model never ends on its own: every row is cut exactly at its cap, and the
    # thinking equals a plain greedy generation of that many tokens.
    assert all(r.forced_stop and r.thinking_tokens == cap for r, cap in zip(results, caps))
    direct = tiny.generate([p + BF.think_start for p in prompts[:4]], max_new_tokens=caps[:4])
    assert [r.thinking for r in results[:4]] == [g.text for g in direct]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_hf_wait_exactly_k_times_when_model_stops(stopping_tiny, k):
    prompts = [stopping_tiny.chat_prompt(f"q{i}") for i in range(3)]
    results = budget_force(stopping_tiny, prompts, BF, max_thinking_tokens=50, num_waits=k)
    for r in results:
        assert r.continuations == k
        assert r.thinking == "Wait" * k
        assert r.thinking_tokens == k + 1  # each attempt is one end-of-thinking token
        assert not r.forced_stop
        assert r.answer_tokens == BF.max_answer_tokens or r.finish_reason == "stop"  # answer phase ran
        assert r.generation == BF.think_start + r.thinking + BF.answer_start + r.answer  # self-ended


def test_hf_suppress_forbids_the_delimiter_until_min(stopping_tiny):
    bf = BudgetForcingConfig(extend="suppress", min_thinking_tokens=5, max_answer_tokens=2)
    [r] = budget_force(stopping_tiny, [stopping_tiny.chat_prompt("q")], bf, max_thinking_tokens=50, num_waits=0)
    assert r.continuations == 0 and "Wait" not in r.thinking
    assert r.thinking_tokens == 6  # 5 tokens with the end forbidden, then the model ends at once
    assert "<|im_start|>" not in r.thinking


def test_suppress_needs_hf():
    with pytest.raises(ValueError, match="suppress"):
        budget_force(ScriptedModel(), ["q"], BudgetForcingConfig(extend="suppress", min_thinking_tokens=3))
