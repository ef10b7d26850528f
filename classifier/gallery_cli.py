"""``facewire gallery``: the gallery's people, run where its folder is.

``list`` shows each person's photos (``<dataset>/<name>/``), enrolled vectors by
source and corrections (the enrolment store, ``<cache>/gallery.sqlite3``); ``add``
copies photos into a person's folder (the running classifier's folder watch picks them
up); ``remove`` deletes the folder and keeps the enrolments; ``forget`` deletes every
trace: the folder, the person's entries in the embedding caches (``<cache>/*.npz``),
the enrolments and corrections (with an audit line saying what went), and with
``--monitor-db`` the monitor's log rows of that name. ``--broker`` asks the running
classifier to reload afterwards and prints its reply.

``<cache>`` is ``cache_dir``, else ``<dataset>/.facewire-cache``: the classifier's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facewire import config
from facewire.bus import topics
from facewire.bus.errors import WireError
from facewire.bus.messages import GalleryReload, GalleryReply
from facewire.bus.messages.gallery import name_problem as check_name
from facewire.bus.transport import Message, Transport
from facewire.classifier.enrolled import EnrolmentStore
from facewire.classifier.gallery import read_image
from facewire.classifier.keeper import STORE_FILE, cache_folder
from facewire.config.cli import add_setting_flag, overrides_from
from facewire.config.schema import ClassifierConfig
from facewire.models.files import is_photo, list_files, list_photos

DEFAULT_WAIT_S = 30.0


@dataclass(frozen=True)
class Place:
    """Where a gallery keeps its things."""

    dataset: Path
    cache_dir: Path

    @classmethod
    def of(cls, cfg: ClassifierConfig) -> Place:
        return cls(Path(cfg.dataset), cache_folder(cfg))

    @property
    def store_path(self) -> Path:
        return self.cache_dir / STORE_FILE

    def folder(self, name: str) -> Path:
        return self.dataset / name

    def store(self, create: bool) -> EnrolmentStore | None:
        """The enrolment store; ``None`` when there is none and ``create`` is false."""
        if not create and not self.store_path.exists():
            return None
        return EnrolmentStore(self.store_path)


# --- list ------------------------------------------------------------------------------


def list_people(place: Place) -> list[dict[str, Any]]:
    """Per person, by name: ``photos`` in the folder, ``enrolled`` vectors by source,
    ``corrections``."""
    people: dict[str, dict[str, Any]] = {}
    if place.dataset.is_dir():
        for d in sorted(place.dataset.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                people[d.name] = {"name": d.name, "photos": len(list_photos(d))}
    store = place.store(create=False)
    counts = store.people() if store is not None else {}
    if store is not None:
        store.close()
    for name, by_source in counts.items():
        row = people.setdefault(name, {"name": name, "photos": 0})
        row["corrections"] = by_source.get("corrections", 0)
        row["enrolled"] = {k: v for k, v in sorted(by_source.items()) if k != "corrections"}
    for row in people.values():
        row.setdefault("enrolled", {})
        row.setdefault("corrections", 0)
    return [people[name] for name in sorted(people)]


def format_people(rows: list[dict[str, Any]]) -> str:
    width = max([6, *(len(r["name"]) for r in rows)])
    lines = [f"{'person':<{width}}  {'photos':>6}  {'enrolled':>8}  {'corrections':>11}  sources"]
    for r in rows:
        enrolled = sum(r["enrolled"].values())
        sources = ", ".join(f"{k} {v}" for k, v in r["enrolled"].items()) or "-"
        lines.append(
            f"{r['name']:<{width}}  {r['photos']:>6}  {enrolled:>8}  {r['corrections']:>11}  "
            f"{sources}"
        )
    photos = sum(r["photos"] for r in rows)
    enrolled = sum(sum(r["enrolled"].values()) for r in rows)
    lines.append(f"{len(rows)} people, {photos} photos, {enrolled} enrolled vectors")
    return "\n".join(lines)


# --- add -------------------------------------------------------------------------------


@dataclass
class Added:
    copied: list[tuple[Path, Path]] = field(default_factory=list)  # source → copy
    present: list[tuple[Path, Path]] = field(default_factory=list)  # source → same file there
    refused: list[tuple[Path, str]] = field(default_factory=list)  # source → why


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _free_name(folder: Path, name: str) -> list[Path]:
    """``name`` in ``folder``, then ``<stem>-2<suffix>``, ``-3`` …: candidates in order."""
    stem, suffix = Path(name).stem, Path(name).suffix
    return [folder / name, *(folder / f"{stem}-{i}{suffix}" for i in range(2, 10_000))]


def _place_copy(tmp: Path, candidates: list[Path]) -> Path:
    """Give ``tmp`` the first free name of ``candidates``, never replacing a file."""
    for target in candidates:
        try:
            os.link(tmp, target)  # atomic, and fails if ``target`` exists
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system
            if target.exists():
                continue
            os.replace(tmp, target)
            return target
        tmp.unlink()
        return target
    raise FileExistsError(f"no free name for {candidates[0].name} in {candidates[0].parent}")


def add_photos(place: Place, name: str, photos: list[Path]) -> Added:
    """Copy the ``photos`` that are photos and decode into ``<dataset>/<name>/``, under
    their own names (made unique: nothing is overwritten); a photo whose bytes are
    already in the folder is not copied again."""
    out = Added()
    folder = place.folder(name)
    good: list[Path] = []
    for src in photos:
        if not src.exists():
            out.refused.append((src, "no such file"))
        elif not src.is_file():
            out.refused.append((src, "not a file"))
        elif not is_photo(src):
            out.refused.append((src, f"not a photo ({src.suffix or 'no suffix'})"))
        else:
            try:
                read_image(src)
            except (ValueError, OSError) as exc:
                out.refused.append((src, f"does not decode: {exc}"))
            else:
                good.append(src)
    if not good:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    there = {_digest(f): f for f in list_files(folder)}
    for src in good:
        digest = _digest(src)
        if digest in there:
            out.present.append((src, there[digest]))
            continue
        # copied under a hidden name first (the classifier's folder watch skips hidden
        # files), then linked into place whole
        tmp = folder / f".{uuid.uuid4().hex}.part"
        try:
            shutil.copyfile(src, tmp)
            target = _place_copy(tmp, _free_name(folder, src.name))
        finally:
            tmp.unlink(missing_ok=True)
        there[digest] = target
        out.copied.append((src, target))
    return out


# --- remove and forget -----------------------------------------------------------------


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def remove_folder(folder: Path) -> int:
    """Delete ``folder`` (a link: the link alone); how many files it held."""
    if folder.is_symlink():
        folder.unlink()
        return 0
    n = _count_files(folder)
    shutil.rmtree(folder)
    return n


def _stamp_path(stamp: str) -> Path:
    return Path(stamp.rsplit("|", 2)[0])  # EmbeddingCache.stamp: "<path>|<size>|<mtime>"


def drop_cache_entries(cache_dir: Path, folders: list[Path], dry_run: bool = False) -> int:
    """Remove from every embedding cache in ``cache_dir`` (``*.npz``, any model) the
    entries of files below ``folders``; how many there were. Each cache is rewritten
    whole (to a temporary file, then renamed), its other entries unchanged."""
    if not cache_dir.is_dir():
        return 0
    total = 0
    for path in sorted(cache_dir.glob("*.npz")):
        if path.name.startswith(".") or path.name.endswith(".part.npz"):
            continue  # being written
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            print(f"facewire gallery: cannot read the cache {path.name}: {exc}", file=sys.stderr)
            continue
        stamps = arrays.get("stamps")
        if stamps is None or stamps.ndim != 1:
            continue
        drop = np.array(
            [any(_stamp_path(str(s)).is_relative_to(f) for f in folders) for s in stamps], bool
        )
        n = int(drop.sum())
        total += n
        if not n or dry_run:
            continue
        keep = ~drop
        rows = len(stamps)
        kept = {k: (v[keep] if v.ndim >= 1 and len(v) == rows else v) for k, v in arrays.items()}
        tmp = path.with_name(f".{path.stem}.forget.npz")
        np.savez(tmp, **kept)
        tmp.replace(path)
    return total


def monitor_rows(db: Path, name: str, delete: bool) -> int:
    """The monitor log's detections naming ``name``, as the frame's name or its track's
    decision (deleted with ``delete``). The file must exist; with ``secure_delete`` the
    rows' bytes are overwritten, not only unlinked."""
    if not db.is_file():
        raise FileNotFoundError(f"no monitor database {db}")
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=10.0)
    try:
        con.execute("PRAGMA secure_delete = ON")
        columns = {r[1] for r in con.execute("PRAGMA table_info(detections)")}
        # a log no monitor of this version opened yet has no track decisions
        where, args = "name = ?", [name]
        if "track_name" in columns:
            where, args = "name = ? OR track_name = ?", [name, name]
        if not delete:
            found = con.execute(f"SELECT COUNT(*) FROM detections WHERE {where}", args)
            return int(found.fetchone()[0])
        with con:
            cur = con.execute(f"DELETE FROM detections WHERE {where}", args)
        with contextlib.suppress(sqlite3.Error):  # a reader holds the WAL: the next one
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old pages out of the WAL too
        return int(cur.rowcount)
    except sqlite3.Error as exc:
        raise ValueError(f"monitor database {db}: {exc}") from None
    finally:
        con.close()


