#!/usr/bin/env bash
# Run ON THE GPU MACHINE (no network there), in the repository root, with .gpu/ carried
# (made by benchmarks/gpu/prepare.sh). One call: installs, builds llama-cpp-python with
# CUDA (~4 min on 16 cores), then measures the GGUF engines on the GPU for both shapes.
# Results land in $OUT (or build/gpu). Sized for a 10-minute command.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
ARCH=${CUDA_ARCH:-90}
test -d .gpu || { echo "no .gpu/: run benchmarks/gpu/prepare.sh here first and carry .gpu" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"
nproc | sed 's/^/cores: /' | tee -a "$OUT/machine.txt"
$PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site
t0=$(date +%s)
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DGGML_CUDA_FA=OFF -DLLAVA_BUILD=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .gpu/llama_cpp_python-*.tar.gz \
  2>&1 | tail -20
echo "llama-cpp-python CUDA build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/machine.txt"
$PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
$PY -c "import llama_cpp, sgedge; assert llama_cpp.llama_supports_gpu_offload(), 'no CUDA in llama.cpp'; print('ok', llama_cpp.__version__)"
for shape in ${SHAPES:-qwen2.5-0.5b smollm2-135m}; do
  $PY benchmarks/decode_speed.py --device cuda --transformers --shape "$shape" --repeats "${REPEATS:-5}" --loads "${LOADS:-2}" \
    --json "$OUT/gpu-$shape.json" 2>&1 | tee "$OUT/gpu-$shape.txt"
done
