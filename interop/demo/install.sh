#!/usr/bin/env bash
# Installs the Debian 12 packages the demo needs, only those that are missing:
#   bash interop/demo/install.sh                   prosody, python3-slixmpp
#   bash interop/demo/install.sh --with-kamailio   also kamailio, kamailio-presence-modules,
#                                                  kamailio-sqlite-modules
#
# Post-install scripts would start the system Prosody/Kamailio on the standard ports. A
# temporary /usr/sbin/policy-rc.d that exits 101 forbids that; it is created only if none
# exists and removed again on every exit path, so a pre-existing one is never touched. The
# demo never uses the system services: it runs its own instances on loopback.
set -euo pipefail

die() {
    echo "demo: install: ERROR: $*" >&2
    exit 1
}

PACKAGES=(prosody python3-slixmpp)
case "${1:-}" in
"") ;;
--with-kamailio) PACKAGES+=(kamailio kamailio-presence-modules kamailio-sqlite-modules) ;;
*) die "unknown argument ${1} (only --with-kamailio)" ;;
esac
[ "$#" -le 1 ] || die "one argument at most (--with-kamailio)"

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: the demo supports Debian 12 only"

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "demo: packages present: $(dpkg-query -W -f='${Package} ${Version}, ' "${PACKAGES[@]}" | sed 's/, $//')"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}): run the demo as root to install them"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: the demo supports Debian 12 only"

echo "demo: installing: ${missing[*]}"
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [ "$created_policy" -eq 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, created by interop/demo/install.sh: no service starts during install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi
apt-get -o DPkg::Lock::Timeout=300 update -q || die "apt-get update failed"
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
    install -y -q --no-install-recommends "${missing[@]}" || die "could not install: ${missing[*]}"
for pkg in "${missing[@]}"; do
    installed "$pkg" || die "package $pkg is not installed after apt-get"
done
echo "demo: installed: $(dpkg-query -W -f='${Package} ${Version}, ' "${PACKAGES[@]}" | sed 's/, $//')"
