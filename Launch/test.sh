#!/usr/bin/env bash
# The whole test suite: system packages, build, unit tests and end-to-end tests (which run the built `distill`).
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh --tests
bash Launch/fetch_teacher.sh >/dev/null
bash Launch/fetch_teacher.sh gemma3 >/dev/null
swift build --build-tests
# The test binaries are not the distill executable, which corrects OpenBLAS's kernel choice itself (KDOps/BLASCore):
# on a CPU that OpenBLAS 0.3.21 does not recognize it falls back to SSE3 kernels (5x slower sgemm); pick for it here.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    core=$(python3 -c "import ctypes; l = ctypes.CDLL('libopenblas.so.0'); l.openblas_get_corename.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode())" 2>/dev/null || echo unknown)
    flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
    case "$core" in
        Haswell|SkylakeX|Cooperlake|SapphireRapids|Zen|Excavator|unknown) ;;
        *) if [[ $flags == *avx512f* && $flags == *avx512bw* && $flags == *avx512vl* && $flags == *avx512dq* ]]; then
               export OPENBLAS_CORETYPE=SkylakeX
           elif [[ $flags == *avx2* && $flags == *fma* ]]; then
               export OPENBLAS_CORETYPE=Haswell
           fi
           [ -n "${OPENBLAS_CORETYPE:-}" ] && echo "OpenBLAS chose $core kernels on this CPU; running the tests with OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE" ;;
    esac
fi
swift test --skip-build
