"""Scoring on Ray Data LLM: processor configuration (CPU and GPU, built but not run), the HTTP path
against a loopback stub server, the hf actor-pool fallback, and real vLLM-on-CPU runs with the
packaged SmolLM2 (teacher traces with a retry pass, a solver) including a row the engine rejects."""

import json
import logging
import os
import threading

import pandas as pd
import pyarrow as pa
import pytest
from loopback import LoopbackServer

from s1ray.models import batch_llm as bl
from s1ray.models.generation import EndpointConfig, Generation, GenerationConfig
from s1ray.records import make_record, to_table

SECRET = os.environ["S1RAY_TEST_KEY"]  # tests/conftest.py: set before Ray starts (workers read it)
SMOL = "packaged:smollm2-135m-instruct"
LONG_QUESTION = "Count the words. " + "word " * 1500  # > max_model_len tokens: the engine rejects it


def vllm_cfg(**kw) -> GenerationConfig:
    base = dict(backend="vllm", model=SMOL, dtype="bfloat16", max_new_tokens=48, batch_size=8, num_cpus=0.5,
                engine_kwargs={"max_model_len": 1024})
    return GenerationConfig(**{**base, **kw})


# --- configuration (nothing runs) ------------------------------------------------------------

def test_vllm_processor_config_cpu():
    cfg = vllm_cfg(engine_kwargs={"max_model_len": 1024, "swap_space": 4, "tensor_parallel_size": 2})
    pc = bl.vllm_processor_config(cfg)
    bundles = pc.placement_group_config["bundles"]
    assert pc.accelerator_type is None and len(bundles) == 1 and bundles[0]["CPU"] == 0.5
    assert not bundles[0].get("GPU")
    assert pc.should_continue_on_error and pc.concurrency == 1 and pc.batch_size == 8
    assert not pc.chat_template_stage and not pc.tokenize_stage and not pc.detokenize_stage
    ek = pc.engine_kwargs
    assert ek["max_model_len"] == 1024 and ek["kv_cache_memory_bytes"] == 1 << 30 and ek["enforce_eager"]
    assert "swap_space" not in ek  # not a vLLM engine argument any more: dropped, not passed through
    assert ek["tensor_parallel_size"] == 1  # no tensor parallelism on CPU
    assert ek["trust_remote_code"] is False and ek["dtype"] == "bfloat16"
    assert pc.runtime_env == {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}  # the model in the engine core
    from s1ray.models.loading import resolve_model_path

    assert pc.model_source == resolve_model_path(SMOL)


def test_vllm_processor_config_gpu_is_built_not_run(ray_local):
    """The GPU processor a cluster would run: 4-way tensor parallel over 4 GPU bundles."""
    from ray.data.llm import build_processor

    cfg = vllm_cfg(num_gpus=4, num_cpus=4, concurrency=2, batch_size=64,
                   engine_kwargs={"max_model_len": 16384, "gpu_memory_utilization": 0.9, "max_num_seqs": 128})
    pc = bl.vllm_processor_config(cfg)
    assert [(b["CPU"], b["GPU"]) for b in pc.placement_group_config["bundles"]] == [(1.0, 1.0)] * 4
    assert pc.placement_group_config["strategy"] == "STRICT_PACK" and pc.accelerator_type is None
    ek = pc.engine_kwargs
    assert ek["tensor_parallel_size"] == 4 and ek["gpu_memory_utilization"] == 0.9
    assert "kv_cache_memory_bytes" not in ek and "enforce_eager" not in ek
    assert pc.concurrency == 2 and pc.batch_size == 64 and pc.runtime_env is None  # vLLM's own processes on GPUs
    assert bl.vllm_processor_config(cfg.model_copy(update={"accelerator_type": "H100"})).accelerator_type == "H100"
    proc = build_processor(pc)
    assert proc.list_stage_names() == ["vLLMEngineStage"]  # s1ray renders and tokenizes prompts itself
    kwargs = proc.get_stage_by_name("vLLMEngineStage").map_batches_kwargs
    assert kwargs["num_gpus"] == 0 and "ray_remote_args_fn" in kwargs  # vLLM's Ray executor owns the GPUs
    # Single-GPU engines: the actor itself holds the GPU.
    one = build_processor(bl.vllm_processor_config(vllm_cfg(num_gpus=1, num_cpus=2)))
    kw1 = one.get_stage_by_name("vLLMEngineStage").map_batches_kwargs
    assert kw1["num_gpus"] == 1 and kw1["num_cpus"] == 2


