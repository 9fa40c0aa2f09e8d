"""One generation call per row on Ray Data LLM (``ray.data.llm``), shared by every scoring stage.

Teacher traces, solver attempts, the LLM judge and the LLM domain classifier each make one
generation per row. With backend ``vllm`` they run on a ``vLLMEngineProcessorConfig`` processor,
with backend ``openai`` on an ``HttpRequestProcessorConfig`` processor; backend ``hf`` keeps an
actor pool that owns a :class:`~s1ray.models.generation.Generator` (the CPU fallback).

A stage is two functions around the generation, both on Arrow batches:
``build(batch, **kw) -> [Request | None]`` (None: the row is not sent) and
``finish(batch, gens, **kw) -> batch`` where ``gens[i]`` is a
:class:`~s1ray.models.generation.Generation` (None for rows not sent). :func:`generate_dataset`
wires them into the dataset.

Conventions that keep a row's failure from failing the job:

* the row's own columns travel through the processor packed into one binary cell (Arrow IPC),
  so they come back with their exact types and order whatever Ray Data infers for the rest;
* rows not sent carry ``__inference_error__ = SKIP``: Ray Data LLM's stages and postprocess let
  rows with a non-empty ``__inference_error__`` bypass them (the processor's documented
  ``should_continue_on_error`` behaviour), so they cost no engine or HTTP time;
* engine errors (``should_continue_on_error=True``), HTTP errors, exhausted retries and
  malformed responses become ``Generation(finish_reason="error", error=reason)`` for that row;
  the stages record the reason in their error column (traces: ``trace_error`` -> quarantine).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import zlib
from functools import lru_cache, partial
from typing import Any, Callable, Sequence

import pyarrow as pa

from s1ray.models.endpoint import AsyncRate, EndpointClient, EndpointConfig
from s1ray.models.generation import (Generation, GenerationConfig, Generator, configured_context, cpu_engine_env,
                                    vllm_engine_kwargs)

log = logging.getLogger(__name__)

SKIP = "__s1ray_skip__"  # marks a row that is not sent to the model
ERROR_KEY = "__inference_error__"  # Ray Data LLM's per-row error field
PACK = "_s1_pack"  # the row's own columns, Arrow IPC
PROMPT, PROMPT_IDS = "_s1_prompt", "_s1_prompt_ids"
MAX_TOKENS, TEMPERATURE, TOP_P, SEED, STOP = "_s1_max_tokens", "_s1_temperature", "_s1_top_p", "_s1_seed", "_s1_stop"
TEXT, N_TOKENS, FINISH, ERROR = "_s1_text", "_s1_n_tokens", "_s1_finish", "_s1_error"
SCHEMA = "_s1_schema"  # the packed rows' Arrow schema (serialized)
LIGHT_CPUS = 0.25  # pack/unpack and the processors' row-wise pre/postprocess
# What a Ray Data LLM engine actor asks for with tensor/pipeline parallelism > 1: the stage sets no
# num_cpus, and Ray Data gives map actors 1 CPU by default (data/_internal/.../map_operator.py).
ENGINE_ACTOR_CPUS = 1.0


@dataclasses.dataclass
class Request:
    """One row's generation: the user message already rendered to a prompt, and its sampling."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = dataclasses.field(default_factory=list)


def uses_batch_llm(cfg: GenerationConfig) -> bool:
    """Backends that run on Ray Data LLM processors (``hf`` keeps its actor pool)."""
    return cfg.backend in ("vllm", "openai")


# --- prompts ---------------------------------------------------------------------------------

class _ChatOnly(Generator):
    """A tokenizer-only Generator: the chat template exactly as every backend renders it."""

    def __init__(self, cfg: GenerationConfig, tokenizer: Any):
        self.cfg, self.tokenizer = cfg, tokenizer


