"""``python -m outbox_app ...`` is the ``outbox-app`` command."""

from outbox_app.ops.cli import main

raise SystemExit(main())
