"""A scripted XMPP client (slixmpp) that tests drive synchronously.

The slixmpp stream runs on its own asyncio loop in its own thread (`LoopThread`); every
method here blocks the caller until the action is done on that loop or a timeout runs out.
Every presence and message stanza received is recorded raw (before slixmpp rewrites any
attribute) in `inbox`, an `Inbox` with `wait_for(predicate, timeout)`.

Subscription requests are answered according to `on_subscribe`:
  "accept"  -> the client answers `subscribed` at once,
  "deny"    -> the client answers `unsubscribed` at once,
  "manual"  -> nothing is sent; the test answers with `subscribed()` / `unsubscribed()`.
The request itself is recorded in the inbox in every case. The client never subscribes back
by itself.

Connection: plaintext on loopback (no STARTTLS; SASL SCRAM-SHA-1 or PLAIN). The server is
given by address, so slixmpp does no DNS lookup (`default_domain` is the IP literal).
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable, Optional

import slixmpp

from .loopthread import Inbox, LoopThread, Received, XmppTimeout, match

log = logging.getLogger("interop.xmpp.client")

ROSTER_NS = "jabber:iq:roster"
SUBSCRIBE_POLICIES = {"accept": True, "deny": False, "manual": None}


@dataclass(frozen=True)
class RosterItem:
    jid: str
    subscription: str  # none | to | from | both
    ask: Optional[str]  # "subscribe" while an outbound request is pending
    name: Optional[str]


class ScriptedClient:
    """One XMPP account logged in with one resource.

    `jid` is the bare JID, `addr` the server's c2s (host, port). `initial_presence` sends
    available presence (with `priority`) right after login, after fetching the roster, so the
    session is an available, interested resource (RFC 6121 §4.2, §2.2).
    """

    def __init__(
        self,
        jid: str,
        password: str,
        addr: tuple[str, int],
        *,
        resource: str = "scripted",
        on_subscribe: str = "manual",
        initial_presence: bool = True,
        priority: int = 0,
        name: Optional[str] = None,
    ) -> None:
        if on_subscribe not in SUBSCRIBE_POLICIES:
            raise ValueError(f"on_subscribe must be one of {sorted(SUBSCRIBE_POLICIES)}")
        self.bare = jid.split("/", 1)[0]
        self.full = f"{self.bare}/{resource}"
        self.password = password
        self.addr = addr
        self.on_subscribe = on_subscribe
        self.initial_presence = initial_presence
        self.priority = priority
        self.name = name or self.bare
        self.inbox = Inbox(self.name)
        self.sent: list[str] = []
        self._lt: Optional[LoopThread] = None
        self._xmpp: Optional[slixmpp.ClientXMPP] = None
        self._session = threading.Event()
        self._auth_failed = threading.Event()
        self._disconnected = threading.Event()
        self.stream_errors: list[str] = []

    # --- lifecycle -------------------------------------------------------------------

    def _build(self) -> slixmpp.ClientXMPP:
        x = slixmpp.ClientXMPP(self.full, self.password)
        x.loop = self._lt.loop  # type: ignore[union-attr]
        x.use_ipv6 = False
        # Plaintext SASL is fine on loopback; SCRAM is preferred when offered.
        x["feature_mechanisms"].unencrypted_plain = True
        x.auto_authorize = SUBSCRIBE_POLICIES[self.on_subscribe]
        x.auto_subscribe = False
        raw_filter = x.incoming_filter

        def record(xml: ET.Element) -> ET.Element:
            if xml.tag.rsplit("}", 1)[-1] in ("presence", "message"):
                self.inbox.put(Received.from_element(xml))
            return raw_filter(xml)

        x.incoming_filter = record  # type: ignore[method-assign]
        x.add_event_handler("session_start", lambda _e: self._session.set())
        x.add_event_handler("failed_auth", lambda _e: self._auth_failed.set())
        x.add_event_handler("disconnected", lambda _e: self._disconnected.set())
        x.add_event_handler("stream_error", lambda e: self.stream_errors.append(str(e)))
        return x

    def start(self, timeout: float = 10.0) -> "ScriptedClient":
        if self._lt is None:
            self._lt = LoopThread(self.name)
        if self._xmpp is None:
            self._xmpp = self._lt.call(self._build)
        self._connect(timeout)
        return self

    def _connect(self, timeout: float) -> None:
        assert self._lt is not None and self._xmpp is not None
        self._session.clear()
        self._auth_failed.clear()
        self._disconnected.clear()
        x = self._xmpp

        def go() -> None:
            x.default_domain = self.addr[0]  # an IP literal: no DNS query
            x.default_port = self.addr[1]
            x.connect(self.addr, force_starttls=False, disable_starttls=True)

        self._lt.call(go)
        waited = 0.0
        step = 0.05
        while not self._session.wait(step):
            waited += step
            if self._auth_failed.is_set():
                raise XmppTimeout(f"{self.name}: authentication failed at {self.addr}")
            if waited >= timeout:
                self._lt.call(x.abort)
                raise XmppTimeout(
                    f"{self.name}: no session at {self.addr} within {timeout:.1f}s"
                    f" (stream errors: {self.stream_errors})"
                )
        self.roster(timeout=timeout)  # an interested resource (RFC 6121 §2.2)
        if self.initial_presence:
            mark = len(self.inbox)
            self.send_presence(priority=self.priority)
            # The server reflects initial presence to the sender (RFC 6121 §4.2.2); once it
            # has, the resource is available and stanzas routed to it are delivered. Without
            # this wait a test's next stanza can race the login. The cursor is not moved, so
            # stanzas delivered at login (stored subscription requests) stay visible.
            self.inbox.wait_seen(
                match("presence", type="available", from_=self.full), timeout, "own initial presence", since=mark
            )

    def reconnect(self, timeout: float = 10.0) -> "ScriptedClient":
        """Logs in again (for example after the server restarted); keeps the inbox."""
        if self.connected:
            self.disconnect(timeout)
        self._connect(timeout)
        return self

    @property
    def connected(self) -> bool:
        return self._session.is_set() and not self._disconnected.is_set()

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        if not self._disconnected.wait(timeout):
            raise XmppTimeout(f"{self.name}: still connected after {timeout:.1f}s")

    def disconnect(self, timeout: float = 5.0) -> None:
        if self._lt is None or self._xmpp is None or self._disconnected.is_set():
            return
        x = self._xmpp
        self._lt.call(lambda: x.disconnect(wait=min(2.0, timeout)))
        if not self._disconnected.wait(timeout):
            self._lt.call(x.abort)
            self._disconnected.wait(1.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Closes the stream (unavailable presence is broadcast by the server) and the loop."""
        try:
            if self._session.is_set():
                self.disconnect(timeout)
        finally:
            if self._lt is not None:
                self._lt.close()

    def __enter__(self) -> "ScriptedClient":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- sending ---------------------------------------------------------------------

    def _send(self, build: Callable[[slixmpp.ClientXMPP], Any], timeout: float = 5.0) -> str:
        assert self._lt is not None and self._xmpp is not None, "start() first"
        x = self._xmpp

        def go() -> str:
            stanza = build(x)
            stanza.send()
            return str(stanza)

        text = self._lt.call(go, timeout)
        self.sent.append(text)
        return text

    def send_presence(
        self,
        show: Optional[str] = None,
        status: Optional[str] = None,
        priority: Optional[int] = None,
        to: Optional[str] = None,
        ptype: Optional[str] = None,
        lang: Optional[str] = None,
    ) -> str:
        """Sends presence: broadcast when `to` is None, directed otherwise. `ptype` None means
        available; "unavailable", "subscribe", ... are the other types. Returns the XML sent."""

        def build(x: slixmpp.ClientXMPP) -> Any:
            p = x.make_presence(pshow=show, pstatus=status, ppriority=priority, pto=to, ptype=ptype)
            if lang:
                p["lang"] = lang
            return p

        return self._send(build)

    def send_available(self, show: Optional[str] = None, status: Optional[str] = None, priority: Optional[int] = None) -> str:
        return self.send_presence(show=show, status=status, priority=self.priority if priority is None else priority)

    def send_unavailable(self, status: Optional[str] = None) -> str:
        return self.send_presence(ptype="unavailable", status=status)

    def subscribe(self, jid: str, status: Optional[str] = None) -> str:
        return self.send_presence(ptype="subscribe", to=jid, status=status)

    def subscribed(self, jid: str) -> str:
        """Approves (or pre-approves) `jid`'s subscription to us."""
        return self.send_presence(ptype="subscribed", to=jid)

    def unsubscribe(self, jid: str) -> str:
        return self.send_presence(ptype="unsubscribe", to=jid)

    def unsubscribed(self, jid: str) -> str:
        """Denies a pending request from `jid`, or revokes its subscription to us."""
        return self.send_presence(ptype="unsubscribed", to=jid)

    def send_raw(self, xml: str) -> None:
        assert self._lt is not None and self._xmpp is not None, "start() first"
        x = self._xmpp
        self._lt.call(lambda: x.send_raw(xml))
        self.sent.append(xml)

    def set_on_subscribe(self, policy: str) -> None:
        if policy not in SUBSCRIBE_POLICIES:
            raise ValueError(f"on_subscribe must be one of {sorted(SUBSCRIBE_POLICIES)}")
        self.on_subscribe = policy
        if self._lt is not None and self._xmpp is not None:
            x = self._xmpp
            self._lt.call(lambda: setattr(x, "auto_authorize", SUBSCRIBE_POLICIES[policy]))

    # --- roster ----------------------------------------------------------------------

    def roster(self, timeout: float = 5.0) -> dict[str, RosterItem]:
        """Fetches the roster from the server (a raw jabber:iq:roster get)."""
        assert self._lt is not None and self._xmpp is not None, "start() first"
        x = self._xmpp

        async def fetch() -> Any:
            iq = x.make_iq_get(queryxmlns=ROSTER_NS)
            return await iq.send(timeout=timeout)

        resp = self._lt.run(fetch, timeout + 1)
        items: dict[str, RosterItem] = {}
        for item in resp.xml.iter(f"{{{ROSTER_NS}}}item"):
            jid = item.get("jid", "")
            items[jid] = RosterItem(jid, item.get("subscription", "none"), item.get("ask"), item.get("name"))
        return items

    def wait_roster(self, jid: str, subscription: str, timeout: float = 5.0, ask: Any = ...) -> RosterItem:
        """Polls the roster (bounded) until `jid` has `subscription` (and `ask`, if given)."""
        deadline = time.monotonic() + timeout
        last: Optional[RosterItem] = None
        for _ in range(int(timeout / 0.1) + 2):
            last = self.roster(timeout=max(1.0, timeout)).get(jid)
            if last is not None and last.subscription == subscription and (ask is ... or last.ask == ask):
                return last
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise XmppTimeout(f"{self.name}: roster item {jid} not subscription={subscription} ask={ask!r}; last {last}")

    # --- receiving -------------------------------------------------------------------

    def wait_for(self, pred: Callable[[Received], bool], timeout: float = 5.0, what: str = "") -> Received:
        return self.inbox.wait_for(pred, timeout, what)

    def wait_presence(
        self,
        from_: Optional[str] = None,
        type: Optional[str] = None,
        show: Any = ...,
        status: Any = ...,
        timeout: float = 5.0,
    ) -> Received:
        """Waits for a presence stanza; `type` "available" for available presence."""
        return self.inbox.wait_for(match("presence", type=type, from_=from_, show=show, status=status), timeout)

    def wait_subscription_request(self, from_: Optional[str] = None, timeout: float = 5.0) -> Received:
        return self.wait_presence(from_=from_, type="subscribe", timeout=timeout)
