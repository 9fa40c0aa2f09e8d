"""Budget forcing (s1): control how long a model thinks, on any generation backend.

Thinking starts after ``think_start``. To cap thinking at N tokens, generation stops there and
the end-of-thinking delimiter (plus, optionally, "Final Answer:") is appended before the answer
is generated. To extend thinking, an attempt to end it (the model writes an end-of-thinking
string) is suppressed and "Wait" appended instead, K times or until a minimum budget.

The loop is the multi-call stop-and-continue of s1's own vLLM code, so every backend gives
the same result: each call continues all unfinished rows with their own remaining budget and
stops at an end-of-thinking string. On the HF backend the stop is a per-row stopping criterion
and ``extend="suppress"`` forbids the end tokens with a logits processor.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

from s1ray.evaluate.config import BudgetForcingConfig


@dataclass
class ForcedResult:
    prompt: str  # everything before the thinking phase (chat prompt)
    generation: str  # everything after the prompt: think_start + thinking + delimiter + answer
    thinking: str  # the thinking text, including any appended "Wait"s
    thinking_tokens: int  # tokens the model generated while thinking (appended Waits not counted)
    answer: str  # the answer phase's text (after the delimiter and "Final Answer:")
    answer_tokens: int
    forced_stop: bool  # thinking was cut at the budget
    continuations: int  # times an end of thinking was suppressed ("Wait" appended)
    finish_reason: str  # of the answer phase: stop | length | error
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_row(value: int | None | Sequence[int | None], n: int) -> list[int | None]:
    if value is None or isinstance(value, int):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"got {len(values)} per-row values for {n} prompts")
    return values


def _special_ids(generator: Any, texts: Sequence[str]) -> list[int]:
    """Token ids of end-of-thinking strings that are single tokens (for the HF logits processor)."""
    tok = generator.tokenizer
    ids = []
    for t in texts:
        enc = tok(t, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.append(enc[0])
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return sorted(set(ids))


def think_phase(generator: Any, prompts: list[str], bf: BudgetForcingConfig,
                max_thinking_tokens: int | None | Sequence[int | None] = None,
                num_waits: int | Sequence[int] | None = None,
                min_thinking_tokens: int | None | Sequence[int | None] = None) -> list[ForcedResult]:
    """The thinking phase alone (capped, extended); answer fields are left empty."""
    n = len(prompts)
    cap = [c if c is not None else generator.cfg.max_new_tokens for c in _per_row(max_thinking_tokens, n)]
    waits_allowed = _per_row(bf.num_waits if num_waits is None else num_waits, n)
    min_tok = _per_row(bf.min_thinking_tokens if min_thinking_tokens is None else min_thinking_tokens, n)
    base = [p + bf.think_start for p in prompts]
    thinking = [""] * n
    used = [0] * n
    waits = [0] * n
    forced = [False] * n
    errors: list[str | None] = [None] * n
    active = list(range(n))
    suppress = bf.extend == "suppress"
    if suppress and not hasattr(generator, "model"):
        raise ValueError("budget_forcing.extend='suppress' needs the hf backend (a logits processor); "
                         "use extend='wait' with vllm or openai")
    end_ids = _special_ids(generator, bf.end_of_thinking) if suppress else []

    while active:
        limits, forbid = [], []
        for i in active:
            left = cap[i] - used[i]
            below_min = suppress and min_tok[i] is not None and used[i] < min_tok[i]
            # Under "suppress" a row below its minimum runs exactly up to the minimum with the end
            # tokens forbidden, then continues normally, so the ban never outlives the minimum.
            limits.append(min(left, min_tok[i] - used[i]) if below_min else left)
            forbid.append(below_min)
        kwargs: dict[str, Any] = {}
        if suppress and any(forbid):
            kwargs = dict(forbid_token_ids=end_ids, forbid_rows=forbid)
        gens = generator.generate([base[i] + thinking[i] for i in active], max_new_tokens=limits,
                                  stop=bf.end_of_thinking, **kwargs)
        still = []
        for i, g, was_forbidden in zip(active, gens, forbid):
            thinking[i] += g.text
            used[i] += g.n_tokens
            if g.finish_reason == "error":
                errors[i] = g.error
                continue
            if used[i] >= cap[i]:
                forced[i] = g.finish_reason == "length"
                continue
            if was_forbidden:  # reached the minimum without being allowed to stop: go on thinking
                still.append(i)
                continue
            if g.finish_reason == "length":  # cannot happen below the cap; kept for safety
                still.append(i)
                continue
            # The model tried to end its thinking.
            want_more = waits[i] < (waits_allowed[i] or 0)
            below_min = min_tok[i] is not None and used[i] < min_tok[i] and waits[i] < bf.max_extensions
            if want_more or (below_min and not suppress):
                thinking[i] += bf.wait
                waits[i] += 1
                still.append(i)
        active = still

    return [ForcedResult(prompt=prompts[i], generation="", thinking=thinking[i], thinking_tokens=used[i],
                         answer="", answer_tokens=0, forced_stop=forced[i], continuations=waits[i],
                         finish_reason="", error=errors[i]) for i in range(n)]


def answer_phase(generator: Any, results: list[ForcedResult], bf: BudgetForcingConfig) -> list[ForcedResult]:
    """Append the end-of-thinking delimiter (and "Final Answer:") and generate the answer; always runs."""
    prefix = bf.answer_start + (bf.final_answer or "")
    answer_prompts = [r.prompt + bf.think_start + r.thinking + prefix for r in results]
    answers = generator.generate(answer_prompts, max_new_tokens=bf.max_answer_tokens, stop=bf.answer_stop)
    for r, a in zip(results, answers):
        r.generation = bf.think_start + r.thinking + prefix + a.text
        r.answer, r.answer_tokens, r.finish_reason = a.text, a.n_tokens, a.finish_reason
        r.error = r.error or a.error
    return results


def budget_force(generator: Any, prompts: list[str], bf: BudgetForcingConfig,
                 max_thinking_tokens: int | None | Sequence[int | None] = None,
                 num_waits: int | Sequence[int] | None = None,
                 min_thinking_tokens: int | None | Sequence[int | None] = None) -> list[ForcedResult]:
    """Two-phase generation for ``prompts`` (chat prompts, assistant turn open).

    ``max_thinking_tokens`` caps thinking (per row or for all; None = the generator's
    ``max_new_tokens``); ``num_waits`` and ``min_thinking_tokens`` default to the config's.
    """
    thought = think_phase(generator, prompts, bf, max_thinking_tokens, num_waits, min_thinking_tokens)
    return answer_phase(generator, thought, bf)


@contextmanager
def sampling(generator: Any, temperature: float) -> Iterator[None]:
    """Temporarily sample at ``temperature`` (rejection sampling needs diverse draws)."""
    old = generator.cfg
    generator.cfg = old.model_copy(update={"temperature": temperature})
    try:
        yield
    finally:
        generator.cfg = old


def rejection_sample(generator: Any, prompts: list[str], bf: BudgetForcingConfig, budgets: Sequence[int],
                     max_samples: int, temperature: float, hard_cap: Sequence[int]) -> tuple[list[ForcedResult], list[int]]:
    """s1's rejection-sampling baseline: draw until the (uncapped) thinking fits the budget.

    Returns the accepted sample per prompt (the last draw when none fits) and the draw counts.
    """
    n = len(prompts)
    chosen: list[ForcedResult | None] = [None] * n
    draws = [0] * n
    todo = list(range(n))
    with sampling(generator, temperature):
        for _ in range(max_samples):
            if not todo:
                break
            out = think_phase(generator, [prompts[i] for i in todo], bf, [hard_cap[i] for i in todo],
                              num_waits=0, min_thinking_tokens=0)
            still = []
            for i, r in zip(todo, out):
                draws[i] += 1
                chosen[i] = r
                if r.thinking_tokens > budgets[i] and r.error is None:
                    still.append(i)
            todo = still
        results = answer_phase(generator, [c for c in chosen if c is not None], bf)
    return results, draws