@pytest.mark.parametrize("tp, num_cpus", [(1, 1.0), (2, 0.5), (4, 1.0), (8, 1.0), (8, 16.0)])
def test_tensor_parallel_engines_fit_their_placement_bundles(ray_local, tp, num_cpus):
    """What Ray would schedule, read off the built processor: the engine actor's request (Ray
    Data's defaults applied) fits ONE bundle, each tensor-parallel worker a GPU bundle of its own,
    and the bundles hold the CPUs the config declares (TP 4 at 1 CPU used to give 0.25 per bundle:
    the 1-CPU actor never scheduled and curation hung)."""
    from ray.data._internal.execution.operators.map_operator import _canonicalize_ray_remote_args
    from ray.data.llm import build_processor
    from ray.util.placement_group import _valid_resource_shape

    assert _canonicalize_ray_remote_args({})["num_cpus"] == bl.ENGINE_ACTOR_CPUS  # Ray Data's default
    pc = bl.vllm_processor_config(vllm_cfg(num_gpus=tp, num_cpus=num_cpus))
    assert pc.engine_kwargs["tensor_parallel_size"] == tp
    stage = build_processor(pc).get_stage_by_name("vLLMEngineStage").map_batches_kwargs
    actor = _canonicalize_ray_remote_args({k: v for k, v in stage.items() if k in ("num_cpus", "num_gpus")})
    if tp == 1:  # "uni" executor: the actor itself holds the bundle's resources, no placement group
        assert "ray_remote_args_fn" not in stage
        assert (actor["num_cpus"], actor["num_gpus"]) == (num_cpus, 1)
        return
    fn = stage["ray_remote_args_fn"]  # partial(_ray_scheduling_strategy_fn, n, accelerator, pg config)
    n_bundles, _, pg = fn.args
    bundles = pg["bundles"]
    assert n_bundles == tp == len(bundles) and pg["strategy"] == "STRICT_PACK"
    assert actor["num_gpus"] == 0
    assert _valid_resource_shape({"CPU": actor["num_cpus"]}, bundles), (actor, bundles)
    assert all(b["GPU"] == 1 for b in bundles)  # vLLM: one GPU per bundle, one worker per GPU bundle
    assert sum(b["CPU"] for b in bundles) >= num_cpus - 1e-9
    # and Ray's own check refuses the old layout, so this test is about something real
    if num_cpus / tp < bl.ENGINE_ACTOR_CPUS:
        old = [{"CPU": round(num_cpus / tp, 3), "GPU": 1.0}] * tp
        assert not _valid_resource_shape({"CPU": actor["num_cpus"]}, old)


def test_http_processor_config(monkeypatch):
    monkeypatch.setenv("S1RAY_TEST_KEY", SECRET)
    cfg = GenerationConfig(backend="openai", model="served", batch_size=16, concurrency=2, num_cpus=0.25,
                           endpoint=EndpointConfig(base_url="http://127.0.0.1:1/v1/", api_key_env="S1RAY_TEST_KEY",
                                                   rate_limit_rps=3.0, max_retries=4, timeout_s=9.0))
    pc = bl.http_processor_config(cfg)
    assert pc.url == "http://127.0.0.1:1/v1/completions" and pc.headers == {}  # the key is read in the worker
    assert pc.qps is None and pc.max_retries == 0 and pc.batch_size == 16 and pc.concurrency == 2
    assert pc.http_request_stage == {"num_cpus": 0.25}
    session = pc.session_factory()
    client = session.client
    assert (client.ep.max_retries, client.ep.timeout_s, client.rate.interval) == (4, 9.0, pytest.approx(2 / 3))
    assert client._key == SECRET  # read from this process's environment when the session is made


# --- pre/postprocess and the endpoint session's reply record ------------------------------------

