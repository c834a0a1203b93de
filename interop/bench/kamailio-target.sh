#!/bin/sh
# Starts Kamailio as the presence server of one `xsg-load agent` run, in the foreground
# (exec, so the PID the tool records is Kamailio's main process; its workers are its
# children). Usage: kamailio-target.sh PORT DIR [WORKERS]
#   xsg-load agent --target-cmd "interop/bench/kamailio-target.sh {port} {dir}" ...
set -eu
port="$1"
dir="$2"
workers="${3:-${KAM_WORKERS:-2}}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$dir/dbtext"
for t in version presentity active_watchers watchers xcap pua; do
    cp /usr/share/kamailio/dbtext/kamailio/$t "$dir/dbtext/$t"
done
exec kamailio -f "$here/kamailio-presence.cfg" -DD -E -m "${KAM_SHM_MB:-2048}" -M 64 \
    -n "$workers" -l "udp:127.0.0.1:$port" -Y "$dir" \
    --substdef="!KAM_PORT!$port!" --substdef="!DB_DIR!$dir/dbtext!"
