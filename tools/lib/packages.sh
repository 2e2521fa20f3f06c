# shellcheck shell=bash
# Sourced by tools/*.sh: installs Debian packages that are missing.

# install_missing PKG...: apt-get installs those of PKG... that are not installed (apt-get update
# only then, so a machine that has everything never touches the network).
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
