#!/usr/bin/env bash
# Runs every test (unit and real-VM) and ends with ctest's summary; then checks that the run left
# no QEMU process and no instance behind.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_BUILD_DIR:-$root/build}
"$root/tools/build.sh"

status=0
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" || status=$?

leaks=0
# pgrep -x matches only the 15-character process name: match the command line instead.
if pgrep -a -f '^[^ ]*qemu-system-x86_64 '; then
  echo "vmfest: FAIL: qemu processes are left after the test run (listed above)" >&2
  leaks=1
fi
for home in "$build"/vmfest-home "$build"/unit-home; do
  if [ -d "$home/instances" ] && [ -n "$(ls -A "$home/instances")" ]; then
    echo "vmfest: FAIL: instances left in $home/instances: $(ls -A "$home/instances")" >&2
    leaks=1
  fi
done
[ "$leaks" = 0 ] && echo "vmfest: no qemu process and no instance left behind"
[ "$status" = 0 ] && [ "$leaks" = 0 ]
