"""Loopback ports for the processes the dev tools and tests start (brokers, databases,
webhooks, workers), and the one way they wait for something: a condition with a deadline."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


# Ports this process handed out already: a port is picked before its server binds it, and
# the kernel hands a port it just freed straight back, so two servers started one after
# the other could get the same one (a broker's two listeners did, in CI).
_handed_out: set[int] = set()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, none handed out before by this process."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            s = stack.enter_context(socket.socket())  # held open: the next pick differs
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
        return ports


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_until(what: str, condition: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; raise
    ``TimeoutError`` naming ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def wait_port(port: int, timeout: float) -> bool:
    """True once something listens on ``port``, False after ``timeout`` seconds."""
    try:
        return wait_until(f"port {port}", lambda: port_open(port), timeout)
    except TimeoutError:
        return False
