#!/usr/bin/env bash
# The xmpp-sip-gateway demo: presence crossing between an XMPP user and a SIP user, both ways.
#
#   bash interop/demo.sh                   Prosody and the gateway only (default)
#   bash interop/demo.sh --with-kamailio   Prosody, a Kamailio presence server and the gateway
#
# On Debian 12 (as root, if packages are missing) it:
#   1. installs what is missing (interop/demo/install.sh; no system service is started):
#      prosody and python3-slixmpp; with --with-kamailio also kamailio and its presence and
#      sqlite modules;
#   2. builds the gateway (cargo build --bin xmpp-sip-gateway), unless XSG_BIN names a binary;
#   3. starts, on 127.0.0.1 and free ports, in a fresh temporary folder:
#        Prosody (domain xmpp.test, user alice, component sip.xmpp.test),
#        by default the gateway with its embedded presence agent and registrar for sip.test
#          (interop/demo/gateway.toml.in: notifier mode, no other SIP server);
#        with --with-kamailio, Kamailio as SIP presence server (interop/kamailio/presence.cfg)
#          and the gateway with Kamailio as outbound proxy (interop/demo/gateway-kamailio.toml.in);
#   4. runs interop/demo/scenario.py: alice (XMPP) and bob (SIP) watch each other and change
#      presence; it prints what crosses the gateway. bob REGISTERs, PUBLISHes and SUBSCRIBEs at
#      the gateway (default) or PUBLISHes at Kamailio and SUBSCRIBEs at the gateway (Kamailio).
# Everything it started is stopped by PID on exit, also on failure or Ctrl-C. Exit status 0
# only if presence crossed in both directions (2 for a bad command line).
#
# Environment: XSG_BIN (use this gateway binary, skip the build), XSG_DEMO_KEEP=1 (keep the
# run folder with configs and logs), XSG_DEMO_CARGO_ARGS (extra arguments before `build`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO="$REPO/interop/demo"
PY=/usr/bin/python3 # Debian's python3-slixmpp is installed for this interpreter
UTIL=("$PY" "$DEMO/util.py")
SECRET="demo-secret-$$"
WAIT_START=20 # seconds each server may take to come up

usage() {
    sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}
WITH_KAMAILIO=0
for arg in "$@"; do
    case $arg in
    --with-kamailio) WITH_KAMAILIO=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        printf 'demo: unknown argument %s\n' "$arg" >&2
        usage >&2
        exit 2
        ;;
    esac
done

say() { printf '%s\n' "$*"; }
fail() {
    say "demo: FAILED: $*" >&2
    exit 1
}

# ---- cleanup: stop by recorded PID, also on failure ---------------------------------------
PIDS=()  # "name:pid", in start order
RUN_DIR=""
OK=0
stop_pid() { # name pid
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do # at most 5 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "demo: $name (pid $pid) did not stop on SIGTERM; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Each server was started in its own session: its process group id is its PID, so any
    # worker left behind (Kamailio forks) is reached through that recorded PID.
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i entry
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        entry=${PIDS[$i]}
        stop_pid "${entry%%:*}" "${entry##*:}"
    done
    if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
        if [ "$OK" -eq 1 ] && [ "${XSG_DEMO_KEEP:-0}" != 1 ]; then
            rm -rf "$RUN_DIR"
        else
            if [ "$OK" -ne 1 ]; then
                for log in gateway.log kamailio.log prosody.log; do
                    [ -f "$RUN_DIR/$log" ] || continue
                    say "----- $log (last 15 lines) -----" >&2
                    tail -n 15 "$RUN_DIR/$log" >&2 || true
                done
            fi
            say "demo: configs and logs kept in $RUN_DIR" >&2
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "demo: interrupted" >&2; exit 130' INT
trap 'say "demo: terminated" >&2; exit 143' TERM

# start NAME LOG CMD... : in the background, in its own session; records the PID.
start() {
    local name=$1 log=$2 pid
    shift 2
    setsid "$@" >"$log" 2>&1 </dev/null &
    pid=$!
    PIDS+=("$name:$pid")
    eval "${name}_PID=$pid"
}

# ---- 1. packages -----------------------------------------------------------------------------
say "== 1/4 packages"
if [ "$WITH_KAMAILIO" -eq 1 ]; then
    bash "$DEMO/install.sh" --with-kamailio || fail "could not install the packages the demo needs (see above)"
    KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)
    [ -x "$KAMAILIO" ] || fail "kamailio binary not found"
else
    bash "$DEMO/install.sh" || fail "could not install the packages the demo needs (see above)"
fi
"$PY" -c 'import slixmpp' 2>/dev/null || fail "$PY cannot import slixmpp (python3-slixmpp)"
command -v prosody >/dev/null && command -v prosodyctl >/dev/null || fail "prosody/prosodyctl not found"

# ---- 2. the gateway --------------------------------------------------------------------------
say "== 2/4 gateway build"
if [ -n "${XSG_BIN:-}" ]; then
    GATEWAY=$XSG_BIN
    say "demo: using XSG_BIN=$GATEWAY (no build)"
else
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust (https://rustup.rs) or set XSG_BIN"
    # shellcheck disable=SC2086 # XSG_DEMO_CARGO_ARGS is a list of words
    (cd "$REPO" && cargo ${XSG_DEMO_CARGO_ARGS:-} build --bin xmpp-sip-gateway) || fail "cargo build failed"
    TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])') \
        || TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
    GATEWAY="$TARGET_DIR/debug/xmpp-sip-gateway"
