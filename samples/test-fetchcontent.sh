#!/usr/bin/env bash
# Configures, builds and runs samples/fetchcontent: vmfest built inside a consumer's own build by
# FetchContent (from this checkout), the sample suite run against real VMs.
# Usage: samples/test-fetchcontent.sh WORK_DIR [-- ctest args]
set -euo pipefail
samples=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 WORK_DIR [-- ctest args]" >&2; exit 2; }
work=$1
shift
[ "${1:-}" = -- ] && shift

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$samples/fetchcontent" -B "$work" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug \
  -DVMFEST_SOURCE_DIR="$samples/.." >/dev/null
cmake --build "$work" --target sample_tests
ctest --test-dir "$work" --output-on-failure "$@"
