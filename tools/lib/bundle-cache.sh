# shellcheck shell=bash
# Shared by the image build scripts (build-default-model.sh, build-debian-image.sh), which source it:
# what keeps their cache hits fast and their cache folders small. The caller defines log and die.

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
