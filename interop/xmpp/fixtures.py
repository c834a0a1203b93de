"""pytest fixtures for XMPP interop tests (a plugin module).

Load it from the suite's root conftest with one line:

    pytest_plugins = ["xmpp.fixtures"]

(`interop/` is on sys.path because its conftest.py is a rootdir conftest without
__init__.py). Tests under interop/xmpp/ get the fixtures through interop/xmpp/conftest.py
either way.

Fixtures
--------
xmpp_server        a started server (Prosody unless parametrized): fresh folder, free ports,
                   component listener for COMPONENT_DOMAIN with DEFAULT_SECRET. Parametrize
                   with `@BOTH_SERVERS` (or `indirect=True` and "prosody"/"ejabberd").
                   Stopped by PID at teardown; its log tail is printed when the test fails.
prosody_server     a started Prosody, not parametrizable.
ejabberd_server    a started ejabberd, not parametrizable.
make_xmpp_client   factory: make_xmpp_client(server, "alice", password="pw", **ScriptedClient
                   kwargs) -> started ScriptedClient (registers the account on first use).
                   All made clients are stopped at teardown.
make_stub_component factory: make_stub_component(server) -> started StubComponent.

Module constants: USER_DOMAIN, COMPONENT_DOMAIN, DEFAULT_SECRET (re-exported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from .client import ScriptedClient
from .servers import (
    COMPONENT_DOMAIN,
    DEFAULT_SECRET,
    USER_DOMAIN,
    EjabberdServer,
    ProsodyServer,
    XmppServer,
    make_server,
    stop_all,
)
from .stub_component import StubComponent

__all__ = [
    "BOTH_SERVERS",
    "COMPONENT_DOMAIN",
    "DEFAULT_SECRET",
    "USER_DOMAIN",
    "xmpp_server",
    "prosody_server",
    "ejabberd_server",
    "make_xmpp_client",
    "make_stub_component",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
]

BOTH_SERVERS = pytest.mark.parametrize("xmpp_server", ["prosody", "ejabberd"], indirect=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"_xmpp_rep_{rep.when}", rep)


def pytest_sessionfinish(session, exitstatus):
    left = stop_all()
    if left:
        print(f"\ninterop/xmpp: stopped leftover servers by PID: {', '.join(left)}")


def _failed(request) -> bool:
    rep = getattr(request.node, "_xmpp_rep_call", None)
    return rep is not None and rep.failed


def _run_server(request, server: XmppServer) -> Iterator[XmppServer]:
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            if _failed(request):
                print(f"\n{server.log_tail(120)}")


@pytest.fixture
def xmpp_server(request, tmp_path: Path) -> Iterator[XmppServer]:
    kind = getattr(request, "param", "prosody")
    yield from _run_server(request, make_server(kind, tmp_path / f"xmpp-{kind}"))


@pytest.fixture
def prosody_server(request, tmp_path: Path) -> Iterator[XmppServer]:
    yield from _run_server(request, ProsodyServer(tmp_path / "prosody"))


@pytest.fixture
def ejabberd_server(request, tmp_path: Path) -> Iterator[XmppServer]:
    yield from _run_server(request, EjabberdServer(tmp_path / "ejabberd"))


@pytest.fixture
def make_xmpp_client(request) -> Iterator[Callable[..., ScriptedClient]]:
    made: list[ScriptedClient] = []

    def make(server: XmppServer, user: str, password: str = "pw", **kw) -> ScriptedClient:
        if user not in server.users:
            server.register(user, password)
        client = ScriptedClient(server.jid(user), server.users[user], server.c2s_addr, **kw)
        made.append(client)
        return client.start()

    try:
        yield make
    finally:
        for c in made:
            try:
                c.stop()
            except Exception as e:  # teardown continues with the others
                print(f"interop/xmpp: stopping {c.name}: {e}")
        if _failed(request):
            for c in made:
                print(f"\n----- {c.name} received -----\n" + "\n".join(r.xml for r in c.inbox.history()[-40:]))


@pytest.fixture
def make_stub_component(request) -> Iterator[Callable[..., StubComponent]]:
    made: list[StubComponent] = []

    def make(server: XmppServer, secret: str | None = None) -> StubComponent:
        comp = StubComponent(server.component_domain, secret or server.component_secret, server.component_addr)
        made.append(comp)
        return comp.start()

    try:
        yield make
    finally:
        for c in made:
            try:
                c.stop()
            except Exception as e:
                print(f"interop/xmpp: stopping {c.name}: {e}")
        if _failed(request):
            for c in made:
                print(f"\n----- {c.name} received -----\n" + "\n".join(r.xml for r in c.inbox.history()[-40:]))
