"""Build-time check of the s1ray image (run by jobs/kuberay/Dockerfile): fails the build when a GPU
node would start without what it needs, instead of finding out on a p5 at job start.

- DeepSpeed's fused Adam (and CPU Adam, for optimizer offload) are pre-built for DeepSpeed's CUDA
  accelerator, with the CUDA release torch was built with: a node then loads them instead of
  JIT-compiling them (which needs a matching nvcc on every node and minutes at start-up), and
  DeepSpeed only loads a pre-built op whose recorded accelerator is the one it runs on.
- The EFA stack is there: libfabric's EFA provider and the aws-ofi-nccl plugin NCCL loads; without
  them NCCL silently falls back to TCP sockets between nodes.

    python jobs/kuberay/check_image.py          # exit status 1 and the problems on stderr
"""

from __future__ import annotations

import glob
import sys

PREBUILT_OPS = ("fused_adam", "cpu_adam")
EFA_LIBS = ("/opt/amazon/efa/lib*/libfabric.so*", "/opt/amazon/ofi-nccl/lib*/**/libnccl-net*.so*")


def image_problems(installed_ops: dict[str, bool], accelerator_name: str, built_with_cuda: str,
                   torch_cuda: str | None, efa_files: dict[str, list[str]]) -> list[str]:
    """What is wrong with an image whose DeepSpeed records ``installed_ops``, ``accelerator_name``
    and ``built_with_cuda`` (its torch_info), whose torch reports ``torch_cuda``, and where each
    EFA pattern found ``efa_files[pattern]``."""
    problems = []
    if torch_cuda is None:
        problems.append("torch is a CPU build (torch.version.cuda is None): install the CUDA wheels")
    missing = [op for op in PREBUILT_OPS if not installed_ops.get(op)]
    if missing:
        problems.append(f"DeepSpeed ops not pre-built: {', '.join(missing)} (DS_BUILD_FUSED_ADAM=1 "
                        "DS_BUILD_CPU_ADAM=1 pip install --no-build-isolation deepspeed)")
    if accelerator_name != "cuda":
        problems.append(f"DeepSpeed's ops were built for accelerator {accelerator_name!r}, not 'cuda': "
                        "a GPU node would JIT-compile them again (build with DS_ACCELERATOR=cuda)")
    if torch_cuda is not None and built_with_cuda.split(".")[:2] != torch_cuda.split(".")[:2]:
        problems.append(f"DeepSpeed's ops were built with CUDA {built_with_cuda}, torch runs CUDA {torch_cuda}")
    for pattern, found in efa_files.items():
        if not found:
            problems.append(f"EFA: nothing matches {pattern} (aws-efa-installer: libfabric + aws-ofi-nccl)")
    return problems


def main() -> int:
    import torch
    from deepspeed.git_version_info import accelerator_name, installed_ops, torch_info

    efa = {p: glob.glob(p, recursive=True) for p in EFA_LIBS}
    problems = image_problems(installed_ops, accelerator_name, str(torch_info.get("cuda_version", "0.0")),
                              torch.version.cuda, efa)
    for p in problems:
        print(f"check_image: {p}", file=sys.stderr)
    if not problems:
        print(f"check_image: ok (torch CUDA {torch.version.cuda}, DeepSpeed ops {', '.join(PREBUILT_OPS)} "
              f"pre-built for cuda; EFA: {', '.join(f for v in efa.values() for f in v[:1])})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
