"""The monitor's login (issue 12, item 8): every route behind it, sessions, the token,
the CSRF guard on teaching, rate limits, and the refusal to serve off loopback
without an account. Pure HTTP logic: the Flask test client."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from facewire.config.schema import MonitorConfig
from facewire.monitor import cli
from facewire.monitor.app import create_app
from facewire.monitor.auth import (
    PUBLIC,
    Auth,
    check_exposure,
    hash_password,
    is_loopback,
    load_secret_key,
    parse_users,
    verify_password,
)
from facewire.monitor.state import State
from facewire.monitor.store import Store

PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-scripts-0123456789"
TEACH = {"node": "door", "seq": 7, "name": "Visitor", "wrong": False}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "log.sqlite3")
    yield s
    s.close()


def make_app(store: Store, **auth_kw: object) -> Flask:
    kw: dict = {"users": {"ann": hash_password(PASSWORD)}, "token": TOKEN, **auth_kw}
    return create_app(store, State(), auth=Auth(**kw))


def login(client: FlaskClient, name: str = "ann", password: str = PASSWORD, **kw: str):
    return client.post("/login", data={"user": name, "password": password, **kw})


def csrf_of(client: FlaskClient) -> str:
    page = client.get("/log/html").get_data(as_text=True)
    found = re.search(r'csrf: "([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def every_request(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) of every route but the public ones, from the URL map."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        url = rule.build({}, append_unknown=False)[1] if not rule.arguments else None
        assert url is not None, f"{rule.rule}: a route with arguments; extend this test"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


# --- passwords ---------------------------------------------------------------------------


def test_password_hashes_verify_and_carry_their_own_salt() -> None:
    one, two = hash_password(PASSWORD), hash_password(PASSWORD)
    assert one != two and one.startswith("scrypt$")
    assert verify_password(PASSWORD, one) and verify_password(PASSWORD, two)
    assert not verify_password(PASSWORD + "!", one)
    assert not verify_password(PASSWORD, "scrypt$1$1$1$AA$AA")  # damaged: no match
    assert parse_users(f"ann:{one}, bob:{two}\n# a comment\n") == {"ann": one, "bob": two}
    for bad, why in (
        ("ann", "is not 'name:hash'"),
        ("ann:plaintext", "not a facewire password hash"),
        (f"ann:{one} ann:{two}", "given twice"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_users(bad)


# --- every route is behind the login -------------------------------------------------------


def test_anonymous_requests_to_every_route_are_refused(store: Store) -> None:
    store.add({"name": "Secret_Ann", "node": "door", "seq": 1, "score": 0.9})
    assert store.flush(5)
    app = make_app(store)
    client = app.test_client()
    requests = every_request(app)
    endpoints = {e for e, _, _ in requests}
    # The list comes from the app itself, so a new route is covered the day it is added.
    assert {"log_json", "log_stream", "nodes_json", "teach_json", "healthz", "index"} <= endpoints
    for endpoint, method, url in requests:
        for accept in ("application/json", "text/html"):
            resp = client.open(url, method=method, headers={"Accept": accept})
            body = resp.get_data(as_text=True)
            if resp.status_code == 302:  # a browser asking for a page: to the login form
                assert method == "GET" and accept == "text/html", (endpoint, method)
                assert resp.headers["Location"].startswith("/login?next="), endpoint
            else:
                assert resp.status_code == 401, (endpoint, method, accept, resp.status_code)
                assert resp.get_json() == {"error": "login required"}
            assert "Secret_Ann" not in body and "door" not in body, endpoint
    # Unknown paths too: nothing tells what exists.
    assert client.get("/no/such/page", headers={"Accept": "application/json"}).status_code == 401
    # The login form and its stylesheet stay reachable.
    assert client.get("/login").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_login_logout_and_wrong_password(store: Store) -> None:
    client = make_app(store).test_client()
    assert client.get("/log").status_code == 401
    wrong = login(client, password="not it")
    assert wrong.status_code == 401 and "wrong name or password" in wrong.get_data(as_text=True)
    assert login(client, name="nobody").status_code == 401
    assert client.get("/log").status_code == 401

    ok = login(client, next="/nodes/html")
    assert ok.status_code == 302 and ok.headers["Location"] == "/nodes/html"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/log").status_code == 200
    assert client.get("/nodes").status_code == 200
    page = client.get("/log/html").get_data(as_text=True)
    assert 'id="user-name">ann<' in page and 'id="logout"' in page

    # logging out needs the CSRF token too; then the session is gone
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf": csrf_of(client)}).status_code == 302
    assert client.get("/log").status_code == 401


def test_login_redirects_only_within_the_site(store: Store) -> None:
    client = make_app(store).test_client()
    for nxt in ("//evil.example/x", "https://evil.example/", "\\\\evil"):
        resp = login(client, next=nxt)
        assert resp.status_code == 302 and resp.headers["Location"] == "/", nxt


def test_failed_logins_are_rate_limited(store: Store) -> None:
    client = make_app(store, login_per_min=3).test_client()
    for _ in range(3):
        assert login(client, password="guess").status_code == 401
    # even the right password waits now: a guesser learns nothing from a 429
    limited = login(client)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert client.get("/log").status_code == 401


def test_a_changed_password_ends_the_sessions(store: Store) -> None:
    key = b"k" * 32
    client = make_app(store, secret_key=key).test_client()
    assert login(client).status_code == 302
    assert client.get("/log").status_code == 200
    # the same key and account name, a new hash: the old cookie no longer counts
    other = make_app(store, secret_key=key, users={"ann": hash_password("new password")})
    cookie = client.get_cookie("facewire_session")
    assert cookie is not None
    again = other.test_client()
    again.set_cookie("facewire_session", cookie.value)
    assert again.get("/log").status_code == 401


def test_the_bearer_token_works_and_a_wrong_one_does_not(store: Store) -> None:
    client = make_app(store).test_client()
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/log", headers=good).status_code == 200
    assert client.get("/log/stream?since=0", headers=good).status_code == 200
    bad = client.get("/log", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.get_json()["error"] == "wrong token"
    # a token needs no CSRF token (no cookie rides along): past the guard, and this app
    # has no classifier link, hence 503
    assert client.post("/api/teach", json=TEACH, headers=good).status_code == 503


# --- teaching: CSRF and rate limit ---------------------------------------------------------


def test_teach_without_csrf_token_or_from_another_site_is_refused(store: Store) -> None:
    client = make_app(store).test_client()
    login(client)
    token = csrf_of(client)
    refused = client.post("/api/teach", json=TEACH)
    assert refused.status_code == 403 and "CSRF" in refused.get_json()["error"]
    assert client.post("/api/teach", json=TEACH, headers={"X-CSRF-Token": "x"}).status_code == 403
    cross = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
    assert client.post("/api/teach", json=TEACH, headers=cross).status_code == 403
    same = {"X-CSRF-Token": token, "Origin": "http://localhost"}
    assert client.post("/api/teach", json=TEACH, headers=same).status_code == 503  # past it


def test_without_a_login_loopback_only_and_no_cross_site_teaching(store: Store) -> None:
    client = create_app(store, State()).test_client()  # no account: the demo's case
    assert client.get("/log").status_code == 200
    assert client.get("/log", headers={"Host": "127.0.0.1:6010"}).status_code == 200
    # a web page that rebinds its own name to 127.0.0.1 arrives with its Host
    rebound = client.get("/log", headers={"Host": "evil.example:6010"})
    assert rebound.status_code == 403 and "loopback" in rebound.get_json()["error"]
    cross = client.post("/api/teach", json=TEACH, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    # a form post (no JSON content type) is not a teach request
    form = client.post("/api/teach", data={"node": "door"})
    assert form.status_code == 400


def test_teaching_is_rate_limited(store: Store) -> None:
    client = make_app(store, teach_per_min=3).test_client()
    good = {"Authorization": f"Bearer {TOKEN}"}
    codes = [client.post("/api/teach", json=TEACH, headers=good).status_code for _ in range(5)]
    assert codes == [503, 503, 503, 429, 429]


# --- where it may serve --------------------------------------------------------------------


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "monitor.lan"))


def test_refuses_a_public_host_without_an_account(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="refusing to serve on '0.0.0.0' without a login"):
        check_exposure("0.0.0.0", {}, "")
    with pytest.raises(ValueError, match="at least 16 characters"):
        check_exposure("0.0.0.0", {}, "short")
    check_exposure("127.0.0.1", {}, "")  # loopback: fine
    check_exposure("0.0.0.0", {}, TOKEN)

    db = tmp_path / "m.sqlite3"
    code = cli.main(["--host", "0.0.0.0", "--port", "0", "--db", str(db)])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to serve on '0.0.0.0' without a login" in err
    assert not db.exists()  # refused before anything was opened

    bad = MonitorConfig(host="0.0.0.0", db=str(db), users="ann:plaintext")
    with pytest.raises(ValueError, match="account 'ann'"):
        cli.make_auth(bad)
    accounts = tmp_path / "users"
    accounts.write_text(f"# operators\nann:{hash_password(PASSWORD)}\n")
    auth = cli.make_auth(MonitorConfig(host="0.0.0.0", db=str(db), users_file=str(accounts)))
    assert auth.required and set(auth.users) == {"ann"}


def test_the_session_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    db = str(tmp_path / "data" / "m.sqlite3")
    first = load_secret_key("", db)
    assert load_secret_key("", db) == first and len(first) >= 32
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / "monitor-secret.key").st_mode)
    assert mode == 0o600
    assert load_secret_key("configured", db) == b"configured"


@pytest.mark.slow
def test_hash_password_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facewire", "monitor", "hash-password", "ann"],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert verify_password(PASSWORD, parse_users(out)["ann"])
    short = subprocess.run(
        [sys.executable, "-m", "facewire", "monitor", "hash-password"],
        input="short\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
