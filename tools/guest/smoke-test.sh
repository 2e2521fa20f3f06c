#!/usr/bin/env bash
# End-to-end check of the default model: build (or reuse) the bundle, boot a clone exactly the way
# the vmfest library does (qcow2 overlay + cloud-init NoCloud seed with fresh per-instance keys),
# wait for the ready marker, ssh with a pinned host key, sftp, power off through QMP.
# It does so twice: booting the bundle's kernel and initrd (QEMU's way), then booting from the disk
# alone (BIOS -> SYSLINUX, a disk-only backend's way). A third clone boots from the disk converted
# to VDI (the VirtualBox backend's model format; QEMU reads VDI). Last, a clone without a seed must
# say so and still signal readiness.
# Usage: tools/guest/smoke-test.sh [OUT_DIR]   (OUT_DIR as for tools/build-default-model.sh)
# Env: VMFEST_SMOKE_ACCEL (default tcg: guests hang under KVM on these machines).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
accel=${VMFEST_SMOKE_ACCEL:-tcg}
ready_timeout=${VMFEST_SMOKE_READY_TIMEOUT:-180} # generous: a busy CI host slows TCG boots several-fold
poweroff_timeout=60

log() { printf 'smoke-test: %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmfest-smoke.XXXXXX")
qemu_pid=
stop_qemu() {
  [[ -n $qemu_pid ]] || return 0
  if kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$qemu_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$qemu_pid" 2>/dev/null || true
  fi
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
}
cleanup() {
  stop_qemu
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  log "FAIL: $*"
  if [[ -f $tmp/serial.log ]]; then
    log "serial log tail:"
    tail -n 30 "$tmp/serial.log" >&2
  fi
  exit 1
}

# ---- bundle ---------------------------------------------------------------------------------------
t0=$(now)
bundle=$("$here/../build-default-model.sh" "$@" | tail -n 1)
log "bundle $bundle ($(elapsed "$t0" "$(now)") s)"
[[ -f $bundle/.complete ]] || fail "bundle is not complete"
kernel_version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["guest"]["kernel_version"])' \
  "$bundle/vmfest-model.json")
cmdline=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["boot"]["cmdline"])' \
  "$bundle/vmfest-model.json")
disk_bootable=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("disk_bootable") is True)' \
  "$bundle/vmfest-model.json")
[[ $disk_bootable == True ]] || fail "vmfest-model.json does not say disk_bootable: true"
marker=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ready_marker"])' \
  "$bundle/vmfest-model.json")

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# boot NAME kernel|disk BASE_IMAGE BASE_FORMAT [SEED_ISO]: starts qemu for a fresh overlay clone of
# BASE_IMAGE, booting the bundle's kernel or (BIOS) the disk itself, with the library's devices in
# the library's order (root disk first: the BIOS boots the first disk; the seed has no boot sector).
# Sets qemu_pid, port, qemu_started.
boot() {
  local name=$1 mode=$2 base=$3 base_format=$4 seed=${5:-}
  local boot_args=() seed_args=()
  rm -f "$tmp/overlay.qcow2" "$tmp/serial.log" "$tmp/qmp.sock"
  qemu-img create -q -f qcow2 -b "$base" -F "$base_format" "$tmp/overlay.qcow2"
  case $mode in
    kernel) boot_args=(-kernel "$bundle/vmlinuz" -initrd "$bundle/initrd.img" -append "$cmdline") ;;
    disk) ;;
    *) fail "unknown boot mode $mode" ;;
  esac
  if [[ -n $seed ]]; then
    seed_args=(-drive "file=$seed,if=none,id=seed0,format=raw,readonly=on" -device "virtio-blk-pci,drive=seed0,id=vblk1")
  fi
  port=$(free_port)
  qemu_started=$(now)
  qemu-system-x86_64 -machine pc -accel "$accel" -m 256 -smp 1 -nodefaults -no-user-config -display none \
    "${boot_args[@]}" \
    -drive "file=$tmp/overlay.qcow2,if=none,id=disk0,format=qcow2" -device virtio-blk-pci,drive=disk0,id=vblk0 \
    "${seed_args[@]}" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=net0,id=vnet0 \
    -device virtio-rng-pci,id=rng0 -serial "file:$tmp/serial.log" -qmp "unix:$tmp/qmp.sock,server=on,wait=off" \
    </dev/null >"$tmp/qemu.out" 2>&1 &
  qemu_pid=$!
  log "$name ($mode boot): qemu pid $qemu_pid, ssh port $port"
}

