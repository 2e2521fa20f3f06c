#!/usr/bin/env bash
# Installs every Debian package vmfest needs to build, test and build its default model and test images.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
packages=(
  # toolchain
  cmake gcc g++ ninja-build pkg-config git clang-format clang-tidy
  # libraries
  libgtest-dev libgmock-dev libbenchmark-dev
  libboost1.81-dev libboost-filesystem1.81-dev
  gsoap libgsoap-dev libxml2-dev
  libssh-dev libcurl4-openssl-dev zlib1g-dev libssl-dev libarchive-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  # hypervisor
  qemu-system-x86 qemu-utils
  # the libvirt backend, and the libvirtd and sshd its tests start (tools/libvirt-services.sh)
  libvirt-dev libvirt-daemon-system libvirt-clients openssh-server
  # default model ingredients (the kernel package is downloaded, not installed)
  busybox-static dropbear-bin cpio e2fsprogs openssh-sftp-server genisoimage
  # ... and its BIOS boot: SYSLINUX on a FAT partition, written without mounting anything
  syslinux syslinux-common mtools dosfstools fdisk
  # Debian cloud test image (tools/build-debian-image.sh): bootstrapped by mmdebstrap
  mmdebstrap
  # tests and benchmarks: a real ssh/scp client to compare against, python for the HTTP test server
  openssh-client python3 curl procps libxml2-utils
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
