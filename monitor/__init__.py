"""The facewire web monitor: detection log (SQLite), live pages, JSON endpoints.

It talks to the rest of the system only over the broker (through :mod:`bus`):

- :mod:`monitor.store` — the SQLite detection log and its in-memory window,
- :mod:`monitor.state` — latest node/classifier status, threshold stats, errors,
- :mod:`monitor.subscriber` — bus subscriptions feeding the two above,
- :mod:`monitor.app` — the Flask app (``create_app(store, state)``),
- :mod:`monitor.cli` — ``python -m monitor``.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the monitor (``python -m monitor``); returns the exit code."""
    from monitor.cli import main as _main

    return _main(argv)


__all__ = ["main"]