def test_vllm_postprocess_finish_reason_from_tokens():
    row = {bl.PACK: b"p", bl.SCHEMA: b"s", bl.MAX_TOKENS: 4, "generated_text": "abc", "num_generated_tokens": 4,
           "generated_tokens": [5, 6, 7, 8]}
    assert bl._vllm_postprocess(row, eos_ids=(2,))[bl.FINISH] == "length"  # budget used, no eos
    assert bl._vllm_postprocess({**row, "generated_tokens": [5, 6, 7, 2]}, eos_ids=(2,))[bl.FINISH] == "stop"
    short = bl._vllm_postprocess({**row, "num_generated_tokens": 2, "generated_tokens": [5, 2]}, eos_ids=(2,))
    assert short[bl.FINISH] == "stop" and short[bl.N_TOKENS] == 2 and short[bl.ERROR] == ""
    assert "malformed" in bl._vllm_postprocess({bl.PACK: b"p", bl.SCHEMA: b"s", bl.MAX_TOKENS: 4}, (2,))[bl.ERROR]
    skip = bl._vllm_preprocess({bl.PROMPT: None})
    real = bl._vllm_preprocess({bl.PROMPT: "x", bl.PROMPT_IDS: [1, 2], bl.MAX_TOKENS: 3, bl.TEMPERATURE: 0.5,
                                bl.TOP_P: 0.9, bl.SEED: 7, bl.STOP: None})
    assert skip[bl.ERROR_KEY] == bl.SKIP and real[bl.ERROR_KEY] == ""
    assert set(skip) == set(real) and set(skip["sampling_params"]) == set(real["sampling_params"])  # same shape


def test_vllm_requests_are_clamped_to_the_engine_context():
    """A request never asks past max_model_len (else vLLM's own cut would read as "stop")."""
    cfg = GenerationConfig(backend="vllm", model="packaged:smollm2-135m-instruct", engine_kwargs={"max_model_len": 40})
    short, long = "Say hi.", "Count: " + " one" * 36

    def build(batch):
        return [bl.Request(p, 30) if p != "unsent" else None for p in batch["p"].to_pylist()]

    packed = bl.pack_requests(pa.table({"p": [short, long, "unsent"]}), build, {}, cfg)
    ids = packed[bl.PROMPT_IDS].to_pylist()
    assert packed[bl.MAX_TOKENS].to_pylist() == [min(30, 40 - len(ids[0])), max(1, 40 - len(ids[1])), None]
    assert len(ids[0]) + 30 <= 40 < len(ids[1]) + 30  # one row fits as asked, one is clamped
    no_context = cfg.model_copy(update={"engine_kwargs": {}})
    assert bl._context(no_context) == 8192  # the model config's max_position_embeddings


def test_endpoint_reply_record_and_http_postprocess():
    from s1ray.models.endpoint import normalize as norm

    ok = norm({"choices": [{"text": "hi STOP x", "finish_reason": "length"}], "usage": {"completion_tokens": 9}}, "u")
    assert ok == {"text": "hi STOP x", "finish_reason": "length", "completion_tokens": 9, "error": ""}
    assert set(norm({"error": {"message": "quota"}}, "u")) == set(ok)  # one fixed shape for every reply
    assert "quota" in norm({"error": {"message": "quota"}}, "u")["error"]
    assert "malformed" in norm({"choices": []}, "u")["error"] and "no text" in norm({"choices": [{}]}, "u")["error"]
    row = {bl.PACK: b"p", bl.SCHEMA: b"s", bl.MAX_TOKENS: 5, bl.STOP: [" STOP"], "http_response": ok}
    out = bl._http_postprocess(row)
    assert (out[bl.TEXT], out[bl.N_TOKENS], out[bl.FINISH]) == ("hi", 5, "length")  # cut at stop, capped
    assert bl._http_postprocess({**row, "http_response": norm({"error": "x"}, "u")})[bl.ERROR]


# --- hf fallback: the same build/finish contract on an actor-pool Generator -------------------

def _build(batch, max_tokens):
    return [bl.Request(q, max_tokens, temperature=0.7 if "retry" in q else 0.0) if q else None
            for q in batch["q"].to_pylist()]


def _finish(batch, gens):
    return batch.append_column("text", pa.array([g.text if g else None for g in gens], pa.string())).append_column(
        "err", pa.array([g.error if g else None for g in gens], pa.string()))


