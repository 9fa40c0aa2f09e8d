#!/usr/bin/env bash
# Wheels for tests/gpu/run_on_device.sh: what the GPU checks import that a device machine with only
# torch, transformers and Triton lacks (DeepSpeed and its few extra needs, pydantic for s1ray's
# configs), at the versions this install runs with, for the device's Python (3.12, x86-64). Run
# here, from the repo root, where pip reaches the package index; they land in .whl/ (git-ignored
# through .git/info/exclude) and travel with `carry: [".whl"]` (64 MiB in all; these are ~5 MB).
# vLLM, Ray and the packaged SmolLM2 are far larger: their checks skip there and run on a full
# GPU install (docs/paper-scale.md "GPU smoke checks on a fresh GPU machine").
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
DEST=${S1RAY_WHEELS:-.whl}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
exclude=$(git rev-parse --git-path info/exclude)
grep -qx "/$DEST/" "$exclude" 2>/dev/null || echo "/$DEST/" >>"$exclude"
mkdir -p "$DEST"

version() { "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
binary=()
for name in pydantic pydantic-core annotated-types typing-inspection hjson dill; do
    binary+=("$name==$(version "$name")")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${binary[@]}"
# DeepSpeed is an sdist on PyPI: a pure-Python wheel built here; on the GPU it JIT-compiles its ops
# with the machine's nvcc (cached in TORCH_EXTENSIONS_DIR).
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST" "deepspeed==$(version deepspeed)"
ls -l "$DEST"
du -sh "$DEST"
