"""A scripted SIP user agent over UDP on loopback (plain sockets, no SIP library).

It sends PUBLISH and SUBSCRIBE through a fixed next hop (the presence server), answers every
NOTIFY with 200 at once (RFC 6665 §4.1.3: never wait for a user), and collects NOTIFYs per
subscription dialog (matched by Call-ID and To-tag = our From-tag, RFC 6665 §4.1.2.4). Every
wait is bounded in time.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import sipmsg
from .sipmsg import SipMessage

T1 = 0.5
T2 = 4.0


@dataclass
class Notify:
    """One NOTIFY received in a subscription dialog."""

    received_at: float
    message: SipMessage

    @property
    def state(self) -> Optional[str]:
        return self.message.subscription_state()[0]

    @property
    def body(self) -> str:
        return self.message.text_body

    @property
    def cseq(self) -> int:
        return self.message.cseq[0]


@dataclass
class Subscription:
    """The subscriber side of one subscription dialog."""

    ua: "ScriptedUA"
    presentity: str
    event: str
    call_id: str
    from_tag: str
    cseq: int
    to_tag: Optional[str] = None
    remote_target: Optional[str] = None
    notifies: list[Notify] = field(default_factory=list)
    last_response: Optional[SipMessage] = None

    def refresh(self, expires: int, timeout: float = 10.0) -> SipMessage:
        """An in-dialog SUBSCRIBE (refresh, or unsubscribe with 0), RFC 6665 §4.1.2.2."""
        assert self.to_tag, "no dialog yet (no 2xx and no NOTIFY received)"
        self.cseq += 1
        req = sipmsg.build_request(
            "SUBSCRIBE",
            self.remote_target or self.presentity,
            via_host=self.ua.host,
            via_port=self.ua.port,
            from_uri=self.ua.aor,
            from_tag=self.from_tag,
            to_uri=self.presentity,
            to_tag=self.to_tag,
            call_id=self.call_id,
            cseq=self.cseq,
            contact=self.ua.contact,
            extra=[("Event", self.event), ("Expires", str(expires))],
        )
        resp = self.ua.transact(req, timeout=timeout)
        self.last_response = resp
        return resp

    def wait_notify(
        self,
        predicate: Callable[[Notify], bool],
        timeout: float,
        what: str = "a matching NOTIFY",
    ) -> Notify:
        """The first NOTIFY (already received or arriving within `timeout`) that matches."""
        deadline = time.monotonic() + timeout
        with self.ua._cond:
            while True:
                for n in self.notifies:
                    if predicate(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(
                        f"  cseq={n.cseq} state={n.message.get('subscription-state')} "
                        f"body={n.body[:300]!r}"
                        for n in self.notifies
                    )
                    raise AssertionError(
                        f"{self.ua.name}: no {what} within {timeout:.1f}s for "
                        f"{self.presentity} ({self.event}); NOTIFYs seen:\n{seen or '  none'}"
                    )
                self.ua._cond.wait(timeout=min(left, 0.5))


class ScriptedUA:
    """One SIP endpoint on 127.0.0.1:<ephemeral port>."""

    def __init__(self, name: str, user: str, next_hop: tuple[str, int], host: str = "127.0.0.1"):
        self.name = name
        self.user = user
        self.host = host
        self.next_hop = next_hop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.aor = f"sip:{user}@{host}"
        self.contact = f"sip:{user}@{host}:{self.port}"
        self._cond = threading.Condition()
        self._responses: dict[str, list[SipMessage]] = {}
        self._subs: list[Subscription] = []
        self.unmatched_notifies: list[SipMessage] = []
        self.log: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ua-{name}", daemon=True)
        self._thread.start()

    # ---- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sock.close()

    def __enter__(self) -> "ScriptedUA":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- receiving ---------------------------------------------------------------------

    def _run(self) -> None:
        # Bounded by the stop flag; each recv waits at most 0.1 s.
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
                self._note(f"<- {src} unparseable datagram: {e}")
                continue
            self._note(f"<- {src} {msg.summary()}")
            if msg.is_request:
                self._on_request(msg, src)
            else:
                with self._cond:
                    self._responses.setdefault(msg.top_branch or "", []).append(msg)
                    self._cond.notify_all()

    def _on_request(self, msg: SipMessage, src: tuple[str, int]) -> None:
        if msg.method == "NOTIFY":
            with self._cond:
                sub = self._match(msg)
                if sub is None:
                    self.unmatched_notifies.append(msg)
                    resp = sipmsg.build_response(msg, 481, "Subscription Does Not Exist")
                else:
                    if sub.to_tag is None:
                        sub.to_tag = msg.from_tag
                    contact = msg.get("contact")
                    if contact:
                        sub.remote_target = sipmsg.uri_of(contact)
                    # A retransmitted NOTIFY (same CSeq) is answered again but kept once.
                    if all(n.cseq != msg.cseq[0] for n in sub.notifies):
                        sub.notifies.append(Notify(time.monotonic(), msg))
                    resp = sipmsg.build_response(msg, 200, "OK")
                self._cond.notify_all()
        elif msg.method == "OPTIONS":
            resp = sipmsg.build_response(msg, 200, "OK")
        elif msg.method == "ACK":
            return
        else:
            resp = sipmsg.build_response(msg, 405, "Method Not Allowed", extra=[("Allow", "NOTIFY, OPTIONS")])
        # Symmetric response: back to the source address and port (RFC 3581 behaviour),
        # which on loopback is also the top Via's sent-by.
        self._send(resp, src)

    def _match(self, notify: SipMessage) -> Optional[Subscription]:
        for sub in self._subs:
            if sub.call_id == notify.call_id and sub.from_tag == notify.to_tag:
                if sub.to_tag is None or sub.to_tag == notify.from_tag:
                    return sub
        return None

    # ---- sending -----------------------------------------------------------------------

    def _send(self, msg: SipMessage, dest: tuple[str, int]) -> None:
        self._note(f"-> {dest} {msg.summary()}")
        self.sock.sendto(msg.to_bytes(), dest)

    def _note(self, line: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {self.name} {line}")

    def transact(self, req: SipMessage, timeout: float = 10.0) -> SipMessage:
        """Sends a non-INVITE request and returns its final response (RFC 3261 §17.1.2:
        retransmit at T1, doubling up to T2). Raises AssertionError after `timeout`."""
        branch = req.top_branch or ""
        data = req.to_bytes()
        self._note(f"-> {self.next_hop} {req.summary()}")
        deadline = time.monotonic() + timeout
        interval = T1
        next_send = time.monotonic() + interval
        self.sock.sendto(data, self.next_hop)
        with self._cond:
            while True:
                for r in self._responses.get(branch, []):
                    if r.status is not None and r.status >= 200:
                        return r
                now = time.monotonic()
                if now >= deadline:
                    raise AssertionError(
                        f"{self.name}: no final response to {req.start_line} within {timeout:.1f}s"
                    )
                if now >= next_send:
                    self.sock.sendto(data, self.next_hop)
                    interval = min(interval * 2, T2)
                    next_send = now + interval
                self._cond.wait(timeout=max(0.01, min(next_send, deadline) - now))

    # ---- operations --------------------------------------------------------------------

    def publish(
        self,
        presentity: str,
        body: bytes,
        *,
        expires: int = 60,
        etag: Optional[str] = None,
        event: str = "presence",
        content_type: str = "application/pidf+xml",
        timeout: float = 10.0,
    ) -> SipMessage:
        """An RFC 3903 PUBLISH; initial when `etag` is None, else modify (or refresh if the
        body is empty)."""
        extra = [("Event", event), ("Expires", str(expires))]
        if etag:
            extra.append(("SIP-If-Match", etag))
        req = sipmsg.build_request(
            "PUBLISH",
            presentity,
            via_host=self.host,
            via_port=self.port,
            from_uri=presentity,
            from_tag=sipmsg.new_token("f"),
            to_uri=presentity,
            to_tag=None,
            call_id=sipmsg.new_token("pub-") + "@127.0.0.1",
            cseq=1,
            extra=extra,
            body=body,
            content_type=content_type if body else None,
        )
        return self.transact(req, timeout=timeout)

    def subscribe(
        self,
        presentity: str,
        *,
        event: str = "presence",
        expires: int = 60,
        accept: Optional[str] = None,
        timeout: float = 10.0,
    ) -> Subscription:
        """An initial SUBSCRIBE (RFC 6665 §4.1.2.1). The returned Subscription collects the
        NOTIFYs of its dialog; `last_response` holds the final response."""
        sub = Subscription(
            ua=self,
            presentity=presentity,
            event=event,
            call_id=sipmsg.new_token("sub-") + "@127.0.0.1",
            from_tag=sipmsg.new_token("t"),
            cseq=1,
        )
        with self._cond:
            # Registered before sending: the first NOTIFY may beat the 200 (RFC 6665 §4.1.2.4).
            self._subs.append(sub)
        extra = [("Event", event), ("Expires", str(expires))]
        if accept:
            extra.append(("Accept", accept))
        req = sipmsg.build_request(
            "SUBSCRIBE",
            presentity,
            via_host=self.host,
            via_port=self.port,
            from_uri=self.aor,
            from_tag=sub.from_tag,
            to_uri=presentity,
            to_tag=None,
            call_id=sub.call_id,
            cseq=sub.cseq,
            contact=self.contact,
            extra=extra,
        )
        resp = self.transact(req, timeout=timeout)
        sub.last_response = resp
        if resp.status is not None and 200 <= resp.status < 300:
            with self._cond:
                sub.to_tag = sub.to_tag or resp.to_tag
                contact = resp.get("contact")
                if contact and not sub.remote_target:
                    sub.remote_target = sipmsg.uri_of(contact)
        return sub
