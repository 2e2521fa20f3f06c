#!/usr/bin/env bash
# Installs the packages, configures and builds vmfest into ${VMFEST_BUILD_DIR:-build}, and builds
# (or finds in its cache) the default test model. Shared first half of run-sample.sh and
# run-tests.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_BUILD_DIR:-$root/build}

"$root/tools/install-deps.sh"
# Debug by default: tests spend their time in QEMU, not in vmfest, and -O0 compiles fastest on
# CI's two cores. Benchmarks want VMFEST_BUILD_TYPE=Release.
werror=OFF
[ "${CI:-}" = true ] && werror=ON
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${VMFEST_BUILD_TYPE:-Debug}" -DVMFEST_WERROR="$werror" >/dev/null
cmake --build "$build" -j "$(nproc)"
echo "vmfest: default model bundle: $("$root/tools/build-default-model.sh" | tail -n 1)"