@lru_cache(maxsize=4)
def _tokenizer(model: str, trust_remote_code: bool, required: bool) -> Any:
    """Cached per worker process (Ray reuses workers across tasks), so one load per model."""
    from s1ray.models.loading import load_tokenizer

    try:
        return load_tokenizer(model, trust_remote_code=trust_remote_code)
    except Exception as e:
        if required:
            raise
        log.info("no local tokenizer for %r (%s); prompts use ChatML", model, type(e).__name__)
        return None


def _context(cfg: GenerationConfig) -> int | None:
    """:func:`configured_context`, the model config read once per worker process."""
    given = cfg.max_model_len if cfg.max_model_len is not None else cfg.engine_kwargs.get("max_model_len")
    return int(given) if given is not None else _model_context(cfg.model, cfg.trust_remote_code)


@lru_cache(maxsize=4)
def _model_context(model: str, trust_remote_code: bool) -> int | None:
    return configured_context(GenerationConfig(model=model, trust_remote_code=trust_remote_code))


def prompter(cfg: GenerationConfig) -> Generator:
    """Renders chat prompts for ``cfg``'s model (vllm needs its tokenizer; an endpoint may have none)."""
    return _ChatOnly(cfg, _tokenizer(cfg.model, cfg.trust_remote_code, cfg.backend != "openai"))


def row_seed(cfg: GenerationConfig, prompt: str, attempt: int = 0) -> int:
    """A per-row seed that does not depend on batching: sampled retries differ, reruns repeat."""
    return (cfg.seed + 100_003 * attempt + zlib.crc32(prompt.encode("utf-8"))) % (2**31 - 1)


def request(cfg: GenerationConfig, prompt: str, *, attempt: int = 0, temperature: float | None = None,
            max_tokens: int | None = None, stop: Sequence[str] | None = None) -> Request:
    return Request(prompt, int(max_tokens if max_tokens is not None else cfg.max_new_tokens),
                   float(cfg.temperature if temperature is None else temperature), float(cfg.top_p),
                   row_seed(cfg, prompt, attempt), list(stop or []))


# --- processor configuration -------------------------------------------------------------------

def vllm_processor_config(cfg: GenerationConfig, *, gpu: bool | None = None, num_cpus: float | None = None) -> Any:
    """The ``vLLMEngineProcessorConfig`` for ``cfg``.

    ``gpu`` defaults to the config's declared ``num_gpus > 0`` (the driver of a cluster job often
    has no GPU itself). CPU: one engine bundle of ``num_cpus`` CPUs, no accelerator. GPU: one
    bundle per tensor/pipeline-parallel worker, ``num_gpus`` in all, ``num_cpus`` shared out, and
    at least the engine actor's CPU in the first bundle (else the actor never schedules). s1ray renders prompts and
    token ids itself (same chat template and tokenization as the hf backend), so Ray's chat
    template / tokenize / detokenize stages are off.
    """
    from ray.data.llm import vLLMEngineProcessorConfig

    from s1ray.models.loading import resolve_model_path

    gpu = cfg.num_gpus > 0 if gpu is None else gpu
    cpus = cfg.num_cpus if num_cpus is None else num_cpus
    kwargs = vllm_engine_kwargs(cfg, gpu=gpu)
    if gpu:
        workers = int(kwargs.get("tensor_parallel_size", 1)) * int(kwargs.get("pipeline_parallel_size", 1))
        per_gpu = 1.0 if workers > 1 else min(1.0, cfg.num_gpus) if cfg.num_gpus > 0 else 1.0
        bundles = [{"CPU": round(cpus / workers, 3), "GPU": per_gpu} for _ in range(workers)]
        if workers > 1:
            # vLLM's Ray executor: the engine actor is scheduled into this placement group with
            # Ray Data's default request of ENGINE_ACTOR_CPUS, which Ray places in ONE bundle (it
            # refuses a request no single bundle can hold), and its tensor-parallel workers take
            # 1 GPU and 0 CPUs each from the GPU bundles. So one bundle holds the actor's CPU.
            bundles[0]["CPU"] = max(bundles[0]["CPU"], ENGINE_ACTOR_CPUS)
        pg = {"bundles": bundles, "strategy": "STRICT_PACK" if workers > 1 else "PACK"}
    else:
        pg = {"bundles": [{"CPU": cpus}]}
    return vLLMEngineProcessorConfig(
        runtime_env=None if gpu else {"env_vars": cpu_engine_env()},
        model_source=resolve_model_path(cfg.model), engine_kwargs=kwargs, concurrency=cfg.concurrency,
        batch_size=cfg.batch_size, accelerator_type=cfg.accelerator_type if gpu else None, placement_group_config=pg,
        should_continue_on_error=True, chat_template_stage=False, tokenize_stage=False,
        detokenize_stage=False, log_engine_metrics=False)


