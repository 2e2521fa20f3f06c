#!/usr/bin/env bash
# The seams of docs/architecture.md, checked on the source tree (no build needed):
#   internal-headers  nothing outside lib/src reaches into it but through lib/internal's named
#                     headers: no include path into lib/src, no "../src/" include
#   backend-seam      a backend includes of the core only vmfest/internal/{driver,base}.h
#   core-names-no-backend  the core (lib/src, lib/include, lib/internal, ssh, fixtures, the CLI)
#                     names no backend; qemu-img, the disk tool of model setup, is no backend,
#                     nor is a Vagrant box's provider (metadata.json's word: "libvirt provider")
# Usage: check-layout.sh SOURCE_DIR CHECK
set -euo pipefail
root=$1
cd "$root"
found=$(mktemp)
trap 'rm -f "$found"' EXIT
sources() { find "$@" \( -name '*.cpp' -o -name '*.h' -o -name '*.c' \) -type f 2>/dev/null; }

case $2 in
  internal-headers)
    { sources lib/backends ssh fixtures tools bench tests samples |
        xargs grep -nE '#include "[^"]*(\.\./)+(lib/)?src/' || true
      find . -path ./build -prune -o -name CMakeLists.txt -print | grep -v '^./lib/CMakeLists.txt$' |
        xargs grep -n 'lib/src' || true
    } >"$found"
    what="includes into lib/src that bypass lib/internal/vmfest/internal/"
    ;;
  backend-seam)
    { sources lib/backends | xargs grep -nE '#include "[^"]*\.\./\.\./' || true
      sources lib/backends | xargs grep -nE '#include "vmfest/internal/' |
        grep -vE 'vmfest/internal/(driver|base)\.h"' || true
    } >"$found"
    what="backend includes of the core beyond vmfest/internal/driver.h and base.h"
    ;;
  core-names-no-backend)
    sources lib/src lib/include lib/internal ssh fixtures tools |
      grep -v '^tools/guest/' | xargs grep -niE 'qemu|virtualbox|vbox|libvirt' |
      grep -viE 'qemu-img|qemu_img' |
      grep -viE '(libvirt|virtualbox) provider|provider == "(libvirt|virtualbox)"' >"$found" || true
    what="backend names in the core (say what a backend can do: Backend::capabilities())"
    ;;
  *)
    echo "check-layout.sh: unknown check '$2'" >&2
    exit 2
    ;;
esac
if [ -s "$found" ]; then
  echo "FAIL: $what:" >&2
  cat "$found" >&2
  exit 1
fi
echo "ok: $2"
