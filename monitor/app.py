"""The Flask app: JSON endpoints, the live pages and the server-sent-events stream.

``create_app(store, state)`` needs no broker, so tests can fill the store and state
directly; the subscriber fills them in production.

Threads: every request runs on a web server thread and owns nothing. It reads the
store through the store's read-only connections (never the writer's, never under the
writer's lock) and the store's window and the state as snapshots copied under their
locks. No request does unbounded work: every SQL query has a limit and an index,
``/healthz`` reads the trigger-kept row count (one row) instead of ``COUNT(*)``,
``/nodes`` makes one pass over the bounded window, the stream's backlog is at most
``MAX_LIMIT`` rows, and at most ``max_streams`` streams (each holds a thread) are open.
Every response is bounded too: rows are capped per field where they are stored, a
``raw`` page holds at most ``MAX_RAW_LIMIT`` rows, the state keeps at most
``max_nodes`` nodes.

Who may ask is :mod:`~facewire.monitor.auth`'s business: with an account or a token
every route but ``/login`` and the static files needs a login (or the token), and
``POST /api/teach`` also a CSRF token and its rate limit.
"""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST

from facewire.bus import topics
from facewire.bus.errors import WireError
from facewire.bus.messages import UNKNOWN
from facewire.bus.messages.gallery import name_problem
from facewire.monitor.auth import Auth
from facewire.monitor.metrics import MonitorMetrics
from facewire.monitor.state import State
from facewire.monitor.store import NEAR_MARGIN, Store

