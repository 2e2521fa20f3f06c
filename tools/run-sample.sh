#!/usr/bin/env bash
# Quick start: installs everything, builds, builds the default model and runs the sample suite
# (samples/basic) against real VMs, built as a consumer project against the installed package.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_BUILD_DIR:-$root/build}
"$root/tools/build.sh"
"$root/samples/test-installed-package.sh" "$build" -- -j "$(nproc)"
