#!/usr/bin/env bash
# Quick start: installs everything, builds, builds the default model and runs the sample suite
# (samples/basic) against real VMs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_BUILD_DIR:-$root/build}
"$root/tools/build.sh"
ctest --test-dir "$build" -R '^MyGuestTest\.' --output-on-failure -j "$(nproc)"
