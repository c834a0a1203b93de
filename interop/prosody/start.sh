#!/bin/sh
# Starts a throw-away Prosody for loopback tests of the gateway's component link.
#
#   interop/prosody/start.sh WORK_DIR
#
# Writes WORK_DIR/prosody.cfg.lua from prosody.cfg.lua.in, registers the test users, then
# runs Prosody in the foreground (exec: the PID written to WORK_DIR/prosody.pid before
# exec is Prosody's own). Run it in the background and stop it with
# `kill "$(cat WORK_DIR/prosody.pid)"`; never by name.
#
# Environment (defaults in brackets):
#   XSG_PROSODY_DOMAIN [xmpp.test]   XSG_PROSODY_COMPONENT [sip.xmpp.test]
#   XSG_PROSODY_SECRET [secret]      XSG_PROSODY_C2S_PORT [5222]
#   XSG_PROSODY_COMPONENT_PORT [5347]
#   XSG_PROSODY_USERS ["alice:alicepw bob:bobpw"]   XSG_PROSODY_LOG_LEVEL [info]
set -eu

WORK_DIR=${1:?usage: start.sh WORK_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
DOMAIN=${XSG_PROSODY_DOMAIN:-xmpp.test}
COMPONENT=${XSG_PROSODY_COMPONENT:-sip.xmpp.test}
SECRET=${XSG_PROSODY_SECRET:-secret}
C2S_PORT=${XSG_PROSODY_C2S_PORT:-5222}
COMPONENT_PORT=${XSG_PROSODY_COMPONENT_PORT:-5347}
USERS=${XSG_PROSODY_USERS:-alice:alicepw bob:bobpw}
LOG_LEVEL=${XSG_PROSODY_LOG_LEVEL:-info}

install_prosody() {
    command -v prosody >/dev/null 2>&1 && return 0
    # Keep the package's post-install from starting the system service on the standard
    # ports: a policy-rc.d that refuses, only if none exists, removed afterwards.
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=yes
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prosody
    [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

install_prosody

mkdir -p "$WORK_DIR/data" "$WORK_DIR/certs"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
CFG="$WORK_DIR/prosody.cfg.lua"
sed -e "s|@WORK_DIR@|$WORK_DIR|g" \
    -e "s|@DOMAIN@|$DOMAIN|g" \
    -e "s|@COMPONENT@|$COMPONENT|g" \
    -e "s|@SECRET@|$SECRET|g" \
    -e "s|@C2S_PORT@|$C2S_PORT|g" \
    -e "s|@COMPONENT_PORT@|$COMPONENT_PORT|g" \
    -e "s|@LOG_LEVEL@|$LOG_LEVEL|g" \
    "$HERE/prosody.cfg.lua.in" > "$CFG"

for pair in $USERS; do
    prosodyctl --config "$CFG" register "${pair%%:*}" "$DOMAIN" "${pair#*:}"
done

echo $$ > "$WORK_DIR/prosody.pid"
exec prosody --config "$CFG" -F
