#!/usr/bin/env bash
# Sets up and starts the services the libvirt backend's tests need, on a host where systemd is not
# PID 1 (containers, CI): virtlogd and libvirtd, a user vmfest-hv that may use libvirtd's socket, and
# an OpenSSH server on the loopback for the remote (qemu+ssh://) tests.
# libvirtd and virtlogd run in a private mount namespace with a tmpfs at the pool folder
# /var/lib/vmfest-pool: outside it, where the tests run, that folder is empty, which proves that the
# backend reaches the pool's files only through libvirt, never through a shared path. A libvirtd
# running outside such a namespace (started by hand) is stopped and started again in one.
#
# Usage: tools/libvirt-services.sh start STATE_DIR PORT
#   Installs what is missing, starts what does not run (sshd on 127.0.0.1:PORT, keys and config in
#   STATE_DIR), checks every service and prints the remote URI. Idempotent.
# Usage: tools/libvirt-services.sh stop STATE_DIR
#   Stops STATE_DIR's sshd, and libvirtd and virtlogd if STATE_DIR's start started them and no
#   domain runs (one started by hand, or busy with another run's VMs, stays).
set -euo pipefail
# shellcheck source=lib/packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/packages.sh"
pool=/var/lib/vmfest-pool
user=vmfest-hv
sys=qemu:///system
sock=/run/libvirt/libvirt-sock