__all__ = ["create_app", "MAX_LIMIT", "DEFAULT_LIMIT", "MAX_STREAMS", "LATE_AFTER_S"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: /log?raw=1 carries each row's message (up to a few KB): fewer rows per page.
MAX_RAW_LIMIT = 200
#: Default for ``late_after_s`` (config ``monitor.late_after_s``).
LATE_AFTER_S = 5.0
#: Open /log/stream connections at most; each one holds a server thread.
MAX_STREAMS = 64
#: SQLite's INTEGER range: a larger id or limit is a 400, not an OverflowError.
_MAX_INT = 2**63 - 1
_EVENT_ID = re.compile(r"[0-9]{1,18}")
#: /nodes: how far back the per-result latency points go (seconds). The log survives a
#: restart; points from an earlier run would stretch the "seconds ago" axis over hours.
LATENCY_WINDOW_S = 900
NO_THRESHOLDS = (
    "no message on faces/stats/thresholds yet: the classifier publishes it (retained) "
    "every stats_interval_s once it is running"
)


class BadRequest(ValueError):
    pass


def _int_arg(name: str, default: int | None = None, minimum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"'{name}' must be >= {minimum}, got {value}")
    if value > _MAX_INT:
        raise BadRequest(f"'{name}' must be <= {_MAX_INT}, got {value}")
    return value


def _str_arg(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    return value or None


def _sse(row: dict[str, Any]) -> str:
    data = json.dumps(row, separators=(",", ":"), allow_nan=False)
    return f"id: {row['id']}\nevent: detection\ndata: {data}\n\n"


#: (node, seq, name, wrong) → request id: sends an enrolment or a correction
Teach = Callable[[str, int, str, bool], str]


def create_app(
    store: Store,
    state: State,
    *,
    keepalive_s: float = 15.0,
    max_streams: int = MAX_STREAMS,
    teach: Teach | None = None,
    auth: Auth | None = None,
    late_after_s: float = LATE_AFTER_S,
) -> Flask:
    """The monitor's web app over ``store`` and ``state``.

    ``keepalive_s``: how often an idle ``/log/stream`` sends a comment line, which
    keeps proxies from timing the stream out and notices a client that went away.
    ``max_streams``: open ``/log/stream`` connections at most; more get a 503.
    ``teach``: how ``POST /api/teach`` reaches the classifier (without it: 503).
    ``auth``: accounts and token (:class:`~facewire.monitor.auth.Auth`); without it
    there is no login, so serve such an app on loopback only (the CLI checks).
    ``late_after_s``: a row received more than this after its capture is ``late``.
    """
    app = Flask(__name__)
    auth = auth if auth is not None else Auth()
    auth.install(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["SSE_KEEPALIVE_S"] = keepalive_s
    app.config["SSE_MAX_STREAMS"] = max_streams
    app.extensions["facewire.store"] = store
    app.extensions["facewire.state"] = state

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"near_margin": NEAR_MARGIN, "late_after_s": late_after_s}

    def with_late(row: dict[str, Any]) -> dict[str, Any]:
        # A copy: rows from the window and the feed are shared.
        delay = row.get("delay_s")
        return {**row, "late": delay is not None and delay > late_after_s}

    # --- index and health ------------------------------------------------------------

    @app.get("/")
    def index() -> str:
        return render_template("index.html", active="index")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        """Liveness and counters. ``detections`` is read from the row counter SQLite
        keeps (one row, no scan); that read is also the database probe. ``db.ok`` is
        false when that fails or the writer cannot write (``writer.error``)."""
        writer = store.stats()
        try:
            detections: int | None = store.count()
            db_ok, db_error = True, None
        except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
            detections, db_ok, db_error = None, False, str(exc)
        if db_ok and (not writer["writer_alive"] or writer["writer_error"]):
            db_ok, db_error = False, writer["writer_error"] or "the writer thread is gone"
        body = {
            "ok": db_ok,
            "broker": {
                "address": state.broker_address,
                "connected": bool(state.broker_connected()),
            },
            "db": {"path": store.path, "ok": db_ok, "error": db_error},
            "detections": detections,
            "last_id": writer["last_id"],
            "writer": {
                "queued": writer["queued"],
                "written": writer["written"],
                "dropped": writer["dropped"],
                "failed": writer["failed"],
                "alive": writer["writer_alive"],
                "error": writer["writer_error"],
            },
            "window": writer["window"],
            "nodes": len(state.nodes()),
            "nodes_forgotten": state.nodes_forgotten,
            "errors": state.errors_total(),
            "malformed": state.malformed_total,
            "messages": state.counts(),
            "stream_clients": store.feed.listeners,
            "uptime_s": round(time.time() - state.started_at, 3),
        }
        return jsonify(body), 200 if db_ok else 503

    # --- detection log ---------------------------------------------------------------

    @app.get("/log")
    def log_json() -> Response:
        raw = request.args.get("raw", "") in ("1", "true", "yes")
        limit = min(
            _int_arg("limit", DEFAULT_LIMIT, minimum=1) or DEFAULT_LIMIT,
            MAX_RAW_LIMIT if raw else MAX_LIMIT,
        )
        # Read before the query: a client resuming the stream from last_id when no row
        # matched must not skip a row committed in between.
        last_id = store.last_id()
        rows = store.query(
            node=_str_arg("node"),
            name=_str_arg("name"),
            limit=limit,
            since=_int_arg("since", minimum=0),
            before=_int_arg("before", minimum=0),
            raw=raw,
        )
        rows = [with_late(r) for r in rows]
        return jsonify(detections=rows, count=len(rows), limit=limit, last_id=last_id)

    @app.get("/log/html")
    def log_html() -> str:
        return render_template("log.html", active="log")

    @app.get("/log/stream")
    def log_stream() -> Response | tuple[Response, int]:
        """New rows as server-sent events, after a backlog of those newer than ``since``
        (or the ``Last-Event-ID`` a reconnecting EventSource sends). The backlog is the
        *newest* ``MAX_LIMIT`` such rows; if more were missed, an ``event: gap`` comes
        first (data: ``since`` and ``first``, the oldest id replayed) so the page can
        reload the table from ``/log``. A stream too slow for the live feed catches up
        the same way, so it loses no row silently."""
        node, name = _str_arg("node"), _str_arg("name")
        # An EventSource reconnecting sends Last-Event-ID: resume after what it saw.
        last_event = request.headers.get("Last-Event-ID", "").strip()
        if _EVENT_ID.fullmatch(last_event):
            since: int | None = int(last_event)
        else:
            since = _int_arg("since", minimum=0)
        keepalive = float(app.config["SSE_KEEPALIVE_S"])
        if store.feed.listeners >= int(app.config["SSE_MAX_STREAMS"]):
            resp = jsonify(error="too many open event streams; retry later")
            resp.headers["Retry-After"] = "5"
            return resp, 503
        # Without since: from the newest committed row on (read before listening, so
        # rows committed in between come with the backlog).
        start = since if since is not None else store.last_id()
        listener = store.feed.listen()  # before the backlog query: nothing falls between

        def replay(after: int) -> tuple[list[str], int]:
            """Events for the rows after id ``after`` (at most MAX_LIMIT, the newest,
            behind a gap event if there were more) and the newest id among them."""
            rows = store.query(node, name, MAX_LIMIT + 1, since=after)
            out = []
            if len(rows) > MAX_LIMIT:
                del rows[MAX_LIMIT:]
                gap = {"since": after, "first": rows[-1]["id"]}
                out.append(f"event: gap\ndata: {json.dumps(gap)}\n\n")
            out.extend(_sse(with_late(row)) for row in reversed(rows))  # oldest first
            return out, rows[0]["id"] if rows else after

        def events() -> Iterator[str]:
            try:
                yield "retry: 2000\n: connected\n\n"
                backlog, sent = replay(start)
                yield from backlog
                while True:
                    try:
                        row, idle = listener.get(timeout=keepalive), False
                    except queue.Empty:
                        row, idle = None, True
                    if listener.take_missed():  # the feed had no room: catch up from SQLite
                        missed, sent = replay(sent)
                        yield from missed
                    if idle:
                        yield ": keep-alive\n\n"
                        continue
                    if row is None:  # the store is closing
                        return
                    if row["id"] <= sent:
                        continue
                    if (node and row["node"] != node) or (name and row["name"] != name):
                        continue
                    sent = row["id"]
                    yield _sse(with_late(row))
            finally:  # client gone (write failed) or server shutting down
                store.feed.unlisten(listener)

        resp = Response(events(), mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return resp

    # --- thresholds ------------------------------------------------------------------

    @app.get("/threshold_stats")
    def threshold_stats() -> Response:
        stats, at = state.threshold_stats()
        if stats is None:
            return jsonify(available=False, reason=NO_THRESHOLDS)
        return jsonify({**stats, "available": True, "received_at": at})

    @app.get("/threshold_stats/html")
    def threshold_stats_html() -> str:
        return render_template("thresholds.html", active="thresholds")

    # --- nodes -----------------------------------------------------------------------

    @app.get("/nodes")
    def nodes_json() -> Response:
        """Nodes, the classifier and, per node, ``result_stages_ms``: [received_at, ms]
        of the results in the in-memory window from the last ``window_s`` seconds
        (default 900), ms being the sum of the result's stage durations — not capture →
        result, which is the node's own ``latency_ms`` p50/p99. ``result_latency`` is
        the same list under its old name, kept for compatibility."""
        now = time.time()
        window_s = _int_arg("window_s", LATENCY_WINDOW_S, minimum=1) or LATENCY_WINDOW_S
        nodes = {n["node"]: n for n in state.nodes(now)}
        results: dict[str, list[list[float]]] = {}
        last_at: dict[str, float] = {}
        for row in store.window():  # one pass over a bounded window, oldest first
            points = results.setdefault(row["node"], [])
            last_at[row["node"]] = row["received_at"]
            if row["stages_ms"] is not None and row["received_at"] >= now - window_s:
                points.append([row["received_at"], row["stages_ms"]])
            # Known only from the log (e.g. after a restart), within the state's cap.
            if row["node"] not in nodes and len(nodes) < state.max_nodes:
                nodes[row["node"]] = {
                    "node": row["node"],
                    "state": "unknown",
                    "last_seen": None,
                    "results": 0,
                    "errors": 0,
                    "history": [],
                }
        for name, entry in nodes.items():
            entry["result_stages_ms"] = entry["result_latency"] = results.get(name, [])
            if entry.get("last_seen") is None and name in last_at:
                entry["last_seen"] = last_at[name]
                entry["age_s"] = round(now - last_at[name], 3)
        return jsonify(
            now=now,
            window_s=window_s,
            nodes=[nodes[k] for k in sorted(nodes)],
            classifier=state.classifier(),
            broker={"address": state.broker_address, "connected": bool(state.broker_connected())},
        )

    @app.get("/nodes/html")
    def nodes_html() -> str:
        return render_template("nodes.html", active="nodes")

    # --- teaching: name a sighting, or say its name was wrong -------------------------

    @app.post("/api/teach")
    def teach_json() -> tuple[Response, int]:
        """``{"node", "seq", "name", "wrong"}``: with ``wrong`` false, the classifier
        learns the sighting's face as ``name``; with ``wrong`` true, that it was *not*
        ``name``. The answer comes on ``/gallery/replies?request_id=``."""
        # Counted before anything else: a flood of bad requests is a flood too.
        wait = auth.teaching.take(request.remote_addr or "?")
        if wait:
            resp = jsonify(error=f"too many teach requests; retry in {wait:.0f} s")
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp, 429
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object {node, seq, name, wrong}")
        node, seq, name, wrong = (data.get(k) for k in ("node", "seq", "name", "wrong"))
        try:
            node = topics.check_node_id(node)
        except WireError as exc:
            raise BadRequest(exc.detail) from None
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**32:
            raise BadRequest("'seq' must be the result's seq (an integer)")
        if not isinstance(name, str) or not name.strip() or len(name.encode()) > 128:
            raise BadRequest("'name' must be a name of at most 128 bytes")
        name = name.strip()
        problem = name_problem(name)
        if problem is not None and not (wrong and name == UNKNOWN):
            raise BadRequest(f"not a name: {problem}")
        if not isinstance(wrong, bool):
            raise BadRequest("'wrong' must be true or false")
        if teach is None:
            return jsonify(error="this monitor cannot reach the classifier"), 503
        try:
            request_id = teach(node, seq, name, wrong)
        except RuntimeError as exc:
            return jsonify(error=str(exc)), 503
        return jsonify(request_id=request_id, sent=True), 202

    @app.get("/gallery/replies")
    def gallery_replies() -> Response:
        """The classifier's recent ``faces/gallery/reply`` messages, newest first."""
        return jsonify(replies=state.gallery_replies(_str_arg("request_id")))

    # --- metrics ---------------------------------------------------------------------

    metrics = MonitorMetrics(store, state)

    @app.get("/metrics")
    def metrics_text() -> Response:
        """Prometheus text format (docs/metrics.md). Behind the login like every page:
        Prometheus sends the bearer token."""
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    # --- errors ----------------------------------------------------------------------

    @app.get("/errors")
    def errors_json() -> Response:
        limit = min(_int_arg("limit", DEFAULT_LIMIT, minimum=1) or DEFAULT_LIMIT, MAX_LIMIT)
        errors = state.errors(limit=limit, node=_str_arg("node"))
        return jsonify(
            errors=errors,
            count=len(errors),
            total=state.errors_total(),
            malformed={"total": state.malformed_total, "recent": state.malformed_recent()},
        )

    return app
