"""The facewire web monitor: detection log (SQLite), live pages, JSON endpoints.

It talks to the rest of the system only over the broker (through :mod:`bus`):

- :mod:`facewire.monitor.store` — the SQLite detection log and its in-memory window,
- :mod:`facewire.monitor.state` — latest node/classifier status, threshold stats, errors,
- :mod:`facewire.monitor.subscriber` — bus subscriptions feeding the two above,
- :mod:`facewire.monitor.app` — the Flask app (``create_app(store, state)``),
- :mod:`facewire.monitor.cli` — ``facewire monitor``.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the monitor (``facewire monitor``); returns the exit code."""
    from facewire.monitor.cli import main as _main

    return _main(argv)


__all__ = ["main"]
