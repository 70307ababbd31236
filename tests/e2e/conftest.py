"""Shared fixtures for the end-to-end tests.

The tests run against a real stack (nginx, ezapi-fcgi, ezapi-background,
PostgreSQL, Redis) that scripts/run-tests starts in a temp dir and names in
$STACK_DIR; its settings are read from $STACK_DIR/stack.env. Run them with
`make test` or `scripts/run-tests [pytest args]` (e.g. `scripts/run-tests -k health`).
Against a stack you started yourself:
    STACK_DIR=data /usr/bin/python3 -m pytest -q tests/e2e

Fixtures:
    stack      the Stack (session): url, admin_token, internal_token, pg_dsn,
               log_pg_dsn, pg_port, redis_port, fcgi_ports, dir, logs_dir, env
    api        stack.api(method, path, token=..., **requests_kwargs)
    ctl        stack.ctl(action, component): scripts/stack ctl (start|stop|kill|restart)
    pg, log_pg psycopg2 connections (autocommit) to the main and the log DB
    rds        redis.Redis client (decode_responses=True)
    wait_for   wait_for(predicate, timeout=..., message=...): poll with a deadline

Never sleep to synchronise: poll the condition with wait_for().
"""

import os
import pathlib
import posixpath
import re
import shlex
import subprocess
import time

import urllib.parse

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
STACK_TOOL = ROOT / "scripts" / "stack"

AUTO = object()  # api(): pick the credential from the path


def parse_stack_env(path):
    """Parse the `export KEY='value'` lines of a stack.env into a dict."""
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):]
            parts = shlex.split(line, comments=False, posix=True)
            if len(parts) != 1 or "=" not in parts[0]:
                continue
            key, value = parts[0].split("=", 1)
            env[key] = value
    return env


def route_prefix(path):
    """The path as a router would see it, for choosing a credential:
    query dropped, %-decoded, slashes merged, dot segments resolved, lower case."""
    p = urllib.parse.unquote(path.split("?", 1)[0])
    p = posixpath.normpath(re.sub(r"/+", "/", p) or "/")
    return p.lower()


