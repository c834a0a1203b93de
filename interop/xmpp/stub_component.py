"""A stand-in XEP-0114 component (slixmpp ComponentXMPP) that proves an XMPP server routes
to and from a component, before the real gateway is in the picture.

It is deliberately dumb: slixmpp's own presence/roster automation is switched off (its
"Presence" handler is removed, so no automatic `unsubscribed` answer to probes, no roster
bookkeeping). Every presence, message and iq stanza received is recorded raw in `inbox`;
the test decides what to send. Unanswered iq get/set still get slixmpp's error reply.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any, Callable, Optional

import slixmpp

from .loopthread import Inbox, LoopThread, Received, XmppTimeout, match


class StubComponent:
    """Connects to `addr` (the server's component port) as `domain` with `secret`."""

    def __init__(self, domain: str, secret: str, addr: tuple[str, int], *, name: Optional[str] = None) -> None:
        self.domain = domain
        self.secret = secret
        self.addr = addr
        self.name = name or f"component {domain}"
        self.inbox = Inbox(self.name)
        self.sent: list[str] = []
        self._lt: Optional[LoopThread] = None
        self._xmpp: Optional[slixmpp.ComponentXMPP] = None
        self._session = threading.Event()
        self._disconnected = threading.Event()
        self.stream_errors: list[str] = []

    def _build(self) -> slixmpp.ComponentXMPP:
        x = slixmpp.ComponentXMPP(self.domain, self.secret, self.addr[0], self.addr[1])
        x.loop = self._lt.loop  # type: ignore[union-attr]
        x.use_ipv6 = False
        x.remove_handler("Presence")  # no automatic roster/probe answers
        raw_filter = x.incoming_filter

        def record(xml: ET.Element) -> ET.Element:
            if xml.tag.rsplit("}", 1)[-1] in ("presence", "message", "iq"):
                self.inbox.put(Received.from_element(xml))
            return raw_filter(xml)

        x.incoming_filter = record  # type: ignore[method-assign]
        x.add_event_handler("session_start", lambda _e: self._session.set())
        x.add_event_handler("disconnected", lambda _e: self._disconnected.set())
        x.add_event_handler("stream_error", lambda e: self.stream_errors.append(str(e)))
        return x

    def reconnect(self, timeout: float = 10.0) -> "StubComponent":
        """Connects again after the server dropped the stream (e.g. a server restart);
        keeps the inbox."""
        return self.start(timeout)

    def start(self, timeout: float = 10.0) -> "StubComponent":
        if self._lt is None:
            self._lt = LoopThread(self.name)
        if self._xmpp is None:
            self._xmpp = self._lt.call(self._build)
        self._session.clear()
        self._disconnected.clear()
        x = self._xmpp

        def go() -> None:
            x.default_domain = self.addr[0]  # an IP literal: no DNS query
            x.default_port = self.addr[1]
            x.connect(self.addr[0], self.addr[1])

        self._lt.call(go)
        waited, step = 0.0, 0.05
        while not self._session.wait(step):
            waited += step
            if self._disconnected.is_set() and self.stream_errors:
                raise XmppTimeout(f"{self.name}: handshake refused: {self.stream_errors}")
            if waited >= timeout:
                self._lt.call(x.abort)
                raise XmppTimeout(f"{self.name}: no handshake at {self.addr} within {timeout:.1f}s ({self.stream_errors})")
        return self

    @property
    def connected(self) -> bool:
        return self._session.is_set() and not self._disconnected.is_set()

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        if not self._disconnected.wait(timeout):
            raise XmppTimeout(f"{self.name}: still connected after {timeout:.1f}s")

    def stop(self, timeout: float = 5.0) -> None:
        try:
            if self._lt is not None and self._xmpp is not None and self.connected:
                x = self._xmpp
                self._lt.call(lambda: x.disconnect(wait=min(2.0, timeout)))
                if not self._disconnected.wait(timeout):
                    self._lt.call(x.abort)
        finally:
            if self._lt is not None:
                self._lt.close()

    def __enter__(self) -> "StubComponent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- sending ---------------------------------------------------------------------

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def send_presence(
        self,
        from_: str,
        to: str,
        ptype: Optional[str] = None,
        show: Optional[str] = None,
        status: Optional[str] = None,
        priority: Optional[int] = None,
        id: Optional[str] = None,
    ) -> str:
        """Sends one presence stanza (`ptype` None = available). Returns the XML sent."""
        assert self._lt is not None and self._xmpp is not None, "start() first"
        x = self._xmpp

        def go() -> str:
            p = x.make_presence(pshow=show, pstatus=status, ppriority=priority, pto=to, ptype=ptype, pfrom=from_)
            if id is not None:
                p["id"] = id
            p.send()
            return str(p)

        text = self._lt.call(go)
        self.sent.append(text)
        return text

    def subscribed(self, from_: str, to: str) -> str:
        return self.send_presence(from_, to, ptype="subscribed")

    def unsubscribed(self, from_: str, to: str) -> str:
        return self.send_presence(from_, to, ptype="unsubscribed")

    def subscribe(self, from_: str, to: str) -> str:
        return self.send_presence(from_, to, ptype="subscribe")

    def unsubscribe(self, from_: str, to: str) -> str:
        return self.send_presence(from_, to, ptype="unsubscribe")

    def probe(self, from_: str, to: str) -> str:
        return self.send_presence(from_, to, ptype="probe")

    def available(self, from_: str, to: str, show: Optional[str] = None, status: Optional[str] = None, priority: Optional[int] = None) -> str:
        return self.send_presence(from_, to, show=show, status=status, priority=priority)

    def unavailable(self, from_: str, to: str, status: Optional[str] = None) -> str:
        return self.send_presence(from_, to, ptype="unavailable", status=status)

    def send_raw(self, xml: str) -> None:
        assert self._lt is not None and self._xmpp is not None, "start() first"
        x = self._xmpp
        self._lt.call(lambda: x.send_raw(xml))
        self.sent.append(xml)

    # --- receiving -------------------------------------------------------------------

    def wait_for(self, pred: Callable[[Received], bool], timeout: float = 5.0, what: str = "") -> Received:
        return self.inbox.wait_for(pred, timeout, what)

    def wait_presence(
        self,
        from_: Optional[str] = None,
        to: Optional[str] = None,
        type: Optional[str] = None,
        show: Any = ...,
        status: Any = ...,
        timeout: float = 5.0,
    ) -> Received:
        return self.inbox.wait_for(match("presence", type=type, from_=from_, to=to, show=show, status=status), timeout)
