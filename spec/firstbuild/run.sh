#!/usr/bin/env bash
# The first build on a bare machine: a fresh copy of the tree is built with
# `make` while the machine pretends that none of vendor/packages.txt is
# installed. dpkg-query reports nothing and pkg-config knows no package until
# vendor/install.sh has run apt-get (a stand-in that only records the call),
# so anything the Makefile reads from pkg-config before its install step runs
# fails this check, as it would on a new machine.
#
#   spec/firstbuild/run.sh [TARGET...]     (default: all and two C tests)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

if (( EUID != 0 )); then
    echo "firstbuild: skipped: vendor/install.sh only installs as root" >&2
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shims=$work/shims tree=$work/tree installed=$work/installed
mkdir -p "$shims"

real_dpkg_query=$(command -v dpkg-query)
real_pkg_config=$(command -v pkg-config)
cat > "$shims/dpkg-query" <<SH
#!/bin/sh
[ -e "$installed" ] && exec "$real_dpkg_query" "\$@"
exit 1
SH
cat > "$shims/pkg-config" <<SH
#!/bin/sh
[ -e "$installed" ] && exec "$real_pkg_config" "\$@"
echo "pkg-config: no packages yet (called before vendor/install.sh)" >&2
exit 1
SH
cat > "$shims/apt-get" <<SH
#!/bin/sh
echo "apt-get \$*" >> "$work/apt-get.log"
case "\$1" in install) touch "$installed" ;; esac
exit 0
SH
chmod +x "$shims"/*

# the committed tree plus the working tree's changes, without build/ or var/
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | grep -zv '^build/\|^var/' \
    | (cd "$repo" && xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$tree"

targets=("$@")
(( ${#targets[@]} )) || targets=(all build/test_log build/test_spool)
echo "firstbuild: make ${targets[*]} in a fresh copy, packages reported missing"
if ! (cd "$tree" && PATH="$shims:$PATH" make -s "${targets[@]}") > "$work/make.log" 2>&1; then
    cat "$work/make.log"
    echo "firstbuild: FAILED: the first build on a bare machine does not succeed" >&2
    exit 1
fi
[ -s "$work/apt-get.log" ] || { echo "firstbuild: FAILED: vendor/install.sh never ran apt-get" >&2; exit 1; }
[ -x "$tree/build/steeple" ] || { echo "firstbuild: FAILED: no build/steeple" >&2; exit 1; }
echo "firstbuild: ok (apt-get called: $(tr '\n' ';' < "$work/apt-get.log"))"
