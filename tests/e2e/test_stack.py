"""Smoke tests of the stack itself: nginx in front, static Swagger, the
network restrictions and body limits nginx enforces, PostgreSQL and Redis
set up as intended, worker failover and the scripts/stack tool."""

import json
import pathlib
import os
import pwd
import re
import shutil
import socket
import subprocess

import pytest

from conftest import ROOT, STACK_TOOL

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def raw_request(stack, path, src="127.0.0.1", method="GET", headers=None, body=b""):
    """HTTP/1.0 request from a chosen loopback source address (requests cannot
    bind the source). Returns (status, headers dict lower-cased, body bytes)."""
    port = int(stack.url.rsplit(":", 1)[1])
    lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.socket() as s:
        s.settimeout(30)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    status = int(head_lines[0].split()[1])
    hdrs = {}
    for line in head_lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, payload


def process_group(pgid):
    """Pids of the live processes in process group pgid."""
    pids = set()
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            pids.add(int(stat.parent.name))
    return pids


def listening_sockets():
    """{pid: [local address, ...]} of every listening TCP socket (ss -ltnp)."""
    ss = shutil.which("ss") or "/usr/bin/ss"
    out = subprocess.run([ss, "-H", "-ltnp"], capture_output=True, text=True, check=True).stdout
    by_pid = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        local = cols[3]
        for pid in re.findall(r"pid=(\d+)", line):
            by_pid.setdefault(int(pid), set()).add(local)
    return by_pid


# ---------------------------------------------------------------- nginx, static files

def test_nginx_answers_and_proxies_to_the_app(stack, api):
    r = api("GET", "/health")
    assert r.headers.get("Server") == "nginx", "nginx must be the listener (server_tokens off)"
    # Any answer from the app: not nginx's own "upstream unavailable" page.
    assert "X-EZ-Upstream" not in r.headers, f"the app did not answer: {r.status_code} {r.text}"
    assert r.headers.get("X-Request-ID")


def test_request_id_from_client_kept_when_sane_else_generated(api):
    r = api("GET", "/swagger/doc.json", headers={"X-Request-ID": "client-id.42:x_y"})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == "client-id.42:x_y"

    for bad in ("has space", 'quote"', "x" * 129, "semi;colon"):
        r = api("GET", "/swagger/doc.json", headers={"X-Request-ID": bad})
        assert HEX32.match(r.headers["X-Request-ID"]), (bad, r.headers["X-Request-ID"])

    r = api("GET", "/swagger/doc.json")
    assert HEX32.match(r.headers["X-Request-ID"])


def test_swagger_doc_json_is_served_by_nginx(stack, api):
    r = api("GET", "/swagger/doc.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3.")
    assert isinstance(doc.get("paths"), dict)
    # Byte for byte the committed document.
    assert r.content == (ROOT / "docs" / "openapi.json").read_bytes()


