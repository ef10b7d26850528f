"""The Flask app: JSON endpoints, the live pages and the server-sent-events stream.

``create_app(store, state)`` needs no broker, so tests can fill the store and state
directly; the subscriber fills them in production.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, render_template, request

from facewire.monitor.state import State
from facewire.monitor.store import NEAR_MARGIN, Store

__all__ = ["create_app", "MAX_LIMIT", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
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
    return value


def _str_arg(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    return value or None


def _sse(row: dict[str, Any]) -> str:
    data = json.dumps(row, separators=(",", ":"))
    return f"id: {row['id']}\nevent: detection\ndata: {data}\n\n"


def create_app(store: Store, state: State, *, keepalive_s: float = 15.0) -> Flask:
    """The monitor's web app over ``store`` and ``state``.

    ``keepalive_s``: how often an idle ``/log/stream`` sends a comment line, which
    keeps proxies from timing the stream out and notices a client that went away.
    """
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["SSE_KEEPALIVE_S"] = keepalive_s
    app.extensions["facewire.store"] = store
    app.extensions["facewire.state"] = state

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"near_margin": NEAR_MARGIN}

    # --- index and health ------------------------------------------------------------

    @app.get("/")
    def index() -> str:
        return render_template("index.html", active="index")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            detections = store.count()
            db_ok, db_error = True, None
        except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
            detections, db_ok, db_error = None, False, str(exc)
        body = {
            "ok": db_ok,
            "broker": {
                "address": state.broker_address,
                "connected": bool(state.broker_connected()),
            },
            "db": {"path": store.path, "ok": db_ok, "error": db_error},
            "detections": detections,
            "window": len(store.window()),
            "nodes": len(state.nodes()),
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
        limit = min(_int_arg("limit", DEFAULT_LIMIT, minimum=1) or DEFAULT_LIMIT, MAX_LIMIT)
        rows = store.query(
            node=_str_arg("node"),
            name=_str_arg("name"),
            limit=limit,
            since=_int_arg("since", minimum=0),
            before=_int_arg("before", minimum=0),
            raw=request.args.get("raw", "") in ("1", "true", "yes"),
        )
        return jsonify(detections=rows, count=len(rows), limit=limit, last_id=store.last_id())

    @app.get("/log/html")
    def log_html() -> str:
        return render_template("log.html", active="log")

    @app.get("/log/stream")
    def log_stream() -> Response:
        node, name = _str_arg("node"), _str_arg("name")
        # An EventSource reconnecting sends Last-Event-ID: resume after what it saw.
        last_event = request.headers.get("Last-Event-ID", "").strip()
        since = int(last_event) if last_event.isdigit() else _int_arg("since", minimum=0)
        keepalive = float(app.config["SSE_KEEPALIVE_S"])
        listener = store.feed.listen()  # before the backlog query: nothing falls between

        def events() -> Iterator[str]:
            try:
                yield "retry: 2000\n: connected\n\n"
                sent = since or 0
                if since is not None:
                    backlog = store.query(node, name, MAX_LIMIT, since=since, oldest_first=True)
                    for row in backlog:
                        sent = row["id"]
                        yield _sse(row)
                while True:
                    try:
                        row = listener.get(timeout=keepalive)
                    except queue.Empty:
                        yield ": keep-alive\n\n"
                        continue
                    if row is None:  # the store is closing
                        return
                    if row["id"] <= sent:
                        continue
                    if (node and row["node"] != node) or (name and row["name"] != name):
                        continue
                    sent = row["id"]
                    yield _sse(row)
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
        """Nodes, the classifier and, per node, ``result_latency``: [received_at, ms] of
        the logged results of the last ``window_s`` seconds (default 900)."""
        now = time.time()
        window_s = _int_arg("window_s", LATENCY_WINDOW_S, minimum=1) or LATENCY_WINDOW_S
        nodes = {n["node"]: n for n in state.nodes(now)}
        results: dict[str, list[list[float]]] = {}
        for row in store.window():
            results.setdefault(row["node"], [])
            if row["latency_ms"] is not None and row["received_at"] >= now - window_s:
                results[row["node"]].append([row["received_at"], row["latency_ms"]])
            if row["node"] not in nodes:  # known only from the log (e.g. after a restart)
                nodes[row["node"]] = {
                    "node": row["node"],
                    "state": "unknown",
                    "last_seen": None,
                    "results": 0,
                    "errors": 0,
                    "history": [],
                }
        for name, entry in nodes.items():
            entry["result_latency"] = results.get(name, [])
            if entry.get("last_seen") is None:
                rows = store.window(node=name)
                if rows:
                    entry["last_seen"] = rows[-1]["received_at"]
                    entry["age_s"] = round(now - rows[-1]["received_at"], 3)
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
