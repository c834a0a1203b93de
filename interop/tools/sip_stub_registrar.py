#!/usr/bin/python3
"""A tiny SIP registrar / presence server stand-in on loopback UDP, used to find out what real
peers (baresip, Kamailio's pua, SIPp scenarios) put on the wire before the gateway's presence
agent exists. It is NOT a product and not a model of the gateway: it records every datagram
verbatim and answers just enough to keep the peer going.

    /usr/bin/python3 interop/tools/sip_stub_registrar.py --port 5070 --log /tmp/stub.log

Behaviour:

* REGISTER, PUBLISH, SUBSCRIBE without credentials -> 401 offering digest (SHA-256 first,
  then MD5, like the gateway's contract) when `--auth` (default); the Authorization that comes
  back is checked against `--user/--password` and the verdict is logged (`digest ok` /
  `digest BAD`), then answered 200 anyway when it is ok, 403 when it is not.
* REGISTER -> 200 echoing the Contact with ;expires.
* PUBLISH -> 200 with a fresh SIP-ETag (a refresh with an unknown SIP-If-Match -> 412;
  Expires 1..min-1 -> 423 with Min-Expires).
* SUBSCRIBE -> 200 (To-tag, Contact, Expires), then one NOTIFY per body in `notify_bodies`
  (the presentity's state), sent to the Contact; `StubServer.notify_all(body)` sends more.

Import it (`from tools.sip_stub_registrar import StubServer`) or run it as a script.
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import sipmsg  # noqa: E402
from harness.sipmsg import SipMessage  # noqa: E402

LOOPBACK = "127.0.0.1"


def _h(algo: str, s: str) -> str:
    if algo.upper().startswith("SHA-256"):
        return hashlib.sha256(s.encode()).hexdigest()
    return hashlib.md5(s.encode()).hexdigest()


def parse_digest(value: str) -> dict[str, str]:
    """`Digest a=b, c="d"` -> {"a": "b", "c": "d"} (names lower-cased)."""
    v = value.strip()
    if v.lower().startswith("digest"):
        v = v[6:]
    out: dict[str, str] = {}
    for part in sipmsg.split_commas(v):
        if "=" in part:
            k, val = part.split("=", 1)
            out[k.strip().lower()] = val.strip().strip('"')
    return out


def digest_ok(method: str, auth: dict[str, str], password: str) -> bool:
    algo = auth.get("algorithm", "MD5")
    ha1 = _h(algo, f"{auth.get('username')}:{auth.get('realm')}:{password}")
    ha2 = _h(algo, f"{method}:{auth.get('uri')}")
    if auth.get("qop"):
        want = _h(algo, f"{ha1}:{auth.get('nonce')}:{auth.get('nc')}:{auth.get('cnonce')}:{auth.get('qop')}:{ha2}")
    else:
        want = _h(algo, f"{ha1}:{auth.get('nonce')}:{ha2}")
    return want == auth.get("response")


@dataclass
class Received:
    at: float
    src: tuple[str, int]
    message: SipMessage
    raw: bytes


@dataclass
class StubSubscription:
    call_id: str
    watcher_tag: str
    our_tag: str
    watcher_uri: str
    presentity: str
    target: tuple[str, int]
    contact_uri: str
    cseq: int = 0


class StubServer:
    def __init__(
        self,
        port: int = 0,
        log_path: Optional[Path] = None,
        *,
        realm: str = "sip.test",
        users: Optional[dict[str, str]] = None,
        auth: bool = True,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        min_expires: int = 60,
        notify_bodies: Optional[list[bytes]] = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.log_path = log_path
        self.realm = realm
        self.users = users if users is not None else {"bob": "bobpw", "alice": "alicepw", "carol": "carolpw"}
        self.auth = auth
        self.algorithms = algorithms
        self.min_expires = min_expires
        self.notify_bodies = notify_bodies or []
        self.received: list[Received] = []
        self.responses: list[Received] = []
        self.notes: list[str] = []
        self.etags: dict[str, float] = {}  # etag -> expiry (time.monotonic())
        self.bindings: dict[str, dict[str, float]] = {}  # AOR -> {contact: expiry}
        self.subs: list[StubSubscription] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._nonce_n = 0
        self._thread = threading.Thread(target=self._run, name="sip-stub", daemon=True)
        self._thread.start()

    # ---- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sock.close()

    def __enter__(self) -> "StubServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- inspection --------------------------------------------------------------------

    def requests(self, method: Optional[str] = None) -> list[Received]:
        with self._cond:
            return [r for r in self.received if method is None or r.message.method == method]

    def wait_request(self, method: str, predicate=lambda m: True, timeout: float = 10.0, what: str = "") -> Received:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.received:
                    if r.message.method == method and predicate(r.message):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"stub: no {what or method} within {timeout:.1f}s; got: "
                        + ", ".join(x.message.summary() for x in self.received[-10:])
                    )
                self._cond.wait(timeout=min(left, 0.5))

    # ---- wire --------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {text}"
        self.notes.append(line)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")

    def _send(self, msg: SipMessage, dest: tuple[str, int]) -> None:
        data = msg.to_bytes()
        self._log(f"--> {dest}\n{data.decode(errors='replace')}")
        self.sock.sendto(data, dest)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self._log(f"<-- {src}\n{data.decode(errors='replace')}")
            try:
                msg = sipmsg.parse(data)
            except sipmsg.SipParseError as e:
                self._log(f"unparseable: {e}")
                continue
            rec = Received(time.time(), src, msg, data)
            with self._cond:
                (self.received if msg.is_request else self.responses).append(rec)
                self._cond.notify_all()
            if msg.is_request:
                try:
                    self._on_request(msg, src)
                except Exception as e:  # a stub: log and go on
                    self._log(f"stub error on {msg.start_line}: {e!r}")

    # ---- behaviour ---------------------------------------------------------------------

    def _reply(self, req: SipMessage, src, code: int, reason: str, extra=(), to_tag: Optional[str] = None, body=b"", ctype=None):
        resp = sipmsg.build_response(req, code, reason, to_tag=to_tag, extra=list(extra))
        if body:
            resp.body = body
            resp.headers.append(("Content-Type", ctype or "application/pidf+xml"))
        self._send(resp, sipmsg.via_target(req.get_all("via")[0]) if req.get_all("via") else src)

    def _challenge(self, req: SipMessage, src) -> None:
        self._nonce_n += 1
        nonce = f"{int(time.time()):x}{self._nonce_n:04x}{os.urandom(4).hex()}"
        extra = [
            ("WWW-Authenticate", f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={a}, qop="auth"')
            for a in self.algorithms
        ]
        self._reply(req, src, 401, "Unauthorized", extra)

    def _authorized(self, req: SipMessage, src) -> bool:
        if not self.auth:
            return True
        hdr = req.get("authorization") or req.get("proxy-authorization")
        if not hdr:
            self._challenge(req, src)
            return False
        a = parse_digest(hdr)
        pw = self.users.get(a.get("username", ""))
        ok = pw is not None and digest_ok(req.method, a, pw)
        self._log(f"digest {'ok' if ok else 'BAD'}: {a}")
        if not ok:
            self._reply(req, src, 403, "Forbidden")
        return ok

    def _on_request(self, req: SipMessage, src) -> None:
        m = req.method
        if m == "ACK":
            return
        if m == "OPTIONS":
            self._reply(req, src, 200, "OK")
            return
        if m in ("REGISTER", "PUBLISH", "SUBSCRIBE") and not self._authorized(req, src):
            return
        if m == "REGISTER":
            exp = req.expires if req.expires is not None else 3600
            aor = sipmsg.uri_of(req.get("to") or "")
            now = time.monotonic()
            held = self.bindings.setdefault(aor, {})
            for c in req.get_all("contact"):
                for one in sipmsg.split_commas(c):
                    if one.strip() == "*":
                        held.clear()
                        continue
                    e = sipmsg.header_param(one, "expires")
                    e = int(e) if e and e.isdigit() else exp
                    if e == 0:
                        held.pop(sipmsg.uri_of(one), None)
                    else:
                        held[sipmsg.uri_of(one)] = now + e
            extra = [
                ("Contact", f"<{uri}>;expires={max(0, int(until - now))}")
                for uri, until in held.items()
                if until > now
            ]
            self._reply(req, src, 200, "OK", extra, to_tag=sipmsg.new_token("reg"))
        elif m == "PUBLISH":
            exp = req.expires if req.expires is not None else 3600
            if 0 < exp < self.min_expires:
                self._reply(req, src, 423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))])
                return
            ifm = req.get("sip-if-match")
            if ifm is not None and self.etags.get(ifm, 0) < time.monotonic():
                self._reply(req, src, 412, "Conditional Request Failed")
                return
            if ifm:
                self.etags.pop(ifm, None)
            if exp == 0:
                self._reply(req, src, 200, "OK", [("Expires", "0")], to_tag=sipmsg.new_token("pub"))
                return
            etag = sipmsg.new_token("e")
            self.etags[etag] = time.monotonic() + exp
            self._reply(req, src, 200, "OK", [("SIP-ETag", etag), ("Expires", str(exp))], to_tag=sipmsg.new_token("pub"))
        elif m == "SUBSCRIBE":
            exp = req.expires if req.expires is not None else 3600
            if req.to_tag:
                self._reply(req, src, 200, "OK", [("Expires", str(exp)), ("Contact", f"<sip:{LOOPBACK}:{self.port}>")])
                return
            our_tag = sipmsg.new_token("n")
            contact = sipmsg.uri_of(req.get("contact") or "")
            sub = StubSubscription(
                call_id=req.call_id or "",
                watcher_tag=req.from_tag or "",
                our_tag=our_tag,
                watcher_uri=sipmsg.uri_of(req.get("from") or ""),
                presentity=sipmsg.uri_of(req.get("to") or ""),
                target=sipmsg.uri_hostport(contact) if contact else src,
                contact_uri=contact,
            )
            self.subs.append(sub)
            self._reply(
                req, src, 200, "OK",
                [("Expires", str(exp)), ("Contact", f"<sip:{LOOPBACK}:{self.port}>")],
                to_tag=our_tag,
            )  # fmt: skip
            for body in self.notify_bodies or [b""]:
                self.notify(sub, body, expires=exp)
        else:
            self._reply(req, src, 200 if m in ("NOTIFY", "MESSAGE") else 405, "OK" if m in ("NOTIFY", "MESSAGE") else "Method Not Allowed")

    def notify(self, sub: StubSubscription, body: bytes, expires: int = 600, state: str = "active") -> None:
        sub.cseq += 1
        req = sipmsg.build_request(
            "NOTIFY",
            sub.contact_uri or f"sip:{sub.target[0]}:{sub.target[1]}",
            via_host=LOOPBACK,
            via_port=self.port,
            from_uri=sub.presentity,
            from_tag=sub.our_tag,
            to_uri=sub.watcher_uri,
            to_tag=sub.watcher_tag,
            call_id=sub.call_id,
            cseq=sub.cseq,
            contact=f"sip:{LOOPBACK}:{self.port}",
            extra=[("Event", "presence"), ("Subscription-State", f"{state};expires={expires}" if state == "active" else state)],
            body=body,
            content_type="application/pidf+xml" if body else None,
        )
        self._send(req, sub.target)

    def notify_all(self, body: bytes) -> None:
        for sub in list(self.subs):
            self.notify(sub, body)


def pidf_rpid(entity: str, basic: str = "open", activity: Optional[str] = None, prefix: str = "rpid") -> bytes:
    """PIDF with an RPID person activity (`away`, `busy`, `on-the-phone`) under `prefix`."""
    act = f"<{prefix}:activities><{prefix}:{activity}/></{prefix}:activities>" if activity else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        f' xmlns:{prefix}="urn:ietf:params:xml:ns:pidf:rpid" entity="{entity}">\n'
        f'  <tuple id="t1"><status><basic>{basic}</basic></status></tuple>\n'
        f'  <dm:person id="p1">{act}</dm:person>\n'
        "</presence>\n"
    ).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--no-auth", action="store_true")
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this many seconds (bounded)")
    args = ap.parse_args()
    srv = StubServer(args.port, args.log, auth=not args.no_auth, notify_bodies=[pidf_rpid("sip:x@sip.test")])
    print(f"stub listening udp {LOOPBACK}:{srv.port}", flush=True)
    try:
        time.sleep(max(0.0, min(args.seconds, 3600.0)))
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