say() { echo "libvirt-services: $*"; }
die() { echo "libvirt-services: FAIL: $*" >&2; exit 1; }
die_log() { tail -n 20 "$1" >&2; die "$2"; } # the end of log $1, then message $2
usage() { sed -n '/^# Usage:/,/^set -e/{/^set/d; s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 2; }
# PID 1 may not reap the daemons we stop: a zombie counts as gone.
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ]; }
# The pid in pidfile $1 if that process lives and is named $2 (a stale pidfile names nothing).
pid_of() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  if alive "$pid" && [ "$(cat "/proc/$pid/comm")" = "$2" ]; then echo "$pid"; fi
}
# Stops process $1, named $2, saying why ($3), and waits for it.
stop_pid() {
  say "stopping $2 (pid $1): $3"
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
  die "process $1 ($2) did not stop within 10 s"
}
# virsh on the local daemon, bounded: a hung libvirtd must fail this script, not hang it.
vsh() { timeout 20 virsh -c "$sys" "$@"; }
# Where the threads of process $1 wait: gdb's stacks, or the kernel's view where ptrace is denied.
print_threads() {
  gdb -p "$1" -batch -ex 'thread apply all bt' 2>/dev/null | grep -E '^(Thread|#)' >&2 && return
  local t
  for t in /proc/"$1"/task/*; do echo "  ${t##*/} $(cat "$t/comm") waits in $(cat "$t/wchan")" >&2; done
}
# libvirtd $1 does not answer: where its and virtlogd's threads wait (for a bug report) and its log
# go to stderr; then every process of its mount namespace (it, virtlogd, its VMs) is killed, so none
# outlives the run.
kill_hung_daemon() {
  echo "libvirt-services: libvirtd (pid $1) does not answer within 20 s; its threads:" >&2
  print_threads "$1"
  local ns p vpid
  vpid=$(pid_of /run/virtlogd.pid virtlogd)
  if [ -n "$vpid" ]; then
    echo "libvirt-services: virtlogd (pid $vpid), which libvirtd writes QEMU's output through:" >&2
    print_threads "$vpid"
  fi
  tail -n 20 "$state/libvirtd.log" >&2
  ns=$(readlink "/proc/$1/ns/mnt")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" != "$ns" ] || kill -9 "${p#/proc/}" 2>/dev/null || true
  done
  rm -f "$state/libvirtd.started"
  die "killed libvirtd (pid $1) and the processes of its mount namespace"
}
# Whether process $1 sees the pool's tmpfs, i.e. runs in the private namespace made below.
namespaced() { awk -v p="$pool" '$5 == p && / - tmpfs / {f = 1} END {exit !f}' "/proc/$1/mountinfo" 2>/dev/null; }

[[ ${1:-} = start && $# = 3 || ${1:-} = stop && $# = 2 ]] || usage
mkdir -p "$2"
state=$(cd "$2" && pwd) # absolute: sshd re-executes itself and needs absolute paths
# The one file of STATE_DIR that $user reads (as sshd reads AuthorizedKeysFile: as the user logging
# in) lives where $user can reach it whatever holds STATE_DIR (a clone in root's 0700 home): under
# /run, in a folder per STATE_DIR, so two build trees' sshds keep their own keys.
keys=/run/vmfest-hv/$(printf '%s' "$state" | sha256sum | cut -c1-16)
if [ "$1" = stop ]; then
  pid=$(pid_of "$state/sshd.pid" sshd)
  if [ -n "$pid" ]; then stop_pid "$pid" sshd "stop $state"; else say "no sshd runs for $state"; fi
  rm -rf "$keys"
  pid=$(pid_of /run/libvirtd.pid libvirtd)
  if [ -n "$pid" ] && [ "$pid" = "$(cat "$state/libvirtd.started" 2>/dev/null)" ]; then
    domains=$(vsh list --name 2>/dev/null) || kill_hung_daemon "$pid"
    if [ -n "$(tr -d '[:space:]' <<<"$domains")" ]; then
      say "libvirtd (pid $pid) stays: it runs domains"
    else
      stop_pid "$pid" libvirtd "started by $state's start"
      vpid=$(pid_of /run/virtlogd.pid virtlogd)
      [ -z "$vpid" ] || stop_pid "$vpid" virtlogd "started with libvirtd"
      rm -f "$state/libvirtd.started"
    fi
  fi
  exit 0
fi
port=$3
[[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"

# 1. Packages (gdb: the thread stacks of a libvirtd that stopped answering, see kill_hung_daemon).
install_missing libvirt-daemon-system libvirt-clients libvirt-dev openssh-server openssh-client gdb

# 2. The user the remote tests log in as. sshd without PAM refuses a locked account (password
# field '!', which useradd --system gives); '*' has no password either but is not locked.
id "$user" >/dev/null 2>&1 || useradd --system --home-dir "/var/lib/$user" --create-home --shell /bin/sh "$user"
id -nG "$user" | grep -qw libvirt || usermod -a -G libvirt "$user"
[ "$(getent shadow "$user" | cut -d: -f2)" = '*' ] || usermod -p '*' "$user"

# 3. libvirtd. Outside its namespace the pool folder is an empty root-only directory.
install -d -m 0700 "$pool"
[ -z "$(ls -A "$pool")" ] || die "$pool has files outside libvirtd's namespace; remove them"
pid=$(pid_of /run/libvirtd.pid libvirtd)
if [ -n "$pid" ] && namespaced "$pid" && [ "$(stat -c %G "$sock" 2>/dev/null)" = libvirt ] &&
  vsh version >/dev/null 2>&1; then
  [ -n "$(pid_of /run/virtlogd.pid virtlogd)" ] || nsenter -t "$pid" -m virtlogd -d # QEMU logs through it
else
  if [ -n "$pid" ]; then
    # Its domains would outlive it, outside the namespace: only an idle daemon is restarted.
    domains=$(vsh list --name 2>/dev/null) || kill_hung_daemon "$pid"
    [ -z "$(tr -d '[:space:]' <<<"$domains")" ] ||
      die "libvirtd (pid $pid) must restart in the pool's namespace but runs domains: destroy them first"
    stop_pid "$pid" libvirtd "not in the pool's namespace, or another socket group"
  fi
  vpid=$(pid_of /run/virtlogd.pid virtlogd)
  [ -z "$vpid" ] || stop_pid "$vpid" virtlogd "restarts with libvirtd"
  # The socket is the libvirt group's: no polkit (it needs D-Bus, which does not run here).
  cat >"$state/libvirtd.conf" <<EOF
unix_sock_group = "libvirt"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$state/libvirtd.log"
EOF
  : >"$state/libvirtd.log"
  # The test daemon gets no /dev/kvm: the backend's tests run under TCG unless VMFEST_ACCEL=kvm.
  # Where /dev/kvm lets root's QEMU enable KVM but not libvirt's QEMU user open it (no udev rule
  # gave it to group kvm; or a KVM that hangs Linux guests), libvirt 9 finds its probed
  # capabilities stale at every call and probes QEMU again: a minute per domain start, and a daemon
  # too busy to stop. In its namespace a root-only empty file stands in for the device, and its
  # qemu.conf leaves the device out of what each domain's own /dev receives.
  hide_kvm=
  if [ -e /dev/kvm ] && [ "${VMFEST_ACCEL:-}" != kvm ]; then
    hide_kvm=$state/no-kvm
    install -m 0000 /dev/null "$hide_kvm"
    echo 'cgroup_device_acl = ["/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx"]' >"$state/qemu.conf"
  fi
  # shellcheck disable=SC2016 # $1, $2 and $3 are the inner shell's
  unshare --mount --propagation private -- sh -c 'mount -t tmpfs -o size=4G,mode=0711 vmfest-pool "$1" &&
    { [ -z "$3" ] || { mount --bind "$3" /dev/kvm &&
      mount --bind "$(dirname "$3")/qemu.conf" /etc/libvirt/qemu.conf; }; } &&
    virtlogd -d && exec libvirtd -d -f "$2"' sh "$pool" "$state/libvirtd.conf" "$hide_kvm" ||
    die "could not start libvirtd in a private mount namespace"
  timeout 30 sh -c "until virsh -c $sys version >/dev/null 2>&1; do sleep 0.1; done" ||
    die_log "$state/libvirtd.log" "libvirtd did not answer within 30 s"
  pid_of /run/libvirtd.pid libvirtd >"$state/libvirtd.started" # ours to stop (see stop)
fi
pid=$(pid_of /run/libvirtd.pid libvirtd)
vpid=$(pid_of /run/virtlogd.pid virtlogd)
namespaced "${pid:-none}" || die "libvirtd does not run in the pool's namespace"
namespaced "${vpid:-none}" || die "virtlogd does not run in the pool's namespace"
probe=$pool/.vmfest-namespace-probe # made in libvirtd's namespace, must not show here
nsenter -t "$pid" -m touch "$probe"
shared=false && [ -e "$probe" ] && shared=true
nsenter -t "$pid" -m rm -f "$probe"
[ "$shared" = false ] || die "$pool is shared with libvirtd's namespace"
runuser -u "$user" -- timeout 20 virsh -c "$sys" list >/dev/null || die "$user cannot use $sock"

# 4. sshd for the remote tests: its own host key and client key (made once), loopback only.
install -d -m 0755 /run/sshd # privilege separation directory
for key in ssh_host_ed25519_key client_ed25519; do
  [ -f "$state/$key" ] || ssh-keygen -q -t ed25519 -N '' -C "vmfest-$key" -f "$state/$key"
done
install -d -m 0755 "$(dirname "$keys")" "$keys"
install -m 0644 "$state/client_ed25519.pub" "$keys/authorized_keys"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$state/ssh_host_ed25519_key.pub")" >"$state/known_hosts"
# StrictModes no only skips sshd's owner checks: the user must still be able to read the file.
runuser -u "$user" -- test -r "$keys/authorized_keys" || die "$user cannot read $keys/authorized_keys"
cat >"$state/sshd_config.new" <<EOF
ListenAddress 127.0.0.1:$port
HostKey "$state/ssh_host_ed25519_key"
PidFile "$state/sshd.pid"
AuthorizedKeysFile "$keys/authorized_keys"
AllowUsers $user
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding local
EOF
spid=$(pid_of "$state/sshd.pid" sshd)
if [ -n "$spid" ] && cmp -s "$state/sshd_config.new" "$state/sshd_config"; then
  rm "$state/sshd_config.new"
else
  [ -z "$spid" ] || stop_pid "$spid" sshd "its config changed"
  mv "$state/sshd_config.new" "$state/sshd_config"
  /usr/sbin/sshd -f "$state/sshd_config" -E "$state/sshd.log" || die_log "$state/sshd.log" "sshd did not start"
  for _ in $(seq 50); do [ -s "$state/sshd.pid" ] && break; sleep 0.1; done # written once detached
  spid=$(pid_of "$state/sshd.pid" sshd)
  [ -n "$spid" ] || die_log "$state/sshd.log" "sshd did not start"
fi
# libvirt's ssh transport runs `ssh`, or command=: this one checks the host key against STATE_DIR's
# known_hosts, not root's (no_verify=1 would add the key to ~/.ssh/known_hosts), and never prompts.
printf '#!/bin/sh\nexec ssh -F none -o BatchMode=yes -o "UserKnownHostsFile=%s" "$@"\n' "$state/known_hosts" >"$state/ssh"
chmod 0755 "$state/ssh"
"$state/ssh" -p "$port" -i "$state/client_ed25519" "$user@127.0.0.1" timeout 20 virsh -c "$sys" version >/dev/null ||
  die "ssh to $user@127.0.0.1:$port cannot run virsh"
base="$user@127.0.0.1:$port/system?keyfile=$state/client_ed25519"
uri="qemu+ssh://$base&command=$state/ssh"
# The same through libvirt's own SSH client, which takes the known_hosts file as a parameter.
libssh_uri="qemu+libssh://$base&known_hosts=$state/known_hosts&sshauth=privkey"
for u in "$uri" "$libssh_uri"; do timeout 20 virsh -c "$u" version >/dev/null || die "virsh cannot connect to $u"; done

# 5. What runs.
say "libvirtd: pid $pid, tmpfs at $pool in its own mount namespace; socket $sock ($(stat -c '%U:%G %a' "$sock"))"
say "virtlogd: pid $vpid, in libvirtd's mount namespace"
say "sshd: pid $spid, listening on 127.0.0.1:$port (user $user, host key in $state/known_hosts)"
say "remote URI (libssh transport): $libssh_uri"
say "remote URI: $uri"
