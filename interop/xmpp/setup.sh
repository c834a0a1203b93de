#!/usr/bin/env bash
# Installs what the XMPP half of the interop suite needs (Debian 12): Prosody 0.12, ejabberd
# 23.01, slixmpp for /usr/bin/python3, pytest. Idempotent; fails loudly if anything is missing
# afterwards.
#
# Post-install scripts would start the system Prosody/ejabberd on the standard ports; a
# temporary /usr/sbin/policy-rc.d that exits 101 forbids that. It is created only if none
# exists and removed again on exit, so a pre-existing one is never touched. The suite never
# uses the system services: it runs its own instances from its own configs (servers.py).
set -euo pipefail

PACKAGES=(prosody ejabberd python3-slixmpp python3-pytest)

die() {
    echo "interop/xmpp/setup.sh: ERROR: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo) to install: ${PACKAGES[*]}"
    SUDO=(sudo)
else
    SUDO=()
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: Debian/Ubuntu only"

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "interop/xmpp/setup.sh: installing: ${missing[*]}"
    POLICY=/usr/sbin/policy-rc.d
    created_policy=0
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi
    }
    trap cleanup EXIT
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# temporary, created by interop/xmpp/setup.sh\nexit 101\n' \
            | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY"
        created_policy=1
    fi
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q || die "apt-get update failed"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
        install -y -q --no-install-recommends "${missing[@]}" || die "could not install: ${missing[*]}"
    for pkg in "${missing[@]}"; do
        installed "$pkg" || die "package $pkg is not installed after apt-get"
    done
fi

command -v prosody >/dev/null 2>&1 || die "prosody binary not found"
command -v prosodyctl >/dev/null 2>&1 || die "prosodyctl not found"
command -v erl >/dev/null 2>&1 || die "erl not found (ejabberd depends on it)"
[ -d /usr/lib/x86_64-linux-gnu ] && ls -d /usr/lib/*/ejabberd-* >/dev/null 2>&1 || die "ejabberd libraries not found"
/usr/bin/python3 -c 'import slixmpp, pytest' 2>/dev/null || die "/usr/bin/python3 cannot import slixmpp and pytest"
echo "interop/xmpp/setup.sh: ok ($(dpkg-query -W -f='${Package} ${Version}\n' prosody ejabberd python3-slixmpp | tr '\n' ' '))"
