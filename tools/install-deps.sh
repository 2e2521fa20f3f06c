#!/usr/bin/env bash
# Installs every Debian package vmfest needs to build, test and build its default model and test images.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
# shellcheck source=lib/packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/packages.sh"
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
  # ... and the thread stacks that script prints of a libvirtd that stopped answering
  gdb
  # the cloud-init seed of every instance
  genisoimage
  # Debian cloud test image (tools/build-debian-image.sh): bootstrapped by mmdebstrap
  mmdebstrap
  # tests and benchmarks: a real ssh/scp client to compare against, python for the HTTP test server
  openssh-client python3 curl procps libxml2-utils
  # ... and a headless browser that renders `vmfest report`'s page (tests/report)
  chromium
)
# the default model's ingredients (its kernel package is downloaded, not installed)
mapfile -t -O "${#packages[@]}" packages < <(awk '!/^#/ && NF { print $2 }' \
  "$(dirname "${BASH_SOURCE[0]}")/lib/default-model-packages.txt")
install_missing "${packages[@]}"
