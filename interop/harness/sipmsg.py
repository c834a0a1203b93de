"""A small SIP message model for the interop harness: parse and build requests and responses.

Only what the suite needs (RFC 3261 §7 message format, §20 compact forms, §8.1.1.7 branch
magic cookie). Bodies are kept as bytes and sized by Content-Length (§18.3 over UDP: a missing
Content-Length means "up to the end of the datagram").
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

CRLF = "\r\n"

# RFC 3261 §7.3.3 and RFC 3265/6665 compact forms, so peers that use them still parse.
COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "k": "supported",
    "o": "event",
    "u": "allow-events",
    "s": "subject",
    "r": "refer-to",
}

# Headers whose value may carry several comma-separated entries (only those we split).
_LIST_HEADERS = {"via", "route", "record-route"}

_counter = itertools.count(1)


class SipParseError(ValueError):
    """A datagram that is not a SIP message the harness understands."""


def new_token(prefix: str = "") -> str:
    """A unique token (tags, Call-IDs, nonces in bodies)."""
    return f"{prefix}{os.getpid():x}{next(_counter):04x}{os.urandom(4).hex()}"


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie."""
    return "z9hG4bK" + new_token()


def canonical(name: str) -> str:
    low = name.strip().lower()
    return COMPACT.get(low, low)


