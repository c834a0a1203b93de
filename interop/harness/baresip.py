"""A real baresip (Debian 12 package `baresip-core`, 1.0.0) as a SIMPLE presence softphone,
headless, on loopback, controlled from Python over its `ctrl_tcp` module (netstring-framed
JSON commands on a TCP port of its own).

What it can do in 1.0.0 (facts from running it against interop/tools/sip_stub_registrar.py;
see interop/README.md, "baresip"):

* register (digest MD5 only: a 401 that carries ANY non-MD5 challenge, also after an MD5
  one, fails with "Register: Function not implemented" and nothing is retried);
* publish its own state when the account has `;pubint=N` (N > 0): basic `open` after the
  REGISTER succeeds, `presence_offline` -> basic `closed`, `presence_online` -> `open`
  (there is no "away" in 1.0.0's publisher);
* watch contacts marked `;presence=p2p` in its contacts file (SUBSCRIBE Event: presence,
  Expires 600, no Accept header) and show what it believes with the `contacts` command:
  `Unknown`, `Online`, `Offline` or `Busy`.

Every process is started through procs.ManagedProcess (recorded PID, own process group) and
stopped by that PID; every wait is bounded. A missing baresip raises (the test fails; it is
never skipped).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .procs import LOOPBACK, ManagedProcess, free_port, tail

MODULE_DIRS = [Path("/usr/lib/baresip/modules"), Path("/usr/local/lib/baresip/modules")]
# account + contact: the account and contacts files; presence: PUBLISH/SUBSCRIBE/NOTIFY;
# ctrl_tcp: our control channel. No audio modules: presence needs none, and without the
# stdio/cons UI modules baresip never reads stdin.
MODULES = ["account.so", "contact.so", "presence.so", "ctrl_tcp.so"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "bob@sip.test: {0/UDP/v4} 200 OK (server) [1 binding]" (src/reg.c register handler)
_REG_LINE = re.compile(r"\{\d+/(\w+)/v[46]\} (\d{3}) ([^\n(]*)")
_CONTACT_LINE = re.compile(r"^[> ]\s+(Unknown|Online|Offline|Busy)\s+.*?<([^>]+)>\s*$")

STATUSES = ("Unknown", "Online", "Offline", "Busy")


def baresip_binary() -> str:
    for cand in (shutil.which("baresip"), "/usr/bin/baresip"):
        if cand and Path(cand).exists():
            return cand
    raise RuntimeError("baresip not found: run interop/setup.sh (Debian package baresip-core)")


def module_dir() -> Path:
    for d in MODULE_DIRS:
        if all((d / m).exists() for m in MODULES):
            return d
    raise RuntimeError(
        f"baresip modules {MODULES} not found in {[str(d) for d in MODULE_DIRS]}: "
        "install baresip-core (interop/setup.sh)"
    )


@dataclass
class Contact:
    name: str
    uri: str
    presence: bool = True  # ;presence=p2p: baresip SUBSCRIBEs to it


class CtrlTcp:
    """One TCP connection to baresip's ctrl_tcp: commands with tokens, events collected."""

    def __init__(self, port: int, connect_timeout: float, still_running) -> None:
        deadline = time.monotonic() + connect_timeout
        self.sock: Optional[socket.socket] = None
        last: Optional[Exception] = None
        for _ in range(int(connect_timeout / 0.1) + 1):
            still_running()
            try:
                self.sock = socket.create_connection((LOOPBACK, port), timeout=1.0)
                break
            except OSError as e:
                last = e
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        if self.sock is None:
            raise RuntimeError(f"baresip ctrl_tcp on {LOOPBACK}:{port} not reachable within {connect_timeout:.0f}s: {last}")
        self.sock.settimeout(0.1)
        self._cond = threading.Condition()
        self._responses: dict[str, dict] = {}
        self.events: list[dict] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"baresip-ctrl-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            # Netstrings: <len>:<payload>,  (bounded by the buffer's contents)
            for _ in range(1000):
                colon = buf.find(b":")
                if colon <= 0 or not buf[:colon].isdigit():
                    break
                n = int(buf[:colon])
                if len(buf) < colon + 1 + n + 1:
                    break
                payload = buf[colon + 1 : colon + 1 + n]
                buf = buf[colon + 1 + n + 1 :]
                try:
                    msg = json.loads(payload.decode("utf-8", errors="replace"))
                except json.JSONDecodeError:
                    continue
                with self._cond:
                    if msg.get("response") and "token" in msg:
                        self._responses[str(msg["token"])] = msg
                    elif msg.get("event"):
                        self.events.append(msg)
                    self._cond.notify_all()

    def command(self, command: str, params: Optional[str] = None, timeout: float = 5.0) -> dict:
        with self._cond:
            self._n += 1
            token = f"xsg{self._n}"
        req = {"command": command, "token": token}
        if params is not None:
            req["params"] = params
        data = json.dumps(req).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data + b",")
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"baresip: no ctrl_tcp response to {command!r} within {timeout:.1f}s")
                self._cond.wait(timeout=min(left, 0.5))
            return self._responses.pop(token)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        try:
            self.sock.close()
        except OSError:
            pass


