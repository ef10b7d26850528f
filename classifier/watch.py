"""Noticing that the gallery folder changed: a cheap scan, woken early by file-system
events where the platform gives them (``watchdog``), so it works on any file system
(network shares and containers' bind mounts often give no events).

The scan compares what :func:`facewire.models.files.list_files` lists, with each file's
size and modification time, to the last scan. A change counts once the folder has
been still for ``settle_s`` (a photo still being copied is not read half-written).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> watch = FolderWatch(root, settle_s=0)
>>> watch.changed()
False
>>> _ = (root / "ann").mkdir(), (root / "ann" / "1.jpg").write_bytes(b"x")
>>> watch.changed(), watch.changed()
(True, False)
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from facewire.models.files import list_files

log = logging.getLogger("facewire.classifier")

Signature = frozenset[tuple[str, int, int]]


def signature(root: Path) -> Signature:
    """Every file below ``root`` with its size and mtime (empty if ``root`` is gone)."""
    out = []
    try:
        files = list_files(root)
    except OSError:
        return frozenset()
    for f in files:
        try:
            st = f.stat()
        except OSError:  # removed between the listing and the stat
            continue
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return frozenset(out)


class FolderWatch:
    """``changed()`` says whether the folder changed since the last call that said so."""

    def __init__(self, root: Path, settle_s: float = 0.5) -> None:
        self.root = root
        self.settle_s = settle_s
        self._seen = signature(root)
        self._observer: object | None = None

    def start(self, wake: threading.Event) -> None:
        """Set ``wake`` on every file-system event below the folder, if events can be had."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.info("no file-system events (watchdog missing): scanning %s", self.root)
            return

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                wake.set()

        try:
            observer = Observer()
            observer.schedule(Wake(), str(self.root), recursive=True)
            observer.daemon = True
            observer.start()
        except (OSError, RuntimeError) as exc:  # e.g. inotify watches exhausted
            log.warning("no file-system events for %s (%s): scanning it", self.root, exc)
            return
        self._observer = observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(5)  # type: ignore[attr-defined]

    def changed(self) -> bool:
        now = signature(self.root)
        if now == self._seen:
            return False
        # wait until it holds still: a copy in progress changes sizes between scans
        while self.settle_s > 0:
            time.sleep(self.settle_s)
            later = signature(self.root)
            if later == now:
                break
            now = later
        self._seen = now
        return True