@dataclass
class SipMessage:
    """One SIP request or response. Header order and repetitions are kept."""

    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    # ---- start line -------------------------------------------------------------------

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> Optional[str]:
        return self.start_line.split(" ", 1)[0] if self.is_request else None

    @property
    def request_uri(self) -> Optional[str]:
        if not self.is_request:
            return None
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) >= 3 else None

    @property
    def status(self) -> Optional[int]:
        if self.is_request:
            return None
        try:
            return int(self.start_line.split(" ")[1])
        except (IndexError, ValueError):
            return None

    @property
    def reason(self) -> str:
        if self.is_request:
            return ""
        parts = self.start_line.split(" ", 2)
        return parts[2] if len(parts) == 3 else ""

    # ---- headers ----------------------------------------------------------------------

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, list headers split at top-level commas."""
        want = canonical(name)
        out: list[str] = []
        for n, v in self.headers:
            if canonical(n) != want:
                continue
            if want in _LIST_HEADERS:
                out.extend(split_commas(v))
            else:
                out.append(v.strip())
        return out

    def get(self, name: str) -> Optional[str]:
        values = self.get_all(name)
        return values[0] if values else None

    def set(self, name: str, value: str) -> None:
        """Replaces every occurrence of a header with one value (appended if absent)."""
        want = canonical(name)
        idx = [i for i, (n, _) in enumerate(self.headers) if canonical(n) == want]
        if idx:
            self.headers[idx[0]] = (name, value)
            for i in reversed(idx[1:]):
                del self.headers[i]
        else:
            self.headers.append((name, value))

    def remove(self, name: str) -> None:
        want = canonical(name)
        self.headers = [(n, v) for n, v in self.headers if canonical(n) != want]

    def prepend(self, name: str, value: str) -> None:
        self.headers.insert(0, (name, value))

    # ---- convenience accessors ---------------------------------------------------------

    @property
    def call_id(self) -> Optional[str]:
        return self.get("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        raw = self.get("cseq") or ""
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdigit():
            return (-1, "")
        return (int(parts[0]), parts[1].upper())

    @property
    def from_tag(self) -> Optional[str]:
        return header_param(self.get("from") or "", "tag")

    @property
    def to_tag(self) -> Optional[str]:
        return header_param(self.get("to") or "", "tag")

    @property
    def top_branch(self) -> Optional[str]:
        vias = self.get_all("via")
        return header_param(vias[0], "branch") if vias else None

    @property
    def expires(self) -> Optional[int]:
        raw = self.get("expires")
        if raw is None or not raw.strip().isdigit():
            return None
        return int(raw.strip())

    @property
    def text_body(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def subscription_state(self) -> tuple[Optional[str], dict[str, str]]:
        """`Subscription-State` as (state, params), e.g. ("active", {"expires": "20"})."""
        raw = self.get("subscription-state")
        if raw is None:
            return (None, {})
        parts = [p.strip() for p in raw.split(";")]
        params: dict[str, str] = {}
        for p in parts[1:]:
            if "=" in p:
                k, v = p.split("=", 1)
                params[k.strip().lower()] = v.strip()
            elif p:
                params[p.lower()] = ""
        return (parts[0].lower(), params)

    # ---- wire format -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        self.set("Content-Length", str(len(self.body)))
        head = self.start_line + CRLF + "".join(f"{n}: {v}{CRLF}" for n, v in self.headers)
        return (head + CRLF).encode("utf-8") + self.body

    def summary(self) -> str:
        """One line for logs: start line plus the headers that identify the transaction."""
        n, m = self.cseq
        extra = []
        for h in ("sip-if-match", "sip-etag", "expires", "subscription-state", "event"):
            v = self.get(h)
            if v is not None:
                extra.append(f"{h}={v}")
        return (
            f"{self.start_line} | call-id={self.call_id} cseq={n} {m} "
            f"from-tag={self.from_tag} to-tag={self.to_tag} {' '.join(extra)} "
            f"body={len(self.body)}B"
        )

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", errors="replace")


def parse(data: bytes) -> SipMessage:
    """Parses one datagram. Raises SipParseError on anything malformed."""
    sep = data.find(b"\r\n\r\n")
    sep_len = 4
    if sep < 0:
        sep = data.find(b"\n\n")
        sep_len = 2
    if sep < 0:
        raise SipParseError("no end of headers")
    try:
        head = data[:sep].decode("utf-8")
    except UnicodeDecodeError as e:
        raise SipParseError(f"headers are not UTF-8: {e}") from e
    rest = data[sep + sep_len :]
    lines = head.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    if not start or (not start.startswith("SIP/2.0 ") and not start.endswith(" SIP/2.0")):
        raise SipParseError(f"bad start line: {start!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            # RFC 3261 §7.3.1 line folding.
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
            continue
        if ":" not in line:
            raise SipParseError(f"bad header line: {line!r}")
        n, v = line.split(":", 1)
        headers.append((n.strip(), v.strip()))
    msg = SipMessage(start, headers, b"")
    cl = msg.get("content-length")
    if cl is not None:
        if not cl.isdigit():
            raise SipParseError(f"bad Content-Length: {cl!r}")
        length = int(cl)
        if length > len(rest):
            raise SipParseError(f"truncated body: Content-Length {length}, got {len(rest)}")
        msg.body = rest[:length]
    else:
        msg.body = rest
    return msg


def split_commas(value: str) -> list[str]:
    """Splits a header value at commas outside quotes and angle brackets."""
    out, cur, quoted, angle = [], [], False, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle = True
        elif ch == ">" and not quoted:
            angle = False
        if ch == "," and not quoted and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def header_params(value: str) -> dict[str, str]:
    """Header parameters (after the URI) of a From/To/Contact/Via value, lower-cased names."""
    if "<" in value and ">" in value:
        tail = value[value.rindex(">") + 1 :]
    else:
        # addr-spec form: everything after the first ';' belongs to the header (RFC 3261 §20).
        tail = value[value.index(";") :] if ";" in value else ""
    params: dict[str, str] = {}
    for p in tail.split(";"):
        p = p.strip()
        if not p:
            continue
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"')
        else:
            params[p.lower()] = ""
    return params


def header_param(value: str, name: str) -> Optional[str]:
    return header_params(value).get(name.lower())


def uri_of(value: str) -> str:
    """The URI inside a name-addr (`"x" <sip:a@b>;tag=1` → `sip:a@b`) or addr-spec."""
    m = re.search(r"<([^>]*)>", value)
    if m:
        return m.group(1).strip()
    return value.split(";", 1)[0].strip()


def uri_hostport(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Host and port of a sip: URI (numeric hosts only; the suite runs on loopback)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    elif ":" in rest:
        host, port = rest.rsplit(":", 1)
    else:
        host, port = rest, ""
    return host, int(port) if port.isdigit() else default_port


def via_target(via: str) -> tuple[str, int]:
    """Where a response goes for this Via (RFC 3261 §18.2.2, RFC 3581 rport)."""
    sent = via.split(None, 1)[1] if " " in via.strip() else via
    sent_by = sent.split(";", 1)[0].strip()
    host, port = uri_hostport("sip:" + sent_by)
    params = header_params("x;" + sent.split(";", 1)[1]) if ";" in sent else {}
    host = params.get("received") or host
    if params.get("rport", "").isdigit():
        port = int(params["rport"])
    return host, port


def build_request(
    method: str,
    request_uri: str,
    *,
    via_host: str,
    via_port: int,
    from_uri: str,
    from_tag: str,
    to_uri: str,
    to_tag: Optional[str],
    call_id: str,
    cseq: int,
    branch: Optional[str] = None,
    contact: Optional[str] = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: Optional[str] = None,
) -> SipMessage:
    headers = [
        ("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={branch or new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={from_tag}"),
        ("To", f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact:
        headers.append(("Contact", f"<{contact}>"))
    headers.extend(extra)
    headers.append(("User-Agent", "xsg-interop-harness"))
    if body and content_type:
        headers.append(("Content-Type", content_type))
    return SipMessage(f"{method} {request_uri} SIP/2.0", headers, body)


def build_response(
    request: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: Optional[str] = None,
    extra: Iterable[tuple[str, str]] = (),
) -> SipMessage:
    """A response to `request` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied."""
    headers: list[tuple[str, str]] = []
    for n, v in request.headers:
        if canonical(n) in ("via", "from", "call-id", "cseq"):
            headers.append((n, v))
        elif canonical(n) == "to":
            if to_tag and header_param(v, "tag") is None:
                v = f"{v};tag={to_tag}"
            headers.append((n, v))
    headers.extend(extra)
    return SipMessage(f"SIP/2.0 {status} {reason}", headers, b"")


def stable_branch(seed: str) -> str:
    """A branch derived from another one: a stateless proxy's retransmissions match (RFC 3261
    §16.11)."""
    return "z9hG4bK-rly-" + hashlib.sha1(seed.encode()).hexdigest()[:20]


def pidf(entity: str, note: str, basic: str = "open", tuple_id: Optional[str] = None) -> bytes:
    """A minimal PIDF document (RFC 3863) whose <note> carries a marker the test looks for."""
    tid = tuple_id or "t" + hashlib.sha1(entity.encode()).hexdigest()[:8]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">\n'
        f'  <tuple id="{tid}">\n'
        f"    <status><basic>{basic}</basic></status>\n"
        f"    <note>{note}</note>\n"
        "  </tuple>\n"
        "</presence>\n"
    ).encode("utf-8")
