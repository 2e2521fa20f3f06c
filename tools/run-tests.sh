#!/usr/bin/env bash
# Runs every test (unit and real-VM) and ends with ctest's summary; then checks that the run left
# no QEMU process and no instance behind in the homes it used. Each home starts empty: ctest runs
# `vmfest reap --force` on it before its first test (tests/CMakeLists.txt), so leftovers of a run
# that died do not fail this one.
#
# Usage: tools/run-tests.sh [--broken-kvm] [CTEST_ARGS...]
#   --broken-kvm: the same suite on a stand-in for a host whose /dev/kvm cannot run 64-bit Linux
#   (tests/support/broken-kvm/qemu-system-x86_64 first on PATH: KVM requests run under TCG on a CPU
#   without long mode). Where the host has no /dev/kvm, a node is made for the run (root:
#   mknod /dev/kvm c 10 232) and removed afterwards (the stand-in never opens it: vmfest only
#   needs to see one). Proves that vmfest's probe and its runtime fallback choose TCG there.
#   CTEST_ARGS go to ctest (e.g. -L vm).
# After ctest, `vmfest report` draws where the run's time went into <build>/vmfest-report.html
# (vmfest-report-broken-kvm.html for --broken-kvm) and the path is printed.
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
  # The distro images' tests (label distro) are about the images, and the libvirt and VirtualBox
  # backends' (labels libvirt, virtualbox) about those backends, not the QEMU backend's accelerator
  # probe: the first run has them, and they would add minutes of TCG boots here.
  set -- -LE 'distro|libvirt|virtualbox' "$@"
fi

# The fixtures record each instance's phases under the artifacts folder (VMFEST_ARTIFACTS, set by
# vmfest_add_tests); the page drawn from them after ctest is this run's alone.
records=$build/vmfest-artifacts/records
report=$build/vmfest-report.html
[ "$broken_kvm" = false ] || report=$build/vmfest-report-broken-kvm.html
rm -rf "$records" "$report"

status=0
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@" || status=$?

# Where the run's time went (`vmfest report`): a page per run, beside the build's other results.
if [ -n "$(find "$records" -name '*.jsonl' 2>/dev/null)" ]; then
  if "$build/tools/vmfest" report "$records" -o "$report"; then
    echo "vmfest: where this run's time went: $report"
  else
    echo "vmfest: FAIL: no report of this run's time from the records in $records" >&2
    status=1
  fi
else
  echo "vmfest: no VM test ran, so there is no report of the run's time"
fi

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