wait_ready() {
  local deadline=$((SECONDS + ready_timeout))
  # The serial console ends lines with CRLF.
  until [[ -f $tmp/serial.log ]] && tr -d '\r' <"$tmp/serial.log" | grep -qx "$marker"; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "qemu exited before $marker: $(cat "$tmp/qemu.out")"
    ((SECONDS < deadline)) || fail "no $marker within $ready_timeout s"
    sleep 0.05
  done
  ready_at=$(now)
}

qmp() {
  python3 - "$tmp/qmp.sock" "$1" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())                       # greeting
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n")
    f.flush()
    while True:                                # skip events until the command's answer
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            break
    if "error" in reply:
        sys.exit("QMP %s: %s" % (cmd, reply["error"]))
EOF
}

power_off() {
  local t deadline=$((SECONDS + poweroff_timeout))
  t=$(now)
  qmp system_powerdown || fail "QMP system_powerdown failed"
  while kill -0 "$qemu_pid" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "qemu still running $poweroff_timeout s after system_powerdown"
    sleep 0.05
  done
  wait "$qemu_pid" || fail "qemu exited with status $?"
  qemu_pid=
  log "system_powerdown -> qemu exit: $(elapsed "$t" "$(now)") s"
}

# ---- seeded instances: the same checks for each way of booting ------------------------------------
instance=inst-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
ssh-keygen -q -t ed25519 -N '' -C vmfest -f "$tmp/client_key"
ssh-keygen -q -t ed25519 -N '' -C vmfest-host -f "$tmp/host_key"
mkdir "$tmp/seed"
{
  echo '#cloud-config'
  echo "hostname: $instance"
  echo 'ssh_authorized_keys:'
  echo "  - $(cat "$tmp/client_key.pub")"
  echo 'ssh_deletekeys: true' # the library writes it too; the guest must skip what it does not parse
  echo 'ssh_keys:'
  echo '  ed25519_private: |'
  sed 's/^/    /' "$tmp/host_key"
  echo "  ed25519_public: $(cat "$tmp/host_key.pub")"
} >"$tmp/seed/user-data"
printf 'instance-id: %s\nlocal-hostname: %s\n' "$instance" "$instance" >"$tmp/seed/meta-data"
(cd "$tmp/seed" && genisoimage -quiet -output "$tmp/seed.iso" -volid cidata -joliet -rock user-data meta-data)

# ssh takes the first value of an option: host key options stay out of the common part.
ssh_common=(-i "$tmp/client_key" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=5 -F /dev/null)