def http_processor_config(cfg: GenerationConfig, *, num_cpus: float | None = None, backoff_s: float = 1.0) -> Any:
    """The ``HttpRequestProcessorConfig`` for an OpenAI-compatible ``/completions`` endpoint.

    Ray's HTTP stage raises on exhausted retries, connection errors and non-JSON bodies (the
    whole job would fail), retries only its own status list, sends a batch's requests one at a
    time, and limits ``qps`` as an int per batch. So s1ray's session (:class:`EndpointSession`,
    on :class:`~s1ray.models.endpoint.EndpointClient`) does the retries, the rate limit
    (``endpoint.rate_limit_rps`` shared by the pool's actors, fractions allowed) and a batch's
    requests in parallel, and turns every failure into a per-row error; Ray's own ``max_retries``
    and ``qps`` stay off. No key is in this config (Ray stores it with the job): the session reads
    it from ``endpoint.api_key_env`` in the worker. The driver only checks it may be sent there.
    """
    from ray.data.llm import HttpRequestProcessorConfig

    from s1ray.models.endpoint import completions_url, read_key
    from s1ray.resources import Resources

    if cfg.endpoint is None:
        raise ValueError("backend 'openai' needs an `endpoint` section (base_url, api_key_env, ...)")
    ep = cfg.endpoint
    key_here = read_key(ep) is not None  # fails fast on a key that must not go to this URL
    rps = ep.rate_limit_rps / Resources.of(cfg).max_actors  # every actor may run at once
    session = partial(EndpointSession, ep, rps=rps, backoff_s=backoff_s, key_required=key_here)
    return HttpRequestProcessorConfig(
        url=completions_url(ep), headers={}, qps=None, max_retries=0,
        batch_size=cfg.batch_size, concurrency=cfg.concurrency, session_factory=session,
        http_request_stage={"num_cpus": cfg.num_cpus if num_cpus is None else num_cpus})


# --- pre/postprocess (row-wise, inside the processor) -----------------------------------------

def _vllm_preprocess(row: dict[str, Any]) -> dict[str, Any]:
    # Every row carries the same nested fields with the same types: Ray 2.60 cannot concatenate
    # blocks where a nested struct field is null in one and a struct in another (it raises
    # "'pyarrow.lib.DataType' object is not iterable"). Skipped rows get a placeholder request.
    if row.get(PROMPT) is None:
        return {"tokenized_prompt": [0], "sampling_params": _sampling(1, 0.0, 1.0, 0, []), ERROR_KEY: SKIP}
    params = _sampling(int(row[MAX_TOKENS]), float(row[TEMPERATURE]), float(row[TOP_P]), int(row[SEED]),
                       [str(s) for s in (row.get(STOP) if row.get(STOP) is not None else [])])
    # "" (not absent): a missing key would be filled with null, which Ray treats as an error.
    return {"tokenized_prompt": [int(t) for t in row[PROMPT_IDS]], "sampling_params": params, ERROR_KEY: ""}


def _sampling(max_tokens: int, temperature: float, top_p: float, seed: int, stop: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
                              "skip_special_tokens": False}
    if stop:  # never an empty list: its Arrow type (list<null>) would not match list<string>
        params["stop"] = stop
    return params