def test_generator_stage_groups_by_temperature_and_records_errors():
    class Scripted:
        cfg = GenerationConfig(model="tiny:tiny", temperature=0.0)

        def __init__(self):
            self.calls = []

        def generate(self, prompts, max_new_tokens=None, stop=None):
            self.calls.append((list(prompts), self.cfg.temperature, list(max_new_tokens)))
            if any("boom" in p for p in prompts):
                raise RuntimeError("engine exploded")
            return [Generation(p.upper(), 3, "stop") for p in prompts]

    gen = Scripted()
    stage = bl.GeneratorStage(gen.cfg, _build, {"max_tokens": 5}, _finish, {}, generator=gen)
    out = stage(pa.table({"q": ["a", None, "retry b", "c"]}))
    assert out["text"].to_pylist() == ["A", None, "RETRY B", "C"]
    assert sorted(gen.calls) == [(["a", "c"], 0.0, [5, 5]), (["retry b"], 0.7, [5])]
    assert gen.cfg.temperature == 0.0  # restored
    bad = stage(pa.table({"q": ["boom", "d"]}))
    assert bad["err"].to_pylist() == ["RuntimeError: engine exploded"] * 2  # the rows fail, not the job


# --- HTTP: a loopback OpenAI-compatible stub -------------------------------------------------

