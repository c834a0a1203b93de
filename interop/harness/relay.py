"""A capturing stateless SIP relay on loopback UDP, placed between the gateway and Kamailio.

The gateway's `outbound_proxy` (and Kamailio's own Contact, so in-dialog requests come back
this way) point here. The relay behaves as an RFC 3261 §16.11 stateless proxy:

* a request from anyone but the presence server gets our Via on top (branch derived from the
  sender's, so retransmissions match), loses a Route entry naming us, has Max-Forwards
  decremented, and goes to the presence server;
* a request from the presence server goes to its Request-URI's host:port;
* a response loses our Via and goes to the next Via's address (received/rport honoured).

Every message is recorded, so tests can assert what the gateway said (SIP-If-Match, Call-ID,
tags) and what it was answered (200, 412, 481).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import sipmsg
from .procs import LOOPBACK, free_port
from .sipmsg import SipMessage


@dataclass
class Captured:
    at: float  # time.time()
    src: tuple[str, int]
    dst: Optional[tuple[str, int]]
    message: SipMessage
    note: str = ""


@dataclass
class Exchange:
    """A request as the relay received it (first copy) and its final response, if any."""

    request: Captured
    final: Optional[Captured]

    @property
    def status(self) -> Optional[int]:
        return self.final.message.status if self.final else None


class SipRelay:
    def __init__(self, upstream: tuple[str, int], log_path: Path) -> None:
        self.upstream = upstream
        self.log_path = log_path
        self.port = free_port("udp")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, self.port))
        self.sock.settimeout(0.1)
        self.captured: list[Captured] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._logf = open(log_path, "a", buffering=1)
        self._thread = threading.Thread(target=self._run, name="sip-relay", daemon=True)
        self._thread.start()

    @property
    def addr(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    @property
    def proxy_uri(self) -> str:
        return f"sip:{LOOPBACK}:{self.port};transport=udp"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sock.close()
        self._logf.close()

    # ---- forwarding --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                msg = sipmsg.parse(data)
            except sipmsg.SipParseError as e:
                self._record(Captured(time.time(), src, None, SipMessage("INVALID * SIP/2.0"), f"unparseable: {e}"))
                continue
            try:
                dst, out = self._route(msg, src)
            except Exception as e:  # a routing failure is recorded, never fatal to the relay
                self._record(Captured(time.time(), src, None, msg, f"not forwarded: {e}"))
                continue
            self._record(Captured(time.time(), src, dst, msg))
            if dst is not None and out is not None:
                self.sock.sendto(out.to_bytes(), dst)

    def _route(self, msg: SipMessage, src: tuple[str, int]) -> tuple[Optional[tuple[str, int]], Optional[SipMessage]]:
        # Forward a copy; the captured message stays as received.
        out = sipmsg.parse(msg.to_bytes())
        if not msg.is_request:
            vias = out.get_all("via")
            if not vias or f":{self.port}" not in vias[0].split(";", 1)[0]:
                raise ValueError("response whose top Via is not ours")
            rest = vias[1:]
            if not rest:
                raise ValueError("response with no Via below ours")
            out.remove("via")
            for v in reversed(rest):
                out.prepend("Via", v)
            return sipmsg.via_target(rest[0]), out
        routes = out.get_all("route")
        if routes and sipmsg.uri_hostport(sipmsg.uri_of(routes[0])) == self.addr:
            out.remove("route")
            for r in reversed(routes[1:]):
                out.headers.insert(1, ("Route", r))
        mf = out.get("max-forwards")
        if mf is not None and mf.isdigit():
            if int(mf) <= 1:
                raise ValueError("Max-Forwards exhausted")
            out.set("Max-Forwards", str(int(mf) - 1))
        if msg.method == "ACK" and not msg.top_branch:
            raise ValueError("ACK without branch")
        branch = sipmsg.stable_branch(f"{msg.top_branch}|{src[0]}:{src[1]}")
        out.prepend("Via", f"SIP/2.0/UDP {LOOPBACK}:{self.port};branch={branch}")
        if src == self.upstream:
            dst = sipmsg.uri_hostport(msg.request_uri or "")
        else:
            dst = self.upstream
        return dst, out

    def _record(self, c: Captured) -> None:
        with self._lock:
            self.captured.append(c)
            self._lock.notify_all()
        stamp = time.strftime("%H:%M:%S", time.localtime(c.at)) + f".{int(c.at * 1000) % 1000:03d}"
        self._logf.write(f"{stamp} {c.src} -> {c.dst} {c.note} {c.message.summary()}\n")

    # ---- queries -----------------------------------------------------------------------

    def snapshot(self) -> list[Captured]:
        with self._lock:
            return list(self.captured)

    def exchanges(
        self,
        method: str,
        *,
        since: float = 0.0,
        where: Optional[Callable[[SipMessage], bool]] = None,
    ) -> list[Exchange]:
        """Requests of `method` received from the gateway side at or after `since`, first
        copy only (retransmissions folded), each with its final response if one passed."""
        snap = self.snapshot()
        out: list[Exchange] = []
        seen: set[tuple] = set()
        for c in snap:
            m = c.message
            if not m.is_request or m.method != method or c.src == self.upstream or c.at < since:
                continue
            key = (m.call_id, m.cseq, m.top_branch)
            if key in seen:
                continue
            seen.add(key)
            if where and not where(m):
                continue
            final = None
            for r in snap:
                rm = r.message
                if (
                    not rm.is_request
                    and rm.status is not None
                    and rm.status >= 200
                    and rm.call_id == m.call_id
                    and rm.cseq == m.cseq
                    and _gateway_branch(rm) == m.top_branch
                ):
                    final = r
                    break
            out.append(Exchange(c, final))
        return out

    def wait_exchange(
        self,
        method: str,
        predicate: Callable[[Exchange], bool],
        timeout: float,
        what: str,
        since: float = 0.0,
    ) -> Exchange:
        """The first exchange (already captured or arriving within `timeout`) that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for ex in self.exchanges(method, since=since):
                if predicate(ex):
                    return ex
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"relay: no {what} within {timeout:.1f}s; {method} exchanges seen:\n"
                    + self.describe(method, since=since)
                )
            with self._lock:
                self._lock.wait(timeout=min(left, 0.5))

    def describe(self, method: Optional[str] = None, since: float = 0.0) -> str:
        lines = []
        for c in self.snapshot():
            if c.at < since:
                continue
            m = c.message
            if method and m.is_request and m.method != method:
                continue
            if method and not m.is_request and m.cseq[1] != method:
                continue
            lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(c.at))} {c.src}->{c.dst} {m.summary()}")
        return "\n".join(lines) or "  none"


def _gateway_branch(resp: SipMessage) -> Optional[str]:
    """The branch of the Via below ours in a response (the gateway's own)."""
    vias = resp.get_all("via")
    return sipmsg.header_param(vias[1], "branch") if len(vias) > 1 else None
