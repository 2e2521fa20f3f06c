# shellcheck shell=bash
# Shared by the image build scripts (build-default-model.sh, build-debian-image.sh), which source it:
# what keeps their cache hits fast and their cache folders small. The caller defines log and die.

# read_installed_versions ARRAY PACKAGE...: fills the associative array ARRAY with the version of
# each installed PACKAGE (one dpkg-query: a cache hit must be fast); dies naming one that is not.
read_installed_versions() {
  local -n into=$1
  shift
  local name status version p
  while IFS='|' read -r name status version; do
    [[ $status == ii* ]] && into[$name]=$version
  done < <(dpkg-query -W -f='${Package}|${db:Status-Abbrev}|${Version}\n' "$@" 2>/dev/null || true)
  for p in "$@"; do
    [[ -n ${into[$p]:-} ]] || die "Debian package $p is not installed (run tools/install-deps.sh)"
  done
}

# A short digest of apt's package lists and configuration: apt-cache takes ~0.7 s here (no
# pkgcache.bin), too slow for a cache hit, and its answers only change with this state, so the
# scripts remember them per state.
apt_state() {
  local files sum
  shopt -s nullglob
  files=(/var/lib/apt/lists/* /etc/apt/sources.list* /etc/apt/sources.list.d/* /etc/apt/preferences*
    /etc/apt/preferences.d/* /etc/apt/apt.conf.d/*)
  shopt -u nullglob
  sum=$(stat -c '%n %s %Y' "${files[@]}" | sha256sum)
  printf '%s\n' "${sum:0:16}"
}

apt_update() {
  ((EUID == 0)) || die "apt package lists are missing or stale; run 'apt-get update' as root"
  log "apt-get update"
  apt-get update -qq
}

# Removes the complete bundles in OUT_DIR beyond the KEEP newest (a running test may still use a
# recent one); only folders named like a key are touched.
prune_bundles() {
  local out_dir=$1 keep=$2 d old
  mapfile -t old < <(
    find "$out_dir" -mindepth 2 -maxdepth 2 -name .complete -printf '%T@ %h\n' |
      sort -rn | awk -v keep="$keep" 'NR > keep { print $2 }'
  )
  for d in "${old[@]}"; do
    if [[ ${d##*/} =~ ^[0-9a-f]{16}$ ]]; then
      rm -rf "$d"
      log "pruned old bundle ${d##*/}"
    fi
  done
}
