#!/usr/bin/env bash
# Installs a built vmfest tree into a prefix, then configures, builds and runs samples/basic,
# samples/provisioned-service and samples/cluster against that installed package, as a consumer
# project would (find_package(vmfest CONFIG)). The cluster's tests run three VMs at once: on a host
# of a smaller capacity (VMFEST_MAX_VMS) each takes the whole host and runs one VM beyond the cap.
# Usage: samples/test-installed-package.sh VMFEST_BUILD_DIR [WORK_DIR]
#   WORK_DIR (default VMFEST_BUILD_DIR/sample-consumer) receives prefix/ and build/.
# Extra ctest arguments may follow after `--`.
set -euo pipefail
samples=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 VMFEST_BUILD_DIR [WORK_DIR] [-- ctest args]" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
work=$build/sample-consumer
if [ $# -gt 0 ] && [ "$1" != -- ]; then work=$1; shift; fi
[ "${1:-}" = -- ] && shift

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
rm -rf "$work/prefix"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
# The sample uses only QEMU, so it must configure and link with gSOAP out of sight: pkg-config
# looks in an empty folder instead of the system's (where gsoap++.pc lives).
mkdir -p "$work/no-pkg-config"
samples_built=(basic provisioned-service cluster)
for sample in "${samples_built[@]}"; do
  PKG_CONFIG_LIBDIR="$work/no-pkg-config" PKG_CONFIG_PATH="" \
    cmake -S "$samples/$sample" -B "$work/$sample" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
  if grep -qi gsoap "$work/$sample/CMakeCache.txt" "$work/$sample/build.ninja" 2>/dev/null; then
    echo "test-installed-package: FAIL: a QEMU-only consumer of vmfest was handed gSOAP" >&2
    exit 1
  fi
  cmake --build "$work/$sample"
done
status=0
for sample in "${samples_built[@]}"; do
  ctest --test-dir "$work/$sample" --output-on-failure "$@" || status=1
done
exit "$status"
