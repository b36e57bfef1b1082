#!/usr/bin/env bash
# Install the Debian packages listed in vendor/packages.txt that are missing.
#
#   vendor/install.sh [-v] [--check]
#
#   -v       say what is happening (also: report versions that differ from pins)
#   --check  only report missing packages (exit 1 if any), install nothing
#
# Runs on every `make`: when nothing is missing it makes a single dpkg-query
# call and exits silently. Pinned versions are what we test with; packages are
# installed by name and a differing installed version only produces a warning.
set -euo pipefail

list="$(dirname "${BASH_SOURCE[0]}")/packages.txt"
verbose=0 check=0
for arg in "$@"; do
    case $arg in
        -v|--verbose) verbose=1 ;;
        --check) check=1 ;;
        -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# Parse the list: names[] in file order, pin[name]=version (may be empty).
names=()
declare -A pin=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    line=${line//[[:space:]]/}
    [[ -z $line ]] && continue
    name=${line%%=*}
    names+=("$name")
    pin[$name]=
    [[ $line == *=* ]] && pin[$name]=${line#*=}
done < "$list"

# One dpkg-query call for everything; unknown names just produce no line.
declare -A have=()
query() {
    have=()
    local n status ver
    while IFS=$'\t' read -r n status ver; do
        [[ $status == "install ok installed" ]] && have[$n]=$ver
    done < <(dpkg-query -W -f='${Package}\t${Status}\t${Version}\n' "${names[@]}" 2>/dev/null || true)
}

# Warn (never fail) about installed versions that differ from their pins.
check_pins() {
    local n rel
    for n in "${names[@]}"; do
        [[ -n ${pin[$n]} && -n ${have[$n]:-} && ${have[$n]} != "${pin[$n]}" ]] || continue
        rel=older; dpkg --compare-versions "${have[$n]}" gt "${pin[$n]}" && rel=newer
        echo "install.sh: warning: $n ${have[$n]} installed ($rel than pinned ${pin[$n]})" >&2
    done
}

query
missing=()
for n in "${names[@]}"; do [[ -n ${have[$n]:-} ]] || missing+=("$n"); done

if (( ${#missing[@]} == 0 )); then
    if (( verbose )); then
        echo "install.sh: all ${#names[@]} packages installed"
        check_pins
    fi
    exit 0
fi

if (( check )); then
    echo "install.sh: missing packages: ${missing[*]}" >&2
    exit 1
fi

install_cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if (( EUID != 0 )); then
    echo "install.sh: missing packages: ${missing[*]}" >&2
    echo "install.sh: run: sudo ${install_cmd[*]}" >&2
    exit 1
fi

echo "install.sh: installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
quiet=(-q); (( verbose )) && quiet=()
# Fresh images have no package lists at all; otherwise only update on failure.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt-get "${quiet[@]}" update
fi
if ! "${install_cmd[@]}" "${quiet[@]}"; then
    echo "install.sh: install failed; running apt-get update and retrying" >&2
    apt-get "${quiet[@]}" update
    "${install_cmd[@]}" "${quiet[@]}"
fi

query
still=()
for n in "${missing[@]}"; do [[ -n ${have[$n]:-} ]] || still+=("$n"); done
if (( ${#still[@]} )); then
    echo "install.sh: still not installed: ${still[*]}" >&2
    exit 1
fi
check_pins
