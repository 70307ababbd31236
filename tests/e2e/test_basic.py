"""Foundation: health, status, authentication on the three prefixes, CORS,
routing errors, body limits, strict JSON, path tricks, request ids, faults."""

import pathlib

import pytest

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "fuzz" / "corpus"


def error_of(resp):
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] and err["message"] and err["request_id"], err
    return err


def healthy(api):
    r = api("GET", "/health")
    return r.status_code == 200 and r.json()["status"] == "ok" and r


def test_health_all_checks_ok(api, wait_for):
    r = wait_for(lambda: healthy(api), timeout=30, message="health ok")
    assert r.json()["checks"] == {"postgres": "ok", "redis": "ok", "log_db": "ok",
                                  "background": "ok"}
    assert r.headers["Content-Type"].startswith("application/json")


def test_status_test(api):
    r = api("GET", "/api/status/test")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["service"] == "ez-api"
    assert body["version"] and body["time"].endswith("Z")


@pytest.mark.parametrize("token", [None, "wrong", "Bearer", "' OR '1'='1", "x" * 5000])
def test_admin_requires_token(api, token):
    r = api("GET", "/admin/namespaces", token=token)
    assert r.status_code == 401
    assert error_of(r)["code"] == "unauthorized"


def test_admin_right_token(api):
    r = api("GET", "/admin/namespaces")
    assert r.status_code == 200
    assert {"items", "total", "page", "page_size"} <= set(r.json())


def test_admin_scheme_must_be_bearer(stack, api):
    r = api("GET", "/admin/namespaces", token=None,
            headers={"Authorization": f"Basic {stack.admin_token}"})
    assert r.status_code == 401


@pytest.mark.parametrize("token", [None, "wrong", "1; DROP TABLE masters;--"])
def test_internal_requires_token(api, token):
    r = api("GET", "/internal/metrics", token=token)
    assert r.status_code == 401
    assert error_of(r)["code"] == "unauthorized"


