"""DeepSpeed's accelerator, chosen inside each training worker from the job's own ``use_gpu``.

A local Ray copies the driver's environment into every worker, so a ``DS_ACCELERATOR=cpu`` set
in the driver (a test's conftest, a user's shell) would make DeepSpeed in a GPU worker use its
CPU accelerator next to CUDA tensors and NCCL. DeepSpeed reads the variable once, when it first
picks an accelerator, and keeps that choice in a module global; so the worker sets the variable
from its own settings before DeepSpeed is imported, and replaces a choice already made
otherwise (a module imported DeepSpeed earlier in the same process).
"""

from __future__ import annotations

import os


def deepspeed_accelerator_name(use_gpu: bool) -> str:
    return "cuda" if use_gpu else "cpu"


def select_deepspeed_accelerator(use_gpu: bool) -> str:
    """Make DeepSpeed in this process use CUDA for GPU runs and its CPU accelerator otherwise,
    whatever the inherited environment says; returns the accelerator's name."""
    name = deepspeed_accelerator_name(use_gpu)
    os.environ["DS_ACCELERATOR"] = name
    from deepspeed.accelerator import real_accelerator

    current = real_accelerator.ds_accelerator
    if current is not None and current._name != name:
        real_accelerator.ds_accelerator = None  # the next get_accelerator() reads DS_ACCELERATOR again
    return real_accelerator.get_accelerator()._name
