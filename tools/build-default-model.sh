#!/usr/bin/env bash
# Builds vmfest's default test model "vmfest-tiny": a busybox + dropbear Linux guest made only from
# Debian packages, as a model bundle directory:
#   disk.qcow2, vmlinuz, initrd.img, vmfest-model.json, build-inputs.txt
# The disk boots by itself, as real images do: BIOS -> MBR -> SYSLINUX on a FAT boot partition
# (vda1, with the same vmlinuz and initrd.img) -> ext4 root (vda2). QEMU skips that stage and boots
# vmlinuz + initrd.img directly ("boot":{"kind":"kernel"}); "disk_bootable":true tells a backend that
# can only boot from disk (VirtualBox) that it may.
# The image holds no host key and no authorized key: each instance gets its own at boot from a
# cloud-init NoCloud seed (ISO9660 labelled "cidata"), applied by tools/guest/rootfs/etc/rc.
#
# Usage: tools/build-default-model.sh [OUT_DIR]
#   OUT_DIR defaults to ${VMFEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmfest}/default-model.
# The LAST line of stdout is the bundle directory; everything else goes to stderr.
#
# Bundles are cached as OUT_DIR/<key>, key = sha256 (16 hex) over this script, tools/guest/
# (except the smoke test, which is not an input), the versions of the installed packages that go into
# the image or write it (model_packages below) and the linux-image-cloud-amd64 that apt would
# download. A complete bundle is returned at once; builds are serialised by a flock on OUT_DIR/.lock.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin # mkfs.*, sfdisk and debugfs live there, outside a normal user's PATH

exec 3>&1 1>&2 # fd 3 carries the result line; apt, mkfs & co. must not pollute stdout
umask 022      # modes inside the image must not depend on the caller's umask

