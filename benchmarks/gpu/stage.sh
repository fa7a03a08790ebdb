#!/usr/bin/env bash
# Run ON THE GPU MACHINE (no network there), in the repository root; made for this
# workplace's device tool, whose calls carry 64 MiB and whose machine stays warm 30 s
# between calls (what stage 1 leaves in /tmp/sg is there for stage 2).
#   bash benchmarks/gpu/stage.sh 1   (carry .gpu)  installs (benchmarks/gpu/prepare.sh made .gpu
#                                    and .gpu2 here); exports the benchmark models
#                                    and the check models on the CPU cores; GGUF check on the GPU
#   bash benchmarks/gpu/stage.sh 2   (carry .gpu2) completes ONNX Runtime's CUDA provider;
#                                    ONNX check; the full table (benchmarks/run.py --device cuda)
# Everything is logged to $OUT (or build/gpu); a step that fails is reported and the next runs.
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
OUT=${OUT:-build/gpu}
S=/tmp/sg
PY=${PYTHON:-python3}
SHAPES=${SHAPES:-smollm2-135m,qwen2.5-0.5b}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script where there is no GPU
mkdir -p "$OUT"
step() { echo "== $(date +%T) $*"; }
export PYTHONPATH=$S/site
# llama.cpp's and ONNX Runtime's CUDA libraries need cuBLAS, cudart, cuFFT, cuRAND, cuDNN:
# the image has them in its pip packages (nvidia/*), which no loader path names.
for d in $($PY -c "import glob, os, site; print(' '.join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + '/nvidia/**/lib*.so*', recursive=True)})))" 2>/dev/null); do
  LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}${LD_LIBRARY_PATH:+:}/usr/local/cuda/lib64  # the toolkit's, last

stage1() {
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cores: $(nproc)"; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; $PY -c "import torch, transformers, peft, onnx; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'onnx', onnx.__version__)"
  step "install"
  rm -rf $S && mkdir -p $S/site
  $PY -m pip install -q --no-index --no-deps --no-compile --target $S/site .gpu/whl/*.whl
  xz -d < .gpu/ort-base.tar.xz | tar x -C $S/site
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --target $S/site . 2>&1 | tail -5
  step "exports (CPU cores, in parallel)"
  pids=()
  for shape in ${SHAPES//,/ }; do
    # and the first shape's int4 base for the CPU provider too (check.py speed: does --ep matter on CUDA?)
    { $PY benchmarks/run.py --build-only --work $S/w --shapes "$shape" --onnx-ep cuda
      [ "$shape" != "${SHAPES%%,*}" ] || $PY benchmarks/gpu/check.py build-speed "$S/w/$shape"; } > "$S/build-$shape.log" 2>&1 &
    pids+=($!)
  done
  $PY benchmarks/gpu/check.py build $S/chk > $S/check-build.log 2>&1 &
  check_pid=$!
  step "llama-cpp-python with CUDA"
  gpu_llama() { $PY -c "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())"; }
  if [ -f .gpu/llama_cpp-cuda.tar.xz ]; then
    xz -d < .gpu/llama_cpp-cuda.tar.xz | tar x -C $S/site
    gpu_llama || { echo "the prebuilt llama-cpp-python does not load with CUDA here; building it"; \
                   rm -rf $S/site/llama_cpp $S/site/llama_cpp_python-*; }
  fi
  if ! gpu_llama 2>/dev/null && ls .gpu/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    t0=$(date +%s)
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90} -DGGML_CUDA_FA=OFF -DLLAVA_BUILD=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      $PY -m pip install -q --no-index --no-deps --no-build-isolation --target $S/site .gpu/llama_cpp_python-*.tar.gz 2>&1 | tail -20
    echo "llama-cpp-python CUDA build: $(( $(date +%s) - t0 )) s"
  fi
  $PY -c "import llama_cpp, sgedge, onnxruntime_genai as og; print('llama-cpp-python', llama_cpp.__version__, 'GPU offload', llama_cpp.llama_supports_gpu_offload(), 'onnxruntime-genai', og.__version__)"
  wait $check_pid; echo "check models: exit $?"; tail -2 $S/check-build.log
  step "GGUF on the GPU against transformers + PEFT"
  $PY benchmarks/gpu/check.py run $S/chk --backends gguf --device "$DEVICE" 2>&1 | grep --line-buffered -v -i "warn\|^Loading"
  for p in "${pids[@]}"; do wait "$p"; echo "benchmark export: exit $?"; done
  for shape in ${SHAPES//,/ }; do tail -3 "$S/build-$shape.log"; done
  step "stage 1 done"
}

stage2() {
  step "install the CUDA provider"
  test -d $S/site || { echo "no $S/site: stage 1 did not run on this machine (it was given back?)"; return 3; }
  xz -d < .gpu2/ort-cuda.tar.xz | tar x -C $S/site
  $PY -c "import onnxruntime_genai as og; print('onnxruntime-genai CUDA:', og.is_cuda_available())"
  step "ONNX on the GPU against transformers + PEFT"
  $PY benchmarks/gpu/check.py run $S/chk --backends onnx --device "$DEVICE" 2>&1 | grep --line-buffered -v -i "warn\|^Loading"
  step "ONNX int4 built for the CPU provider vs for CUDA, on the GPU"
  $PY benchmarks/gpu/check.py speed "$S/w/${SHAPES%%,*}" --device "$DEVICE" 2>&1 | grep --line-buffered -v -i "warn\|^Loading"
  backends=gguf,onnx
  $PY -c "import onnxruntime_genai as og; assert og.is_cuda_available()" || backends=gguf
  step "full table (--backends $backends)"
  $PY benchmarks/run.py --device "$DEVICE" --backends $backends --work $S/w --shapes "$SHAPES" \
    --repeats "${REPEATS:-3}" --loads "${LOADS:-2}" --out "$OUT" 2>&1 | grep --line-buffered -v -i "warn\|^Loading"
  step "stage 2 done"
}

case "${1:-}" in
  1|2) "stage$1" 2>&1 | tee "$OUT/stage$1.log" ;;
  *) echo "usage: stage.sh 1|2" >&2; exit 2 ;;
esac
