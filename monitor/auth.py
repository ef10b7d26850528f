"""Who may see the monitor: accounts with hashed passwords, a bearer token, sessions.

The pages and JSON show who was where and when, so off loopback every request needs a
login (issue 12, item 8):

- accounts are ``name:hash`` pairs from the config (``users``, ``users_file``); a hash
  is ``scrypt$n$r$p$salt$key`` (:func:`hash_password`, ``facewire monitor
  hash-password``), checked in constant time;
- a browser logs in on ``/login`` and gets a session cookie signed with the app's
  secret key (HttpOnly, SameSite=Strict); the session remembers a fingerprint of the
  account's hash, so changing a password or removing the account ends it;
- a script sends ``Authorization: Bearer <token>`` instead;
- a request changing something (``POST``) also needs, from a browser session, the
  session's CSRF token in ``X-CSRF-Token`` (the pages send it), and from anywhere an
  ``Origin``/``Referer``, when given, of this very host: another site cannot make the
  operator's browser teach the classifier;
- failed logins and teaching are rate-limited per client address.

Without any account (loopback only, see :func:`check_exposure`) there is no login,
but requests must still name a loopback host (``Host:``), which keeps a web page from
reaching the monitor through DNS rebinding, and ``POST`` keeps the same-origin check.

Threads: :class:`RateLimit` is used by every web server thread, under its own lock.
Everything else is read-only once the app is made.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, redirect, render_template, request, session, url_for

__all__ = [
    "Auth",
    "RateLimit",
    "check_exposure",
    "hash_password",
    "is_loopback",
    "load_secret_key",
    "parse_users",
    "verify_password",
]

# scrypt at n=2^14, r=8, p=1: ~16 MB and ~50 ms per check here; slow enough for a
# guesser, fast enough for a login.
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024
MIN_TOKEN = 16
#: Endpoints anyone may reach: the login form itself and the stylesheet/scripts.
PUBLIC = frozenset({"login", "static"})
#: Methods that change something: they need the CSRF guard.
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt$n$r$p$salt$key`` for ``password`` (a fresh 16-byte salt each time)."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _check_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a facewire password hash (scrypt$n$r$p$salt$key)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ValueError("a damaged password hash (scrypt$n$r$p$salt$key)") from None
    # Bounds so a config cannot make one login take gigabytes or minutes.
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("password hash parameters out of range")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("a damaged password hash (salt or key too short)")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare; a bad hash is
    simply no match)."""
    try:
        n, r, p, salt, key = _check_hash(stored)
        got = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(key)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, key)


def parse_users(text: str, source: str = "users") -> dict[str, str]:
    """``name:hash`` entries separated by commas, spaces or newlines (``#`` starts a
    comment up to the end of its line); ``ValueError`` naming the bad entry."""
    users: dict[str, str] = {}
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    for entry in " ".join(lines).replace(",", " ").split():
        name, sep, stored = entry.partition(":")
        if not sep or not name or not stored:
            raise ValueError(f"{source}: {entry[:40]!r} is not 'name:hash'")
        if len(name) > 64:
            raise ValueError(f"{source}: account name {name[:40]!r}… is over 64 characters")
        try:
            _check_hash(stored)
        except ValueError as exc:
            raise ValueError(f"{source}: account {name!r}: {exc}") from None
        if name in users:
            raise ValueError(f"{source}: account {name!r} is given twice")
        users[name] = stored
    return users


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` serves this machine only."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, users: Mapping[str, str], token: str) -> None:
    """``ValueError`` (the operator's message) when serving on ``host`` would show the
    log to anyone who can reach it, or the token is too easy to guess."""
    if token and len(token) < MIN_TOKEN:
        raise ValueError(f"monitor token: at least {MIN_TOKEN} characters, got {len(token)}")
    if not is_loopback(host) and not users and not token:
        raise ValueError(
            f"refusing to serve on {host!r} without a login: the monitor shows who was "
            "where. Add an account (users: 'name:hash', the hash from `facewire monitor "
            "hash-password`) or a token (FACEWIRE_TOKEN), or serve on 127.0.0.1"
        )


def load_secret_key(configured: str, db: str) -> bytes:
    """The key that signs session cookies: the configured one, else one made once and
    kept (mode 0600) in ``monitor-secret.key`` next to the detection log, so logins
    survive a restart; for an in-memory log a fresh one per run."""
    if configured:
        return configured.encode()
    if db == ":memory:":
        return secrets.token_bytes(32)
    path = Path(db).resolve().parent / "monitor-secret.key"
    try:
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_bytes(key)
    tmp.replace(path)
    return key


class RateLimit:
    """At most ``per_min`` events per key in any 60 s; at most ``keys`` keys tracked
    (the least recently used forgotten), so a flood of addresses stays bounded."""

    def __init__(self, per_min: int, keys: int = 10_000, window_s: float = 60.0) -> None:
        self.per_min = per_min
        self._window = window_s
        self._max_keys = keys
        self._lock = threading.Lock()
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        return hits

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: it may now)."""
        now = time.monotonic()
        with self._lock:
            hits = self._recent(key, now)
            if len(hits) < self.per_min:
                return 0.0
            return max(0.1, hits[0] + self._window - now)

    def hit(self, key: str) -> None:
        with self._lock:
            self._recent(key, time.monotonic()).append(time.monotonic())

    def take(self, key: str) -> float:
        """Count one event unless blocked; returns :meth:`blocked`'s answer before it."""
        now = time.monotonic()
        with self._lock:
            hits = self._recent(key, now)
            if len(hits) >= self.per_min:
                return max(0.1, hits[0] + self._window - now)
            hits.append(now)
            return 0.0


def _fingerprint(stored: str) -> str:
    return hashlib.sha256(stored.encode()).hexdigest()[:16]


