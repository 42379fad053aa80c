"""The FastAPI example, as its README runs it: a uvicorn process serving ``POST /orders``
(an ``orders`` row and its event in one asyncio transaction), and a worker owning the
example's service. The handler's effect must appear, once per order."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from examples.fastapi_app.handlers import order_confirmations, orders
from outbox_app import default_registry
from tests.e2e.helpers import Stack, running_stack
from tests.support import ROOT, TestBroker, free_port, port_open, wait_for

MODULES = "examples.fastapi_app.handlers"


@pytest.fixture
def stack(tmp_path: Path, broker: TestBroker) -> Iterator[Stack]:
    default_registry.load_modules([MODULES])
    with running_stack(tmp_path, broker, "outbox_fastapi") as s:
        yield s


def post(port: int, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/orders",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_orders_posted_over_http_are_confirmed_once_through_the_outbox(stack: Stack) -> None:
    stack.worker("shop", OUTBOX_HANDLER_MODULES=MODULES)
    port = free_port()
    async_url = make_url(stack.url).set(drivername="mysql+asyncmy").render_as_string(False)
    log = open(stack.tmp / "uvicorn.log", "wb")  # noqa: SIM115 - closed below
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--port", str(port)],
        env={**stack.workers[0].env, "EXAMPLE_DATABASE_URL": async_url},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), 60, "uvicorn to listen")
        placed = []
        for n in range(5):
            status, doc = post(port, {"customer": f"ada-{n % 2}", "items": n + 1})
            assert status == 201, doc
            placed.append(doc["order_id"])
        status, doc = post(port, {"customer": "", "items": 0})
        assert status == 422  # refused before any transaction
        engine = stack.engine

        def confirmed() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(select(func.count()).select_from(order_confirmations)).scalar_one()
                )

        try:
            wait_for(lambda: confirmed() == len(placed), 90, "every order confirmed")
        except AssertionError:
            print(stack.logs(), (stack.tmp / "uvicorn.log").read_text()[-3000:])
            raise
        with engine.connect() as conn:
            ids = sorted(r[0] for r in conn.execute(select(order_confirmations.c.order_id)))
            assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == 5
        assert ids == sorted(placed)
    finally:
        web.terminate()
        web.wait(30)
        log.close()