class Stub(LoopbackServer):
    """``POST /v1/completions``; the reply depends on the prompt, so each row tests one behaviour."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(self.reply)

    def reply(self, handler, body):
        p = body["prompt"]
        with self.lock:
            seen = sum(r["body"]["prompt"] == p for r in self.requests)
            self.requests.append({"auth": handler.headers.get("Authorization"), "body": body, "path": handler.path})
        status, headers, text = 200, {}, None
        if "fail400" in p:
            status, data = 400, json.dumps({"error": f"bad request, key {handler.headers.get('Authorization')}"})
        elif "garbage" in p:
            data = "<html>not json</html>"
        elif "flaky" in p and seen == 0:
            status, headers, data = 503, {"Retry-After": "0"}, json.dumps({"error": "busy"})
        elif "You are an AI assistant for grading" in p:
            text = "The attempt matches.\nYes"
        elif "Mathematics Subject Classification" in p:
            text = "Code: 11"
        elif "judge me" in p:
            text = "I cannot box it"
        else:
            text = "Two and two. \\boxed{4} STOP ignored"
        if text is not None:
            reply = {"choices": [{"text": text, "finish_reason": "stop"}], "usage": {"completion_tokens": 7}}
            if "nousage" in p:
                del reply["usage"]
            data = json.dumps(reply)
        return status, headers, data.encode()


def test_http_scoring_against_stub(ray_local, monkeypatch, caplog, capsys):
    """Solver + judge + LLM domains over HTTP through score_dataset: successes, a retried 503,
    a 400 and a non-JSON reply recorded per row (key scrubbed), a skipped row never sent."""
    from s1ray.curate.scoring import ScoringConfig, score_dataset

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("S1RAY_TEST_KEY", SECRET)
    questions = ["What is 2+2?", "fail400 What is 2+2?", "flaky What is 2+2?", "garbage What is 2+2?",
                 "judge me: square of x?", "skipped What is 2+2?", "nousage What is 2+2?"]
    answers = ["4", "4", "4", "4", "x^2", "4", "4"]
    with Stub() as srv:
        gen = {"backend": "openai", "model": SMOL, "max_new_tokens": 32, "batch_size": 4, "num_cpus": 0.25,
               "endpoint": {"base_url": srv.url, "model": "served", "api_key_env": "S1RAY_TEST_KEY",
                            "rate_limit_rps": 1000.0, "max_retries": 2}}
        cfg = ScoringConfig.model_validate({
            "lengths": {"enabled": False},
            "domains": {"method": "llm", "llm": {**gen, "max_new_tokens": 16}},
            "difficulty": {"solvers": [{"name": "api", "generation": gen}], "judge": gen},
        })
        table = pa.table({"question": questions, "answer": answers, "row_index": list(range(7)),
                          "_skip": [False] * 5 + [True, False]})
        import ray

        ds = score_dataset(ray.data.from_arrow(table), cfg, skip_column="_skip")
        # strict concat: every block has the same schema (what `s1ray curate` collects with)
        out = pa.concat_tables([t for t in ray.get(ds.to_arrow_refs()) if t.num_rows])
    # the rows' own columns come back with their types; new columns have s1ray's types
    assert out.schema.field("row_index").type == pa.int64() and out.schema.field("_skip").type == pa.bool_()
    assert out.schema.field("solver_api_error").type == pa.string()
    assert out.schema.field("solver_api_correct").type == pa.bool_()
    assert not [c for c in out.column_names if c.startswith("_s1_") or c.startswith("_solver")]
    df = out.to_pandas().sort_values("row_index").reset_index(drop=True)
    assert list(df["question"]) == questions
    c, reason, err = df["solver_api_correct"], df["solver_api_reason"], df["solver_api_error"]
    # 0: graded by the rules; the stop string ends the text; server token counts
    assert c[0] == True and reason[0].startswith("math-verify") and pd.isna(err[0])  # noqa: E712
    assert df["solver_api_tokens"][0] == 7 and df["solver_api_extracted"][0] == "4"
    # 1: HTTP 400 -> the row's error, the key scrubbed; graded as "error" generations always were
    assert pd.isna(c[1]) and "HTTP 400" in err[1] and "***" in err[1] and reason[1].startswith("generation error")
    # 2: a 503 with Retry-After: 0 is retried and then succeeds
    assert c[2] == True and pd.isna(err[2])  # noqa: E712
    # 3: a non-JSON body is a per-row error, not a crashed job
    assert pd.isna(c[3]) and "non-JSON" in err[3]
    # 4: no rule verdict -> the judge (same endpoint) says Yes
    assert c[4] == True and reason[4].startswith("LLM judge")  # noqa: E712
    # 5: skipped: nothing sent, nothing filled in
    assert df.iloc[5][["solver_api_correct", "solver_api_reason", "domain_pred"]].isna().all()
    assert not any("skipped" in r["body"]["prompt"] for r in srv.requests)
    # domains: parsed code, or the error for the rows whose request failed
    assert list(df["domain_pred"][[0, 2, 4]]) == ["11"] * 3 and df["domain_method"][0] == "llm"
    assert pd.isna(df["domain_pred"][1]) and "HTTP 400" in df["domain_error"][1]
    assert df["solver_failures"][:5].tolist() == [0, 1, 0, 1, 0] and pd.isna(df["solver_failures"][5])
    # 6: a reply without usage: tokens counted with the model's tokenizer
    from s1ray.models.loading import load_tokenizer

    expect = len(load_tokenizer(SMOL)("Two and two. \\boxed{4} STOP ignored", add_special_tokens=False)["input_ids"])
    assert df["solver_api_tokens"][6] == expect != 7 and c[6] == True  # noqa: E712
    # requests: /completions, bearer key, served model name, per-row stop-less bodies
    assert {r["path"] for r in srv.requests} == {"/v1/completions"}
    assert all(r["auth"] == f"Bearer {SECRET}" and r["body"]["model"] == "served" for r in srv.requests)
    assert sum("flaky" in r["body"]["prompt"] and "Mathematics" not in r["body"]["prompt"]
               for r in srv.requests) == 2
    out = capsys.readouterr()
    assert SECRET not in caplog.text and SECRET not in out.out + out.err
    import os

    from ray._private.worker import _global_node

    logs = os.path.join(_global_node.get_session_dir_path(), "logs")  # every Ray process's log files
    for root, _, files in os.walk(logs):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert SECRET.encode() not in f.read(), name
    assert not df.astype(str).apply(lambda s: s.str.contains(SECRET)).any().any()


# --- vLLM on CPU: real engines ---------------------------------------------------------

def _pool():
    rows = [make_record(source="t", origin="t:0", question="What is 2 + 3?", answer="5"),
            make_record(source="t", origin="t:1", question="What is 10 - 4?", answer="6"),
            make_record(source="t", origin="t:2", question="Is 7 a prime number? Answer yes or no.", answer="yes",
                        thinking=["Seven has no divisors other than one and itself."], attempt="yes",
                        attempt_correct=True),
            make_record(source="t", origin="t:3", question=LONG_QUESTION, answer="1500"),
            make_record(source="t", origin="t:4", question="What is 1 + 1?", answer="2")]
    table = to_table(rows)
    return (table.append_column("row_index", pa.array(range(len(rows)), pa.int64()))
            .append_column("_skip", pa.array([False, False, False, False, True])))


@pytest.fixture(scope="module")
def vllm_scored(ray_local):
    """Teacher traces (greedy, then a sampled retry pass: two engines in turn) and, beside them, a
    solver (a third engine) on the same pool: two independent Ray Data executions at once, so one
    engine's start overlaps the other's (an engine start is mostly single-threaded process spawns)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from s1ray.curate.difficulty import DifficultyConfig, SolverConfig
    from s1ray.curate.scoring import llm_solver, llm_traces
    from s1ray.curate.traces import TracesConfig

    pool = ray_local.data.from_arrow(_pool())
    traces = TracesConfig(enabled=True, teacher=vllm_cfg(max_new_tokens=48), max_attempts=2, min_thinking_chars=5)
    solver = SolverConfig(name="smol", generation=vllm_cfg(max_new_tokens=40))

    def collect(ds):
        # strict concat: every block has the same schema (what `s1ray curate` collects with)
        return pa.concat_tables([t for t in ray_local.get(ds.to_arrow_refs()) if t.num_rows]).sort_by("row_index")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as ex:
        traced = ex.submit(lambda: collect(llm_traces(pool, traces, "_skip")))
        solved = ex.submit(lambda: collect(llm_solver(pool, DifficultyConfig(solvers=[solver], keep_responses=True),
                                                      solver, "_skip")))
        return traced.result(), solved.result(), traces, time.perf_counter() - t0