def _client() -> str:
    return request.remote_addr or "?"


def _same_origin() -> bool:
    """An ``Origin`` (or, without it, a ``Referer``) that names another host is a
    cross-site request. Browsers send one of them on every cross-site POST; a request
    with neither comes from a script, which cannot ride on someone's session."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc.lower() == request.host.lower()


class Auth:
    """The login of one app: install with :meth:`install` (``create_app`` does).

    ``users``: name → hash; ``token``: a bearer token ("" for none). With neither the
    login is off (see the module text for what is checked then). ``secret_key`` signs
    the session cookies; ``session_s`` is how long a login lasts.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        token: str = "",
        *,
        secret_key: bytes | str | None = None,
        session_s: float = 12 * 3600,
        login_per_min: int = 10,
        teach_per_min: int = 30,
    ) -> None:
        self.users = dict(users or {})
        self.token = token
        self.secret_key = secret_key or secrets.token_bytes(32)
        self.session_s = session_s
        self.logins = RateLimit(login_per_min)
        self.teaching = RateLimit(teach_per_min)

    @property
    def required(self) -> bool:
        return bool(self.users or self.token)

    # --- who is asking ---------------------------------------------------------------

    def _bearer(self) -> bool | None:
        """True/False for a request with a bearer token (right/wrong), None without."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        given = header[7:].strip()
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def _session_user(self) -> str | None:
        name = session.get("user")
        stored = self.users.get(name) if isinstance(name, str) else None
        if stored is None or session.get("fp") != _fingerprint(stored):
            return None  # no such account (any more), or its password changed
        at = session.get("at")
        if not isinstance(at, int | float) or time.time() - at > self.session_s:
            return None
        return name

    def csrf_token(self) -> str:
        token = session.get("csrf")
        if not isinstance(token, str):
            token = session["csrf"] = secrets.token_urlsafe(24)
        return token

    # --- the hooks -------------------------------------------------------------------

    def install(self, app: Flask) -> None:
        app.secret_key = self.secret_key
        app.config.update(
            SESSION_COOKIE_NAME="facewire_session",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Strict",
            PERMANENT_SESSION_LIFETIME=self.session_s,
        )
        app.extensions["facewire.auth"] = self
        app.before_request(self._guard)

        @app.context_processor
        def _auth_globals() -> dict[str, Any]:
            return {
                "login_required": self.required,
                "user": session.get("user") if self.required else None,
                "csrf_token": self.csrf_token,
            }

        @app.route("/login", methods=["GET", "POST"])
        def login() -> Any:
            nxt = request.values.get("next", "")
            # Only a path on this site: no open redirect to somewhere else.
            if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
                nxt = url_for("index")
            if not self.users:
                if not self.required:
                    return redirect(nxt)
                return self._login_page(nxt, "this monitor takes a bearer token, no login", 403)
            if request.method == "GET":
                return self._login_page(nxt, "", 200)
            if not _same_origin():
                return self._login_page(nxt, "a login must come from this site", 403)
            name = request.form.get("user", "")[:64]
            wait = max(self.logins.blocked(_client()), self.logins.blocked(f"user:{name}"))
            if wait:
                page = self._login_page(nxt, "too many failed logins; try again later", 429)
                page.headers["Retry-After"] = str(int(wait) + 1)
                return page
            stored = self.users.get(name)
            password = request.form.get("password", "")
            # A missing account costs the same scrypt as a wrong password.
            ok = verify_password(password, stored or _dummy_hash())
            if not ok or stored is None:
                self.logins.hit(_client())
                self.logins.hit(f"user:{name}")
                return self._login_page(nxt, "wrong name or password", 401)
            session.clear()
            session.permanent = True
            session.update(
                user=name, fp=_fingerprint(stored), at=time.time(), csrf=secrets.token_urlsafe(24)
            )
            return redirect(nxt)

        @app.post("/logout")
        def logout() -> Any:
            session.clear()
            return redirect(url_for("login"))

    def _login_page(self, nxt: str, error: str, status: int) -> Response:
        html = render_template("login.html", next=nxt, error=error, has_users=bool(self.users))
        return Response(html, status=status, mimetype="text/html")

    def _guard(self) -> Any:
        """Runs before every request (also for unknown paths and static files)."""
        if not self.required:
            if not is_loopback(_request_hostname()):
                return _refuse(
                    403,
                    "this monitor serves loopback only (no login configured); reach it as "
                    "127.0.0.1 or localhost",
                )
            if request.method in UNSAFE and not _same_origin():
                return _refuse(403, "cross-site request refused")
            return None
        if request.endpoint in PUBLIC:
            return None
        bearer = self._bearer()
        if bearer is True:
            return None  # a script: no cookie, so no CSRF to guard against
        if bearer is False:
            return _refuse(401, "wrong token")
        if self._session_user() is None:
            if request.method == "GET" and _wants_html():
                return redirect(url_for("login", next=request.full_path.rstrip("?")))
            return _refuse(401, "login required")
        if request.method in UNSAFE:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf", "")
            expected = session.get("csrf")
            if (
                not _same_origin()
                or not isinstance(expected, str)
                or not hmac.compare_digest(sent.encode(), expected.encode())
            ):
                return _refuse(403, "missing or wrong CSRF token (X-CSRF-Token)")
        return None


@functools.cache
def _dummy_hash() -> str:
    """Checked when the account does not exist, so timing does not tell names apart."""
    return hash_password(secrets.token_urlsafe(12))


def _request_hostname() -> str:
    return urlsplit("//" + request.host).hostname or ""


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "text/html" and request.accept_mimetypes["text/html"] > 0


def _refuse(status: int, message: str) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="facewire monitor"'
    return resp