def _vllm_postprocess(row: dict[str, Any], eos_ids: tuple[int, ...]) -> dict[str, Any]:
    """vLLM's row -> text, tokens, finish reason. Ray's output has no finish reason: a row that
    used its whole budget without ending on an end-of-sequence token was cut ("length")."""
    tokens = list(row.get("generated_tokens") if row.get("generated_tokens") is not None else [])
    text = row.get("generated_text")
    if text is None:
        return {PACK: row[PACK], SCHEMA: row[SCHEMA], ERROR: f"malformed engine output (keys: {sorted(row)[:12]})"}
    n = int(row.get("num_generated_tokens") or len(tokens))
    cut = n >= int(row[MAX_TOKENS]) and not (tokens and int(tokens[-1]) in eos_ids)
    return {PACK: row[PACK], SCHEMA: row[SCHEMA], TEXT: str(text), N_TOKENS: n, FINISH: "length" if cut else "stop", ERROR: ""}


def _http_preprocess(row: dict[str, Any], model: str) -> dict[str, Any]:
    if row.get(PROMPT) is None:  # same shape as a real body (see _vllm_preprocess); never sent
        return {"payload": _body(model, "", 1, 0.0, 1.0, 0, []), ERROR_KEY: SKIP}
    stop = [str(s) for s in (row.get(STOP) if row.get(STOP) is not None else [])]
    return {"payload": _body(model, str(row[PROMPT]), int(row[MAX_TOKENS]), float(row[TEMPERATURE]),
                             float(row[TOP_P]), int(row[SEED]), stop), ERROR_KEY: ""}


def _body(model: str, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int,
          stop: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                            "temperature": temperature, "top_p": top_p, "seed": seed}
    if stop:
        body["stop"] = stop
    return body


def _http_postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """The session's normalized reply (:func:`s1ray.models.endpoint.normalize`) -> text, tokens, finish."""
    data = row.get("http_response") or {}
    if data.get("error") or data.get("text") is None:
        return {PACK: row[PACK], SCHEMA: row[SCHEMA], ERROR: str(data.get("error") or "no reply")}
    text = str(data["text"])
    stop = list(row.get(STOP) if row.get(STOP) is not None else [])
    cut = min([i for i in (text.find(s) for s in stop) if i != -1], default=len(text))
    n = int(data.get("completion_tokens", -1))
    return {PACK: row[PACK], SCHEMA: row[SCHEMA], TEXT: text[:cut], N_TOKENS: -1 if n < 0 else min(n, int(row[MAX_TOKENS])),
            FINISH: "length" if data.get("finish_reason") == "length" else "stop", ERROR: ""}


# --- the HTTP client session used inside Ray's HTTP stage ----------------------------------------

class _Reply:
    """What Ray's HTTP stage reads from a response: ``status``, ``reason``, ``await json()``."""

    def __init__(self, status: int, data: Any, reason: str = ""):
        self.status, self.reason, self._data = status, reason, data

    async def json(self) -> Any:
        return self._data

    async def __aenter__(self) -> "_Reply":
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        return False


_RATES: dict[float, AsyncRate] = {}  # one limiter per actor process and rate, across batches


class EndpointSession:
    """``session_factory`` for Ray's HTTP stage, on :class:`~s1ray.models.endpoint.EndpointClient`:
    every ``post`` starts at once (a batch's requests run in parallel) and ALWAYS answers 200 with
    the client's record (:func:`~s1ray.models.endpoint.normalize`): the completion, or ``error``
    so the row, not the job, fails. Ray's URL and headers are ignored: the client posts to the
    configured endpoint with the key it reads from this worker's environment."""

    def __init__(self, ep: EndpointConfig, rps: float = 0.0, backoff_s: float = 1.0, key_required: bool = False):
        self.client = EndpointClient(ep, rate=_RATES.setdefault(rps, AsyncRate(rps)), backoff_s=backoff_s,
                                     key_required=key_required)

    async def __aenter__(self) -> "EndpointSession":
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)

    def post(self, url: str, headers: dict[str, Any] | None = None, data: Any = None, **kw: Any) -> Any:
        return asyncio.ensure_future(self._post(data))

    async def _post(self, data: Any) -> _Reply:
        return _Reply(200, await self.client.complete(data))


