#!/usr/bin/env bash
# GPU smoke checks on a lent device machine that has torch, transformers and Triton but not Ray,
# DeepSpeed or vLLM (docs/paper-scale.md "GPU smoke checks on a fresh GPU machine"). From the repo
# root, after `bash tests/gpu/fetch_wheels.sh` here put the missing packages into .whl/:
#
#   bash tests/gpu/run_on_device.sh            # device tool: carry [".whl"], results under $OUT
#
# 1. installs the carried wheels into a folder of their own ($S1RAY_DEVICE_SITE, no dependencies
#    resolved: fetch_wheels.sh names each one), ahead of nothing the machine already has;
# 2. records the machine (GPU, driver, versions) in $OUT/env.txt;
# 3. runs tests/gpu (each check skips when its package is missing: vLLM and Ray do not fit the
#    carry limit) -> $OUT/gpu-tests.log and $OUT/gpu-junit.xml;
# 4. runs tests/gpu/bench_loss_memory.py when it exists -> $OUT/bench.log.
# Exit status: the tests' (a failed benchmark is reported in its log and in the status line).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-out}
WHEELS=${S1RAY_WHEELS:-.whl}
SITE=${S1RAY_DEVICE_SITE:-/tmp/s1ray-site}
TEST_TIMEOUT_S=${S1RAY_GPU_TEST_TIMEOUT_S:-420}
BENCH_TIMEOUT_S=${S1RAY_GPU_BENCH_TIMEOUT_S:-120}
mkdir -p "$OUT"

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" || { echo "run_on_device: installing ${#wheels[@]} wheels from $WHEELS failed" >&2; exit 2; }
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/s1ray-torch-extensions}  # DeepSpeed's JIT ops

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
    command -v nvcc >/dev/null && nvcc --version | tail -1
    "$PYTHON" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "triton", "deepspeed", "ray", "vllm", "pydantic", "safetensors"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
import torch
print("torch.cuda:", torch.version.cuda, "available:", torch.cuda.is_available())
PY
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

timeout "$TEST_TIMEOUT_S" "$PYTHON" -m pytest -q tests/gpu -rs -p no:cacheprovider \
    --junitxml="$OUT/gpu-junit.xml" 2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}

bench_rc=skipped
if [[ -f tests/gpu/bench_loss_memory.py ]]; then
    timeout "$BENCH_TIMEOUT_S" "$PYTHON" tests/gpu/bench_loss_memory.py 2>&1 | tee "$OUT/bench.log"
    bench_rc=${PIPESTATUS[0]}
fi
echo "run_on_device: tests exit status $tests_rc, benchmark $bench_rc" | tee -a "$OUT/gpu-tests.log"
exit "$tests_rc"
