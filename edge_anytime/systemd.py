"""systemd's service protocol without a dependency: sd_notify over $NOTIFY_SOCKET, and the watchdog.

`Notifier.from_environment()` is inert outside systemd (no NOTIFY_SOCKET), so
the service code calls it unconditionally:

>>> notifier = Notifier.from_environment({})
>>> notifier.enabled, notifier.ready(), notifier.watchdog_interval_s
(False, False, None)

Under a unit with `Type=notify` and `WatchdogSec=30`, `ready()` tells systemd
the service is up (after the bundle loaded and the source opened), `ping()`
sends `WATCHDOG=1` at most every half interval, as long as the service makes
progress; a service that stops pinging is killed and restarted by systemd.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping


class Notifier:
    """Sends sd_notify datagrams to `address` (a path, or '@name' for the abstract namespace)."""

    def __init__(self, address: str | None, watchdog_interval_s: float | None = None) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_interval_s
        self._last_ping = 0.0
        self.sent: list[str] = []
        self.errors = 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        interval = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            interval = int(usec) / 1e6
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state string ('READY=1', 'STATUS=...', 'WATCHDOG=1', 'STOPPING=1'); False if not sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), target)
        except OSError:
            self.errors += 1
            return False
        self.sent.append(state.split("=", 1)[0])
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def ping(self, now: float | None = None) -> bool:
        """WATCHDOG=1 if a watchdog is configured and half its interval has passed since the last ping."""
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_interval_s / 2:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")
