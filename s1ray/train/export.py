"""A consolidated Hugging Face folder (safetensors, config, tokenizer, chat template) from a DeepSpeed engine.

Under ZeRO-3 every rank holds a shard of each parameter; the full weights are gathered to
rank 0 (all ranks must call :func:`consolidated_state_dict`). The result loads with plain
``AutoModelForCausalLM.from_pretrained`` and can be served by vLLM.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def consolidated_state_dict(engine: Any) -> dict[str, Any] | None:
    """Full state dict on rank 0 (None elsewhere). Collective under ZeRO-3."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    if engine.zero_optimization_stage() == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # gathers in the training dtype
        return state if rank == 0 else None
    if rank != 0:
        return None
    return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def save_hf_folder(model: Any, state_dict: dict[str, Any], tokenizer: Any, path: str | Path, dtype: str) -> Path:
    """Write config, safetensors weights and tokenizer (with its chat template) to ``path``."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    state_dict = {k: v.to(torch_dtype).contiguous() for k, v in state_dict.items()}
    model.config.dtype = torch_dtype
    model.config.use_cache = True
    model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def copy_export(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy the ``hf_model`` folder of the final checkpoint to ``out_dir`` (replacing it)."""
    src = Path(checkpoint_dir) / "hf_model"
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{checkpoint_dir} holds no exported model (hf_model/config.json missing)")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, out)
    return out