def wait_for(predicate, timeout=30.0, interval=0.05, message=None):
    """Poll predicate() until it returns a truthy value; return that value.

    Exceptions raised by the predicate (connection refused while a component
    restarts, a failed assert inside it) count as "not yet". After `timeout`
    seconds an AssertionError names what was awaited and the last error.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


# Every secret the tests create or send (master keys, tokens, upstream API
# keys, webhook secrets): test_zz_secrets.py checks none of them leaked into
# a log or a table at the end of the run.
SECRETS = set()
SECRET_FIELDS = ("master_key", "token", "api_key", "secret")


def remember_secrets(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            # Secrets are long printable ASCII tokens; masked forms carry "…".
            if (k in SECRET_FIELDS and isinstance(v, str) and len(v) >= 12 and v.isascii()
                    and v.isprintable() and " " not in v and "\u2026" not in v):
                SECRETS.add(v)
            else:
                remember_secrets(v)
    elif isinstance(obj, list):
        for v in obj:
            remember_secrets(v)


class Stack:
    """A running stack, described by its stack.env."""

    def __init__(self, stack_dir):
        self.dir = pathlib.Path(stack_dir).resolve()
        self.env = parse_stack_env(self.dir / "stack.env")
        e = self.env
        self.url = e["STACK_URL"]
        self.admin_token = e.get("EZ_ADMIN_TOKEN", "")
        self.internal_token = e.get("EZ_INTERNAL_STATS_TOKEN", "")
        self.pg_dsn = e["EZ_PG_DSN"]
        self.log_pg_dsn = e.get("EZ_LOG_PG_DSN") or e["EZ_PG_DSN"]
        self.pg_port = int(e["STACK_PG_PORT"])
        self.redis_addr = e["EZ_REDIS_ADDR"]
        self.redis_port = int(e["STACK_REDIS_PORT"])
        self.fcgi_ports = [int(p) for p in e.get("STACK_FCGI_PORTS", "").split()]
        self.workers = int(e.get("STACK_WORKERS", len(self.fcgi_ports) or 1))
        self.build = pathlib.Path(e.get("STACK_BUILD", ""))
        self.logs_dir = self.dir / "logs"
        self.run_dir = self.dir / "run"
        self.session = requests.Session()

    # ------------------------------------------------------------ HTTP
    def api(self, method, path, token=AUTO, **kw):
        """Send a request through nginx; returns the requests.Response.

        token: AUTO (default) = the admin token for /admin/..., the internal
        token (X-Internal-Token) for /internal/..., nothing otherwise (the
        path is normalised first, so //admin/./x counts as /admin/x);
        None = no credential; a string = that credential (Bearer, or
        X-Internal-Token for /internal/ paths). Redirects are not followed;
        the timeout is 30 s unless given. Other keyword arguments go to requests.
        """
        headers = dict(kw.pop("headers", None) or {})
        route = route_prefix(path)
        internal = route == "/internal" or route.startswith("/internal/")
        if token is AUTO:
            if route == "/admin" or route.startswith("/admin/"):
                token = self.admin_token
            elif internal:
                token = self.internal_token
            else:
                token = None
        if token is not None:
            if internal:
                headers.setdefault("X-Internal-Token", token)
            else:
                headers.setdefault("Authorization", f"Bearer {token}")
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        remember_secrets(kw.get("json"))
        resp = self.session.request(method, self.url + path, headers=headers, **kw)
        if resp.headers.get("Content-Type", "").startswith("application/json"):
            try:
                remember_secrets(resp.json())
            except ValueError:
                pass
        return resp

    # ------------------------------------------------------------ processes
    def ctl(self, action, component, env=None, check=True, timeout=180):
        """scripts/stack ctl ACTION COMPONENT (start|stop|kill|restart|reload).

        env: {KEY: VALUE} overrides for a start (not written to stack.env).
        Raises AssertionError with the tool's output when it fails and check=True.
        """
        cmd = [str(STACK_TOOL), "ctl", "--dir", str(self.dir), action, component]
        for k, v in (env or {}).items():
            cmd += ["--env", f"{k}={v}"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def pid(self, component):
        """The pid of a running component (postgres, redis, background,
        fcgi-N, nginx), or None when its pid file is missing or it is dead."""
        try:
            pid = int((self.run_dir / f"{component}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        return None if state in ("Z", "X") else pid

    def log(self, name):
        """Text of DIR/logs/NAME.log ('' if missing), e.g. log('fcgi-1')."""
        try:
            return (self.logs_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------ clients
    def pg(self, log_db=False):
        import psycopg2

        conn = psycopg2.connect(self.log_pg_dsn if log_db else self.pg_dsn, connect_timeout=5)
        conn.autocommit = True
        return conn

    def redis(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis_port, decode_responses=True,
                           socket_timeout=10)


@pytest.fixture(scope="session")
def stack():
    d = os.environ.get("STACK_DIR")
    if not d:
        pytest.skip("STACK_DIR is not set: the end-to-end tests run against a stack; "
                    "use `make test` or scripts/run-tests")
    if not (pathlib.Path(d) / "stack.env").is_file():
        pytest.fail(f"STACK_DIR={d} has no stack.env: start it with scripts/stack start")
    s = Stack(d)
    yield s
    s.session.close()


@pytest.fixture
def api(stack):
    return stack.api


@pytest.fixture
def ctl(stack):
    return stack.ctl


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    return wait_for


@pytest.fixture
def pg(stack):
    conn = stack.pg()
    yield conn
    conn.close()


@pytest.fixture
def log_pg(stack):
    conn = stack.pg(log_db=True)
    yield conn
    conn.close()


@pytest.fixture
def rds(stack):
    client = stack.redis()
    yield client
    client.close()
