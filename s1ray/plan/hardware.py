"""The accelerators the planner knows, with the figures its memory and time estimates use.

Memory is what ``nvidia-smi`` reports as total (H100 80GB HBM3: 81,559 MiB); peak FLOP/s are
dense bf16 (no sparsity) from NVIDIA's data sheets; bandwidths are per GPU and per direction:
NVLink within a node, the node's network (AWS p5/p5e: 3,200 Gb/s EFA for 8 GPUs; p4de: 400
Gb/s) shared by its GPUs across nodes. ``cpu`` is this machine: its RAM shared by the workers
on it, and the per-thread matmul rates measured here (stack notes: fp32 ~95, bf16 ~205 GFLOP/s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from s1ray.plan.shapes import PlanError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Hardware:
    """Where one training run's workers go: ``devices`` devices, ``devices_per_node`` per node."""

    name: str
    kind: str  # "gpu" or "cpu"
    memory_bytes: int  # per device (cpu: per worker, the node's RAM over its workers)
    peak_flops_bf16: float  # per device, dense
    peak_flops_fp32: float
    intra_node_bw: float  # bytes/s per device, one direction (NVLink; cpu: memory copies)
    inter_node_bw: float  # bytes/s per device across nodes (the node's NIC over its GPUs)
    context_bytes: int  # per device: CUDA context, cuBLAS workspace, NCCL buffers (cpu: the process itself)
    devices: int = 1
    devices_per_node: int = 8
    storage_bw: float = 1e9  # checkpoint writes, bytes/s for the whole job (EFS/S3: ~1 GB/s is typical)

    @property
    def nodes(self) -> int:
        return -(-self.devices // self.devices_per_node)

    def comm_bw(self) -> float:
        """Bytes/s one rank moves in a collective over all ranks: NVLink inside a node, else the network."""
        return self.intra_node_bw if self.nodes <= 1 else self.inter_node_bw


GPUS: dict[str, Hardware] = {
    "h100-80gb": Hardware("h100-80gb", "gpu", 81_559 * MiB, 989e12, 67e12, 450e9, 3_200e9 / 8 / 8, GiB),
    "h200": Hardware("h200", "gpu", 143_771 * MiB, 989e12, 67e12, 450e9, 3_200e9 / 8 / 8, GiB),
    "a100-80gb": Hardware("a100-80gb", "gpu", 81_920 * MiB, 312e12, 19.5e12, 300e9, 400e9 / 8 / 8, GiB),
}
# Ray's accelerator_type resource names -> the table's names
RAY_ACCELERATORS = {"H100": "h100-80gb", "H200": "h200", "A100-80G": "a100-80gb"}
CPU_FLOPS_PER_THREAD = {"bfloat16": 205e9, "float32": 95e9}
CPU_PROCESS_BYTES = GiB  # a Ray Train worker with torch + DeepSpeed imported, before the model (measured ~0.9 GiB)


def machine_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def hardware(name: str, devices: int, devices_per_node: int | None = None, threads_per_worker: int = 1) -> Hardware:
    """``h100-80gb``, ``h200``, ``a100-80gb`` with ``devices`` GPUs (8 per node unless said), or ``cpu``:
    ``devices`` workers on this machine sharing its RAM."""
    if devices < 1:
        raise PlanError(f"--gpus must be at least 1, got {devices}")
    if name == "cpu":
        per_node = devices_per_node or devices
        return Hardware("cpu", "cpu", machine_ram() // per_node, CPU_FLOPS_PER_THREAD["bfloat16"] * threads_per_worker,
                        CPU_FLOPS_PER_THREAD["float32"] * threads_per_worker, 5e9, 5e9, CPU_PROCESS_BYTES,
                        devices=devices, devices_per_node=per_node)
    if name not in GPUS:
        raise PlanError(f"unknown hardware {name!r}; known: {', '.join([*GPUS, 'cpu'])}")
    return replace(GPUS[name], devices=devices, devices_per_node=devices_per_node or min(devices, 8))


def detected_gpu() -> str | None:
    """The GPU type a connected Ray cluster advertises (``accelerator_type:H100``), if any."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        for key in ray.cluster_resources():
            if key.startswith("accelerator_type:") and key.split(":", 1)[1] in RAY_ACCELERATORS:
                return RAY_ACCELERATORS[key.split(":", 1)[1]]
    except Exception:  # a cluster without the resource or an older Ray: unknown
        return None
    return None
