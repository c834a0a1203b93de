#!/usr/bin/python3
"""A Python stand-in for the gateway binary, used ONLY to check the interop harness itself.

    XSG_BIN=interop/tools/fake_gateway.py /usr/bin/python3 -m pytest interop -v

It speaks the same command line (`--config FILE`; `ctl --admin URL publish|subscribe|list`),
reads the same configuration keys, logs the same "listening" lines, and does the minimum of
RFC 3903 (publish, bodyless refresh with SIP-If-Match) and RFC 6665 (subscribe, answer NOTIFY,
in-dialog refresh) with a JSON store that survives kill -9. If the gateway tests pass with it,
a failure with the real binary is the gateway's, not the harness's. It is not a product.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import tomllib
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import sipmsg  # noqa: E402


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} INFO fake_gateway: {msg}", flush=True)


class Gateway:
    def __init__(self, cfg: dict) -> None:
        host, port = cfg["sip"]["udp_listen"].rsplit(":", 1)
        self.proxy = sipmsg.uri_hostport(cfg["sip"]["outbound_proxy"])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, int(port)))
        self.host, self.port = self.sock.getsockname()
        self.contact = f"sip:gateway@{self.host}:{self.port}"
        self.store_path = Path(cfg["store"]["path"])
        self.lock = threading.RLock()
        self.waiting: dict[str, list] = {}
        self.state = {"publications": {}, "subscriptions": {}}
        if self.store_path.exists():
            self.state = json.loads(self.store_path.read_text())
        threading.Thread(target=self.recv_loop, daemon=True).start()
        threading.Thread(target=self.timer_loop, daemon=True).start()
        log(f"sip listening transport=udp addr={self.host}:{self.port}")

    def save(self) -> None:
        tmp = self.store_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.store_path)

    # ---- transport ---------------------------------------------------------------------

    def recv_loop(self) -> None:
        while True:
            data, src = self.sock.recvfrom(65535)
            try:
                msg = sipmsg.parse(data)
            except sipmsg.SipParseError:
                continue
            if not msg.is_request:
                with self.lock:
                    slot = self.waiting.get(msg.top_branch or "")
                if slot is not None and (msg.status or 0) >= 200:
                    slot.append(msg)
                continue
            if msg.method == "NOTIFY":
                self.on_notify(msg, src)

    def transact(self, req: sipmsg.SipMessage) -> sipmsg.SipMessage | None:
        slot: list = []
        with self.lock:
            self.waiting[req.top_branch] = slot
        data = req.to_bytes()
        interval, deadline = 0.5, time.monotonic() + 16
        while time.monotonic() < deadline and not slot:
            self.sock.sendto(data, self.proxy)
            end = time.monotonic() + interval
            while time.monotonic() < end and not slot:
                time.sleep(0.02)
            interval = min(interval * 2, 4)
        with self.lock:
            self.waiting.pop(req.top_branch, None)
        return slot[0] if slot else None

    # ---- PUBLISH -----------------------------------------------------------------------

    def publish(self, p: dict, *, refresh: bool) -> sipmsg.SipMessage | None:
        extra = [("Event", p["event"]), ("Expires", str(p["expires"]))]
        if p.get("etag"):
            extra.append(("SIP-If-Match", p["etag"]))
        body = b"" if refresh else (p.get("body") or "").encode()
        req = sipmsg.build_request(
            "PUBLISH", p["presentity"], via_host=self.host, via_port=self.port,
            from_uri=p["presentity"], from_tag=sipmsg.new_token("f"), to_uri=p["presentity"],
            to_tag=None, call_id=sipmsg.new_token("pub-"), cseq=1, extra=extra, body=body,
            content_type=p.get("content_type") if body else None,
        )  # fmt: skip
        resp = self.transact(req)
        with self.lock:
            if resp is not None and resp.status == 200:
                p["etag"] = resp.get("sip-etag")
                granted = resp.expires or p["expires"]
                p["expires_at"] = time.time() + granted
                p["refresh_at"] = time.time() + granted * 0.8
            elif resp is not None and resp.status == 412:
                p["etag"] = None
                p["refresh_at"] = time.time()
            self.state["publications"][p["id"]] = p
            self.save()
        return resp

    # ---- SUBSCRIBE / NOTIFY ------------------------------------------------------------

    def subscribe(self, s: dict) -> sipmsg.SipMessage | None:
        s["cseq"] = s.get("cseq", 0) + 1
        req = sipmsg.build_request(
            "SUBSCRIBE", s.get("remote_target") or s["presentity"], via_host=self.host,
            via_port=self.port, from_uri=s["watcher"], from_tag=s["from_tag"],
            to_uri=s["presentity"], to_tag=s.get("to_tag"), call_id=s["call_id"],
            cseq=s["cseq"], contact=self.contact,
            extra=[("Event", s["event"]), ("Expires", str(s["expires"]))],
        )  # fmt: skip
        with self.lock:
            self.state["subscriptions"][s["id"]] = s
            self.save()
        resp = self.transact(req)
        with self.lock:
            if resp is not None and resp.status == 200:
                s["to_tag"] = s.get("to_tag") or resp.to_tag
                if resp.get("contact"):
                    s["remote_target"] = sipmsg.uri_of(resp.get("contact"))
                granted = resp.expires or s["expires"]
                s["refresh_at"] = time.time() + granted * 0.8
                s["state"] = s.get("state") or "notify_wait"
            self.state["subscriptions"][s["id"]] = s
            self.save()
        return resp

    def on_notify(self, msg: sipmsg.SipMessage, src) -> None:
        with self.lock:
            match = None
            for s in self.state["subscriptions"].values():
                if s["call_id"] == msg.call_id and s["from_tag"] == msg.to_tag:
                    match = s
            if match is None:
                resp = sipmsg.build_response(msg, 481, "Subscription Does Not Exist")
            else:
                match["to_tag"] = match.get("to_tag") or msg.from_tag
                st, _ = msg.subscription_state()
                match["state"] = st
                match["last_notify_state"] = msg.get("subscription-state")
                if msg.body:
                    match["last_body"] = msg.text_body
                    match["last_content_type"] = msg.get("content-type")
                self.save()
                resp = sipmsg.build_response(msg, 200, "OK")
        self.sock.sendto(resp.to_bytes(), src)

    # ---- timers ------------------------------------------------------------------------

    def timer_loop(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.time()
            with self.lock:
                pubs = [p for p in self.state["publications"].values() if p.get("refresh_at", 1e18) <= now]
                subs = [s for s in self.state["subscriptions"].values() if s.get("refresh_at", 1e18) <= now]
                for x in pubs + subs:
                    x["refresh_at"] = 1e18
            for p in pubs:
                self.publish(p, refresh=bool(p.get("etag")))
            for s in subs:
                self.subscribe(s)

    # ---- admin -------------------------------------------------------------------------

    def admin(self, path: str, body: dict | None):
        if path == "/publish":
            pid = f"{body['presentity']}|{body['event']}"
            with self.lock:
                old = self.state["publications"].get(pid, {})
            p = {**old, "id": pid, "presentity": body["presentity"], "event": body["event"],
                 "expires": body["expires"], "body": body.get("body"), "content_type": body.get("content_type"),
                 "owner": "admin"}  # fmt: skip
            resp = self.publish(p, refresh=False)
            return {"code": resp.status if resp else 408, "reason": resp.reason if resp else "Timeout",
                    "etag": p.get("etag"), "expires": resp.expires if resp else None}  # fmt: skip
        if path == "/subscribe":
            sid = sipmsg.new_token("s")
            s = {"id": sid, "presentity": body["presentity"], "watcher": body["watcher"], "event": body["event"],
                 "expires": body["expires"], "call_id": sipmsg.new_token("gw-") + "@127.0.0.1",
                 "from_tag": sipmsg.new_token("g"), "state": None, "owner": "admin"}  # fmt: skip
            resp = self.subscribe(s)
            return {"code": resp.status if resp else 408, "reason": resp.reason if resp else "Timeout", "id": sid}
        with self.lock:
            if path == "/publications":
                return list(self.state["publications"].values())
            if path == "/subscriptions":
                return list(self.state["subscriptions"].values())
        return None


def serve(cfg_path: str) -> None:
    cfg = tomllib.loads(Path(cfg_path).read_text())
    gw = Gateway(cfg)
    host, port = cfg["admin"]["listen"].rsplit(":", 1)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _reply(self, obj):
            data = json.dumps(obj).encode()
            self.send_response(200 if obj is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._reply(gw.admin(self.path, None))

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            self._reply(gw.admin(self.path, json.loads(self.rfile.read(n) or b"{}")))

    srv = ThreadingHTTPServer((host, int(port)), H)
    log(f"admin listening addr={host}:{srv.server_address[1]}")
    srv.serve_forever()


def ctl(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ctl")
    ap.add_argument("--admin", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish")
    for a in ("--presentity", "--event", "--content-type", "--body-file"):
        p.add_argument(a)
    p.add_argument("--expires", type=int)
    s = sub.add_parser("subscribe")
    for a in ("--presentity", "--watcher", "--event"):
        s.add_argument(a)
    s.add_argument("--expires", type=int)
    lst = sub.add_parser("list")
    lst.add_argument("what", choices=["publications", "subscriptions"])
    a = ap.parse_args(argv)
    if a.cmd == "list":
        req = urllib.request.Request(f"{a.admin}/{a.what}")
    else:
        if a.cmd == "publish":
            payload = {"presentity": a.presentity, "event": a.event, "expires": a.expires,
                       "content_type": a.content_type, "body": Path(a.body_file).read_text()}  # fmt: skip
        else:
            payload = {"presentity": a.presentity, "watcher": a.watcher, "event": a.event, "expires": a.expires}
        req = urllib.request.Request(
            f"{a.admin}/{a.cmd}", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read())
    print(json.dumps(out, indent=2))
    return 0 if a.cmd == "list" or 200 <= out.get("code", 500) < 300 else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ctl":
        sys.exit(ctl(sys.argv[2:]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    serve(ap.parse_args().config)