# --- pack / unpack around the processor ------------------------------------------------------

def _pack_row(table: pa.Table, i: int) -> bytes:
    return table.slice(i, 1).to_batches()[0].serialize().to_pybytes() if table.num_columns else b""


def pack_requests(batch: pa.Table, build: Callable[..., list[Request | None]], build_kwargs: dict[str, Any],
                  cfg: GenerationConfig) -> pa.Table:
    """Arrow batch -> one row per input row: its packed columns and its request (null = not sent)."""
    reqs = build(batch, **build_kwargs)
    if len(reqs) != batch.num_rows:
        raise ValueError(f"build returned {len(reqs)} requests for {batch.num_rows} rows")
    ids: list[list[int] | None] = [None] * len(reqs)
    max_tokens = [r.max_tokens if r else None for r in reqs]
    if cfg.backend == "vllm":
        tok = _tokenizer(cfg.model, cfg.trust_remote_code, True)
        todo = [i for i, r in enumerate(reqs) if r is not None]
        if todo:  # no special tokens: the chat template already has them (as in the hf backend)
            enc = tok([reqs[i].prompt for i in todo], add_special_tokens=False)["input_ids"]
            for i, e in zip(todo, enc):
                ids[i] = list(e)
        # Within the engine's context: vLLM would stop there itself, but then the row would read
        # as "stop" (it ended below its max_tokens). A prompt that alone fills the context still
        # goes to the engine, which refuses it: an error for that row only.
        context = _context(cfg)
        if context is not None:
            for i in todo:
                max_tokens[i] = max(1, min(int(max_tokens[i]), context - len(ids[i])))
    schema_bytes = batch.schema.serialize().to_pybytes()
    return pa.table({
        PACK: pa.array([_pack_row(batch, i) for i in range(batch.num_rows)], pa.binary()),
        SCHEMA: pa.array([schema_bytes] * batch.num_rows, pa.binary()),
        PROMPT: pa.array([r.prompt if r else None for r in reqs], pa.string()),
        PROMPT_IDS: pa.array(ids, pa.list_(pa.int32())),
        MAX_TOKENS: pa.array(max_tokens, pa.int64()),
        TEMPERATURE: pa.array([r.temperature if r else None for r in reqs], pa.float64()),
        TOP_P: pa.array([r.top_p if r else None for r in reqs], pa.float64()),
        SEED: pa.array([r.seed if r else None for r in reqs], pa.int64()),
        STOP: pa.array([r.stop if r else None for r in reqs], pa.list_(pa.string())),
    })


def _column(batch: pa.Table, name: str) -> list[Any]:
    return batch[name].to_pylist() if name in batch.column_names else [None] * batch.num_rows


def unpack_generations(batch: pa.Table, finish: Callable[..., pa.Table], finish_kwargs: dict[str, Any]) -> pa.Table:
    """Processor output -> the original rows (exact types) -> ``finish(rows, generations)``."""
    schemas = _column(batch, SCHEMA)
    parts = []
    for blob, schema_blob in zip(_column(batch, PACK), schemas):
        schema = pa.ipc.read_schema(pa.py_buffer(schema_blob))
        parts.append(pa.Table.from_batches([pa.ipc.read_record_batch(pa.py_buffer(blob), schema)]))
    rows = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
    gens: list[Generation | None] = []
    for err, text, n, fin, ray_err in zip(_column(batch, ERROR), _column(batch, TEXT), _column(batch, N_TOKENS),
                                         _column(batch, FINISH), _column(batch, ERROR_KEY)):
        if ray_err == SKIP:
            gens.append(None)
        elif ray_err:  # failed inside Ray's stage (engine error): bypassed our postprocess
            gens.append(Generation("", 0, "error", str(ray_err)))
        elif err:
            gens.append(Generation("", 0, "error", str(err)))
        elif text is None:
            gens.append(Generation("", 0, "error", "malformed processor output: no text"))
        else:
            gens.append(Generation(text, int(n if n is not None else 0), fin or "stop"))
    return finish(rows, gens, **finish_kwargs)


