#!/usr/bin/env bash
# Builds the unit tests with AddressSanitizer (and LeakSanitizer) and UndefinedBehaviorSanitizer
# into a build folder of their own and runs them; fails on any sanitizer report, also one from a
# child process (the setup-model helper) whose exit status a test does not look at.
#
# Usage: tools/run-sanitizers.sh [CTEST_ARGS...]
#   Build folder: ${VMFEST_SANITIZE_BUILD_DIR:-build-sanitize}. Packages as for tools/build.sh
#   (run tools/install-deps.sh first on a fresh host). Cheap on purpose, for CI's two cores: only
#   the unit-test targets are built, without the VirtualBox backend (no unit test needs it), with
#   ccache when it is installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_SANITIZE_BUILD_DIR:-$root/build-sanitize}
reports=$build/sanitizer-reports

# -fno-sanitize-recover: undefined behaviour aborts the test instead of printing and going on.
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
mkdir -p "$build"
# Warnings are the main build's business (-Werror there); sanitizers make GCC's flow analysis
# warn where it does not otherwise.
if ! cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DVMFEST_WERROR=OFF \
  -DVMFEST_WITH_VIRTUALBOX=OFF -DVMFEST_BUILD_BENCH=OFF "${launcher[@]}" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS="$flags" >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  exit 1
fi
cmake --build "$build" -j "$(nproc)" --target vmfest_unit_tests

rm -rf "$reports"
mkdir -p "$reports"
# Reports go to files as well as failing the process: one in a child would otherwise pass unseen.
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1:check_initialization_order=1"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1"
status=0
# Without the test homes' clean-up fixtures: they run the `vmfest` CLI, which is not built here,
# and no unit test leaves an instance to clean up.
ctest --test-dir "$build" -L unit --fixture-exclude-setup 'clean-.*' --output-on-failure \
  -j "$(nproc)" "$@" || status=$?

if [ -n "$(ls -A "$reports")" ]; then
  for report in "$reports"/*; do
    echo "==== $report" >&2
    cat "$report" >&2
  done
  echo "vmfest: FAIL: sanitizer reports (above, and in $reports)" >&2
  exit 1
fi
[ "$status" = 0 ] && echo "vmfest: unit tests clean under ASan, LSan and UBSan"
exit "$status"