# check_seeded_instance kernel|disk LABEL: after boot: marker, ssh with the pinned host key, guest
# state, sftp.
check_seeded_instance() {
  local mode=$1 label=$2 out guest_time skew checks mods guest_cmdline root_dev
  printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$tmp/host_key.pub")" >"$tmp/known_hosts"
  ssh_opts=(-o "UserKnownHostsFile=$tmp/known_hosts" -o StrictHostKeyChecking=yes "${ssh_common[@]}" -p "$port")

  wait_ready
  log "$label: qemu start -> $marker: $(elapsed "$qemu_started" "$ready_at") s"

  out=
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    if out=$(ssh "${ssh_opts[@]}" root@127.0.0.1 'uname -r; hostname; echo ok' 2>"$tmp/ssh.err"); then
      break
    fi
    out=
    kill -0 "$qemu_pid" 2>/dev/null || fail "qemu died"
    sleep 0.2
  done
  [[ -n $out ]] || fail "ssh never succeeded: $(cat "$tmp/ssh.err")"
  log "$label: qemu start -> first successful ssh: $(elapsed "$qemu_started" "$(now)") s"
  expected=$(printf '%s\n%s\nok' "$kernel_version" "$instance")
  [[ $out == "$expected" ]] || fail "unexpected ssh output: $out"

  # Which way the guest came up: QEMU's -append, or SYSLINUX's APPEND (it adds BOOT_IMAGE=).
  guest_cmdline=$(ssh "${ssh_opts[@]}" root@127.0.0.1 'cat /proc/cmdline')
  root_dev=$(ssh "${ssh_opts[@]}" root@127.0.0.1 'awk '\''$2 == "/" { print $1 }'\'' /proc/mounts')
  case $mode in
    kernel) [[ $guest_cmdline == "$cmdline" ]] || fail "$label: unexpected /proc/cmdline: $guest_cmdline" ;;
    disk)
      [[ $guest_cmdline == BOOT_IMAGE=/vmlinuz* && $guest_cmdline == *console=ttyS0* ]] ||
        fail "$label: /proc/cmdline does not come from SYSLINUX: $guest_cmdline"
      grep -q '^SYSLINUX ' "$tmp/serial.log" || fail "$label: no SYSLINUX banner on the console"
      ;;
  esac
  [[ $root_dev == /dev/vda2 ]] || fail "$label: root is $root_dev, not /dev/vda2"
  log "$label: ssh ok ($(tr '\n' ' ' <<<"$out")), root $root_dev, cmdline: $guest_cmdline"

  # The guest clock comes from the RTC (hwclock -s -u): it must match the host's.
  guest_time=$(ssh "${ssh_opts[@]}" root@127.0.0.1 'date +%s')
  skew=$((guest_time - $(date +%s)))
  ((skew > -5 && skew < 5)) || fail "guest clock off by $skew s"

  # Password logins must be impossible; keys and dirs must have the modes dropbear insists on.
  checks=$(ssh "${ssh_opts[@]}" root@127.0.0.1 \
    'grep "^root:" /etc/shadow | cut -d: -f2; stat -c "%a %n" /root/.ssh /root/.ssh/authorized_keys')
  [[ $checks == $'*\n700 /root/.ssh\n600 /root/.ssh/authorized_keys' ]] || fail "unexpected guest state: $checks"

  # Modules the library relies on beyond disk and network: virtio-serial (agent), rng, ISO seed, ACPI.
  mods=$(ssh "${ssh_opts[@]}" root@127.0.0.1 \
    'for m in virtio_console virtio_rng isofs button evdev; do [ -d /sys/module/$m ] || echo $m; done')
  [[ -z $mods ]] || fail "modules not loaded in the guest: $mods"

  head -c 100000 /dev/urandom >"$tmp/blob"
  printf 'ls -l /\nput %s /tmp/blob\nget /tmp/blob %s\n' "$tmp/blob" "$tmp/blob.back" >"$tmp/sftp.batch"
  rm -f "$tmp/blob.back"
  sftp -b "$tmp/sftp.batch" -i "$tmp/client_key" -o "UserKnownHostsFile=$tmp/known_hosts" \
    -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes -F /dev/null -P "$port" \
    root@127.0.0.1 >"$tmp/sftp.out" 2>&1 || fail "sftp failed: $(cat "$tmp/sftp.out")"
  cmp -s "$tmp/blob" "$tmp/blob.back" || fail "sftp round trip changed the file"
  log "$label: sftp ok (ls, put, get)"
}

boot "$instance" kernel "$bundle/disk.qcow2" qcow2 "$tmp/seed.iso"
check_seeded_instance kernel "kernel boot"
power_off

boot "$instance" disk "$bundle/disk.qcow2" qcow2 "$tmp/seed.iso"
check_seeded_instance disk "disk boot"
power_off

# The VirtualBox backend's model is this disk as VDI; its QEMU stand-in boots it from disk like this.
t=$(now)
qemu-img convert -f qcow2 -O vdi "$bundle/disk.qcow2" "$tmp/model.vdi"
log "qemu-img convert -O vdi: $(elapsed "$t" "$(now)") s"
boot "$instance" disk "$tmp/model.vdi" vdi "$tmp/seed.iso"
check_seeded_instance disk "VDI disk boot"
power_off
rm -f "$tmp/model.vdi"

# ---- no seed: must say so and still print the marker; ssh must fail, not hang ---------------------
boot no-seed kernel "$bundle/disk.qcow2" qcow2
wait_ready
grep -q 'no cidata seed found; no SSH keys installed' "$tmp/serial.log" || fail "no-seed message missing"
t=$(now)
if ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "${ssh_common[@]}" -p "$port" \
  root@127.0.0.1 true 2>"$tmp/ssh.err"; then
  fail "ssh into an unseeded guest succeeded"
fi
grep -q 'Permission denied' "$tmp/ssh.err" || fail "unseeded guest: unexpected ssh error: $(cat "$tmp/ssh.err")"
log "no seed: marker after $(elapsed "$qemu_started" "$ready_at") s, ssh refused in $(elapsed "$t" "$(now)") s"
power_off

log "PASS"