def test_vllm_teacher_traces_retry_and_quarantine(vllm_scored):
    from s1ray.curate.scoring import ScoringConfig, drop_reasons

    table, _, traces, _ = vllm_scored
    df = table.to_pandas()
    assert df["row_index"].tolist() == [0, 1, 2, 3, 4]
    assert table.schema.field("thinking").type == pa.list_(pa.string())  # own columns keep their types
    assert table.schema.field("trace_error").type == pa.string() and table.schema.field("trace_correct").type == pa.bool_()
    # the row with its own trace keeps it and never reaches the teacher
    assert df["trace_source"][2] == "original" and pd.isna(df["teacher_thinking"][2])
    # the engine rejects the over-long prompt in both passes: recorded, the job finished
    err = df["trace_error"][3]
    assert "VLLMValidationError" in err and "maximum context length" in err and err.endswith("(after 2 attempt(s))")
    assert pd.isna(df["trace_source"][3]) and pd.isna(df["teacher_thinking"][3])
    # ordinary rows: a teacher trace, or the failure reason after the attempts
    for i in (0, 1):
        ok = isinstance(df["teacher_thinking"][i], str) and df["trace_source"][i] == "teacher"
        assert ok != isinstance(df["trace_error"][i], str)
        assert ok or "attempt(s))" in df["trace_error"][i]
    # skipped row: untouched
    assert df.iloc[4][["teacher_thinking", "trace_error", "trace_source"]].isna().all()
    assert "_trace_retry" not in df.columns
    cfg = ScoringConfig(traces=traces)
    reasons = dict(drop_reasons(pa.Table.from_pandas(df[["trace_error"]]), cfg))["traces"]
    assert reasons[3].startswith("quarantined: teacher trace failed: generation error: VLLMValidationError")


def test_vllm_solver_columns_and_token_counts(vllm_scored):
    from s1ray.models.loading import load_tokenizer

    _, table, _, seconds = vllm_scored
    df = table.to_pandas()
    assert df["row_index"].tolist() == [0, 1, 2, 3, 4]
    assert pd.isna(df["solver_smol_reason"][4]) and pd.isna(df["solver_smol_response"][4])  # skipped: untouched
    tok = load_tokenizer(SMOL)
    for i in (0, 1, 2):
        text, n = df["solver_smol_response"][i], df["solver_smol_tokens"][i]
        assert isinstance(text, str) and text.strip() and 0 < n <= 40
        assert isinstance(df["solver_smol_reason"][i], str) and pd.isna(df["solver_smol_error"][i])
        # vLLM's count: the text's tokens, plus the end-of-sequence token when it stopped early
        assert n == len(tok(text, add_special_tokens=False)["input_ids"]) + (1 if n < 40 else 0)
        assert "<|im_end|>" not in text
    assert table.schema.field("solver_smol_tokens").type == pa.int64()
    assert table.schema.field("solver_smol_correct").type == pa.bool_()
    # the engine's per-row error is the row's error; grading treats it as an "error" generation
    assert "VLLMValidationError" in df["solver_smol_error"][3]
    assert df["solver_smol_reason"][3].startswith("generation error: VLLMValidationError")
    assert pd.isna(df["solver_smol_correct"][3]) and df["solver_smol_tokens"][3] == 0
    print(f"vLLM scoring (3 engines, 2 at a time): {seconds:.1f} s")


