#!/usr/bin/env bash
# llama.cpp's own command-line quantizer and importance-matrix tool (llama-quantize, llama-imatrix), built once from the
# llama.cpp that llama-cpp-python 0.3.36 vendors — the same quantizer the references call through its Python API, which
# cannot pass an importance matrix. Frontier ladder entries ending in +imatrix use them (Launch/frontier.sh).
# Builds into .build-llamacpp/0.3.36/ (about 8 minutes on 2 cores; Debian's cmake and ninja through Launch/setup.sh)
# and prints the folder holding the two programs. Safe to run again: a finished build is reused.
# usage: Launch/llamacpp_tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
root=.build-llamacpp/$version
bin=$PWD/$root/build/bin
if [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-imatrix" ]; then
    echo "$bin"
    exit 0
fi
bash Launch/setup.sh cmake ninja-build > /dev/null
mkdir -p "$root"
src=$root/llama_cpp_python-$version/vendor/llama.cpp
if [ ! -f "$src/CMakeLists.txt" ]; then
    echo "llamacpp_tools: downloading llama-cpp-python $version's source (PyPI)" >&2
    python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -d "$root" >&2
    tar xzf "$root/llama_cpp_python-$version.tar.gz" -C "$root"
    [ -f "$src/CMakeLists.txt" ] || { echo "llamacpp_tools: expected llama.cpp's sources in $src, found none" >&2; exit 1; }
fi
echo "llamacpp_tools: building llama-quantize and llama-imatrix into $root/build (about 8 minutes)" >&2
cmake -S "$src" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > "$root/cmake.log" 2>&1 \
    || { echo "llamacpp_tools: cmake could not configure llama.cpp; see $root/cmake.log" >&2; exit 1; }
cmake --build "$root/build" -j "$(nproc)" --target llama-quantize llama-imatrix > "$root/build.log" 2>&1 \
    || { echo "llamacpp_tools: the build failed; see $root/build.log" >&2; exit 1; }
echo "$bin"
