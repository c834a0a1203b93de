"""Processes and ports for the interop harness.

Every server a test starts goes through `ManagedProcess`: it runs in its own session (so its
process group id is its own, recorded PID), is registered in a module-level table, and is
stopped by that PID (SIGTERM, bounded wait, then SIGKILL of its process group) at teardown —
and, as a last resort, when the pytest session ends. Nothing is ever killed by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

LOOPBACK = "127.0.0.1"

# PIDs of everything started and not yet stopped (session-end safety net).
_LIVE: dict[int, "ManagedProcess"] = {}


def free_port(kind: str = "udp+tcp") -> int:
    """A port that is free on 127.0.0.1 for UDP and/or TCP right now.

    The socket is closed before the server binds it, so a race with another process is
    possible; on loopback in a test machine it does not happen in practice, and a failed
    bind shows up clearly in the server's log.
    """
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((LOOPBACK, 0))
        port = udp.getsockname()[1]
        try:
            if "tcp" in kind:
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                finally:
                    tcp.close()
            return port
        finally:
            udp.close()
    raise RuntimeError("no free loopback port found in 50 attempts")


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> object:
    """Polls `predicate` until it returns a truthy value; bounded in time and in count.

    Returns the value; raises AssertionError naming `what` on timeout.
    """
    deadline = time.monotonic() + timeout
    max_polls = int(timeout / interval) + 2
    last = None
    for _ in range(max_polls):
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A child process with its PID recorded, stopped by that PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Optional[Path] = None,
        env: Optional[dict[str, str]] = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self) -> "ManagedProcess":
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted gateway keeps one log across its lives.
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n==== harness: starting {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(self.cwd) if self.cwd else None,
            env=self.env,
            start_new_session=True,
        )
        _LIVE[self.proc.pid] = self
        pid_file = self.log_path.with_suffix(".pid")
        pid_file.write_text(f"{self.proc.pid}\n")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self, timeout: float = 10.0) -> None:
        """SIGKILL to the recorded PID only (a crash, not a shutdown), then reap it."""
        if not self.proc:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=timeout)
        self._reap_group(pid)
        _LIVE.pop(pid, None)
        self._close_log()

    def stop(self, grace: float = 5.0) -> Optional[int]:
        """SIGTERM to the recorded PID, bounded wait, then SIGKILL to its process group."""
        if not self.proc:
            return None
        pid = self.proc.pid
        if self.proc.poll() is None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=grace)
        self._reap_group(pid)
        _LIVE.pop(pid, None)
        self._close_log()
        return self.proc.returncode

    @staticmethod
    def _reap_group(pgid: int) -> None:
        # Children of a server (Kamailio's workers) share the group whose id is the recorded
        # PID; any straggler left after the main process ended is killed through it.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None


def stop_all_leftovers() -> list[str]:
    """Stops every process still registered (by its recorded PID). Returns their names."""
    names = []
    for pid, mp in list(_LIVE.items()):
        names.append(f"{mp.name}(pid {pid})")
        mp.stop(grace=3.0)
    return names


def sleep_until(wall_time: float, max_wait: float) -> None:
    """Waits until time.time() >= wall_time, never longer than `max_wait` seconds.

    Interop tests run against real peers on a real clock: some behaviours (a subscription
    outliving its first interval) can only be observed by letting that time pass.
    """
    delay = wall_time - time.time()
    assert delay <= max_wait, f"refusing to wait {delay:.1f}s (> {max_wait:.1f}s)"
    if delay > 0:
        time.sleep(delay)