script=$(readlink -f "${BASH_SOURCE[0]}")
guest_dir=${script%/*}/guest
out_dir=${1:-${VMFEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmfest}/default-model}
kernel_meta=linux-image-cloud-amd64
root_mib=256 # room for tests to write a few 64 MiB files; the qcow2 only stores what is used
# Installed packages whose files end up in the image or shape it: their versions are in the key.
mapfile -t model_packages < <(awk '$1 == "image" { print $2 }' "${script%/*}/lib/default-model-packages.txt")
keep_bundles=3 # older bundles are pruned (a running test may still use a recent one)
root_label=vmfest-root
# no_timer_check: the kernel's IO-APIC timer test wants a few ticks within ~40 ms of wall-clock time,
# which a TCG vCPU on a busy host misses and then panics ("IO-APIC + timer doesn't work!"); the
# check guards against broken hardware QEMU does not emulate. Linux sets it itself for KVM/VMware.
# init_on_free=1: freed pages are zeroed, so a warm image (saved after the guest agent drops the
# page cache) stores most of the guest's memory as zero pages: a smaller state, a faster resume.
cmdline_common="console=ttyS0 rw quiet no_timer_check init_on_free=1"
# QEMU boots vmlinuz directly and always gives the root disk as the first virtio-blk: /dev/vda2.
kernel_cmdline="$cmdline_common root=/dev/vda2"
# From disk the device name depends on the hypervisor's disk controller: find root by its label.
disk_cmdline="$cmdline_common root=LABEL=$root_label"

# Kernel modules the guest needs (their dependencies are added automatically).
boot_modules=(virtio_pci virtio_blk) # in the initramfs: enough to mount the root partition
guest_modules=(virtio_pci virtio_blk virtio_net virtio_rng virtio_console isofs evdev button)
# Without a virtio disk (VirtualBox's IDE controller): loaded only then, since probing QEMU's empty
# IDE channels would slow every other boot. The cloud kernel has no AHCI (SATA) driver at all.
ide_boot_modules=(ata_piix sd_mod)
ide_guest_modules=(sr_mod) # the seed is a CD-ROM there

log() { printf 'build-default-model: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# read_installed_versions, apt_state, apt_update, prune_bundles
# shellcheck source=lib/bundle-cache.sh
source "${script%/*}/lib/bundle-cache.sh"

kernel_candidate() {
  apt-cache policy "$kernel_meta" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }'
}
cached_kernel_candidate() {
  local memo=$out_dir/.kernel-candidate state saved_state version
  state=$(apt_state)
  if [[ -f $memo ]] && read -r saved_state version <"$memo" && [[ $saved_state == "$state" && -n $version ]]; then
    printf '%s\n' "$version"
    return 0
  fi
  version=$(kernel_candidate)
  if [[ -n $version && $version != "(none)" ]] && mkdir -p "$out_dir"; then
    printf '%s %s\n' "$state" "$version" >"$memo.$$" && mv -f "$memo.$$" "$memo"
  fi
  printf '%s\n' "$version"
}

apt_opts=()
if ((EUID == 0)); then
  # As root apt drops to _apt, which cannot write into a private cache dir (a warning only).
  apt_opts=(-o APT::Sandbox::User=root)
fi

# Prints the path of PACKAGE=VERSION's .deb in deb_dir, downloading it if needed.
fetch_deb() {
  local name=$1 version=$2 file dl
  file=$deb_dir/${name}_${version//:/%3a}_amd64.deb
  if [[ ! -s $file ]]; then
    dl=$(mktemp -d "$work/dl.XXXXXX")
    log "apt-get download $name=$version"
    if ! (cd "$dl" && apt-get "${apt_opts[@]}" download "$name=$version" >&2); then
      apt_update
      (cd "$dl" && apt-get "${apt_opts[@]}" download "$name=$version" >&2) ||
        die "apt-get download $name=$version failed"
    fi
    mv "$dl/${name}_${version//:/%3a}_amd64.deb" "$file" || die "apt-get download did not produce $file"
    rm -rf "$dl"
  fi
  printf '%s\n' "$file"
}

# ---- cache key ----------------------------------------------------------------------------------
[[ -d $guest_dir/rootfs && -f $guest_dir/initramfs/init ]] || die "missing $guest_dir"
kernel_version_pkg=$(cached_kernel_candidate)
if [[ -z $kernel_version_pkg || $kernel_version_pkg == "(none)" ]]; then
  apt_update # empty lists: apt would not know what to download either
  kernel_version_pkg=$(kernel_candidate)
  [[ -n $kernel_version_pkg && $kernel_version_pkg != "(none)" ]] || die "apt has no $kernel_meta"
fi
declare -A pkg_version=()
read_installed_versions pkg_version "${model_packages[@]}"

key_inputs() {
  # This script, then content and executable bit of every guest file (the smoke test does not
  # shape the bundle), all in one find: each process costs tens of ms on a busy machine.
  (
    cd "$guest_dir"
    sha256sum <"$script" # by content: the checkout location must not change the key
    sha256sum <"${script%/*}/lib/bundle-cache.sh"
    find . -type f ! -name smoke-test.sh \( -perm -u+x -printf 'exec %p\n' -o -true \) -exec sha256sum {} + |
      LC_ALL=C sort
  )
  for p in "${model_packages[@]}"; do
    printf '%s %s\n' "$p" "${pkg_version[$p]}"
  done
  printf '%s %s\n' "$kernel_meta" "$kernel_version_pkg"
  printf 'compiler %s\n' "$(gcc --version | sed -n 1p)" # builds the guest agent
}
inputs=$(key_inputs)
key=$(sha256sum <<<"$inputs")
key=${key:0:16}
bundle=$out_dir/$key

if [[ -f $bundle/.complete ]]; then
  printf '%s\n' "$bundle" >&3
  exit 0
fi

# ---- build (one at a time) ------------------------------------------------------------------------
mkdir -p "$out_dir"
exec 9>"$out_dir/.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi
if [[ -f $bundle/.complete ]]; then # built by the invocation we waited for
  printf '%s\n' "$bundle" >&3
  exit 0
fi
rm -rf "$bundle" "$out_dir"/.build-* # leftovers of an interrupted build (we hold the lock)
deb_dir=$out_dir/debs
mkdir -p "$deb_dir"
work=$(mktemp -d "$out_dir/.build-$key.XXXXXX") # same filesystem as the bundle: mv is atomic
trap 'rm -rf "$work"' EXIT
started=$SECONDS
log "building bundle $key in $out_dir"

# ---- kernel: download, never install ---------------------------------------------------------------
meta_deb=$(fetch_deb "$kernel_meta" "$kernel_version_pkg")
depends=$(dpkg-deb -f "$meta_deb" Depends)
# e.g. "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
kernel_pkg=$(grep -oE 'linux-image-[0-9][^ ,|()]*' <<<"$depends" | sed -n 1p) || kernel_pkg=
[[ -n $kernel_pkg ]] || die "cannot find the kernel package in $kernel_meta's Depends: $depends"
kernel_pkg_version=$(awk -v p="$kernel_pkg" -F', *' '{
  for (i = 1; i <= NF; i++) if (index($i, p " (= ") == 1) { v = substr($i, length(p) + 5); sub(/\).*/, "", v); print v; exit } }' <<<"$depends")
