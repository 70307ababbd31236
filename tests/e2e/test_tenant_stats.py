"""GET /v1/stats: the caller's keys by status and its usage (today, last 7 and
30 days, by model) from the request logs, never another tenant's."""

import uuid

import pytest

WINDOWS = ("today", "last_7d", "last_30d")


def uniq(prefix="ts"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_master(api, **body):
    body.setdefault("name", uniq())
    r = api("POST", "/admin/masters", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def make_key(api, mid, **body):
    r = api("POST", f"/admin/masters/{mid}/keys", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def add_log(log_pg, master_id, model, age, status=200, error=None, tokens=10):
    """One request_logs row, `age` (an SQL interval) before now()."""
    with log_pg.cursor() as cur:
        cur.execute(
            "INSERT INTO request_logs (request_id, created_at, master_id, model, status_code, "
            "error, total_tokens) VALUES (%s, now() - %s::interval, %s, %s, %s, %s, %s)",
            (uniq("req"), age, master_id, model, status, error, tokens))


def stats(api, key):
    r = api("GET", "/v1/stats", token=key)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def today_is_long_enough(log_pg):
    """Rows "today" are written at now(): skip within a second of 00:00 UTC."""
    with log_pg.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now() - date_trunc('day', now() AT TIME ZONE 'UTC') "
                    "AT TIME ZONE 'UTC'), extract(epoch FROM date_trunc('day', now() AT TIME ZONE "
                    "'UTC') AT TIME ZONE 'UTC' + interval '1 day' - now())")
        since, until = cur.fetchone()
    if since < 5 or until < 60:
        pytest.skip("too close to midnight UTC for a stable 'today'")


def test_shape_of_a_new_tenant(api):
    m = make_master(api)
    s = stats(api, m["master_key"])
    assert set(s) == {"keys", "today", "last_7d", "last_30d", "by_model"}
    assert s["keys"] == {"total": 0, "active": 0, "disabled": 0, "expired": 0, "exhausted": 0}
    for w in WINDOWS:
        assert s[w] == {"requests": 0, "errors": 0, "tokens": 0}
    assert s["by_model"] == []


def test_counts_windows_and_models(api, log_pg, today_is_long_enough):
    m = make_master(api, max_child_keys=5)
    mid = m["id"]
    make_key(api, mid)
    k2 = make_key(api, mid)
    make_key(api, mid)
    r = api("PUT", f"/admin/masters/{mid}/keys/{k2['id']}", json={"status": "disabled"})
    assert r.status_code == 200, r.text

    add_log(log_pg, mid, "gpt-a", "1 second", tokens=100)
    add_log(log_pg, mid, "gpt-a", "2 seconds", status=500, tokens=0)
    # a stream cut short: 200 with an error text still counts as an error
    add_log(log_pg, mid, "gpt-b", "3 seconds", status=200, error="upstream reset", tokens=7)
    add_log(log_pg, mid, "gpt-b", "3 days", tokens=20)
    add_log(log_pg, mid, "gpt-a", "6 days", status=429, tokens=0)
    add_log(log_pg, mid, "gpt-c", "20 days", tokens=1000)
    add_log(log_pg, mid, "gpt-c", "40 days", tokens=5000)  # outside every window
    add_log(log_pg, mid, None, "10 days", tokens=3)         # no model: counted under ""

    s = stats(api, m["master_key"])
    assert s["keys"] == {"total": 3, "active": 2, "disabled": 1, "expired": 0, "exhausted": 0}
    assert s["today"] == {"requests": 3, "errors": 2, "tokens": 107}
    assert s["last_7d"] == {"requests": 5, "errors": 3, "tokens": 127}
    assert s["last_30d"] == {"requests": 7, "errors": 3, "tokens": 1130}
    by = {e["model"]: e for e in s["by_model"]}
    assert by == {
        "gpt-a": {"model": "gpt-a", "requests": 3, "errors": 2, "tokens": 100},
        "gpt-b": {"model": "gpt-b", "requests": 2, "errors": 1, "tokens": 27},
        "gpt-c": {"model": "gpt-c", "requests": 1, "errors": 0, "tokens": 1000},
        "": {"model": "", "requests": 1, "errors": 0, "tokens": 3},
    }
    # most requests first
    assert s["by_model"][0]["model"] == "gpt-a"


def test_only_the_callers_logs_and_keys(api, log_pg):
    a = make_master(api)
    b = make_master(api)
    make_key(api, b["id"])
    add_log(log_pg, b["id"], "secret-model", "1 hour", tokens=42)
    add_log(log_pg, a["id"], "mine", "1 hour", tokens=1)
    sa = stats(api, a["master_key"])
    assert sa["keys"]["total"] == 0
    assert sa["last_7d"] == {"requests": 1, "errors": 0, "tokens": 1}
    assert [e["model"] for e in sa["by_model"]] == ["mine"]
    # query parameters never widen the view
    r = api("GET", f"/v1/stats?master_id={b['id']}", token=a["master_key"])
    assert r.status_code == 200
    assert r.json() == sa
    sb = stats(api, b["master_key"])
    assert sb["keys"]["total"] == 1
    assert [e["model"] for e in sb["by_model"]] == ["secret-model"]


def test_authentication_and_method(api, stack):
    assert api("GET", "/v1/stats").status_code == 401
    assert api("GET", "/v1/stats", token="mk-" + "0" * 64).status_code == 401
    # the admin token is not a master key
    assert api("GET", "/v1/stats", token=stack.admin_token).status_code == 401
    m = make_master(api)
    r = api("POST", "/v1/stats", token=m["master_key"])
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")
    r = api("POST", f"/admin/masters/{m['id']}/manage", json={"action": "suspend"})
    assert r.status_code == 200, r.text
    r = api("GET", "/v1/stats", token=m["master_key"])
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