def _count_missing_tokens(batch: pa.Table, cfg: GenerationConfig) -> pa.Table:
    """Endpoints that report no usage: count generated tokens with the local tokenizer, if any."""
    n = _column(batch, N_TOKENS)
    if not any(v == -1 for v in n):
        return batch
    tok = _tokenizer(cfg.model, cfg.trust_remote_code, False)
    texts = _column(batch, TEXT)
    fixed = [(len(tok(t, add_special_tokens=False)["input_ids"]) if tok is not None else 0) if v == -1 else v
             for v, t in zip(n, texts)]
    return batch.set_column(batch.column_names.index(N_TOKENS), N_TOKENS, pa.array(fixed, pa.int64()))


# --- hf: an actor pool with a Generator ------------------------------------------------------

class GeneratorStage:
    """Ray Data callable class for backend ``hf``: build -> ``Generator.generate`` -> finish.

    Rows are generated in groups of equal temperature (the Generator samples at its config's)."""

    def __init__(self, cfg: GenerationConfig, build: Callable, build_kwargs: dict[str, Any], finish: Callable,
                 finish_kwargs: dict[str, Any], generator: Any = None):
        from s1ray.models.generation import make_generator

        self.gen = generator if generator is not None else make_generator(cfg)
        self.build, self.build_kwargs, self.finish, self.finish_kwargs = build, build_kwargs, finish, finish_kwargs

    def __call__(self, batch: pa.Table) -> pa.Table:
        reqs = self.build(batch, **self.build_kwargs)
        gens: list[Generation | None] = [None] * len(reqs)
        groups: dict[tuple[float, tuple[str, ...]], list[int]] = {}
        for i, r in enumerate(reqs):
            if r is not None:
                groups.setdefault((r.temperature, tuple(r.stop)), []).append(i)
        for (temp, stop), rows in groups.items():
            old = self.gen.cfg
            try:
                if temp != old.temperature:
                    self.gen.cfg = old.model_copy(update={"temperature": temp, "seed": old.seed + 1})
                outs = self.gen.generate([reqs[i].prompt for i in rows], [reqs[i].max_tokens for i in rows],
                                         list(stop) or None)
            except Exception as e:  # a broken batch fails its rows, not the job
                outs = [Generation("", 0, "error", f"{type(e).__name__}: {e}") for _ in rows]
            finally:
                self.gen.cfg = old
            for i, g in zip(rows, outs):
                gens[i] = g
        return self.finish(batch, gens, **self.finish_kwargs)


# --- the one entry point ---------------------------------------------------------------------

def eos_ids(cfg: GenerationConfig) -> tuple[int, ...]:
    """End-of-sequence ids of the model (tokenizer and generation config)."""
    from s1ray.models.loading import resolve_model_path

    tok = _tokenizer(cfg.model, cfg.trust_remote_code, True)
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    try:
        from transformers import GenerationConfig as HFGenerationConfig

        eos = HFGenerationConfig.from_pretrained(resolve_model_path(cfg.model)).eos_token_id
        ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except Exception:  # no generation_config.json: the tokenizer's eos is all there is
        pass
    return tuple(sorted(int(i) for i in ids))


def build_llm_processor(cfg: GenerationConfig, *, num_cpus: float | None = None, backoff_s: float = 1.0) -> Any:
    """The ray.data.llm processor for ``cfg`` (vllm or openai), reading the packed request columns."""
    from ray.data.llm import build_processor

    light = {"num_cpus": LIGHT_CPUS}
    if cfg.backend == "vllm":
        return build_processor(vllm_processor_config(cfg, num_cpus=num_cpus), preprocess=_vllm_preprocess,
                               postprocess=partial(_vllm_postprocess, eos_ids=eos_ids(cfg)),
                               preprocess_map_kwargs=light, postprocess_map_kwargs=light)
    if cfg.backend == "openai":
        model = (cfg.endpoint.model if cfg.endpoint else None) or cfg.model
        return build_processor(http_processor_config(cfg, num_cpus=num_cpus, backoff_s=backoff_s),
                               preprocess=partial(_http_preprocess, model=model), postprocess=_http_postprocess,
                               preprocess_map_kwargs=light, postprocess_map_kwargs=light)
    raise ValueError(f"backend {cfg.backend!r} does not run on ray.data.llm (use GeneratorStage)")