def test_internal_right_token(api):
    r = api("GET", "/internal/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "ezapi_http_requests_total" in r.text
    j = api("GET", "/internal/metrics?format=json")
    assert j.status_code == 200 and "http_requests" in j.json()


@pytest.mark.parametrize("token", [None, "mk-unknown", "mk-' OR 1=1 --"])
def test_tenant_requires_known_master_key(api, token):
    r = api("GET", "/v1/self", token=token)
    assert r.status_code == 401
    assert error_of(r)["code"] == "unauthorized"


def test_cors_and_preflight(api):
    r = api("OPTIONS", "/admin/namespaces", token=None,
            headers={"Origin": "https://console.example",
                     "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] in ("*", "https://console.example")
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert "X-Internal-Token" in r.headers["Access-Control-Allow-Headers"]
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    g = api("GET", "/api/status/test", headers={"Origin": "https://console.example"})
    assert g.headers.get("Access-Control-Allow-Origin") in ("*", "https://console.example")
    plain = api("GET", "/api/status/test")
    assert "Access-Control-Allow-Origin" not in plain.headers


def test_unknown_route_404(api):
    r = api("GET", "/admin/no-such-thing")
    assert r.status_code == 404
    assert error_of(r)["code"] == "not_found"
    assert api("GET", "/nope").status_code == 404


def test_wrong_method_405_with_allow(api):
    r = api("PATCH", "/admin/namespaces")
    assert r.status_code == 405
    assert error_of(r)["code"] == "method_not_allowed"
    allow = {m.strip() for m in r.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allow
    assert api("DELETE", "/health").status_code == 405


def test_body_too_large_413(api):
    r = api("POST", "/admin/namespaces", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert error_of(r)["code"] == "payload_too_large"


def test_malformed_json_400(api):
    r = api("POST", "/admin/namespaces", data=b'{"name":',
            headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert error_of(r)["code"] == "invalid_json"


def test_wrong_content_type_415(api):
    r = api("POST", "/admin/namespaces", data=b'{"name":"ct-test"}',
            headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert error_of(r)["code"] == "unsupported_media_type"


def test_empty_body_400(api):
    r = api("POST", "/admin/namespaces", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.json")
                                        if not p.name.startswith("ok")))
def test_bad_json_corpus_is_4xx(api, pg, name):
    before = pg.cursor()
    before.execute("SELECT count(*) FROM namespaces")
    n = before.fetchone()[0]
    r = api("POST", "/admin/namespaces", data=(CORPUS / name).read_bytes(),
            headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    error_of(r)
    before.execute("SELECT count(*) FROM namespaces")
    assert before.fetchone()[0] == n


@pytest.mark.parametrize("path", [
    "//admin/namespaces", "/admin//namespaces", "/admin/./namespaces",
    "/admin/x/../namespaces", "/admin/x/%2e%2e/namespaces", "/ADMIN/namespaces",
    "/Admin/namespaces", "/admin/namespaces;", "/admin%2Fnamespaces",
    "/static/../admin/namespaces", "/internal/../admin/namespaces",
])
def test_path_tricks_cannot_bypass_auth(api, path):
    r = api("GET", path, token=None)
    assert r.status_code in (400, 401, 404), (path, r.status_code)
    assert r.status_code != 200
    assert "items" not in r.text


def test_normalised_path_serves_with_token(stack, api):
    for path in ("//admin/namespaces", "/admin/./namespaces", "/admin/x/../namespaces"):
        r = api("GET", path, token=stack.admin_token)
        assert r.status_code == 200, (path, r.text)


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "99999999999999999999", "1'--", "1%20OR%201=1"])
def test_bad_ids_400(api, raw):
    r = api("GET", f"/admin/namespaces/{raw}")
    assert r.status_code == 400
    assert error_of(r)["field"] == "id"


def test_missing_id_404(api):
    r = api("GET", "/admin/namespaces/987654321")
    assert r.status_code == 404


def test_request_id_echoed_or_generated(api):
    r = api("GET", "/api/status/test", headers={"X-Request-ID": "abc-123_X.y"})
    assert r.headers["X-Request-ID"] == "abc-123_X.y"
    r = api("GET", "/api/status/test", headers={"X-Request-ID": "bad id <script>"})
    assert r.headers["X-Request-ID"] not in ("", "bad id <script>")
    r = api("GET", "/api/status/test", headers={"X-Request-ID": "x" * 200})
    assert len(r.headers["X-Request-ID"]) <= 128
    e = api("GET", "/admin/namespaces", token=None, headers={"X-Request-ID": "trace-1"})
    assert error_of(e)["request_id"] == "trace-1"


def test_metrics_count_requests(api):
    api("GET", "/api/status/test")
    text = api("GET", "/internal/metrics").text
    assert 'route="GET /api/status/test",status="200"' in text
    assert "ezapi_http_request_duration_seconds_bucket" in text


def test_health_503_when_postgres_down(api, ctl, wait_for):
    ctl("stop", "postgres")
    try:
        r = api("GET", "/health")
        assert r.status_code == 503
        assert r.json()["checks"]["postgres"] != "ok"
        a = api("GET", "/admin/namespaces")
        assert a.status_code == 503
        assert error_of(a)["code"] == "unavailable"
    finally:
        ctl("start", "postgres")
    wait_for(lambda: healthy(api), timeout=60, message="health back after postgres restart")
    assert api("GET", "/admin/namespaces").status_code == 200


def test_health_degraded_when_redis_down(api, ctl, wait_for):
    ctl("stop", "redis")
    try:
        r = api("GET", "/health")
        assert r.status_code == 200
        assert r.json()["status"] == "degraded"
        assert r.json()["checks"]["redis"] != "ok"
    finally:
        ctl("start", "redis")
    wait_for(lambda: healthy(api), timeout=60, message="health back after redis restart")


def test_worker_server_death_is_invisible_to_idempotent_requests(stack, api, ctl, wait_for):
    if stack.workers < 2:
        pytest.skip("needs two FastCGI servers")
    ctl("kill", "fcgi-1")
    try:
        for _ in range(20):
            assert api("GET", "/api/status/test").status_code == 200
    finally:
        ctl("start", "fcgi-1")
    wait_for(lambda: stack.pid("fcgi-1"), timeout=30, message="fcgi-1 back")


def test_internal_closed_without_token_and_open_with_anon(stack, api, ctl, wait_for):
    """EZ_INTERNAL_STATS_TOKEN empty: 401 for everyone unless EZ_INTERNAL_ALLOW_ANON=true."""
    servers = [f"fcgi-{i}" for i in range(1, stack.workers + 1)]
    try:
        for s in servers:
            ctl("restart", s, env={"EZ_INTERNAL_STATS_TOKEN": ""})
        wait_for(lambda: api("GET", "/internal/metrics", token=None).status_code == 401,
                 timeout=30)
        r = api("GET", "/internal/metrics", token=stack.internal_token)
        assert r.status_code == 401
        for s in servers:
            ctl("restart", s, env={"EZ_INTERNAL_STATS_TOKEN": "", "EZ_INTERNAL_ALLOW_ANON": "true"})
        r = wait_for(lambda: api("GET", "/internal/metrics", token=None).status_code == 200,
                     timeout=30)
        assert r
    finally:
        for s in servers:
            ctl("restart", s)
    wait_for(lambda: api("GET", "/internal/metrics").status_code == 200, timeout=30)
    assert api("GET", "/internal/metrics", token=None).status_code == 401


def test_admin_api_disabled_with_empty_token(stack, api, ctl, wait_for):
    servers = [f"fcgi-{i}" for i in range(1, stack.workers + 1)]
    try:
        for s in servers:
            ctl("restart", s, env={"EZ_ADMIN_TOKEN": ""})
        r = wait_for(lambda: api("GET", "/admin/namespaces", token="").status_code == 401
                     and api("GET", "/admin/namespaces").status_code == 401, timeout=30)
        assert r
    finally:
        for s in servers:
            ctl("restart", s)
    wait_for(lambda: api("GET", "/admin/namespaces").status_code == 200, timeout=30)
