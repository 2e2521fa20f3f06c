#!/usr/bin/env bash
# Runs every test (unit and real-VM) and ends with ctest's summary; then checks that the run left
# no QEMU process and no instance behind.
#
# Usage: tools/run-tests.sh [--broken-kvm] [CTEST_ARGS...]
#   --broken-kvm: the same suite on a stand-in for a host whose /dev/kvm cannot run 64-bit Linux
#   (tests/support/broken-kvm/qemu-system-x86_64 first on PATH: KVM requests run under TCG on a CPU
#   without long mode). Where the host has no /dev/kvm, a node is made for the run (root:
#   mknod /dev/kvm c 10 232) and removed afterwards (the stand-in never opens it: vmfest only
#   needs to see one). Proves that vmfest's probe and its runtime fallback choose TCG there.
#   CTEST_ARGS go to ctest (e.g. -L vm).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_BUILD_DIR:-$root/build}
broken_kvm=false
if [ "${1:-}" = --broken-kvm ]; then
  broken_kvm=true
  shift
fi
"$root/tools/build.sh"

if [ "$broken_kvm" = true ]; then
  export PATH="$root/tests/support/broken-kvm:$PATH"
  export VMFEST_BROKEN_KVM_RUN=1 # tests that need /dev/kvm fail instead of skipping
  if [ ! -e /dev/kvm ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "vmfest: FAIL: --broken-kvm needs a /dev/kvm node; as root: mknod /dev/kvm c 10 232" >&2
      exit 1
    fi
    mknod -m 600 /dev/kvm c 10 232
    trap 'rm -f /dev/kvm' EXIT
    echo "vmfest: made /dev/kvm for the broken-KVM run (removed at the end)"
  fi
  echo "vmfest: broken-KVM run: qemu-system-x86_64 is $(command -v qemu-system-x86_64)"
fi

status=0
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@" || status=$?

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
