#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), before asking for a GPU lease: puts into .gpu/
# what the GPU machine lacks, small enough to carry (the lease's limit is 64 MiB):
#   .gpu/llama_cpp_python-VERSION.tar.gz  llama-cpp-python's sdist without llama.cpp's
#                                         models/, docs/, web UI and non-CUDA backends
#   .gpu/whl/*.whl                        pure-Python packages missing there (gguf, diskcache)
# Then, on the GPU machine: bash benchmarks/gpu/run.sh (carry .gpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-$($PY -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")}
rm -rf .gpu .gpu.tmp
mkdir -p .gpu.tmp/sdist .gpu.tmp/whl
$PY -m pip download -q --no-deps --no-binary=:all: "llama-cpp-python==$VERSION" -d .gpu.tmp/sdist
tar xzf .gpu.tmp/sdist/llama_cpp_python-"$VERSION".tar.gz -C .gpu.tmp/sdist
SRC=.gpu.tmp/sdist/llama_cpp_python-$VERSION
LC=$SRC/vendor/llama.cpp
# The sdist carries a git pack of llama.cpp (38 MB) and test media: not needed to build.
rm -rf "$SRC"/.git "$SRC"/examples "$LC"/models "$LC"/docs "$LC"/media "$LC"/tools/ui "$LC"/benches
find "$LC" \( -name '*.gguf' -o -name '*.mp4' -o -name '*.mp3' -o -name '*.wav' -o -name '*.jpg' -o -name '*.png' \) -delete
# Keep ggml-cpu (always built) and ggml-cuda; every other backend is off by default.
for d in "$LC"/ggml/src/ggml-*/; do
  case "$(basename "$d")" in ggml-cpu|ggml-cuda) ;; *) rm -rf "$d" ;; esac
done
tar czf .gpu.tmp/llama_cpp_python-"$VERSION".tar.gz -C .gpu.tmp/sdist "llama_cpp_python-$VERSION"
# The GPU image has torch, transformers, peft, numpy, tokenizers, jinja2, onnx (KINDS.md);
# not these. gguf and diskcache are pure Python.
$PY -m pip download -q --no-deps --only-binary=:all: -d .gpu.tmp/whl \
  "gguf==$($PY -c "import importlib.metadata as m; print(m.version('gguf'))")" \
  "diskcache==$($PY -c "import importlib.metadata as m; print(m.version('diskcache'))")"
mkdir .gpu
mv .gpu.tmp/llama_cpp_python-"$VERSION".tar.gz .gpu.tmp/whl .gpu/
rm -rf .gpu.tmp
du -sh .gpu/* 
