"""Config of ``s1ray evaluate``: model and backend, benchmarks, budgets, methods, outputs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from s1ray.config import RayConfig, StrictModel
from s1ray.models.generation import GenerationConfig

Method = Literal["budget_forcing", "token_conditional", "rejection_sampling"]


class BenchmarkConfig(StrictModel):
    """One benchmark: a known name (defaults for hub id and columns) or ``jsonl`` with a mapping."""

    name: Literal["aime24", "math500", "gpqa_diamond", "amc23", "jsonl"]
    label: str | None = None  # shown in reports; default: name (or the file stem for jsonl)
    path: str | None = None  # local file or saved dataset folder; else the hub id is used
    hub_id: str | None = None  # overrides the benchmark's default hub id
    hub_config: str | None = None
    split: str | None = None
    columns: dict[str, str] = {}  # canonical field (question, answer, choices, solution, ...) -> column
    kind: Literal["auto", "math", "choice"] = "auto"
    limit: int | None = None  # read only the first N rows (a slice for quick runs)
    shuffle_seed: int = 0  # GPQA: the correct option's position is drawn with this seed

    @model_validator(mode="after")
    def _source(self) -> "BenchmarkConfig":
        if self.name == "jsonl" and not self.path:
            raise ValueError("benchmark 'jsonl' needs `path`")
        return self

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        if self.name == "jsonl" and self.path:
            from pathlib import Path

            return Path(self.path).name.split(".")[0]
        return self.name


class BudgetForcingConfig(StrictModel):
    """s1's two-phase generation. Defaults are the s1/Qwen ChatML delimiters."""

    think_start: str = "<|im_start|>think\n"  # opens the thinking phase after the chat prompt
    answer_start: str = "<|im_start|>answer\n"  # the end-of-thinking delimiter appended before answering
    final_answer: str | None = "Final Answer:"  # appended after the delimiter (None: nothing)
    # s1 adds "Final Answer:" only when the budget cut the thinking ("forced"); "always": every row.
    final_answer_on: Literal["forced", "always"] = "forced"
    end_of_thinking: list[str] = ["<|im_start|>", "<|im_end|>"]  # the model "tries to stop" thinking
    answer_stop: list[str] = ["<|im_end|>"]
    wait: str = "Wait"  # appended when an end of thinking is suppressed
    num_waits: int = 0  # K: suppress the end of thinking this many times
    min_thinking_tokens: int | None = None  # suppress ends until this many thinking tokens
    extend: Literal["wait", "suppress"] = "wait"  # suppress: mask the end of thinking until the minimum
    max_extensions: int = 32  # safety bound on Waits when extending to a minimum budget
    max_answer_tokens: int = 256
    # Context tokens kept free for the answer: thinking stops this far (plus the end-of-thinking
    # prefix) before the model's context is full. None: max_answer_tokens (never more than it).
    # The answer may still use up to max_answer_tokens when thinking leaves more room.
    answer_reserve_tokens: int | None = Field(None, ge=0)

    @property
    def answer_floor(self) -> int:
        """The answer tokens the thinking leaves room for (see ``answer_reserve_tokens``)."""
        if self.answer_reserve_tokens is None:
            return self.max_answer_tokens
        return min(self.answer_reserve_tokens, self.max_answer_tokens)


class RejectionConfig(StrictModel):
    """s1's rejection-sampling baseline: sample until the thinking fits the budget.

    s1 draws every row again until all fit (``max_samples: null``; ~655 tries at 3,500 tokens in
    the paper) at temperature 1; s1ray's default stops a row after 8 draws and keeps its last one.
    """

    max_samples: int | None = 8  # None: until every row fits (s1), at most max_rounds rounds
    temperature: float = 0.7  # s1: 1.0
    # Rounds of drawing, whatever max_samples says: rows that still do not fit keep their last
    # draw and count as given up ("max_rounds") in the summary.
    max_rounds: int = Field(100, ge=1)


class EvaluateConfig(StrictModel):
    ray: RayConfig = RayConfig()
    generation: GenerationConfig
    benchmarks: list[BenchmarkConfig]
    budgets: list[int]  # maximum thinking tokens, one evaluation per budget (s1 Figure 1's points)
    methods: list[Method] = ["budget_forcing"]
    budget_forcing: BudgetForcingConfig = BudgetForcingConfig()
    rejection: RejectionConfig = RejectionConfig()
    token_conditional_prompt: str = "Think for up to {budget} tokens."
    uncapped_factor: float = 2.0  # baselines are not cut at the budget: safety cap = factor x budget
    system_prompt: str | None = None
    math_instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    choice_instruction: str = "Answer with the letter of the correct option, e.g. \\boxed{A}."
    # s1 grades the answer section only; s1ray falls back to the whole generation when the answer
    # holds nothing gradable (e.g. an answer cut by max_answer_tokens before its \boxed{}).
    grade_from: Literal["answer", "answer_then_generation"] = "answer_then_generation"
    output_dir: str = "outputs/evaluate"
    bootstrap_samples: int = 1000
    seed: int = 0
    progress: bool = True

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if not v or any(b <= 0 for b in v):
            raise ValueError("budgets must be a non-empty list of positive token counts")
        return sorted(set(v))

    @model_validator(mode="after")
    def _room_to_think(self) -> "EvaluateConfig":
        """A context known from the config must leave room to think after the answer's reserve
        (the delimiter's few tokens are checked when the model's tokenizer is loaded)."""
        g = self.generation
        context = g.max_model_len if g.max_model_len is not None else g.engine_kwargs.get("max_model_len")
        floor = self.budget_forcing.answer_floor
        if context is not None and floor >= int(context):
            which = "answer_reserve_tokens" if self.budget_forcing.answer_reserve_tokens is not None else \
                "max_answer_tokens (answer_reserve_tokens unset)"
            raise ValueError(f"budget_forcing.{which} = {floor} leaves no room to think in the model's context "
                             f"of {context} tokens (generation max_model_len); set budget_forcing."
                             "answer_reserve_tokens to what an answer needs")
        return self

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, v: list[BenchmarkConfig]) -> list[BenchmarkConfig]:
        if not v:
            raise ValueError("give at least one benchmark")
        names = [b.display for b in v]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark labels must be unique, got {names}; set `label`")
        return v