if [[ -z $kernel_pkg_version ]]; then # not pinned: take what apt would install
  kernel_pkg_version=$(apt-cache policy "$kernel_pkg" | awk '$1 == "Candidate:" { print $2 }')
fi
[[ -n $kernel_pkg_version && $kernel_pkg_version != "(none)" ]] || die "no version for $kernel_pkg"
kernel_deb=$(fetch_deb "$kernel_pkg" "$kernel_pkg_version")
log "extracting $kernel_pkg $kernel_pkg_version"
kx=$work/kernel
dpkg-deb -x "$kernel_deb" "$kx"
shopt -s nullglob
mod_dirs=("$kx"/lib/modules/*/ "$kx"/usr/lib/modules/*/)
shopt -u nullglob
((${#mod_dirs[@]} == 1)) || die "expected one lib/modules/<version> in $kernel_pkg, found ${#mod_dirs[@]}"
mod_dir=${mod_dirs[0]%/}
kv=${mod_dir##*/}
vmlinuz=$kx/boot/vmlinuz-$kv
[[ -f $vmlinuz ]] || die "no boot/vmlinuz-$kv in $kernel_pkg"
log "kernel version $kv"

# ---- kernel modules in dependency order (read from each .ko's modinfo; no depmod needed) -----------
declare -A mod_path=()
while IFS= read -r -d '' f; do
  n=${f##*/}
  n=${n%.ko}
  mod_path[${n//-/_}]=$f
done < <(find "$mod_dir/kernel" -name '*.ko' -print0)
((${#mod_path[@]})) || die "no uncompressed .ko modules in $kernel_pkg"

mod_depends() {
  local deps
  # .modinfo strings are NUL-separated; read the whole file so no writer gets SIGPIPE.
  deps=$(tr '\0' '\n' <"$1" | sed -n 's/^depends=//p')
  deps=${deps%%$'\n'*}
  printf '%s\n' "${deps//,/ }"
}

declare -A visited=()
order=()
visit() {
  local n=$1 d
  [[ -n ${visited[$n]:-} ]] && return 0
  visited[$n]=1
  if [[ -z ${mod_path[$n]:-} ]]; then
    # Built in (e.g. ext4) needs no loading; anything else is a real problem.
    grep -qE "/${n//_/[-_]}\.ko\$" "$mod_dir/modules.builtin" || die "module $n not found in $kernel_pkg"
    return 0
  fi
  for d in $(mod_depends "${mod_path[$n]}"); do visit "$d"; done
  order+=("$n")
}
# Prints "name file" lines in load order for the given modules and their dependencies.
load_order() {
  visited=()
  order=()
  local m
  for m in "$@"; do visit "$m"; done
  for m in "${order[@]}"; do printf '%s %s\n' "$m" "${mod_path[$m]##*/}"; done
}
boot_order=$(load_order "${boot_modules[@]}")
guest_order=$(load_order "${guest_modules[@]}")
ide_boot_order=$(load_order "${ide_boot_modules[@]}")
ide_guest_order=$(load_order "${ide_guest_modules[@]}")
log "guest modules: $(cut -d' ' -f1 <<<"$guest_order" | tr '\n' ' ')"

# ---- root filesystem ---------------------------------------------------------------------------------
busybox=/bin/busybox
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is not static (busybox-static)"; fi
dropbear=/usr/sbin/dropbear
dropbearconvert=$(command -v dropbearconvert || true)
[[ -x $dropbearconvert ]] || die "dropbearconvert not found (dropbear-bin)"
sftp_real=$(readlink -f /usr/lib/openssh/sftp-server)
[[ -x $sftp_real ]] || die "no /usr/lib/openssh/sftp-server (openssh-sftp-server)"
# Dropbear execs a compiled-in path for the "sftp" subsystem: put sftp-server exactly there.
sftp_path=$(grep -aoE '/[[:alnum:]/._-]*sftp-server' "$dropbear" | sed -n 1p) || sftp_path=
[[ -n $sftp_path ]] || die "cannot find dropbear's sftp-server path"
log "dropbear runs $sftp_path for sftp"

root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib,lib64,lib/modules/"$kv",etc/dropbear,proc,sys,dev,run,tmp,mnt,root,var/log}

# Copies a dynamically linked program into the rootfs at the given path, with the libraries it needs.
install_program() {
  local src=$1 dest=$2 lib
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$src" "$root$dest"
  chmod 755 "$root$dest"
  for lib in $(ldd "$src" | grep -oE '/[^ ]+'); do
    [[ -e $root$lib ]] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

cp "$busybox" "$root/bin/busybox"
while IFS= read -r applet; do
  [[ -e $root/$applet || -L $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
done < <("$busybox" --list-full)
install_program "$dropbear" /usr/sbin/dropbear
install_program "$dropbearconvert" /usr/bin/dropbearconvert
install_program "$sftp_real" "$sftp_path"
# The guest agent (warm clones get their identity through it), linked against the glibc that
# dropbear already brought in.
gcc -O2 -Wall -Wextra -Werror -o "$work/vmfest-agent" "$guest_dir"/agent/*.c ||
  die "cannot compile the guest agent"
install_program "$work/vmfest-agent" /usr/lib/vmfest/vmfest-agent

cp -R "$guest_dir/rootfs/." "$root/"
while IFS= read -r f; do
  cp "${mod_path[$f]}" "$root/lib/modules/$kv/"
done < <(cut -d' ' -f1 <<<"$guest_order"$'\n'"$ide_guest_order")
printf '%s\n' "$guest_order" >"$root/lib/modules/$kv/vmfest-load-order"
printf '%s\n' "$ide_guest_order" >"$root/lib/modules/$kv/vmfest-load-order-ide"
ln -sf /proc/mounts "$root/etc/mtab"

# Normalise modes (git keeps only the x bit), then the few that must be tighter or looser.
find "$root" -type d -exec chmod 755 {} +
find "$root" -type f -perm -u+x -exec chmod 755 {} +
find "$root" -type f ! -perm -u+x -exec chmod 644 {} +
chmod 600 "$root/etc/shadow"
chmod 700 "$root/root" "$root/etc/dropbear"
chmod 1777 "$root/tmp"

# ---- kernel + boot initramfs ----------------------------------------------------------------------
bundle_tmp=$work/bundle
mkdir -p "$bundle_tmp"
cp "$vmlinuz" "$bundle_tmp/vmlinuz"
ird=$work/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$busybox" "$ird/bin/busybox"
for a in sh cat mount umount insmod switch_root usleep findfs mkdir echo poweroff; do
  ln -s busybox "$ird/bin/$a"
done
install -m 755 "$guest_dir/initramfs/init" "$ird/init"
while IFS= read -r f; do
  cp "${mod_path[$f]}" "$ird/lib/modules/"
done < <(cut -d' ' -f1 <<<"$boot_order"$'\n'"$ide_boot_order")
printf '%s\n' "$boot_order" >"$ird/lib/modules/load-order"
printf '%s\n' "$ide_boot_order" >"$ird/lib/modules/load-order-ide"
(cd "$ird" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) |
  gzip -9 >"$bundle_tmp/initrd.img"

# ---- root filesystem image ------------------------------------------------------------------------------
log "mkfs.ext4 (${root_mib} MiB)"
truncate -s "${root_mib}M" "$work/root.ext4"
# Itable/journal zeroed now (not lazily at first mount, which would write to every clone's overlay).
mkfs.ext4 -q -F -b 4096 -m 0 -L "$root_label" \
  -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$root" "$work/root.ext4"
if ((EUID != 0)); then
  # mkfs -d copies the builder's uid/gid: make every inode root's, as in a real system.
  (cd "$root" && find . -mindepth 1 | sed 's|^\.||') |
    awk '{ printf "sif \"%s\" uid 0\nsif \"%s\" gid 0\n", $0, $0 }' >"$work/chown.debugfs"
  debugfs -w -f "$work/chown.debugfs" "$work/root.ext4" >/dev/null 2>"$work/debugfs.err" ||
    die "debugfs failed: $(cat "$work/debugfs.err")"
fi

# ---- boot partition: SYSLINUX, kernel and initramfs on FAT16 ----------------------------------------
# SYSLINUX on FAT because its installer works on an unmounted image file (through mtools), as do
# mkfs.vfat, mcopy and sfdisk, so the build needs no loop device, no mount and no root. (extlinux
# must have its filesystem mounted; GRUB can only be set up on an image file by hand, and its
# loader took ~2.5 s longer than SYSLINUX's to get the kernel going under TCG.)
boot_mib=$((($(stat -c %s "$bundle_tmp/vmlinuz") + $(stat -c %s "$bundle_tmp/initrd.img")) / 1048576 + 4))
log "boot partition: FAT16 (${boot_mib} MiB) with SYSLINUX"
truncate -s "${boot_mib}M" "$work/boot.fat"
mkfs.vfat -F 16 -n VMFEST-BOOT "$work/boot.fat" >/dev/null
# SERIAL: the loader's banner and errors reach the console log too. No prompt, no menu, no wait.
cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT vmfest
PROMPT 0
TIMEOUT 0
LABEL vmfest
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $disk_cmdline
EOF
mcopy -i "$work/boot.fat" "$bundle_tmp/vmlinuz" "$bundle_tmp/initrd.img" "$work/syslinux.cfg" ::/
syslinux --install "$work/boot.fat" || die "syslinux --install failed"
syslinux_mbr=/usr/lib/syslinux/mbr/mbr.bin
[[ -s $syslinux_mbr ]] || die "no $syslinux_mbr (syslinux-common)"

# ---- disk image: MBR (SYSLINUX's boot code), vda1 = boot (active), vda2 = root ----------------------
# Partitions start on MiB boundaries so dd can place them with bs=1M.
log "assembling the partitioned disk"
truncate -s "$((1 + boot_mib + root_mib))M" "$work/disk.raw"
sfdisk -q "$work/disk.raw" <<EOF || die "sfdisk failed"
label: dos
label-id: 0x766d6673
start=1MiB, size=${boot_mib}MiB, type=e, bootable
start=$((1 + boot_mib))MiB, size=${root_mib}MiB, type=83
EOF
dd if="$syslinux_mbr" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.fat" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$work/disk.raw" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
rm -f "$work/boot.fat" "$work/root.ext4"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$bundle_tmp/disk.qcow2"
rm -f "$work/disk.raw"

# ---- metadata -----------------------------------------------------------------------------------------
for v in "$kv" "${pkg_version[busybox-static]}" "${pkg_version[dropbear-bin]}" "$kernel_pkg_version"; do
  [[ $v =~ ^[A-Za-z0-9.+:~_-]+$ ]] || die "unexpected characters in version '$v'" # keeps the JSON valid
done
cat >"$bundle_tmp/vmfest-model.json" <<EOF
{"name":"vmfest-tiny","disk":"disk.qcow2","format":"qcow2","disk_bootable":true,
 "boot":{"kind":"kernel","kernel":"vmlinuz","initrd":"initrd.img","cmdline":"$kernel_cmdline"},
 "ssh":{"user":"root","port":22},
 "ready_marker":"VMFEST-READY","guest_agent":true,
 "guest":{"kernel_version":"$kv","built_from":{"busybox-static":"${pkg_version[busybox-static]}","dropbear-bin":"${pkg_version[dropbear-bin]}","linux-image":"$kernel_pkg_version"}}}
EOF
{
  printf '%s\n' "$inputs"
  printf 'kernel-package %s %s\n' "$kernel_pkg" "$kernel_pkg_version"
} >"$bundle_tmp/build-inputs.txt"
touch "$bundle_tmp/.complete" # last: a bundle without it is never used
mv -T "$bundle_tmp" "$bundle"
log "built $bundle in $((SECONDS - started)) s"

# ---- prune: older bundles beyond the newest few, and debs of other kernel versions -----------------
prune_bundles "$out_dir" "$keep_bundles"
for f in "$deb_dir"/*.deb; do
  if [[ $f != "$meta_deb" && $f != "$kernel_deb" ]]; then rm -f "$f"; fi
done

printf '%s\n' "$bundle" >&3
