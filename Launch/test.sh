#!/usr/bin/env bash
# The whole test suite: system packages, build, unit tests and end-to-end tests (which run the built `distill`).
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh --tests
bash Launch/fetch_teacher.sh >/dev/null
swift build --build-tests
swift test --skip-build