def test_swagger_ui_files(api):
    r = api("GET", "/swagger")
    assert r.status_code == 301
    assert r.headers["Location"].endswith("/swagger/")

    r = api("GET", "/swagger/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "swagger-ui" in r.text

    r = api("GET", "/swagger/swagger-initializer.js")
    assert r.status_code == 200
    assert "doc.json" in r.text and "petstore.swagger.io" not in r.text

    r = api("GET", "/swagger/swagger-ui-bundle.js")
    assert r.status_code == 200
    assert "javascript" in r.headers["Content-Type"]

    r = api("GET", "/swagger/no-such-file.js")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------- nginx restrictions

@pytest.mark.parametrize("path", [
    "/internal/metrics", "/INTERNAL/metrics", "//internal//metrics", "/x/../internal/metrics",
    "/%69nternal/metrics", "/internal%2Fmetrics", "/internal;x/metrics", "/internal/logs",
])
def test_internal_refused_from_other_networks(stack, path):
    status, hdrs, body = raw_request(
        stack, path, src="127.0.0.2", headers={"X-Internal-Token": stack.internal_token})
    assert status == 403, (path, status, body)
    err = json.loads(body)["error"]
    assert err["code"] == "forbidden"
    assert err["request_id"] == hdrs["x-request-id"]


def test_internal_allowed_from_loopback(stack):
    status, _, body = raw_request(
        stack, "/internal/metrics", headers={"X-Internal-Token": stack.internal_token})
    assert status != 403, body
    assert status < 500, body


def test_admin_not_restricted_by_network_by_default(stack):
    status, _, body = raw_request(stack, "/admin/masters", src="127.0.0.2")
    # The app answers (401 without a token); nginx does not refuse it.
    assert status != 403 or b'"forbidden"' not in body


def test_body_limits(api):
    big = b"{" + b" " * (1024 * 1024) + b"}"  # just over 1 MiB
    r = api("POST", "/admin/masters", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"

    # /internal/logs accepts up to 8 MiB at the nginx level.
    r = api("POST", "/internal/logs", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code != 413, r.text

    huge = b"{" + b" " * (8 * 1024 * 1024) + b"}"
    r = api("POST", "/internal/logs", data=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_access_log_has_no_secrets(stack, api):
    api("GET", "/admin/masters")  # sends the admin bearer token
    api("GET", "/internal/metrics")  # sends the internal token
    log = (stack.logs_dir / "nginx-access.log").read_text(errors="replace")
    assert "/admin/masters" in log
    assert stack.admin_token not in log
    assert stack.internal_token not in log


# ---------------------------------------------------------------- PostgreSQL, Redis

def test_postgres_runs_as_postgres_user(stack, pg):
    pid = stack.pid("postgres")
    assert pid, "postgres pid file missing or process dead"
    with open(f"/proc/{pid}/status") as f:
        uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
    assert pwd.getpwuid(uid).pw_name == "postgres"

    with pg.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname IN ('ezapi', 'ezapi_logs')")
        assert {row[0] for row in cur.fetchall()} == {"ezapi", "ezapi_logs"}
        cur.execute("SHOW fsync")
        assert cur.fetchone()[0] == "on"


def test_redis_settings(rds):
    assert rds.ping()
    assert rds.config_get("lazyfree-lazy-server-del")["lazyfree-lazy-server-del"] == "yes"
    assert rds.config_get("save")["save"] == ""
    assert rds.config_get("appendonly")["appendonly"] == "no"
    assert rds.config_get("bind")["bind"] == "127.0.0.1"


def test_servers_listen_on_loopback_only(stack):
    expected = {
        "postgres": stack.pg_port,
        "redis": stack.redis_port,
        "nginx": int(stack.url.rsplit(":", 1)[1]),
    }
    for i, port in enumerate(stack.fcgi_ports, 1):
        expected[f"fcgi-{i}"] = port
    sockets = listening_sockets()
    for comp, port in expected.items():
        pid = stack.pid(comp)
        assert pid, f"{comp} is not running"
        addrs = set()
        for p in process_group(pid) | {pid}:
            addrs |= sockets.get(p, set())
        assert addrs, f"{comp} (pid {pid}) has no listening socket"
        assert addrs == {f"127.0.0.1:{port}"}, f"{comp} listens on {sorted(addrs)}"


# ---------------------------------------------------------------- failover, stack tool

def test_idempotent_request_survives_a_dead_worker(stack, ctl, api, wait_for):
    if stack.workers < 2:
        pytest.skip("needs two FastCGI servers (scripts/run-tests starts two)")
    ctl("kill", "fcgi-1")
    try:
        assert stack.pid("fcgi-1") is None
        statuses = [api("GET", "/api/status/test").status_code for _ in range(20)]
        assert all(s < 500 for s in statuses), statuses
    finally:
        ctl("start", "fcgi-1")
    assert stack.pid("fcgi-1")
    wait_for(lambda: api("GET", "/api/status/test").status_code < 500, timeout=30,
             message="the stack to answer after fcgi-1 restarted")


def test_second_start_is_a_no_op(stack):
    before = {c: stack.pid(c) for c in ("postgres", "redis", "background", "nginx")}
    res = subprocess.run(
        [str(STACK_TOOL), "start", "--dir", str(stack.dir), "--build", str(stack.build),
         "--workers", str(stack.workers)],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stdout
    assert stack.url in res.stdout
    assert {c: stack.pid(c) for c in before} == before


def test_status_reports_every_component(stack):
    res = subprocess.run([str(STACK_TOOL), "status", "--dir", str(stack.dir)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    comps = ["postgres", "redis", "background", "nginx"] + [
        f"fcgi-{i}" for i in range(1, stack.workers + 1)]
    for comp in comps:
        assert re.search(rf"^{comp}\s+up\s", res.stdout, re.M), res.stdout


def render_nginx(tmp_path, **env):
    """scripts/render-nginx with env (NGINX_*), logs and pid file in tmp_path; nginx -t on it."""
    full = dict(os.environ)
    full.update({"NGINX_LOG_DIR": str(tmp_path), "NGINX_PID_FILE": str(tmp_path / "nginx.pid"),
                 "NGINX_ROOT": str(ROOT)})
    full.update(env)
    res = subprocess.run([str(ROOT / "scripts" / "render-nginx")], env=full, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    conf = tmp_path / "nginx.conf"
    conf.write_text(res.stdout)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf),
                            "-e", str(tmp_path / "error.log")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    return res.stdout


def test_prod_nginx_template_is_valid(tmp_path):
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        pytest.skip("no www-data user on this machine")
    conf = render_nginx(tmp_path, NGINX_LISTEN="127.0.0.1:1",  # never bound: nginx -t only
                        NGINX_SERVER_NAME="api.example.com",
                        NGINX_UPSTREAMS="10.0.0.5:9000 10.0.0.6:9000",
                        NGINX_INTERNAL_ALLOW="10.0.0.0/8",
                        NGINX_ADMIN_ALLOW="192.168.1.0/24")
    assert "        server 10.0.0.5:9000 max_fails=1 fail_timeout=5s;\n" \
           "        server 10.0.0.6:9000 max_fails=1 fail_timeout=5s;" in conf
    assert "            allow 192.168.1.0/24;\n            deny all;" in conf
    assert "listen 127.0.0.1:1 " in conf


def test_render_nginx_refuses_missing_or_unsafe_values(tmp_path):
    script = str(ROOT / "scripts" / "render-nginx")
    base = {"NGINX_UPSTREAMS": "127.0.0.1:9000", "NGINX_INTERNAL_ALLOW": "127.0.0.1",
            "NGINX_ADMIN_ALLOW": "all", "PATH": os.environ["PATH"]}
    for missing in ("NGINX_UPSTREAMS", "NGINX_INTERNAL_ALLOW", "NGINX_ADMIN_ALLOW"):
        env = {k: v for k, v in base.items() if k != missing}
        res = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30)
        assert res.returncode != 0 and missing in res.stderr and res.stdout == ""
    env = dict(base, NGINX_SERVER_NAME="x; include /etc/passwd")
    res = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "NGINX_SERVER_NAME" in res.stderr and res.stdout == ""


def test_docker_compose_matches_the_repository(tmp_path):
    """No Docker engine runs here: what can be checked without one is."""
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ours = {name: svc for name, svc in doc["services"].items()
            if svc.get("image") == "ezapi:local"}
    assert set(ours) == {"migrate", "background", "fcgi", "nginx"}
    assert (ROOT / "Dockerfile").is_file()
    for name, svc in ours.items():
        assert svc.get("build") == ".", name
        cmd = svc["command"]
        exe = cmd[2].split()[0] if cmd[0] == "sh" else cmd[0]
        if exe.startswith("build/release/"):
            assert exe.split("/")[-1] in (ROOT / "Makefile").read_text(), name
        else:
            assert (ROOT / exe).is_file(), name
    # Every variable the daemons get is one they know (a typo would be a silent default).
    known = set(re.findall(r'"(EZ_[A-Z0-9_]+)"', (ROOT / "common" / "config.c").read_text()))
    for name in ("migrate", "background", "fcgi"):
        assert set(ours[name]["environment"]) <= known, name
    # The nginx service's values give a configuration nginx accepts (its upstream host is
    # a compose service name, which only resolves inside that network: same form, local host).
    env = dict(ours["nginx"]["environment"])
    assert re.fullmatch(r"fcgi:\d+", env["NGINX_UPSTREAMS"])
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        pytest.skip("no www-data user on this machine")
    env["NGINX_UPSTREAMS"] = "127.0.0.1:" + env["NGINX_UPSTREAMS"].split(":")[1]
    env["NGINX_LISTEN"] = "127.0.0.1:1"  # never bound: nginx -t only
    render_nginx(tmp_path, **env)
