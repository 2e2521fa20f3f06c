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
if [ "${CI:-}" = true ]; then
  werror=ON
  # CI also holds the tree to .clang-format: a drift fails here, before the long build.
  if ! (cd "$root" && find error lib ssh fixtures tools tests bench samples \( -name '*.cpp' -o -name '*.h' \) -print0 |
    xargs -0 clang-format --dry-run --Werror); then
    echo "vmfest: FAIL: run clang-format -i on the files above" >&2
    exit 1
  fi
fi
mkdir -p "$build"
# VMFEST_CMAKE_ARGS: more configure options, e.g. -DVMFEST_WITH_VIRTUALBOX=OFF.
# shellcheck disable=SC2086 # split on purpose: several options
if ! cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${VMFEST_BUILD_TYPE:-Debug}" \
  -DVMFEST_WERROR="$werror" ${VMFEST_CMAKE_ARGS:-} >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  exit 1
fi
grep '^-- vmfest' "$build/configure.log" || true # what was left out, and why
cmake --build "$build" -j "$(nproc)"
echo "vmfest: default model bundle: $("$root/tools/build-default-model.sh" | tail -n 1)"
