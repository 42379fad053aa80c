"""The dev tools' port picking: servers started one after another never share a port."""

from __future__ import annotations

import socket

from outbox_app.devtools.ports import free_port, free_ports


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(12)
    assert len(set(ports)) == 12
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_is_never_handed_out_twice() -> None:
    # Picked one at a time, before anything binds them: the way servers start here.
    picked = [free_port() for _ in range(50)] + free_ports(10)
    assert len(set(picked)) == len(picked)
