"""Small helpers for interop/demo.sh (Debian's /usr/bin/python3, standard library plus the
interop harness). Every wait is bounded.

  util.py ports N                      N distinct free loopback ports (UDP and TCP), one a line
  util.py kamailio-db FILE             creates Kamailio's presence tables (sqlite, WAL)
  util.py wait-tcp PORT SECONDS        until 127.0.0.1:PORT accepts a TCP connection
  util.py wait-sip PORT SECONDS        until 127.0.0.1:PORT answers OPTIONS with 200
  util.py wait-log FILE SECONDS PID TEXT...   until every TEXT appears in FILE (fails early if PID exits)
  util.py render TEMPLATE OUT KEY=VALUE...    fills @KEY@ fields
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from interop.harness.kamailio import answers_options, create_presence_db  # noqa: E402
from interop.harness.procs import free_port  # noqa: E402

LOOPBACK = "127.0.0.1"


def die(msg: str) -> None:
    print(f"demo: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def ports(n: int) -> None:
    got: list[int] = []
    for _ in range(n * 20):
        p = free_port("udp+tcp")
        if p not in got:
            got.append(p)
        if len(got) == n:
            print("\n".join(map(str, got)))
            return
    die(f"could not find {n} free loopback ports")


def wait_tcp(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.1) + 2):
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    die(f"nothing accepts TCP connections on {LOOPBACK}:{port} after {seconds:.0f}s")


def wait_sip(port: int, seconds: float) -> None:
    if not answers_options(port, seconds):
        die(f"no SIP server answers OPTIONS on {LOOPBACK}:{port} after {seconds:.0f}s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the shell) counts as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def wait_log(path: Path, seconds: float, pid: int, texts: list[str]) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.1) + 2):
        try:
            log = path.read_text(errors="replace")
        except OSError:
            log = ""
        if all(t in log for t in texts):
            return
        if not alive(pid):
            die(f"process {pid} exited before logging {texts!r} (see {path})")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    missing = [t for t in texts if t not in log]
    die(f"{path} does not show {missing!r} after {seconds:.0f}s")


def render(template: Path, out: Path, pairs: list[str]) -> None:
    text = template.read_text()
    for pair in pairs:
        key, _, value = pair.partition("=")
        text = text.replace(f"@{key}@", value)
    if "@" in "".join(line.split("#", 1)[0] for line in text.splitlines()):
        die(f"{template}: unfilled @...@ field after rendering")
    out.write_text(text)


def main(argv: list[str]) -> None:
    if not argv:
        die(__doc__ or "usage")
    cmd, args = argv[0], argv[1:]
    if cmd == "ports":
        ports(int(args[0]))
    elif cmd == "kamailio-db":
        try:
            create_presence_db(Path(args[0]))
        except Exception as e:  # noqa: BLE001 - reported as a clear demo error
            die(f"cannot create the Kamailio presence database: {e}")
    elif cmd == "wait-tcp":
        wait_tcp(int(args[0]), float(args[1]))
    elif cmd == "wait-sip":
        wait_sip(int(args[0]), float(args[1]))
    elif cmd == "wait-log":
        wait_log(Path(args[0]), float(args[1]), int(args[2]), args[3:])
    elif cmd == "render":
        render(Path(args[0]), Path(args[1]), args[2:])
    else:
        die(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
