#!/bin/sh
# Runs `xsg-load agent` against this gateway's embedded presence agent and against
# Kamailio (kamailio-target.sh), back to back per scenario, and prints the ratios.
# Figures and method: BENCHMARKS.md, "Embedded presence agent".
#
#   CARGO_TARGET_DIR=/work/target-bench cargo build --release --bins
#   T=/work/target-bench/release interop/bench/agent-bench.sh [OUT_DIR] [SCENARIO...]
#
# Scenarios: w1 (closed loop, 100 presentities x 1 watcher), fanout (10 x 1000, closed
# loop), half-w1 (open loop 10 000 PUBLISH/s, 1000 x 1), half-fanout (open loop
# 50 PUBLISH/s to 10 x 1000 = 50 000 NOTIFY/s), mem (100 x 1000 = 100 000 subscriptions).
# Every run is bounded (--max-time) and stops the server it started by PID.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
T="${T:-${CARGO_TARGET_DIR:-target}/release}"
out="${1:-/tmp/agent-bench-$(date +%H%M%S)}"
[ $# -gt 0 ] && shift
scenarios="${*:-w1 fanout half-w1 half-fanout mem}"
mkdir -p "$out"
gw="$T/xmpp-sip-gateway --config {config}"
kam="$here/kamailio-target.sh {port} {dir}"

args_for() {
    case "$1" in
        w1) echo "--presentities 100 --watchers 1 --rate max --duration 10" ;;
        fanout) echo "--presentities 10 --watchers 1000 --rate max --duration 10 --setup-rate 500" ;;
        open5k) echo "--presentities 1000 --watchers 1 --rate 5000 --duration 10" ;;
        half-w1) echo "--presentities 1000 --watchers 1 --rate 10000 --duration 10" ;;
        half-fanout) echo "--presentities 10 --watchers 1000 --rate 50 --duration 10 --setup-rate 500" ;;
        mem) echo "--presentities 100 --watchers 1000 --subscribe-only --setup-rate 1000 --setup-timeout 400" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

for s in $scenarios; do
    a="$(args_for "$s")"
    for target in gateway kamailio; do
        if [ "$target" = gateway ]; then
            set -- --gateway-cmd "$gw"
        else
            set -- --target-cmd "$kam"
        fi
        echo "== $s $target: $a" >&2
        # shellcheck disable=SC2086
        "$T/xsg-load" agent $a --label "$target" --max-time 500 \
            --work-dir "$out/$s-$target" --json "$out/$s-$target.json" "$@" \
            > "$out/$s-$target.txt" 2> "$out/$s-$target.err" || echo "run $s $target failed: see $out/$s-$target.err" >&2
        sed -n '1,6p' "$out/$s-$target.txt" >&2
    done
done

/usr/bin/python3 - "$out" $scenarios <<'PY'
import json, sys, os
out, scen = sys.argv[1], sys.argv[2:]
def load(s, t):
    p = os.path.join(out, f"{s}-{t}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def r(a, b):
    return f"{a / b:.2f}" if a and b else "-"
print(f"{'scenario':<12} {'target':<9} {'PUB/s notified':>14} {'NOTIFY/s':>10} {'p50':>7} {'p99':>7} {'max':>8} {'wrong':>6} {'cpu/1000':>9} {'B/sub':>7}")
for s in scen:
    g, k = load(s, "gateway"), load(s, "kamailio")
    for name, d in (("gateway", g), ("kamailio", k)):
        if not d:
            print(f"{s:<12} {name:<9} (no result)"); continue
        l = d["latency"]; m = d["memory"]
        cpu = d.get("target_cpu_s_per_1000_publish")
        per = m.get("pss_per_subscription_bytes")
        print(f"{s:<12} {name:<9} {d['notified_per_s']:>14.0f} {d['deliveries_per_s']:>10.0f} {l['p50_ms']:>7.2f} {l['p99_ms']:>7.2f} {l['max_ms']:>8.2f} {d['wrong_final']:>6} {cpu if cpu is None else round(cpu,3)!s:>9} {per if per is None else round(per)!s:>7}")
    if g and k:
        print(f"{s:<12} {'ratio g/k':<9} {r(g['notified_per_s'], k['notified_per_s']):>14} {r(g['deliveries_per_s'], k['deliveries_per_s']):>10} {r(g['latency']['p50_ms'], k['latency']['p50_ms']):>7} {r(g['latency']['p99_ms'], k['latency']['p99_ms']):>7}")
PY
