"""Plumbing shared by the scripted client and the stub component: an asyncio loop in its own
thread (so tests call synchronously, with timeouts), and a thread-safe inbox of received
stanzas with `wait_for(predicate, timeout)`."""

from __future__ import annotations

import asyncio
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
DELAY_NS = "urn:xmpp:delay"


class XmppTimeout(AssertionError):
    """A bounded wait ran out. An AssertionError, so pytest reports it as a test failure."""


@dataclass(frozen=True)
class Received:
    """One received stanza, parsed from its raw XML (not from slixmpp's interpretation).

    `type` is the stanza's type attribute; for presence an absent type is "available".
    `show`/`status`/`priority` are the presence children (None when absent); `lang` is the
    stanza's xml:lang; `delay` the urn:xmpp:delay stamp; `xml` the stanza as received.
    """

    kind: str  # "presence" | "message" | "iq"
    type: str
    from_: str
    to: str
    id: Optional[str]
    show: Optional[str]
    status: Optional[str]
    priority: Optional[int]
    lang: Optional[str]
    delay: Optional[str]
    xml: str
    at: float = field(compare=False)  # time.monotonic() at receipt

    @property
    def bare_from(self) -> str:
        return self.from_.split("/", 1)[0]

    @property
    def resource(self) -> Optional[str]:
        return self.from_.split("/", 1)[1] if "/" in self.from_ else None

    @property
    def available(self) -> bool:
        return self.kind == "presence" and self.type == "available"

    @classmethod
    def from_element(cls, el: ET.Element) -> "Received":
        kind = el.tag.rsplit("}", 1)[-1]
        default_type = "available" if kind == "presence" else ("normal" if kind == "message" else "")

        def child(name: str) -> Optional[ET.Element]:
            for c in el:
                if c.tag.rsplit("}", 1)[-1] == name:
                    return c
            return None

        show = child("show")
        status = child("status")
        prio = child("priority")
        priority: Optional[int] = None
        if prio is not None and prio.text is not None:
            try:
                priority = int(prio.text.strip())
            except ValueError:
                priority = None
        delay = el.find(f"{{{DELAY_NS}}}delay")
        return cls(
            kind=kind,
            type=el.get("type") or default_type,
            from_=el.get("from", ""),
            to=el.get("to", ""),
            id=el.get("id"),
            show=show.text if show is not None else None,
            status=status.text if status is not None else None,
            priority=priority,
            lang=el.get(XML_LANG),
            delay=delay.get("stamp") if delay is not None else None,
            xml=ET.tostring(el, encoding="unicode"),
            at=time.monotonic(),
        )

    def __str__(self) -> str:
        extra = "".join(
            f" {k}={v!r}" for k, v in (("show", self.show), ("status", self.status), ("prio", self.priority)) if v is not None
        )
        return f"<{self.kind} {self.type} {self.from_} -> {self.to}{extra}>"


def match(
    kind: str = "presence",
    type: Optional[str] = None,
    from_: Optional[str] = None,
    to: Optional[str] = None,
    show: Any = ...,
    status: Any = ...,
) -> Callable[[Received], bool]:
    """A predicate for `Inbox.wait_for`. `from_`/`to` match a full JID exactly or a bare JID
    against the bare part; `show=None` demands no <show/>; `...` means "don't care"."""

    def jid_ok(want: Optional[str], got: str) -> bool:
        if want is None:
            return True
        return got == want if "/" in want else got.split("/", 1)[0] == want

    def pred(r: Received) -> bool:
        return (
            r.kind == kind
            and (type is None or r.type == type)
            and jid_ok(from_, r.from_)
            and jid_ok(to, r.to)
            and (show is ... or r.show == show)
            and (status is ... or r.status == status)
        )

    pred.__doc__ = f"{kind} type={type} from={from_} to={to} show={show!r} status={status!r}"
    return pred


class Inbox:
    """Thread-safe record of received stanzas with a consuming cursor.

    `wait_for` returns the first stanza at or after the cursor that matches and moves the
    cursor past it, so successive waits see stanzas in arrival order. `history()` has all.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: list[Received] = []
        self._cursor = 0
        self._cv = threading.Condition()

    def put(self, item: Received) -> None:
        with self._cv:
            self._items.append(item)
            self._cv.notify_all()

    def history(self) -> list[Received]:
        with self._cv:
            return list(self._items)

    def pending(self) -> list[Received]:
        """Received and not yet passed by the cursor."""
        with self._cv:
            return list(self._items[self._cursor :])

    def skip(self) -> None:
        """Moves the cursor to the end: later waits only see stanzas received from now on."""
        with self._cv:
            self._cursor = len(self._items)

    def _find(self, pred: Callable[[Received], bool], start: int) -> Optional[int]:
        for i in range(start, len(self._items)):
            if pred(self._items[i]):
                return i
        return None

    def wait_for(self, pred: Callable[[Received], bool], timeout: float = 5.0, what: str = "") -> Received:
        return self._wait(pred, timeout, what, consume=True)

    def wait_seen(self, pred: Callable[[Received], bool], timeout: float = 5.0, what: str = "", since: int = 0) -> Received:
        """Like `wait_for` over the whole history from index `since`, without moving the cursor."""
        return self._wait(pred, timeout, what, consume=False, since=since)

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    def _wait(self, pred: Callable[[Received], bool], timeout: float, what: str, consume: bool, since: int = 0) -> Received:
        deadline = time.monotonic() + timeout
        with self._cv:
            for _ in range(100_000):  # bounded; each pass waits for a new stanza or the deadline
                i = self._find(pred, self._cursor if consume else since)
                if i is not None:
                    if consume:
                        self._cursor = i + 1
                    return self._items[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            seen = "\n  ".join(str(r) for r in self._items[-30:]) or "(nothing)"
            desc = what or pred.__doc__ or "a matching stanza"
            raise XmppTimeout(f"{self.name}: no {desc} within {timeout:.1f}s; last received:\n  {seen}")

    def expect_none(self, pred: Callable[[Received], bool], within: float, what: str = "") -> None:
        """Fails if a matching stanza is (or gets) received after the cursor within `within` s.
        A bounded negative check: it always takes `within` seconds when nothing arrives."""
        try:
            got = self.wait_for(pred, within)
        except XmppTimeout:
            return
        raise AssertionError(f"{self.name}: unexpected {what or pred.__doc__}: {got.xml}")


class LoopThread:
    """An asyncio event loop running in a daemon thread; `call`/`run` execute on it and wait
    (bounded) for the result, re-raising its exception in the caller's thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=f"xmpp-{name}", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        if not self._started.wait(5):
            raise RuntimeError(f"{name}: event loop thread did not start")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def run(self, coro_factory: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        async def wrapper() -> Any:
            return await coro_factory()

        fut = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise XmppTimeout(f"{self.name}: operation did not finish within {timeout:.1f}s") from None

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        async def coro() -> Any:
            return fn()

        return self.run(coro, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Cancels what still runs on the loop (slixmpp's filter tasks), stops it, joins the
        thread (bounded)."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                self.run(cancel_all, timeout)
            except XmppTimeout:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