def generate_dataset(ds: Any, cfg: GenerationConfig, build: Callable[..., list[Request | None]],
                     finish: Callable[..., pa.Table], *, build_kwargs: dict[str, Any] | None = None,
                     finish_kwargs: dict[str, Any] | None = None, num_cpus: float | None = None,
                     batch_size: int | None = None, backoff_s: float = 1.0) -> Any:
    """``ds`` with one generation per row that ``build`` asks for, turned into columns by ``finish``.

    vllm/openai: pack -> ray.data.llm processor -> unpack -> finish (lazy, streaming). hf: one
    actor pool (``cfg.concurrency`` actors of ``num_cpus``, default ``cfg.num_cpus``)."""
    from s1ray.resources import Resources, fit_here, map_pool

    build_kwargs, finish_kwargs = build_kwargs or {}, finish_kwargs or {}
    batch_size = batch_size or cfg.batch_size
    if not uses_batch_llm(cfg):
        if num_cpus is None:  # fitted here unless the caller fitted it with its other pools
            resources = fit_here({"generate": Resources.of(cfg)})["generate"]
        else:
            resources = dataclasses.replace(Resources.of(cfg), num_cpus=num_cpus)
        return map_pool(ds, GeneratorStage, resources, batch_size=batch_size, batch_format="pyarrow",
                        constructor_kwargs=dict(cfg=cfg, build=build, build_kwargs=build_kwargs, finish=finish,
                                                finish_kwargs=finish_kwargs))
    ds = ds.map_batches(pack_requests, fn_kwargs={"build": build, "build_kwargs": build_kwargs, "cfg": cfg},
                        batch_format="pyarrow", batch_size=batch_size, num_cpus=LIGHT_CPUS)
    ds = build_llm_processor(cfg, num_cpus=num_cpus, backoff_s=backoff_s)(ds)
    if cfg.backend == "openai":
        ds = ds.map_batches(_count_missing_tokens, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                            batch_size=batch_size, num_cpus=LIGHT_CPUS)
    return ds.map_batches(unpack_generations, fn_kwargs={"finish": finish, "finish_kwargs": finish_kwargs},
                          batch_format="pyarrow", batch_size=batch_size, num_cpus=LIGHT_CPUS)


def _prompt_requests(batch: pa.Table, cfg: GenerationConfig, column: str) -> list[Request | None]:
    if column not in batch.column_names:
        raise KeyError(f"generate: column {column!r} not in batch (columns: {batch.column_names})")
    return [request(cfg, str(p)) for p in batch[column].to_pylist()]


def _prompt_columns(batch: pa.Table, gens: list[Generation | None], prefix: str) -> pa.Table:
    gens = [g or Generation("", 0, "error", "not generated") for g in gens]
    batch = batch.append_column(f"{prefix}_text", pa.array([g.text for g in gens], pa.string()))
    batch = batch.append_column(f"{prefix}_tokens", pa.array([g.n_tokens for g in gens], pa.int64()))
    return batch.append_column(f"{prefix}_finish", pa.array([g.finish_reason for g in gens], pa.string()))


def generate_column(ds: Any, cfg: GenerationConfig, prompt_column: str, output_prefix: str) -> Any:
    """``ds`` plus ``{prefix}_text``, ``{prefix}_tokens``, ``{prefix}_finish``: one generation per
    prompt in ``prompt_column``, on whichever backend ``cfg`` names."""
    return generate_dataset(ds, cfg, _prompt_requests, _prompt_columns, build_kwargs={"cfg": cfg, "column": prompt_column},
                            finish_kwargs={"prefix": output_prefix})
