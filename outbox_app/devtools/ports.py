"""Loopback ports for the processes the dev tools and tests start (brokers, databases,
webhooks, workers), and the one way they wait for something: a condition with a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