fi
[ -x "$GATEWAY" ] || fail "gateway binary $GATEWAY not found"

# ---- 3. servers ------------------------------------------------------------------------------
say "== 3/4 servers (127.0.0.1 only)"
RUN_DIR=$(mktemp -d /tmp/xsg-demo.XXXXXX)
mapfile -t PORTS < <("${UTIL[@]}" ports 5) || fail "no free loopback ports"
[ "${#PORTS[@]}" -eq 5 ] || fail "no free loopback ports"
C2S_PORT=${PORTS[0]} COMPONENT_PORT=${PORTS[1]} GW_SIP_PORT=${PORTS[2]}
GW_ADMIN_PORT=${PORTS[3]} KAM_PORT=${PORTS[4]} # KAM_PORT: --with-kamailio only

# Prosody: interop/prosody/start.sh writes its config, registers alice, execs Prosody.
start prosody "$RUN_DIR/prosody.out" env \
    XSG_PROSODY_DOMAIN=xmpp.test XSG_PROSODY_COMPONENT=sip.xmpp.test XSG_PROSODY_SECRET="$SECRET" \
    XSG_PROSODY_C2S_PORT="$C2S_PORT" XSG_PROSODY_COMPONENT_PORT="$COMPONENT_PORT" \
    XSG_PROSODY_USERS="alice:alicepw" \
    sh "$REPO/interop/prosody/start.sh" "$RUN_DIR/prosody"
"${UTIL[@]}" wait-tcp "$C2S_PORT" "$WAIT_START" || fail "Prosody did not start (log: $RUN_DIR/prosody.out)"
"${UTIL[@]}" wait-tcp "$COMPONENT_PORT" "$WAIT_START" || fail "Prosody's component port did not open"
ln -sf prosody/prosody.log "$RUN_DIR/prosody.log"
say "demo: Prosody      pid $prosody_PID  c2s 127.0.0.1:$C2S_PORT  component 127.0.0.1:$COMPONENT_PORT  (xmpp.test, user alice)"

if [ "$WITH_KAMAILIO" -eq 1 ]; then
    # Kamailio: presence server with a fresh sqlite database.
    "${UTIL[@]}" kamailio-db "$RUN_DIR/kamailio-presence.sqlite"
    mkdir -p "$RUN_DIR/kamailio-rundir"
    start kamailio "$RUN_DIR/kamailio.log" "$KAMAILIO" -f "$REPO/interop/kamailio/presence.cfg" -DD -E \
        -l "udp:127.0.0.1:$KAM_PORT" -n 2 -m 64 -Y "$RUN_DIR/kamailio-rundir" \
        "--substdef=!KAM_PORT!$KAM_PORT!" "--substdef=!PS_CONTACT_PORT!$KAM_PORT!" \
        "--substdef=!DB_FILE!$RUN_DIR/kamailio-presence.sqlite!"
    "${UTIL[@]}" wait-sip "$KAM_PORT" "$WAIT_START" || fail "Kamailio did not start"
    say "demo: Kamailio     pid $kamailio_PID  sip 127.0.0.1:$KAM_PORT/udp  (presence server)"
    TEMPLATE="$DEMO/gateway-kamailio.toml.in"
    GW_READY=()
    ROLE="bridge: notifier, xmpp.test ⇄ sip.test; Kamailio serves sip.test"
else
    TEMPLATE="$DEMO/gateway.toml.in"
    GW_READY=("embedded presence agent enabled" "embedded registrar enabled")
    ROLE="bridge: notifier, xmpp.test ⇄ sip.test; presence agent + registrar for sip.test"
fi

# The gateway.
"${UTIL[@]}" render "$TEMPLATE" "$RUN_DIR/gateway.toml" \
    "GW_SIP_PORT=$GW_SIP_PORT" "GW_ADMIN_PORT=$GW_ADMIN_PORT" "KAM_PORT=$KAM_PORT" \
    "COMPONENT_PORT=$COMPONENT_PORT" "SECRET=$SECRET" "RUN_DIR=$RUN_DIR"
start gateway "$RUN_DIR/gateway.log" env -u RUST_LOG NO_COLOR=1 "$GATEWAY" --config "$RUN_DIR/gateway.toml"
"${UTIL[@]}" wait-log "$RUN_DIR/gateway.log" "$WAIT_START" "$gateway_PID" \
    "sip listening" "admin listening" "xmpp component link up" "${GW_READY[@]}" || fail "the gateway did not come up"
say "demo: gateway      pid $gateway_PID  sip 127.0.0.1:$GW_SIP_PORT  admin 127.0.0.1:$GW_ADMIN_PORT  component sip.xmpp.test"
say "                   ($ROLE)"

# ---- 4. the two users --------------------------------------------------------------------------
say "== 4/4 alice (XMPP) and bob (SIP)"
say ""
if [ "$WITH_KAMAILIO" -eq 1 ]; then
    SCENARIO=(--kamailio "$KAM_PORT")
else
    SCENARIO=(--ctl "$GATEWAY" --admin "http://127.0.0.1:$GW_ADMIN_PORT")
fi
timeout 90 "$PY" "$DEMO/scenario.py" --c2s "$C2S_PORT" --gateway "$GW_SIP_PORT" "${SCENARIO[@]}" \
    || fail "presence did not cross in both directions (details above)"
OK=1
say "demo: OK"
