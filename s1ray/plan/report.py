"""The plan as a table for people (``s1ray plan``, and the message of a refused ``s1ray train``)."""

from __future__ import annotations

from s1ray.plan.hardware import GiB
from s1ray.plan.planner import TrainPlan, assumptions


def _gib(b: float) -> str:
    return f"{b / GiB:8.2f} GiB"


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def format_plan(p: TrainPlan) -> str:
    hw, s, m, t = p.hardware, p.setup, p.memory, p.timing
    where = (f"{hw.devices} x {hw.name} ({hw.nodes} node{'s' if hw.nodes > 1 else ''}, {hw.devices_per_node}/node)"
             if hw.kind == "gpu" else f"{hw.devices} CPU worker(s) sharing this machine's RAM")
    lines = [f"{p.model} ({p.params / 1e9:.2f}B params) on {where}",
             f"ZeRO-{s.zero_stage}{' (no ZeRO: one fp32 worker)' if s.zero_stage == 0 else ''}, {s.dtype}, "
             f"micro-batch {s.micro_batch_size} x {s.block_size} tokens, gradient checkpointing "
             f"{'on' if s.gradient_checkpointing else 'off'}, loss {s.loss_impl}"
             f"{'' if s.loss_impl != 'chunked' else f' ({s.loss_chunk_tokens} tokens/chunk)'}"
             f"{', optimizer offloaded' if s.offload_optimizer else ''}{', params offloaded' if s.offload_params else ''}",
             "", "Per-device memory by component (each at its largest):"]
    for name, b in m.components.items():
        if b:
            lines.append(f"  {name:<42}{_gib(b)}")
    lines.append(f"  {'(activations without checkpointing)':<42}{_gib(m.no_checkpointing_activations)}")
    lines += ["", "Peak = the largest phase + context and allocator reserve (phases never all coincide):"]
    for name, b in m.phases.items():
        lines.append(f"  {name:<42}{_gib(b + m.reserve)}{'   <- peak' if name == m.peak_phase else ''}")
    verdict = "fits" if p.fits else "DOES NOT FIT"
    lines.append(f"  {'peak / capacity':<42}{_gib(p.peak)} / {p.capacity / GiB:.2f} GiB: {verdict}")
    a = assumptions(hw, s.dtype)
    lines += ["", f"Time (HFU {a['hfu']:.2f} of {a['peak_tflops'] * 1e3:,.0f} GFLOP/s {s.dtype} peak, "
                  f"{a['comm_gbps_per_device']:.1f} GB/s per device for ZeRO collectives, "
                  f"checkpoints at {a['storage_gbps']:.1f} GB/s; rows of {p.row_tokens:,.0f} tokens):",
              f"  step {t.step_s:.2f} s (compute {t.compute_s:.2f} s, ZeRO communication {t.comm_s:.2f} s), "
              f"MFU {t.mfu:.1%}"]
    if t.wall_s is not None:
        lines.append(f"  {t.steps} steps ({p.n_examples} examples) + checkpoint writes {_hours(t.checkpoint_s)}: "
                     f"wall {_hours(t.wall_s)}, {t.device_hours:.1f} {'GPU' if hw.kind == 'gpu' else 'worker'}-hours")
    else:
        lines.append("  wall time: unknown number of examples (pass --examples N)")
    if p.suggestions:
        lines += ["", "Settings that fit (each re-planned):"]
        for sug in p.suggestions:
            if sug.fits:
                lines.append(f"  {sug.as_args():<60} peak {sug.peak_bytes / GiB:.1f} GiB"
                             f"{f'  ({sug.note})' if sug.note else ''}")
        if not any(sug.fits for sug in p.suggestions):
            lines.append("  none of the single or combined changes fits: use GPUs with more memory")
    return "\n".join(lines)