def _folders_of(place: Place, name: str) -> list[Path]:
    """Where the cache may have recorded the person's files (stamps hold resolved paths):
    the folder, and what it links to."""
    folder = place.folder(name)
    found = [folder.absolute(), folder.resolve()]
    return list(dict.fromkeys(found))


def forget(
    place: Place, name: str, monitor_db: Path | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Every trace of ``name``: what was (with ``dry_run``: would be) deleted. The audit
    line in the enrolment store lists it all."""
    folder = place.folder(name)
    monitor = monitor_rows(monitor_db, name, delete=False) if monitor_db else None
    folders = _folders_of(place, name)
    exists = folder.is_dir() or folder.is_symlink()
    out: dict[str, Any] = {
        "folder": exists,
        "folder_link": folder.is_symlink(),
        "files": (0 if folder.is_symlink() else _count_files(folder)) if exists else 0,
    }
    if dry_run:
        out["cache_entries"] = drop_cache_entries(place.cache_dir, folders, dry_run=True)
        store = place.store(create=False)
        held = store.people().get(name, {}) if store is not None else {}
        if store is not None:
            store.close()
        out["enrolled"] = sum(v for k, v in held.items() if k != "corrections")
        out["corrections"] = held.get("corrections", 0)
        if monitor is not None:
            out["monitor_rows"] = monitor
        return out
    if exists:  # first: a classifier rebuilding meanwhile then sees no photo to cache
        out["files"] = remove_folder(folder)
    out["cache_entries"] = drop_cache_entries(place.cache_dir, folders)
    if monitor_db is not None:
        out["monitor_rows"] = monitor_rows(monitor_db, name, delete=True)
    store = place.store(create=True)
    assert store is not None
    try:
        out.update(store.forget(name, detail=dict(out)))
    finally:
        store.close()
    return out


# --- the reload ------------------------------------------------------------------------


def request_reload(
    transport: Transport, wait: float, connect_timeout: float = 10.0
) -> GalleryReply | None:
    """Ask the classifier to reload (``faces/gallery/reload``) and return its reply, or
    ``None`` after ``wait`` seconds. Connects ``transport`` if need be; closing it is the
    caller's."""
    request = GalleryReload(request_id=uuid.uuid4().hex)
    got = threading.Event()
    replies: list[GalleryReply] = []

    def on_reply(m: Message) -> None:
        try:
            reply = GalleryReply.decode(m.payload)
        except WireError:
            return
        if reply.request_id == request.request_id and not got.is_set():
            replies.append(reply)
            got.set()

    transport.subscribe(topics.GALLERY_REPLIES, on_reply, qos=1)
    if not transport.connected:
        transport.connect(timeout=connect_timeout)
    transport.publish(topics.RELOAD, request.encode(), qos=1)
    got.wait(wait)
    return replies[0] if replies else None


def _reload(cfg: ClassifierConfig, wait: float) -> int:
    from facewire.bus.client import BusClient

    transport = BusClient(cfg.broker, f"gallery-{os.getpid()}")
    try:
        reply = request_reload(transport, wait)
    except (TimeoutError, ConnectionError, OSError) as exc:
        print(f"facewire gallery: broker {cfg.broker.address}: {exc}", file=sys.stderr)
        return 1
    finally:
        transport.close()
    if reply is None:
        print(
            f"facewire gallery: no classifier answered the reload within {wait:g} s",
            file=sys.stderr,
        )
        return 1
    if not reply.ok:
        print(f"reload: the classifier kept its gallery: {reply.detail}")
        return 1
    print(
        f"reload: {reply.detail}; gallery {reply.version}: {reply.identities} people, "
        f"{reply.vectors} vectors"
    )
    return 0


# --- the command -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: config/classifier.yaml)"
    )
    add_setting_flag(common, "dataset", cls=ClassifierConfig)
    common.add_argument(
        "--cache-dir",
        default=None,
        metavar="PATH",
        help="the gallery's cache folder, where the embedding caches and the enrolment "
        "store are (default: the config's cache_dir, else <dataset>/.facewire-cache)",
    )
    changes = argparse.ArgumentParser(add_help=False)
    add_setting_flag(changes, "broker.url", cls=ClassifierConfig)
    changes.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"with --broker: how long to wait for the classifier's reply (default: "
        f"{DEFAULT_WAIT_S:g})",
    )
    p = argparse.ArgumentParser(
        prog="facewire gallery",
        description="The gallery's people, where its folder is: list them, add photos, "
        "remove a person's folder or forget every trace of them. The running classifier "
        "notices changes to the folder by itself; --broker URL also asks it to reload "
        "and prints its reply. Settings: config/classifier.yaml < FACEWIRE_* env < flags.",
        epilog="Exit status: 0 done; 1 something refused or not found, or the reload "
        "not answered; 2 bad arguments or config, or --yes missing.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = sub.add_parser(
        "list",
        parents=[common],
        help="each person: photos, enrolled vectors by source, corrections",
        description="Each person: photos in the folder, vectors enrolled by source "
        "(camera, sighting, auto) and corrections, from the enrolment store.",
    )
    ls.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    add = sub.add_parser(
        "add",
        parents=[common, changes],
        help="copy photos into <dataset>/<NAME>/",
        description="Copy photos into <dataset>/<NAME>/ (made if need be), never "
        "overwriting: a name already taken gets -2, -3 …; files that are no photos or do "
        "not decode are refused, and a photo whose bytes are already there is not copied "
        "twice. The running classifier picks them up by its folder watch.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("photos", metavar="PHOTO", nargs="+", type=Path)
    rm = sub.add_parser(
        "remove",
        parents=[common, changes],
        help="delete a person's folder (keeps their enrolled vectors)",
        description="Delete <dataset>/<NAME>/ and its photos. Vectors enrolled for NAME "
        "(facewire enroll, the monitor) are kept: `forget` deletes those too.",
    )
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--yes", action="store_true", help="really delete (else: say what would go)")
    fg = sub.add_parser(
        "forget",
        parents=[common, changes],
        help="delete every trace of a person",
        description="Delete every trace of NAME: the folder and its photos, their entries "
        "in the embedding caches, their enrolled vectors and corrections (an audit line "
        "in the enrolment store says what went) and, with --monitor-db, the monitor's "
        "log rows named NAME.",
    )
    fg.add_argument("name", metavar="NAME")
    fg.add_argument("--yes", action="store_true", help="really delete (else: say what would go)")
    fg.add_argument(
        "--monitor-db", type=Path, default=None, metavar="PATH", help="the monitor's SQLite log"
    )
    return p


def load_config(args: argparse.Namespace) -> ClassifierConfig:
    overrides = overrides_from(args)
    if args.cache_dir is not None:
        overrides["cache_dir"] = args.cache_dir
    return config.load(
        ClassifierConfig, args.config or config.default_path("classifier"), overrides=overrides
    )


def _say(what: dict[str, Any], name: str, done: bool) -> str:
    verb = "deleted" if done else "would delete"
    parts = []
    if what.get("folder_link"):
        parts.append(f"the link {name}/ (what it leads to is left alone)")
    elif what.get("folder"):
        parts.append(f"the folder {name}/ with {what['files']} files")
    parts.append(f"{what.get('cache_entries', 0)} embedding cache entries")
    if "enrolled" in what:
        parts.append(f"{what['enrolled']} enrolled vectors, {what['corrections']} corrections")
    if "monitor_rows" in what:
        parts.append(f"{what['monitor_rows']} monitor log rows")
    return f"{verb}: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = getattr(args, "name", None)
    if name is not None and (problem := check_name(name)) is not None:
        print(f"facewire gallery {args.command}: NAME: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        print(f"facewire gallery: {exc}", file=sys.stderr)
        return 2
    place = Place.of(cfg)
    reload = "broker.url" in overrides_from(args)
    if args.command == "list":
        rows = list_people(place)
        print(json.dumps(rows, indent=2) if args.json else format_people(rows))
        return 0
    if not place.dataset.is_dir():
        print(f"facewire gallery: no gallery folder {place.dataset}", file=sys.stderr)
        return 2
    try:
        status = _command(args, place, name or "")
    except OSError as exc:
        print(f"facewire gallery {args.command}: {exc}", file=sys.stderr)
        return 1
    if status == 0 and reload:
        status = _reload(cfg, args.wait)
    return status


def _command(args: argparse.Namespace, place: Place, name: str) -> int:
    folder = place.folder(name)
    if args.command == "add":
        added = add_photos(place, name, list(args.photos))
        for src, dest in added.copied:
            print(f"copied {src} → {dest.relative_to(place.dataset)}")
        for src, dest in added.present:
            print(f"already there: {src} (as {dest.relative_to(place.dataset)})")
        for src, reason in added.refused:
            print(f"refused {src}: {reason}", file=sys.stderr)
        print(f"{name}: {len(added.copied)} photos added, {len(list_photos(folder))} in all")
        return 1 if added.refused else 0
    if args.command == "remove":
        if not (folder.is_dir() or folder.is_symlink()):
            print(
                f"facewire gallery remove: {name} has no folder in {place.dataset}", file=sys.stderr
            )
            return 1
        if not args.yes:
            print(
                f"would delete {folder} with {_count_files(folder)} files "
                "(enrolled vectors are kept); add --yes to do it",
                file=sys.stderr,
            )
            return 2
        n = remove_folder(folder)
        print(
            f"deleted {name}/ with {n} files; enrolled vectors kept "
            f"(`facewire gallery forget {name}` deletes those too)"
        )
        return 0
    try:  # forget
        what = forget(place, name, args.monitor_db, dry_run=not args.yes)
    except (FileNotFoundError, ValueError) as exc:
        print(f"facewire gallery forget: {exc}", file=sys.stderr)
        return 2
    if not args.yes:
        print(f"{name}: {_say(what, name, done=False)}; add --yes to do it", file=sys.stderr)
        return 2
    print(f"{name}: {_say(what, name, done=True)}")
    if what["enrolled"] or what["corrections"]:
        print(
            "a running classifier uses the enrolled vectors until its next reload "
            "(--broker asks for one)"
        )
    if "monitor_rows" in what:
        print("a running monitor shows the rows it already holds until it restarts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
