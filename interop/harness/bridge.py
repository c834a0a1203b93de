"""The presence bridge under test: an XMPP server (Prosody or ejabberd, interop/xmpp) +
Kamailio (presence server, harness/kamailio.py) + the gateway with `[xmpp]` and `[bridge]`
+ slixmpp clients + scripted SIP UAs, all on loopback, all started by the test and stopped
by their recorded PIDs.

Addresses (the xmpp fixtures' domains):

* XMPP users are `<user>@xmpp.test`; SIP users appear in XMPP as `<user>@sip.xmpp.test`.
* The SIP domain is `127.0.0.1` with the `domain` scheme: `bob@sip.xmpp.test` <->
  `sip:bob@127.0.0.1`. The scripted UA's address of record is `sip:<user>@127.0.0.1`
  (harness/sip_ua.py), so a SIP watcher's From maps to a component JID without an
  /etc/hosts entry, and Kamailio never needs to resolve a name (interop-notes.md).
* XMPP users in SIP are `sip:<user>@xmpp.test`. Nothing resolves that name: the gateway
  sends out-of-dialog requests to its outbound proxy (Kamailio), a SIP watcher in notifier
  mode sends its SUBSCRIBE straight to the gateway's address, and NOTIFYs go to Contacts,
  which are IP literals.

Loaded as a pytest plugin from interop/conftest.py (`pytest_plugins`), so the fixtures
below are available to every test file of the suite.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from .gateway import GatewayProcess
from .kamailio import CFG, KamailioPS, running
from .sip_ua import Notify
from .sipmsg import header_param

from xmpp.servers import COMPONENT_DOMAIN, USER_DOMAIN, XmppServer

SIP_DOMAIN = "127.0.0.1"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def component_jid(user: str) -> str:
    """The JID of SIP user `user` (sip:user@127.0.0.1) in XMPP."""
    return f"{user}@{COMPONENT_DOMAIN}"


def xmpp_user_sip_uri(user: str) -> str:
    """The SIP URI of XMPP user `user@xmpp.test`."""
    return f"sip:{user}@{USER_DOMAIN}"


def sip_user_uri(user: str) -> str:
    return f"sip:{user}@{SIP_DOMAIN}"


def bridge_toml(server: XmppServer, mode: str, sip_domain: str = SIP_DOMAIN) -> str:
    """The `[xmpp]` and `[bridge]` tables for a gateway in front of `server`."""
    return (
        server.gateway_xmpp_section()
        + f"""
[bridge]
mode = "{mode}"

[[bridge.domains]]
xmpp_domain = "{server.domain}"
component_domain = "{server.component_domain}"
sip_domain = "{sip_domain}"
scheme = "domain"
"""
    )


class BridgeGateway(GatewayProcess):
    """The gateway with the bridge enabled; `start()` also waits for the component link."""

    def __init__(
        self,
        run_dir: Path,
        outbound_proxy: str,
        server: XmppServer,
        mode: str,
        *,
        sip_domain: str = SIP_DOMAIN,
        extra_toml: str = "",
        trusted: Optional[list[str]] = None,
        log_level: str = "info",
    ) -> None:
        super().__init__(
            run_dir,
            outbound_proxy,
            extra_toml=bridge_toml(server, mode, sip_domain) + extra_toml,
            trusted=trusted,
            log_level=log_level,
        )
        self.mode = mode

    def log_text(self) -> str:
        try:
            return _ANSI.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def links_up(self) -> int:
        """How often the log said the component link came up (all lives of this gateway)."""
        return self.log_text().count("XMPP link up")

    def wait_link_up(self, count: int, timeout: float = 20.0) -> None:
        """Waits (bounded) until the link has come up `count` times in total."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 2):
            if self.links_up() >= count:
                return
            if self.proc is not None and not self.proc.alive():
                raise AssertionError("gateway exited while waiting for the XMPP link:\n" + self.log_text()[-4000:])
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"gateway: 'XMPP link up' seen {self.links_up()} times, wanted {count}, within {timeout:.0f}s"
        )

    def start(self, ready_timeout: float = 30.0) -> "BridgeGateway":
        before = self.links_up()
        super().start(ready_timeout)
        self.wait_link_up(before + 1)
        return self


# ---- Kamailio variant: watchers stay pending ------------------------------------------


