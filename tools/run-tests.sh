#!/usr/bin/env bash
# Runs every test (unit and real-VM) and ends with ctest's summary; then checks that the run left
# no QEMU process and no instance behind in the homes it used. Each home starts empty: ctest runs
# `vmfest reap --force` on it before its first test (tests/CMakeLists.txt), so leftovers of a run
# that died do not fail this one.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_BUILD_DIR:-$root/build}
"$root/tools/build.sh"

status=0
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" || status=$?

leaks=0
# Only this run's VMs count, not another project's on the same host: a QEMU started by vmfest works
# in its instance folder, and every home of this run (the plugin harness's private ones too) is
# inside the build tree.
for proc in /proc/[0-9]*; do
  [ "$(basename "$(readlink "$proc/exe" 2>/dev/null)")" = qemu-system-x86_64 ] || continue
  cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue
  case $cwd in
    "$build"/*)
      echo "vmfest: FAIL: qemu process ${proc#/proc/} is left after the test run, in $cwd" >&2
      leaks=1
      ;;
  esac
done
# The homes the tests use, as registered by tests/CMakeLists.txt.
homes_file=$build/vmfest-test-homes.txt
if [ ! -s "$homes_file" ]; then
  echo "vmfest: FAIL: $homes_file is missing: the build tree does not list its test homes" >&2
  leaks=1
else
  while IFS= read -r home; do
    if [ -d "$home/instances" ] && [ -n "$(ls -A "$home/instances")" ]; then
      echo "vmfest: FAIL: instances left in $home/instances: $(ls -A "$home/instances")" >&2
      leaks=1
    fi
  done <"$homes_file"
fi
[ "$leaks" = 0 ] && echo "vmfest: no qemu process and no instance left behind"
[ "$status" = 0 ] && [ "$leaks" = 0 ]
