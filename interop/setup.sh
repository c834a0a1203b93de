#!/usr/bin/env bash
# Installs the system packages the interop suite needs (Debian 12). Idempotent: packages that
# are already installed are not fetched again, and `apt-get update` runs at most once per call
# (and only when something is missing).
#
# Package post-install scripts would start the system Kamailio on the standard ports; a
# temporary /usr/sbin/policy-rc.d that exits 101 forbids that. It is created only if none
# exists, and removed again on every exit path (trap), so a pre-existing one is never touched.
set -euo pipefail

PACKAGES=(
    kamailio
    kamailio-presence-modules
    kamailio-sqlite-modules
    sip-tester
    # baresip 1.0.0: the core package carries presence.so, ctrl_tcp.so, account.so and
    # contact.so (the `baresip` metapackage only adds GUI/video plugins on top).
    baresip-core
    sqlite3
    python3-pytest
)

die() {
    echo "interop/setup.sh: ERROR: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "must run as root (or with sudo available) to install: ${PACKAGES[*]}"
    fi
else
    SUDO=()
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian/Ubuntu only"

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "interop/setup.sh: all packages present: ${PACKAGES[*]}"
else
    echo "interop/setup.sh: installing: ${missing[*]}"
    POLICY=/usr/sbin/policy-rc.d
    created_policy=0
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then
            "${SUDO[@]}" rm -f "$POLICY"
        fi
    }
    trap cleanup EXIT
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# temporary, created by interop/setup.sh: no service starts during install\nexit 101\n' \
            | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY"
        created_policy=1
    fi
    "${SUDO[@]}" apt-get update -q || die "apt-get update failed"
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        die "could not install: ${missing[*]}"
    fi
    for pkg in "${missing[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || die "package $pkg is not installed after apt-get (status: '$status')"
    done
fi

# The suite runs with the Debian interpreter, which is the one that sees python3-pytest.
/usr/bin/python3 -c 'import pytest' 2>/dev/null \
    || die "/usr/bin/python3 cannot import pytest (python3-pytest installed?)"
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || die "kamailio binary not found"
# pua/pua_rpc come with kamailio-presence-modules; ctl, jsonrpcs and kamcmd with kamailio.
for mod in db_sqlite presence presence_xml pua pua_rpc ctl; do
    found=$(find /usr/lib -path '*kamailio/modules*' -name "$mod.so" 2>/dev/null | head -n 1)
    [ -n "$found" ] || die "kamailio module $mod.so not found"
done

command -v kamcmd >/dev/null 2>&1 || [ -x /usr/sbin/kamcmd ] || die "kamcmd not found (package kamailio)"
command -v baresip >/dev/null 2>&1 || die "baresip binary not found (package baresip-core)"
for mod in account contact presence ctrl_tcp; do
    [ -e "/usr/lib/baresip/modules/$mod.so" ] || die "baresip module $mod.so not found (package baresip-core)"
done

# A systemd-less machine never starts the service, but a machine with systemd might have
# started it before policy-rc.d existed; the suite only ever uses its own ports, so that is
# harmless and left alone.
echo "interop/setup.sh: ok ($(dpkg-query -W -f='${Package} ${Version}\n' kamailio sip-tester baresip-core | tr '\n' ' '))"