class Baresip:
    """One baresip instance with one account `sip:<user>@<domain>` whose outbound proxy (every
    request: REGISTER, PUBLISH, SUBSCRIBE) is `proxy` on loopback."""

    def __init__(
        self,
        run_dir: Path,
        user: str,
        domain: str,
        password: Optional[str],
        proxy: tuple[str, int],
        *,
        regint: int = 600,
        pubint: int = 0,
        contacts: Sequence[Contact] = (),
        name: Optional[str] = None,
        sip_trace: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.conf_dir = run_dir / "conf"
        self.user = user
        self.domain = domain
        self.password = password
        self.proxy = proxy
        self.regint = regint
        self.pubint = pubint
        self.contacts = list(contacts)
        self.name = name or f"baresip-{user}"
        self.sip_trace = sip_trace
        self.sip_port = free_port("udp+tcp")
        self.ctrl_port = free_port("tcp")
        self.log_path = run_dir / f"{self.name}.log"
        self.proc: Optional[ManagedProcess] = None
        self.ctrl: Optional[CtrlTcp] = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    # ---- configuration -----------------------------------------------------------------

    def account_line(self) -> str:
        params = [
            f'outbound="sip:{self.proxy[0]}:{self.proxy[1]};transport=udp"',
            f"regint={self.regint}",
            f"pubint={self.pubint}",
            "answermode=manual",
            "mwi=no",
        ]
        if self.password is not None:
            params.insert(0, f"auth_pass={self.password}")
        return f"<{self.aor}>;" + ";".join(params)

    def write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        mods = module_dir()
        lines = [
            "# written by interop/harness/baresip.py (loopback only)",
            "poll_method\t\tepoll",
            f"sip_listen\t\t{LOOPBACK}:{self.sip_port}",
            # An interface name ('lo') is not found inside this sandbox; an address is.
            f"net_interface\t\t{LOOPBACK}",
            # Never ask a resolver beyond loopback (all URIs the suite uses go to the
            # outbound proxy, an IP literal).
            f"dns_server\t\t{LOOPBACK}:53",
            f"module_path\t\t{mods}",
            *[f"module_app\t\t{m}" for m in MODULES],
            f"ctrl_tcp_listen\t\t{LOOPBACK}:{self.ctrl_port}",
            "",
        ]
        (self.conf_dir / "config").write_text("\n".join(lines))
        (self.conf_dir / "accounts").write_text(self.account_line() + "\n")
        (self.conf_dir / "contacts").write_text(
            "".join(
                f'"{c.name}" <{c.uri}>' + (";presence=p2p" if c.presence else "") + "\n" for c in self.contacts
            )
        )

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self, ready_timeout: float = 15.0) -> "Baresip":
        self.write_config()
        argv = [baresip_binary(), "-f", str(self.conf_dir)]
        if self.sip_trace:
            argv.append("-s")  # every SIP message in the log
        self.proc = ManagedProcess(self.name, argv, self.log_path, cwd=self.run_dir).start()

        def still_running() -> None:
            if not self.proc.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.proc.returncode} during start:\n" + tail(self.log_path)
                )

        self.ctrl = CtrlTcp(self.ctrl_port, ready_timeout, still_running)
        return self

    def stop(self) -> None:
        if self.ctrl:
            self.ctrl.close()
            self.ctrl = None
        if self.proc:
            # SIGTERM makes baresip un-PUBLISH, un-SUBSCRIBE and un-REGISTER; 1.0.0 then
            # sometimes stays up ("ua: in use (1) by app module"), so the grace is short and
            # the process group is killed after it.
            self.proc.stop(grace=3.0)

    def kill9(self) -> None:
        """A crash: SIGKILL to the recorded PID (no un-REGISTER, no un-PUBLISH)."""
        if self.ctrl:
            self.ctrl.close()
            self.ctrl = None
        assert self.proc and self.proc.alive(), f"{self.name} is not running"
        self.proc.kill9()

    def __enter__(self) -> "Baresip":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- control -----------------------------------------------------------------------

    def command(self, command: str, params: Optional[str] = None, timeout: float = 5.0) -> str:
        assert self.ctrl, f"{self.name} not started"
        resp = self.ctrl.command(command, params, timeout)
        assert resp.get("ok"), f"{self.name}: command {command!r} failed: {resp}"
        return _ANSI.sub("", str(resp.get("data", "")))

    def presence_online(self) -> None:
        """basic open; PUBLISHed (with SIP-If-Match once it has an ETag) when pubint > 0."""
        self.command("presence_online")

    def presence_offline(self) -> None:
        """basic closed (1.0.0 has no away/busy of its own)."""
        self.command("presence_offline")

    def contact_statuses(self) -> dict[str, str]:
        """What baresip believes: {contact URI: Unknown|Online|Offline|Busy}."""
        out: dict[str, str] = {}
        for line in self.command("contacts").splitlines():
            m = _CONTACT_LINE.match(line)
            if m:
                out[m.group(2)] = m.group(1)
        return out

    def wait_contact_status(self, uri: str, status: str, timeout: float) -> None:
        assert status in STATUSES, status
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        for _ in range(int(timeout / 0.2) + 2):
            seen = self.contact_statuses()
            if seen.get(uri) == status:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise AssertionError(
            f"{self.name}: contact {uri} not {status} within {timeout:.1f}s (baresip shows {seen});\n"
            + self.log_tail(60)
        )

    # ---- what the log says -------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return _ANSI.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def register_results(self) -> list[int]:
        """Final REGISTER status codes baresip logged, in order (200 = registered)."""
        return [int(m.group(2)) for m in _REG_LINE.finditer(self.log_text())]

    def wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 2):
            text = self.log_text()
            if any(int(m.group(2)) == 200 for m in _REG_LINE.finditer(text)):
                return
            if "Register: " in text and "reg: " in text:
                # e.g. "reg: sip:bob@sip.test: Register: Function not implemented"
                raise AssertionError(f"{self.name}: registration failed:\n" + self.log_tail(60))
            if self.proc and not self.proc.alive():
                raise AssertionError(f"{self.name} exited:\n" + self.log_tail(60))
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: not registered within {timeout:.1f}s:\n" + self.log_tail(80))

    def sent_requests(self, method: str) -> list[str]:
        """The SIP requests of `method` baresip sent (from its -s trace), as text."""
        out = []
        for block in self.log_text().split("\n#\n"):
            head, _, rest = block.partition("\n")
            # "UDP 127.0.0.1:<ours> -> 127.0.0.1:<peer>": sent by us (received ones show the
            # peer first).
            if head.strip().startswith(f"UDP {LOOPBACK}:{self.sip_port} ->") and rest.startswith(f"{method} "):
                out.append(rest)
        return out

    def received_requests(self, method: str) -> list[str]:
        """The SIP requests of `method` baresip received (from its -s trace), as text."""
        out = []
        for block in self.log_text().split("\n#\n"):
            head, _, rest = block.partition("\n")
            if head.strip().endswith(f"-> {LOOPBACK}:{self.sip_port}") and rest.startswith(f"{method} "):
                out.append(rest)
        return out
