#!/usr/bin/env bash
# Times the same 12-test VM suite (vmfest_suite_bench) three ways in one run, with the host's
# peak memory use during each:
#   serial      one process, the tests one after another
#   ctest -j4   12 ctest tests, declared the way vmfest_add_tests does (vms resources, the
#               build's resource spec), so ctest runs at most the host's VM capacity at once
#   4 shards    4 processes at once (GTEST_SHARD_INDEX/GTEST_TOTAL_SHARDS), queued by
#               vmfest's host-wide cap (VMFEST_MAX_VMS)
# Usage: bench/suite_bench.sh BUILD_DIR   (after `ninja -C BUILD_DIR vmfest_suite_bench`)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
build=$(cd "$1" && pwd)
bench=$build/bench/vmfest_suite_bench
spec=$build/vmfest-resources.json
[ -x "$bench" ] || { echo "$bench is missing: ninja -C $build vmfest_suite_bench" >&2; exit 1; }
[ -f "$spec" ] || { echo "$spec is missing: configure $build with tests on" >&2; exit 1; }
work=$build/suite-bench
rm -rf "$work"
mkdir -p "$work"
export VMFEST_HOME=$work/home VMFEST_ARTIFACTS=$work/artifacts
mapfile -t tests < <("$bench" --gtest_list_tests | awk '/^[^ ]/ {suite=$1} /^  / {print suite $1}')
[ ${#tests[@]} -eq 12 ] || { echo "expected 12 tests, found ${#tests[@]}" >&2; exit 1; }
"$bench" --gtest_filter=-* >/dev/null  # sets the model up once, outside the timings

used_kib() { awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t - a}' /proc/meminfo; }
vms() {
  local n=0 pid
  for pid in /proc/[0-9]*; do
    [[ $(readlink "$pid/cwd" 2>/dev/null) == "$VMFEST_HOME/instances/"* ]] &&
      [[ $(cat "$pid/comm" 2>/dev/null) == qemu-system* ]] && n=$((n + 1))
  done
  echo $n
}
# Samples memory and VM count every 0.2 s until the marker file goes away.
sample() {
  local peak=0 most=0 now
  while [ -e "$work/sampling" ]; do
    now=$(used_kib); ((now > peak)) && peak=$now
    now=$(vms); ((now > most)) && most=$now
    sleep 0.2
  done
  echo "$peak $most" > "$work/sample.out"
}

# ctest tests as vmfest_add_tests declares them: one per gtest test, one `vms` slot each.
mkdir -p "$work/ctest"
{
  echo "set(CTEST_RESOURCE_SPEC_FILE [==[$spec]==])"
  for t in "${tests[@]}"; do
    echo "add_test([==[$t]==] [==[$bench]==] [==[--gtest_filter=$t]==])"
    echo "set_tests_properties([==[$t]==] PROPERTIES RESOURCE_GROUPS vms:1 PROCESSORS 1)"
  done
} > "$work/ctest/CTestTestfile.cmake"

serial() { "$bench" > "$work/serial.log" 2>&1; }
ctest_j4() { ctest --test-dir "$work/ctest" -j4 > "$work/ctest.log" 2>&1; }
shards() {
  local pids=() i status=0
  for i in 0 1 2 3; do
    GTEST_SHARD_INDEX=$i GTEST_TOTAL_SHARDS=4 "$bench" > "$work/shard-$i.log" 2>&1 & pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || status=1; done
  return $status
}

printf 'vmfest suite bench: 12 VM tests, %s cores, VM capacity %s (resource spec), load %s\n' \
  "$(nproc)" "$(grep -o '"slots": [0-9]*' "$spec" | grep -o '[0-9]*$')" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %10s %16s %18s %8s\n' mode "wall (s)" "peak used (MiB)" "over start (MiB)" "max VMs"
for mode in serial ctest_j4 shards; do
  base=$(used_kib)
  touch "$work/sampling"
  sample & sampler=$!
  start=$(date +%s.%N)
  if ! $mode; then echo "$mode failed: see $work" >&2; rm -f "$work/sampling"; exit 1; fi
  end=$(date +%s.%N)
  rm -f "$work/sampling"
  wait $sampler
  read -r peak most < "$work/sample.out"
  printf '%-10s %10.1f %16d %18d %8d\n' "$mode" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" \
    $((peak / 1024)) $(((peak - base) / 1024)) "$most"
done
rm -rf "$work"
