"""Instrumentation points of the training recipe, and the instruments tests and benchmarks use.

Production runs pass no hooks. A hook object is pickled to every worker (each rank gets its
own copy), so it may keep per-rank state. :class:`TrainHooks` defines every point as a no-op;
an instrument overrides the ones it needs. The instruments live here, not in the tests, so Ray
workers can import them.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass
class StepRecord:
    """One optimizer step as one rank saw it; ``loss`` is the global step loss (all ranks)."""

    step: int  # 1-based: the number of optimizer steps done
    rank: int
    loss: float
    tokens: int  # tokens this rank processed in the step (padding included)
    step_tokens: int  # the same, summed over all ranks
    examples: list[list[list[str]]]  # this rank's micro-batches -> rows -> example ids
    lr: float
    grad_norm: float


class TrainHooks:
    """Called by every rank at fixed points of :class:`s1ray.train.loop.SFTRecipe`; all no-ops here."""

    def before_model(self) -> None:
        """Every rank, after the data is read and before the model is built."""

    def on_setup(self, rank: int, world: int) -> None:
        """After the engine is built, before the first step."""

    def after_backward(self, step: int, micro: int, n_micro: int) -> dict[str, Any]:
        """After the backward pass of micro-batch ``micro`` (0-based) of ``n_micro`` in 1-based ``step``.

        Returns metrics to add to the run's next report (empty: none).
        """
        return {}

    def on_step_end(self, rec: StepRecord) -> None:
        """After the optimizer step and the loss all-reduce; may raise (fault injection)."""

    def before_export(self, module: Any) -> None:
        """Every rank, after the final weights are gathered, with the trained module."""

    def on_final_checkpoint(self, folder: Path) -> None:
        """Rank 0, with the final checkpoint's folder before it is reported: add files to it."""

    def close(self) -> None:
        """At the end of the run, on every rank."""


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage alive in this process (params, grads, optimizer state)."""
    import torch

    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                st = obj.untyped_storage()
                if st.data_ptr() and st.data_ptr() not in seen:
                    seen.add(st.data_ptr())
                    total += st.nbytes()
        except Exception:  # some tensor subclasses refuse storage access
            continue
    return total


@dataclass
class StepTrace(TrainHooks):
    """Appends one JSON line per step to ``<trace_dir>/rank<r>.jsonl`` (steps, losses, data order, time).

    With ``measure_memory_at_step`` it also records the live tensor bytes after that step's last
    backward pass (parameters, gradients, optimizer state and the step's activations).
    """

    trace_dir: str
    measure_memory_at_step: int | None = None
    _file: Any = field(default=None, init=False, repr=False)
    _rank: int = field(default=0, init=False, repr=False)
    _tensor_bytes: int | None = field(default=None, init=False, repr=False)

    def on_setup(self, rank: int, world: int) -> None:
        Path(self.trace_dir).mkdir(parents=True, exist_ok=True)
        self._rank = rank
        self._file = open(Path(self.trace_dir) / f"rank{rank}.jsonl", "a")

    def after_backward(self, step: int, micro: int, n_micro: int) -> dict[str, Any]:
        if step == self.measure_memory_at_step and micro == n_micro - 1:
            self._tensor_bytes = live_tensor_bytes()
            return {"tensor_bytes": self._tensor_bytes}
        return {}

    def on_step_end(self, rec: StepRecord) -> None:
        out = {"step": rec.step, "rank": rec.rank, "loss": rec.loss, "lr": rec.lr, "time": time.time(),
               "tokens": rec.tokens, "examples": rec.examples}
        if rec.step == self.measure_memory_at_step and self._tensor_bytes is not None:
            out["tensor_bytes"] = self._tensor_bytes
        self._file.write(json.dumps(out) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def _status_bytes(field_name: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}")


@dataclass
class PeakMemory(TrainHooks):
    """Peak resident memory of each rank while it trains, over its resident memory before the model is built.

    Before the model: glibc is told to serve every allocation over 64 KiB from its own mapping
    (``M_MMAP_THRESHOLD``), so freed tensors leave the resident set instead of lingering in the
    heap, and the peak (VmHWM) is reset. After the engine is built the peak is reset again, so
    the construction's transients (the fp32 model before DeepSpeed converts and partitions it)
    do not count. After step ``step``: ``peak_bytes = VmHWM - RSS before the model``, written to
    ``<out_dir>/rank<r>.json`` (Linux only).
    """

    out_dir: str
    step: int = 2
    _rss0: int = field(default=0, init=False, repr=False)
    _rank: int = field(default=0, init=False, repr=False)

    @staticmethod
    def _reset_peak() -> None:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size

    def before_model(self) -> None:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
        gc.collect()
        self._rss0 = _status_bytes("VmRSS")

    def on_setup(self, rank: int, world: int) -> None:
        self._rank = rank
        self._reset_peak()

    def on_step_end(self, rec: StepRecord) -> None:
        if rec.step != self.step:
            return
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        out = {"rank": self._rank, "rss_before_model": self._rss0, "hwm": _status_bytes("VmHWM"),
               "peak_bytes": _status_bytes("VmHWM") - self._rss0}
        (Path(self.out_dir) / f"rank{self._rank}.json").write_text(json.dumps(out))


@dataclass
class FailOnce(TrainHooks):
    """Fault injection: after step ``step`` on rank ``rank``, raise or SIGKILL the worker, once.

    The marker file remembers the failure across the restarted worker (a new process).
    """

    step: int
    marker: str
    rank: int = 0
    mode: Literal["raise", "kill"] = "raise"

    def on_step_end(self, rec: StepRecord) -> None:
        if rec.step != self.step or rec.rank != self.rank or Path(self.marker).exists():
            return
        Path(self.marker).write_text(f"failed at step {rec.step}\n")
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {rec.step} on rank {rec.rank}")


@dataclass
class ProbeLogits(TrainHooks):
    """Saves the trained model's logits for ``input_ids`` as ``probe_logits.pt`` in the final checkpoint.

    Lets a test check the exported folder against the weights the run ended with.
    """

    input_ids: list[int]
    _logits: Any = field(default=None, init=False, repr=False)

    def before_export(self, module: Any) -> None:
        import torch

        with torch.no_grad():  # every rank: a collective forward under ZeRO-3
            device = next(module.parameters()).device
            self._logits = module(input_ids=torch.tensor([self.input_ids], device=device)).logits.float().cpu()

    def on_final_checkpoint(self, folder: Path) -> None:
        import torch

        torch.save(self._logits, Path(folder) / "probe_logits.pt")
