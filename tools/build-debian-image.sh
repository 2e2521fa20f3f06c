#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) cloud disk image made like Debian's official "genericcloud" qcow2, so
# vmfest's tests can run against a real distribution image: systemd, cloud-init (NoCloud), OpenSSH,
# sudo, the cloud kernel, GRUB on BIOS. Nothing of vmfest is inside: no agent, no key, no extra user.
# Each instance gets its identity (user, keys, host keys, hostname) from a cloud-init seed.
#
# Usage: tools/build-debian-image.sh [--shape debian|ubuntu|vagrant] [OUT_DIR]   (as root: mmdebstrap needs
#   a real chroot)
#   --shape ubuntu builds the same Debian packages shaped like Ubuntu's server cloud images (22.10
#   and later), where they differ in what matters to vmfest: a GPT disk with a BIOS boot partition
#   and the root on partition 2, OpenSSH started by ssh.socket (ssh.service disabled), cloud-init's
#   default user "ubuntu". Networking is netplan + systemd-networkd + systemd-resolved in both.
#   --shape vagrant builds a Vagrant base box of the libvirt provider instead, as Vagrant's base box
#   guidelines make them: no cloud-init (networkd asks DHCP on any wired NIC), user "vagrant"
#   (password "vagrant", passwordless sudo) whose authorized_keys holds the project's published test
#   key (tools/vagrant-test-box/insecure_key.pub, standing in for Vagrant's own insecure key), the host
#   keys openssh-server made at install time, the box's Vagrantfile naming the private key it carries.
#   It shares the .debs of the other shapes (all its packages are theirs).
#   OUT_DIR defaults to ${VMFEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmfest}/debian-image
#   (ubuntu-shaped-image for --shape ubuntu, vagrant-box for --shape vagrant).
#   VMFEST_KEEP_WORK=1 keeps the work directory of a failed build for inspection.
# The LAST line of stdout is the bundle directory; everything else goes to stderr. It holds:
#   debian-12-cloud.qcow2.gz   the disk (gunzip it; the qcow2 inside is not compressed itself);
#                              ubuntu-shaped-cloud.qcow2.gz for --shape ubuntu; for --shape
#                              vagrant debian-12-vagrant.box (a gzipped tar: box.img, metadata.json,
#                              Vagrantfile, insecure_key) instead
#   SHA256SUMS                 sha256sum of the .gz
#   build-inputs.txt           the cache key's inputs, then every package in the image with its version
#
# The disk: 2 GiB, MBR (dos) label, one ext4 partition found by its UUID, GRUB (grub-pc) in the MBR and
# the gap before the partition (ubuntu: GPT, GRUB's core.img in the BIOS boot partition). No loop
# device and no mount: mmdebstrap builds the tree, mkfs.ext4 -d writes it into a filesystem image,
# and the boot code is written into the raw disk with dd.
#
# Bundles are cached as OUT_DIR/<key>, key = sha256 (16 hex) over this script, the versions apt would
# install of the packages listed below (incl. the kernel package linux-image-cloud-amd64 depends on)
# and the versions of the host tools that write the image. A complete bundle is returned at once;
# builds are serialised by a flock on OUT_DIR/.lock. The .debs are kept in OUT_DIR/debs for the next
# build. The build uses the host's apt sources and package lists for bookworm, bookworm-updates and
# bookworm-security, so the image holds exactly the versions the key names.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin

exec 3>&1 1>&2 # fd 3 carries the result line; apt, mkfs & co. must not pollute stdout
umask 022      # modes inside the image must not depend on the caller's umask

script=$(readlink -f "${BASH_SOURCE[0]}")
shape=debian
if [[ ${1:-} == --shape ]]; then
  shape=${2:-}
  shift 2 || true
fi
case $shape in
  debian) image_name=debian-12-cloud.qcow2 ;;
  ubuntu) image_name=ubuntu-shaped-cloud.qcow2 ;;
  vagrant) image_name=debian-12-vagrant.qcow2 ;;
  *)
    printf 'build-debian-image: error: --shape must be debian, ubuntu or vagrant, not "%s"\n' "$shape" >&2
    exit 2
    ;;