def pending_watchers_cfg(dest: Path) -> Path:
    """presence.cfg with `force_active=0` and the integrated XCAP server (rules read from
    Kamailio's own `xcap` table, which stays empty): every presence watcher is `pending`
    (presence_xml pres_watcher_allowed), so a presence.winfo watcher sees it pending."""
    text = CFG.read_text()
    old = 'modparam("presence_xml", "force_active", 1)'
    assert old in text, f"{CFG} no longer sets force_active=1; update harness/bridge.py"
    text = text.replace(
        old,
        'modparam("presence_xml", "force_active", 0)\n'
        'modparam("presence_xml", "integrated_xcap_server", 1)',
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


# ---- SIP NOTIFY predicates -------------------------------------------------------------


def sub_state(n: Notify) -> tuple[Optional[str], Optional[str]]:
    """(state, reason) of a NOTIFY's Subscription-State."""
    raw = n.message.get("subscription-state") or ""
    state = raw.split(";", 1)[0].strip().lower() or None
    reason = header_param("x;" + raw.split(";", 1)[1], "reason") if ";" in raw else None
    return state, reason


def pidf_basic(body: str) -> Optional[str]:
    m = re.search(r"<(?:\w+:)?basic>\s*(\w+)\s*</(?:\w+:)?basic>", body)
    return m.group(1) if m else None


def pidf_show(body: str) -> Optional[str]:
    m = re.search(r"<(?:\w+:)?show\b[^>]*>\s*(\w+)\s*</(?:\w+:)?show>", body)
    return m.group(1) if m else None


def active_with(basic: str, show: object = ..., note: Optional[str] = None) -> Callable[[Notify], bool]:
    """An active NOTIFY whose PIDF says `basic` (and `show`, `note` if given)."""

    def pred(n: Notify) -> bool:
        if sub_state(n)[0] != "active" or pidf_basic(n.body) != basic:
            return False
        if show is not ... and pidf_show(n.body) != show:
            return False
        return note is None or note in n.body

    return pred


def rpid_pidf(entity: str, tuple_id: str, basic: str, *, away: bool = False, note: str = "") -> bytes:
    """A PIDF a phone would PUBLISH: basic status, a note, and when `away` the RPID `away`
    activity plus `<show xmlns='jabber:client'>away</show>` in the tuple's status (what
    the gateway itself writes, product.md)."""
    activities = (
        "  <dm:person id='p1'><rpid:activities><rpid:away/></rpid:activities></dm:person>\n" if away else ""
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        "<presence xmlns='urn:ietf:params:xml:ns:pidf'"
        " xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model'"
        " xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid'"
        f" entity='{entity}'>\n"
        f"  <tuple id='{tuple_id}'>\n"
        f"    <status><basic>{basic}</basic>"
        + ("<show xmlns='jabber:client'>away</show>" if away else "")
        + "</status>\n"
        + (f"    <note>{note}</note>\n" if note else "")
        + "  </tuple>\n"
        + activities
        + "</presence>\n"
    ).encode()


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def make_bridge_gateway(tmp_path: Path, diagnostics) -> Iterator[Callable[..., BridgeGateway]]:
    """Factory: make_bridge_gateway(server, outbound_proxy, mode="notifier") -> a started
    gateway with the bridge, its component link up. Stopped by PID at teardown."""
    made: list[BridgeGateway] = []

    def make(server: XmppServer, outbound_proxy: str, mode: str = "notifier") -> BridgeGateway:
        gw = BridgeGateway(tmp_path / f"gateway{len(made) or ''}", outbound_proxy, server, mode)
        made.append(gw)
        diagnostics.files += [gw.log_path]
        return gw.start()

    try:
        yield make
    finally:
        for gw in made:
            gw.stop()


@pytest.fixture
def pending_kamailio(tmp_path: Path, diagnostics) -> Iterator[KamailioPS]:
    """Kamailio whose presence watchers stay pending (no authorization rules)."""
    cfg = pending_watchers_cfg(tmp_path / "kamailio-pending" / "presence-pending.cfg")
    with running(KamailioPS(tmp_path / "kamailio-pending", cfg=cfg, children=1), diagnostics) as ps:
        yield ps


def authorize_before_gateway(stub, client, contact_jid: str) -> None:
    """Gives `client`'s user a `from` subscription for `contact_jid` (a component JID) by
    way of a stand-in component, before the gateway connects: the state of a user who
    already shares presence with a SIP contact. Publish mode needs it: the gateway learns
    an XMPP user's presence only from the broadcasts her server sends to component JIDs she
    authorized. The stub is stopped (its stream closed) when this returns."""
    stub.subscribe(contact_jid, client.bare)
    client.wait_subscription_request(from_=contact_jid, timeout=10)
    client.subscribed(contact_jid)
    client.wait_roster(contact_jid, "from", timeout=10)
    stub.stop()


@pytest.fixture
def bridge_kamailio(tmp_path: Path, diagnostics) -> Iterator[KamailioPS]:
    """Kamailio (interop/kamailio/presence.cfg, watchers authorized at once) with one UDP
    worker: the gateway sends a PUBLISH and a SUBSCRIBE at the same instant, which two
    workers would write to sqlite concurrently ("database is locked")."""
    with running(KamailioPS(tmp_path / "kamailio", children=1), diagnostics) as ps:
        yield ps
