"""Budget forcing (s1): control how long a model thinks, on any generation backend.

Thinking starts after ``think_start``. To cap thinking at N tokens, generation stops there and
the end-of-thinking delimiter (plus, optionally, "Final Answer:") is appended before the answer
is generated. To extend thinking, an attempt to end it (the model writes an end-of-thinking
string) is suppressed and "Wait" appended instead, K times or until a minimum budget.

The loop is the multi-call stop-and-continue of s1's own vLLM code, so every backend gives
the same result: each call continues all unfinished rows with their own remaining budget and
stops at an end-of-thinking string (matched as a token id when it is one special token).
``extend="suppress"`` instead masks the end of thinking until the minimum (``min_new_tokens``:
vLLM's ``min_tokens``, a logits processor on HF).
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
    thinking_ids: list[int] | None = None  # the thinking as token ids (token-id backends)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("thinking_ids")  # the text is stored; the ids only carry the thinking to the answer phase
        return out


def _per_row(value: int | None | Sequence[int | None], n: int) -> list[int | None]:
    if value is None or isinstance(value, int):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"got {len(values)} per-row values for {n} prompts")
    return values


def _uses_ids(generator: Any) -> bool:
    return bool(getattr(generator, "accepts_token_ids", False))


def think_phase(generator: Any, prompts: list[str], bf: BudgetForcingConfig,
                max_thinking_tokens: int | None | Sequence[int | None] = None,
                num_waits: int | Sequence[int] | None = None,
                min_thinking_tokens: int | None | Sequence[int | None] = None) -> list[ForcedResult]:
    """The thinking phase alone (capped, extended); answer fields are left empty.

    On backends that take token ids (hf, vllm) every round continues from the ids generated so
    far, as s1 does: the text is never decoded and re-tokenised between rounds, which could
    change both the token count and the continuation. Text endpoints continue from the text.
    """
    n = len(prompts)
    cap = [c if c is not None else generator.cfg.max_new_tokens for c in _per_row(max_thinking_tokens, n)]
    waits_allowed = _per_row(bf.num_waits if num_waits is None else num_waits, n)
    min_tok = _per_row(bf.min_thinking_tokens if min_thinking_tokens is None else min_thinking_tokens, n)
    suppress = bf.extend == "suppress"
    if suppress and not getattr(generator, "supports_min_tokens", False):
        raise ValueError("budget_forcing.extend='suppress' needs a backend that masks tokens (hf or vllm); "
                         "use extend='wait' with the openai backend")
    ids = _uses_ids(generator)
    if ids:
        base: list[Any] = [generator.encode(p + bf.think_start) for p in prompts]
        wait: Any = generator.encode(bf.wait)
        thinking: list[Any] = [[] for _ in range(n)]
    else:
        base, wait, thinking = [p + bf.think_start for p in prompts], bf.wait, [""] * n
    used = [0] * n
    waits = [0] * n
    forced = [False] * n
    errors: list[str | None] = [None] * n
    active = list(range(n))

    while active:
        limits = [cap[i] - used[i] for i in active]
        kwargs: dict[str, Any] = {}
        if suppress:  # the end of thinking is masked until the minimum (vLLM's min_tokens)
            kwargs["min_new_tokens"] = [max(0, (min_tok[i] or 0) - used[i]) for i in active]
        gens = generator.generate([base[i] + thinking[i] for i in active], max_new_tokens=limits,
                                  stop=bf.end_of_thinking, **kwargs)
        still = []
        for i, g in zip(active, gens):
            thinking[i] += g.token_ids if ids else g.text
            used[i] += g.n_tokens
            if g.finish_reason == "error":
                errors[i] = g.error
                continue
            if used[i] >= cap[i]:
                forced[i] = g.finish_reason == "length"
                continue
            if g.finish_reason == "length":  # cannot happen below the cap; kept for safety
                still.append(i)
                continue
            # The model tried to end its thinking.
            want_more = waits[i] < (waits_allowed[i] or 0)
            below_min = min_tok[i] is not None and used[i] < min_tok[i] and waits[i] < bf.max_extensions
            if want_more or below_min:
                thinking[i] += wait
                waits[i] += 1
                still.append(i)
        active = still

    text = [generator.tokenizer.decode(t, skip_special_tokens=False) for t in thinking] if ids else thinking
    return [ForcedResult(prompt=prompts[i], generation="", thinking=text[i], thinking_tokens=used[i],
                         answer="", answer_tokens=0, forced_stop=forced[i], continuations=waits[i],
                         finish_reason="", error=errors[i], thinking_ids=thinking[i] if ids else None)
            for i in range(n)]


def answer_prefix(r: ForcedResult, bf: BudgetForcingConfig) -> str:
    """What ends the thinking (s1): the delimiter, plus "Final Answer:" only when the budget cut the
    thinking (a newline first unless the thinking ends with one); ``final_answer_on='always'`` adds
    it to every row."""
    if bf.final_answer and (r.forced_stop or bf.final_answer_on == "always"):
        newline = "" if (not r.forced_stop or r.thinking.endswith("\n")) else "\n"
        return newline + bf.answer_start + bf.final_answer
    return bf.answer_start


def answer_phase(generator: Any, results: list[ForcedResult], bf: BudgetForcingConfig) -> list[ForcedResult]:
    """End the thinking (:func:`answer_prefix`) and generate the answer; always runs."""
    prefixes = [answer_prefix(r, bf) for r in results]
    if _uses_ids(generator):
        prompts: list[Any] = [generator.encode(r.prompt + bf.think_start) + r.thinking_ids + generator.encode(p)
                              for r, p in zip(results, prefixes)]
    else:
        prompts = [r.prompt + bf.think_start + r.thinking + p for r, p in zip(results, prefixes)]
    answers = generator.generate(prompts, max_new_tokens=bf.max_answer_tokens, stop=bf.answer_stop)
    for r, p, a in zip(results, prefixes, answers):
        r.generation = bf.think_start + r.thinking + p + a.text
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
                     max_samples: int | None, temperature: float,
                     hard_cap: Sequence[int]) -> tuple[list[ForcedResult], list[int]]:
    """s1's rejection-sampling baseline: draw until the (uncapped) thinking fits the budget.

    ``max_samples=None`` is s1's rule: every row is drawn again until all fit, however many
    rounds it takes (draws are cut at budget + 1 tokens, since a longer one is rejected anyway).
    With a number, a row stops after that many draws and keeps its last (over-budget) draw,
    generated up to ``hard_cap``. Returns the accepted sample per prompt and the draw counts.
    """
    n = len(prompts)
    if max_samples is None:
        hard_cap = [b + 1 for b in budgets]
    chosen: list[ForcedResult | None] = [None] * n
    draws = [0] * n
    todo = list(range(n))
    with sampling(generator, temperature):
        while todo and (max_samples is None or min(draws[i] for i in todo) < max_samples):
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