esac
cache_root=${VMFEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmfest}
if [[ $shape == debian ]]; then
  out_dir=${1:-$cache_root/debian-image}
elif [[ $shape == ubuntu ]]; then
  out_dir=${1:-$cache_root/$shape-shaped-image}
else
  out_dir=${1:-$cache_root/vagrant-box}
fi
vagrant_key=${script%/*}/vagrant-test-box/insecure_key
suite=bookworm
kernel_meta=linux-image-cloud-amd64
disk_mib=2048 # as Debian's genericcloud; the qcow2 stores only what is used
keep_bundles=2
# What the image is made of (apt adds their dependencies, never their recommends). Beyond the
# requirements (kernel, GRUB, systemd, cloud-init, sshd, sudo, locales), as Debian's cloud images:
# netplan.io + systemd-networkd + systemd-resolved render cloud-init's network config (without
# ifupdown, cloud-init 22.4 picks its netplan renderer), libpam-systemd gives ssh logins a session,
# libnss-myhostname resolves the own hostname, cloud-guest-utils lets cloud-init grow the root
# partition to a larger disk, zstd compresses the initramfs.
image_packages=(
  "$kernel_meta" grub-pc systemd-sysv udev cloud-init openssh-server sudo locales
  netplan.io systemd-resolved libpam-systemd libnss-myhostname cloud-guest-utils
  iproute2 netbase zstd
)
# A Vagrant box has no cloud-init, nor what only renders or serves cloud-init's configuration.
if [[ $shape == vagrant ]]; then
  image_packages=("$kernel_meta" grub-pc systemd-sysv udev openssh-server sudo locales
    systemd-resolved libpam-systemd libnss-myhostname iproute2 netbase zstd)
fi
# Not listed above but worth a rebuild when a (security) update changes them.
key_extra_packages=(libc6 systemd libssl3 python3.11 openssh-client)
# Host tools that write the image: their versions are in the key too.
host_tools=(mmdebstrap e2fsprogs fdisk qemu-utils gzip)
# Kernel command line, as Debian's cloud images, plus no_timer_check: the kernel's IO-APIC timer
# test wants a few ticks within ~40 ms of wall-clock time, which a TCG vCPU on a busy host misses and
# then panics ("IO-APIC + timer doesn't work!"); Linux only skips the test by itself under KVM.
kernel_cmdline="console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0 no_timer_check"
# Where the root filesystem and GRUB's core.img go: Debian's MBR disk has the root on partition 1 and
# core.img in the gap before it; Ubuntu's GPT disk a BIOS boot partition first (core.img) and the
# root on partition 2. In MiB; GPT keeps its backup table in the last MiB.
if [[ $shape == debian ]]; then
  partition_table=msdos root_partition=1 root_start_mib=1 root_mib=$((disk_mib - 1)) core_start_mib=0
else
  partition_table=gpt root_partition=2 root_start_mib=5 root_mib=$((disk_mib - 6)) core_start_mib=1
fi

log() { printf 'build-debian-image: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# read_installed_versions, apt_state, apt_update, prune_bundles
# shellcheck source=lib/bundle-cache.sh
source "${script%/*}/lib/bundle-cache.sh"

# ---- cache key -------------------------------------------------------------------------------------
# Prints "package version" for every package of the key and "kernel-package NAME VERSION", as apt
# would install them now; empty if apt does not know them all.
query_candidates() {
  local policy kernel_version depends kernel_pkg kernel_pkg_version
  policy=$(apt-cache policy "${image_packages[@]}" "${key_extra_packages[@]}" 2>/dev/null |
    awk '/^[^ ]/ { sub(/:$/, "", $1); p = $1 } $1 == "Candidate:" && $2 != "(none)" { print p, $2 }')
  [[ $(wc -l <<<"$policy") -eq $((${#image_packages[@]} + ${#key_extra_packages[@]})) ]] || return 0
  kernel_version=$(awk -v p="$kernel_meta" '$1 == p { print $2 }' <<<"$policy")
  depends=$(apt-cache show "$kernel_meta=$kernel_version" 2>/dev/null | sed -n 's/^Depends: //p' | sed -n 1p)
  # e.g. "linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)"
  kernel_pkg=$(grep -oE 'linux-image-[0-9][^ ,|()]*' <<<"$depends" | sed -n 1p) || return 0
  kernel_pkg_version=$(apt-cache policy "$kernel_pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
  [[ -n $kernel_pkg_version && $kernel_pkg_version != "(none)" ]] || return 0
  printf '%s\n' "$policy" | LC_ALL=C sort
  printf 'kernel-package %s %s\n' "$kernel_pkg" "$kernel_pkg_version"
}

cached_candidates() {
  local memo=$out_dir/.apt-candidates state saved answer
  state=$(apt_state)
  if [[ -f $memo ]] && { read -r saved && answer=$(cat); } <"$memo" && [[ $saved == "$state" && -n $answer ]]; then
    printf '%s\n' "$answer"
    return 0
  fi
  answer=$(query_candidates)
  if [[ -n $answer ]] && mkdir -p "$out_dir" 2>/dev/null; then
    printf '%s\n%s\n' "$state" "$answer" >"$memo.$$" && mv -f "$memo.$$" "$memo"
  fi
  printf '%s\n' "$answer"
}


compute_key() {
  candidates=$(cached_candidates)
  if [[ -z $candidates ]]; then
    apt_update # no or old lists: apt would not know what to install either
    candidates=$(query_candidates)
    [[ -n $candidates ]] || die "apt has no candidate for some of: ${image_packages[*]} ${key_extra_packages[*]}"
  fi
  inputs=$(
    sha256sum <"$script" # by content: the checkout location must not change the key
    sha256sum <"${script%/*}/lib/bundle-cache.sh"
    printf 'shape %s\n' "$shape"
    [[ $shape != vagrant ]] || sha256sum <"$vagrant_key.pub"
    printf '%s\n' "$candidates"
    for p in "${host_tools[@]}"; do printf 'host %s %s\n' "$p" "${tool_version[$p]}"; done
  )
  key=$(sha256sum <<<"$inputs")
  key=${key:0:16}
  bundle=$out_dir/$key
}

declare -A tool_version=()
read_installed_versions tool_version "${host_tools[@]}"
compute_key
if [[ -f $bundle/.complete ]]; then
  printf '%s\n' "$bundle" >&3
  exit 0
fi

# ---- build (one at a time) ---------------------------------------------------------------------------
((EUID == 0)) || die "building the image needs root (mmdebstrap --mode=root, chroot)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (run tools/install-deps.sh)"
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

# Unmounts whatever is still mounted below $1 (an mmdebstrap killed mid-way leaves /proc, /sys and
# /dev bound into its chroot), then removes $1 without crossing into any other filesystem.
remove_tree() {
  local dir=$1 mnt
  [[ -e $dir ]] || return 0
  dir=$(readlink -f "$dir")
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  if awk -v d="$dir/" 'index($5 "/", d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    log "warning: something is still mounted below $dir; leaving it"
    return 1
  fi
  rm -rf --one-file-system "$dir"
}

shopt -s nullglob
for d in "$out_dir"/.build-*; do remove_tree "$d"; done # leftovers of an interrupted build (we hold the lock)
shopt -u nullglob
rm -rf "$bundle"
deb_dir=$out_dir/debs
mkdir -p "$deb_dir"
# The shapes install the same packages: start from the other shape's .debs (links, never moved).
for other in "$cache_root"/debian-image/debs "$cache_root"/ubuntu-shaped-image/debs "$cache_root"/vagrant-box/debs; do
  [[ $other -ef $deb_dir || ! -d $other ]] || cp -l -n "$other"/*.deb "$deb_dir"/ 2>/dev/null || true
done

work=
cleanup() {
  local rc=$?
  [[ -n $work ]] || return 0
  if ((rc != 0)) && [[ ${VMFEST_KEEP_WORK:-} == 1 ]]; then
    log "build failed; work directory kept: $work"
    return 0
  fi
  remove_tree "$work" || true
}
trap cleanup EXIT
# mmdebstrap runs in the background so that a signal reaches this script at once; it is passed on
# (mmdebstrap then unmounts its chroot) before the clean-up.
child=
on_signal() {
  if [[ -n $child ]]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit $((128 + $1))
}
trap 'on_signal 2' INT
trap 'on_signal 15' TERM
trap 'on_signal 1' HUP

# ---- apt sources: the host's entries for the suites, and its package lists --------------------------
# Prints a deb822 sources file for the host's bookworm, bookworm-updates and bookworm-security (main),
# and fills list_files with the host's package lists and Release files of exactly those entries.
list_files=()
# shellcheck disable=SC2016 # $(REPO_URI) & co. are apt's placeholders, not the shell's
host_sources() {
  local uri release component arch filename stanzas=() seen=" "
  list_files=()
  while IFS='|' read -r uri release component arch filename; do
    [[ $release =~ ^$suite(-updates|-security)?$ && $component == main && $arch == amd64 ]] || continue
    [[ $seen == *" $uri|$release "* ]] && continue
    seen+="$uri|$release "
    stanzas+=("Types: deb
URIs: $uri
Suites: $release
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg")
    list_files+=("$filename")
    local release_file=${filename%%_"$component"_binary-*}_InRelease
    [[ -f $release_file ]] || release_file=${filename%%_"$component"_binary-*}_Release
    list_files+=("$release_file")
  done < <(apt-get indextargets --format '$(REPO_URI)|$(RELEASE)|$(COMPONENT)|$(ARCHITECTURE)|$(FILENAME)' \
    'Created-By: Packages' 2>/dev/null | LC_ALL=C sort -u)
  ((${#stanzas[@]})) || die "the host's apt has no sources for $suite main amd64"
  [[ $seen == *"|$suite "* ]] || die "the host's apt has no source for $suite itself"
  local s
  for s in "${stanzas[@]}"; do printf '%s\n\n' "$s"; done
}

# Work directory, sources, lists and the customize hook for the current key.
prepare_build() {
  work=$(mktemp -d "$out_dir/.build-$key.XXXXXX") # same filesystem as the bundle: mv is atomic
  log "building bundle $key in $out_dir"
  host_sources >"$work/sources"
  local f
  for f in "${list_files[@]}"; do
    [[ -f $f ]] || die "no $f: run 'apt-get update'"
  done
  mkdir -p "$work/lists" "$work/debs"
  cp "${list_files[@]}" "$work/lists/"
  # The filesystem's UUID comes from the key: the same inputs give the same image.
  local h
  h=$(sha256sum <<<"fs-uuid $key")
  export VMFEST_ROOT_UUID=${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}
  export VMFEST_KERNEL_CMDLINE=$kernel_cmdline
  export VMFEST_SHAPE=$shape VMFEST_PARTITION_TABLE=$partition_table
  export VMFEST_GRUB_ROOT=hd0,$partition_table$root_partition
  VMFEST_VAGRANT_PUBLIC_KEY=$(cat "$vagrant_key.pub")
  export VMFEST_VAGRANT_PUBLIC_KEY
  write_customize_hook >"$work/customize.sh"
  chmod 755 "$work/customize.sh"
}

# shellcheck disable=SC2016 # "$1" in the hooks is mmdebstrap's, not ours
# Only mmdebstrap itself here: its status decides on a retry (set -e does not act in a condition).
run_mmdebstrap() {
  local include
  include=$(
    IFS=,
    printf '%s' "${image_packages[*]}"
  )
  log "mmdebstrap $suite ($(find "$deb_dir" -name '*.deb' | wc -l) .debs cached)"
  # --skip=update: the host's package lists stand in for the chroot's, so apt installs exactly the
  # versions of the key. eatmydata: dpkg without fsync (build time). path-exclude: no manuals, docs
  # (but copyright) or translations, in the image or in what is installed later.
  # The merged-usr hook installs usr-is-merged before the essential packages: otherwise apt picks
  # usrmerge for init-system-helpers' "usrmerge | usr-is-merged", and it drags in perl (50 MB).
  mmdebstrap --variant=apt --mode=root --format=directory --verbose \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --skip=update --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/var/lib/apt/lists" "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in $work/lists /var/lib/apt/lists/" \
    --setup-hook="sync-in $deb_dir /var/cache/apt/archives/" \
    --include="$include" \
    --customize-hook="$work/customize.sh" \
    --customize-hook="sync-out /var/cache/apt/archives $work/debs" \
    "$suite" "$work/rootfs" "$work/sources" >"$work/mmdebstrap.log" 2>&1 &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=
  ((rc != 0)) || return 0
  tail -n 40 "$work/mmdebstrap.log" >&2
  log "mmdebstrap failed (log: $work/mmdebstrap.log)"
  return 1
}

# The customize hook runs inside mmdebstrap, chroot mounts in place; $1 is the tree.
write_customize_hook() {
  cat <<'EOF'
#!/bin/bash
set -euo pipefail
root=$1
uuid=$VMFEST_ROOT_UUID

# Locales: en_US.UTF-8 generated (ssh clients send LANG/LC_*), C.UTF-8 (built into glibc) the default.
# With LANG set, cloud-init's locale module finds the system locale as wanted and changes nothing.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$root/etc/locale.gen"
chroot "$root" locale-gen
printf 'LANG=C.UTF-8\n' >"$root/etc/default/locale"

# GRUB: no menu wait, kernel and GRUB itself on the serial console (vmfest reads it as console log).
cat >"$root/etc/default/grub.d/10_cloud.cfg" <<CFG
# Written by vmfest's build-debian-image.sh, as Debian's cloud images configure GRUB.
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="$VMFEST_KERNEL_CMDLINE"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
CFG

# grub.cfg from grub-mkconfig, as update-grub writes it, with a stand-in grub-probe (the tree is no
# block device yet) that describes the disk-to-be: ext4 on the first MBR partition, by UUID.
# A root device "UUID=..." is what 10_linux then puts on the kernel command line.
fake=$root/tmp/vmfest-grub
mkdir -p "$fake"
cp "$root/usr/share/grub/grub-mkconfig_lib" "$fake/"
# Paths are relative to the filesystem's root, which is / in the image.
cat >>"$fake/grub-mkconfig_lib" <<'LIB'

grub_probe=/tmp/vmfest-grub/grub-probe
make_system_path_relative_to_its_root() { echo "$1"; }
LIB
cat >"$fake/grub-probe" <<PROBE
#!/bin/sh
for a; do case \$a in --target=*) t=\${a#--target=} ;; esac; done
case \$t in
  device) echo UUID=$uuid ;;
  fs) echo ext2 ;;
  fs_uuid) echo $uuid ;;
  partmap) echo $VMFEST_PARTITION_TABLE ;;
  abstraction) ;;
  compatibility_hint) echo $VMFEST_GRUB_ROOT ;;
  hints_string) echo '--hint-bios=$VMFEST_GRUB_ROOT --hint-efi=$VMFEST_GRUB_ROOT --hint-baremetal=ahci0,${VMFEST_GRUB_ROOT#hd0,} ' ;;
  *) exit 1 ;;
esac
PROBE
chmod 755 "$fake/grub-probe"
chroot "$root" env pkgdatadir=/tmp/vmfest-grub grub-mkconfig -o /boot/grub/grub.cfg
grep -q "root=UUID=$uuid " "$root/boot/grub/grub.cfg" || { echo "grub.cfg lacks root=UUID=$uuid" >&2; exit 1; }

# GRUB's BIOS images, as grub-install makes them: modules in /boot/grub/i386-pc and a core.img that
# finds the root filesystem by UUID (the build writes boot.img and core.img into the disk).
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root"/usr/lib/grub/i386-pc/boot.img \
  "$root/boot/grub/i386-pc/"
cat >"$fake/load.cfg" <<LOAD
search.fs_uuid $uuid root $VMFEST_GRUB_ROOT
set prefix=(\$root)'/boot/grub'
LOAD
chroot "$root" grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -c /tmp/vmfest-grub/load.cfg \
  -p /boot/grub -o /boot/grub/i386-pc/core.img biosdisk "part_$VMFEST_PARTITION_TABLE" ext2 search_fs_uuid
rm -rf "$fake"

printf '# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=%s / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1\n' \
  "$uuid" >"$root/etc/fstab"

# Networking as cloud-init renders it here: netplan -> systemd-networkd, DNS by systemd-resolved.
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service
# e2scrub only checks ext4 on LVM, and the image has no LVM; its boot-time reaper still cost ~50 s
# of the single vCPU under TCG, while cloud-init ran.
chroot "$root" systemctl disable e2scrub_reap.service e2scrub_all.timer

# Ubuntu's server cloud images (22.10 and later) start OpenSSH by socket activation: systemd holds
# port 22 and starts ssh.service at the first connection.
if [[ $VMFEST_SHAPE == ubuntu ]]; then
  chroot "$root" systemctl disable ssh.service
  chroot "$root" systemctl enable ssh.socket
fi

if [[ $VMFEST_SHAPE == vagrant ]]; then
  # As Vagrant's base box guidelines: user vagrant, password vagrant, passwordless sudo, the
  # published key in authorized_keys; DHCP on the NIC without cloud-init; a hostname of its own.
  cat >"$root/etc/systemd/network/80-dhcp.network" <<NET
[Match]
Name=en* eth*
[Network]
DHCP=yes
NET
  chroot "$root" useradd --create-home --shell /bin/bash vagrant
  echo vagrant:vagrant | chroot "$root" chpasswd
  printf 'vagrant ALL=(ALL) NOPASSWD:ALL\n' >"$root/etc/sudoers.d/vagrant"
  chmod 440 "$root/etc/sudoers.d/vagrant"
  install -d -m 700 "$root/home/vagrant/.ssh"
  printf '%s\n' "$VMFEST_VAGRANT_PUBLIC_KEY" >"$root/home/vagrant/.ssh/authorized_keys"
  chmod 600 "$root/home/vagrant/.ssh/authorized_keys"
  chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
else
# cloud-init: Debian's cloud.cfg already has the default user "debian" (sudo, no password) and
# disable_root: true; Ubuntu's calls it "ubuntu".
if [[ $VMFEST_SHAPE == ubuntu ]]; then
  sed -i 's/^\(     *name:\) debian$/\1 ubuntu/; s/^\(     *gecos:\) Debian$/\1 Ubuntu/' "$root/etc/cloud/cloud.cfg"
  grep -q '^ *name: ubuntu$' "$root/etc/cloud/cloud.cfg" || { echo "cloud.cfg: no default user to rename" >&2; exit 1; }
fi
# Look only for datasources a local hypervisor hands over (no network probing).
cat >"$root/etc/cloud/cloud.cfg.d/01_datasources.cfg" <<CFG
# Written by vmfest's build-debian-image.sh. Keep the list on one line (ds-identify reads it so).
datasource_list: [ NoCloud, ConfigDrive, None ]
CFG
fi

# Apt sources as in Debian's images (the build used the host's mirror).
rm -f "$root"/etc/apt/sources.list.d/*
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
EOF
}

# Per-instance and build-only state out of the tree, as Debian's image build does.
finish_tree() {
  local root=$1
  ! mountpoint -q "$root/dev" || die "$root/dev is still mounted"
  # Each instance gets its own host keys from cloud-init (generated, or given in the seed). A
  # Vagrant box keeps those openssh-server made, as boxes do (every clone of them shares them).
  [[ $shape == vagrant ]] || rm -f "$root"/etc/ssh/ssh_host_*
  # Empty, as in Debian's images: cloud-init sets the hostname; a box has its own. (mmdebstrap had
  # copied the build host's file, with its mode.)
  rm -f "$root/etc/hostname" "$root/etc/machine-id"
  if [[ $shape == vagrant ]]; then printf 'debian-12-vagrant\n' >"$root/etc/hostname"; else : >"$root/etc/hostname"; fi
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed" "$root/etc/resolv.conf"
  ln -s ../run/systemd/resolve/resolv.conf "$root/etc/resolv.conf"
  find "$root/dev" "$root/run" "$root/tmp" "$root/var/tmp" -xdev -mindepth 1 -delete
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root/var/log/bootstrap.log" \
    "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log
  mkdir -p "$root/var/lib/apt/lists/partial"
  : >"$root/var/lib/dpkg/available"
  [[ -s $root/boot/grub/i386-pc/core.img && -s $root/boot/grub/grub.cfg ]] || die "GRUB was not set up"
}

# The 8 bytes of sector number $1, little-endian.
sector_bytes() {
  local i
  for i in 0 1 2 3 4 5 6 7; do
    # shellcheck disable=SC2059 # the format is the byte's escape
    printf "\\x$(printf '%02x' $((($1 >> (8 * i)) & 255)))"
  done
}

# A Vagrant box of the libvirt provider, as `vagrant package` makes one: a gzipped tar of the disk
# (box.img), metadata.json and a Vagrantfile, here also the private key the Vagrantfile names.
pack_box() {
  local box=$work/box
  mkdir -p "$box"
  mv "$work/disk.qcow2" "$box/box.img"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' $((disk_mib / 1024)) >"$box/metadata.json"
  cat >"$box/Vagrantfile" <<'VAGRANTFILE'
Vagrant.configure("2") do |config|
  config.ssh.username = "vagrant"
  config.ssh.private_key_path = File.expand_path("../insecure_key", __FILE__)
end
VAGRANTFILE
  install -m 600 "$vagrant_key" "$box/insecure_key"
  log "packing the box ($(du -m --apparent-size "$box/box.img" | cut -f1) MiB qcow2)"
  tar -C "$box" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf - \
    metadata.json Vagrantfile insecure_key box.img | gzip -n -1 >"$1"
  mv "$box/box.img" "$work/disk.qcow2" # its sha256 goes into build-inputs.txt
}

make_disk() {
  local root=$1 bundle_tmp=$work/bundle core_sectors
  mkdir -p "$bundle_tmp"
  # GRUB's core.img: from sector 1 in the gap before an MBR disk's partition (1 MiB), or in a GPT
  # disk's BIOS boot partition (1-5 MiB).
  local core_sector=$((core_start_mib * 2048))
  ((core_sector > 0)) || core_sector=1
  core_sectors=$((($(stat -c %s "$root/boot/grub/i386-pc/core.img") + 511) / 512))
  ((core_sector + core_sectors <= root_start_mib * 2048)) || die "core.img does not fit before the root partition"
  cp "$root/boot/grub/i386-pc/boot.img" "$root/boot/grub/i386-pc/core.img" "$work/"

  log "mkfs.ext4 -d ($root_mib MiB)"
  truncate -s "${root_mib}M" "$work/root.ext4"
  # Itable/journal zeroed now (not lazily at first mount, which would write to every clone's overlay).
  mkfs.ext4 -q -F -U "$VMFEST_ROOT_UUID" -E lazy_itable_init=0,lazy_journal_init=0 -d "$root" "$work/root.ext4"
  remove_tree "$root"

  log "assembling the disk"
  truncate -s "${disk_mib}M" "$work/disk.raw"
  if [[ $partition_table == msdos ]]; then
    sfdisk -q "$work/disk.raw" <<EOF || die "sfdisk failed"
label: dos
label-id: 0x${key:0:8}
start=1MiB, type=83, bootable
EOF
  else
    local h
    h=$(sha256sum <<<"disk-guid $key")
    sfdisk -q "$work/disk.raw" <<EOF || die "sfdisk failed"
label: gpt
label-id: ${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}
start=${core_start_mib}MiB, size=$((root_start_mib - core_start_mib))MiB, type=21686148-6449-6E6F-744E-656564454649
start=${root_start_mib}MiB, size=${root_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
EOF
  fi
  # What grub-bios-setup does for a BIOS disk: boot.img's code (not the partition table) into the
  # MBR with the jump over the boot-drive check replaced by NOPs (trust the BIOS's DL), core.img at
  # its sector. boot.img points at sector 1 and core.img's first sector (diskboot) loads the rest
  # from sector 2: elsewhere both are told (64-bit little-endian sector numbers at 0x5c of boot.img
  # and 0x1f4 of core.img). grub-mkimage set core.img's sector count.
  dd if="$work/boot.img" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
  printf '\x90\x90' | dd of="$work/disk.raw" bs=1 seek=$((0x66)) conv=notrunc status=none
  dd if="$work/core.img" of="$work/disk.raw" bs=512 seek="$core_sector" conv=notrunc status=none
  if ((core_sector != 1)); then
    sector_bytes "$core_sector" | dd of="$work/disk.raw" bs=1 seek=$((0x5c)) conv=notrunc status=none
    sector_bytes $((core_sector + 1)) |
      dd of="$work/disk.raw" bs=1 seek=$((core_sector * 512 + 0x1f4)) conv=notrunc status=none
  fi
  dd if="$work/root.ext4" of="$work/disk.raw" bs=1M seek="$root_start_mib" conv=notrunc,sparse status=none
  rm -f "$work/root.ext4"
  qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
  rm -f "$work/disk.raw"
  local artifact=$image_name.gz
  if [[ $shape == vagrant ]]; then
    artifact=${image_name%.qcow2}.box
    pack_box "$bundle_tmp/$artifact"
  else
    log "gzip ($(du -m --apparent-size "$work/disk.qcow2" | cut -f1) MiB qcow2)"
    gzip -n -6 <"$work/disk.qcow2" >"$bundle_tmp/$artifact"
  fi
  (cd "$bundle_tmp" && sha256sum "$artifact" >SHA256SUMS)
  {
    printf '%s\n' "$inputs"
    printf 'root-fs-uuid %s\n' "$VMFEST_ROOT_UUID"
    printf 'kernel-cmdline %s\n' "$kernel_cmdline"
    printf 'qcow2-sha256 %s\n' "$(sha256sum <"$work/disk.qcow2" | cut -d' ' -f1)"
    cat "$work/image-packages.txt"
  } >"$bundle_tmp/build-inputs.txt"
  touch "$bundle_tmp/.complete" # last: a bundle without it is never used
  mv -T "$bundle_tmp" "$bundle"
}

started=$SECONDS
prepare_build
if ! run_mmdebstrap; then
  # Mostly: the host's package lists name versions the mirror no longer has. Refresh them, which may
  # change the key, and try once more.
  remove_tree "$work" || die "cannot clean up $work"
  work=
  apt_update
  compute_key
  if [[ -f $bundle/.complete ]]; then
    printf '%s\n' "$bundle" >&3
    exit 0
  fi
  rm -rf "$bundle"
  prepare_build
  run_mmdebstrap || die "mmdebstrap failed twice"
fi
log "mmdebstrap done after $((SECONDS - started)) s"
# Who is in the image, for build-inputs.txt (dpkg-query of the tree, no chroot needed).
dpkg-query --admindir="$work/rootfs/var/lib/dpkg" -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' |
  awk '$1 == "ii" { print "image", $2, $3 }' | LC_ALL=C sort >"$work/image-packages.txt"
# From now on the .debs of this build's packages are the cache (other versions are dropped).
declare -A in_image=()
while read -r _ name version; do in_image[${name}_${version//:/%3a}]=1; done <"$work/image-packages.txt"
for f in "$work"/debs/*.deb; do
  base=${f##*/}
  [[ -n ${in_image[${base%_*}]:-} ]] || rm -f "$f"
done
rm -rf "$deb_dir.old"
mv "$deb_dir" "$deb_dir.old"
mv "$work/debs" "$deb_dir"
rm -rf "$deb_dir.old" "$deb_dir/partial" "$deb_dir/lock"
finish_tree "$work/rootfs"
make_disk "$work/rootfs"
log "built $bundle in $((SECONDS - started)) s"

# ---- prune: older bundles beyond the newest few --------------------------------------------------------
prune_bundles "$out_dir" "$keep_bundles"

printf '%s\n' "$bundle" >&3
