#!/usr/bin/env bash
# Builds vmfest's Debian package, installs it on this machine, and uses it from /usr as its users
# do: as root, samples/basic configured and run against the installed package; then, as a new
# unprivileged user with a 0700 home of its own, the same sample suite (which builds the default
# model into that user's cache) and the CLI's lifecycle of an instance. Removes the package and the
# user at the end. Needs root (apt-get, useradd); CI runs it from .ci/run.
#
# Usage: tools/test-debian-package.sh
#   VMFEST_DEB_BUILD_DIR (default build-deb beside build/): the Release tree configured for /usr.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${VMFEST_DEB_BUILD_DIR:-$root/build-deb}
user=vmfest-pkg-test # a name no person has: the script makes and removes it

fail() {
  echo "test-debian-package: FAIL: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "run as root: it installs the package and adds a user ($user)"
if id "$user" >/dev/null 2>&1; then
  fail "user $user exists: a previous run died before its clean-up; remove it (userdel -r $user)"
fi
home=/home/$user
[ ! -e "$home" ] || fail "$home exists: a previous run died before its clean-up; remove it"

"$root/tools/install-deps.sh"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
echo "test-debian-package: building the package in $build"
# Warnings are errors here too: the optimizer sees (and warns of) what a Debug build does not.
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DVMFEST_WERROR=ON \
  -DCMAKE_INSTALL_PREFIX=/usr -DVMFEST_BUILD_TESTS=OFF -DVMFEST_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)"
rm -f "$build"/vmfest_*.deb
(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls "$build"/vmfest_*_amd64.deb)
echo "test-debian-package: $(dpkg-deb --field "$deb" Package Version | tr '\n' ' ')($deb)"

# The user's processes still alive: an exited QEMU stays a zombie until init reaps it.
live_processes() { ps -o pid=,stat= -u "$user" | awk '$2 !~ /^Z/ { print $1 }'; }
# A login as that user: its own environment, nothing of root's (no VMFEST_*, no CI caches).
as_user() {
  runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin bash -euo pipefail -c "$1"
}
work=$(mktemp -d "${TMPDIR:-/tmp}/vmfest-pkg.XXXXXX")
cleanup() {
  local status=$?
  if id "$user" >/dev/null 2>&1; then
    # After a failure midway the CLI's VM may still run: destroyed as its owner would.
    [ ! -d "$home/.local/share/vmfest/instances/pkg-vm" ] || as_user 'vmfest destroy pkg-vm' || true
    # Every process of the user is this script's (it made the user): any left is a leak, reported
    # and stopped by pid so that the user can go.
    local leftover
    leftover=$(live_processes)
    if [ -n "$leftover" ]; then
      echo "test-debian-package: FAIL: processes of $user are left:" >&2
      ps -o pid,args -p "${leftover//$'\n'/,}" >&2
      kill $leftover 2>/dev/null || true # word splitting: one pid per word
      sleep 2
      status=1
    fi
    # userdel refuses a user with processes, zombies too: give init a moment to reap them.
    for _ in 1 2 3 4 5; do userdel -r "$user" 2>/dev/null && break; sleep 1; done
    if id "$user" >/dev/null 2>&1; then
      echo "test-debian-package: FAIL: could not remove the user $user" >&2
      status=1
    fi
  fi
  dpkg -r vmfest >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" >/dev/null
[ "$(command -v vmfest)" = /usr/bin/vmfest ] || fail "the package did not install /usr/bin/vmfest"
want_version=$(dpkg-deb --field "$deb" Version)
[ "$(vmfest --version)" = "vmfest $want_version" ] ||
  fail "vmfest --version says '$(vmfest --version)', the package is $want_version"

# The sample as a consumer project finds the package: no CMAKE_PREFIX_PATH, only /usr.
run_sample() { # SAMPLE_DIR BUILD_DIR
  cmake -S "$1" -B "$2" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  grep -q '^vmfest_DIR:PATH=/usr/lib/' "$2/CMakeCache.txt" ||
    fail "the sample did not find vmfest under /usr: $(grep '^vmfest_DIR' "$2/CMakeCache.txt")"
  cmake --build "$2"
  ctest --test-dir "$2" --output-on-failure
}
echo "test-debian-package: samples/basic against /usr, as root"
cp -r "$root/samples/basic" "$work/basic"
run_sample "$work/basic" "$work/basic-build"

echo "test-debian-package: samples/basic and the CLI as $user, a new user with a 0700 home"
useradd --create-home --home-dir "$home" --shell /bin/bash "$user"
chmod 700 "$home"
cp -r "$root/samples/basic" "$home/basic"
chown -R "$user:" "$home/basic"
as_user "$(declare -f run_sample fail); generator=(${generator[*]}); cd ~ && run_sample basic basic-build"
as_user '
  set -x # the failing step is the last one shown
  vmfest models | grep -q vmfest-tiny
  vmfest create pkg-vm --model vmfest-tiny
  vmfest start pkg-vm
  [ "$(vmfest ssh pkg-vm -- echo hello from pkg-vm)" = "hello from pkg-vm" ]
  vmfest pause pkg-vm
  vmfest resume pkg-vm
  vmfest ssh pkg-vm -- true
  vmfest power-down pkg-vm
  vmfest destroy pkg-vm
  [ "$(vmfest ls --json)" = "[]" ]
  data=${XDG_DATA_HOME:-$HOME/.local/share}/vmfest
  [ "$(stat -c %a "$data")" = 700 ]
'
if [ -n "$(live_processes)" ]; then fail "the sample and the CLI left processes of $user running"; fi
echo "test-debian-package: passed (package, sample as root and as $user, CLI lifecycle as $user)"
