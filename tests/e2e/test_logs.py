"""Request logs: POST /internal/logs (validation, acceptance, every field stored),
GET /admin/logs (filters, cursor pagination), GET /admin/logs/stats (numbers
checked against aggregates computed here), DELETE /admin/logs?before=,
the tenant's /v1/logs*, and the log pipeline's metrics.

Fault injection (background stopped or killed, SIGTERM drain, torn spool
tail, PostgreSQL down) is in test_logs_faults.py, which reuses the helpers
below. Each test uses its own namespace / request-id prefix, so that it does
not depend on what other tests wrote to the shared log table.
"""

import hashlib
import json
import math
import secrets
import uuid
from datetime import datetime, timedelta, timezone

import pytest

MAX_BATCH = 10000
ERROR_MAX = 4096


# ---------------------------------------------------------------- helpers

def uid(prefix="t"):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def rfc3339(dt):
    s = dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += (".%06d" % dt.microsecond).rstrip("0")
    return s + "Z"


def post_logs(api, records, ndjson=False, **kw):
    """POST /internal/logs with a JSON body {"logs": records} or NDJSON lines."""
    if ndjson:
        body = "".join(json.dumps(r) + "\n" for r in records)
        return api("POST", "/internal/logs", data=body.encode(),
                   headers={"Content-Type": "application/x-ndjson"}, **kw)
    return api("POST", "/internal/logs", json={"logs": records}, **kw)


def table_ids(log_pg, prefix):
    """request_id -> number of rows, for the rows whose request_id starts with prefix."""
    with log_pg.cursor() as cur:
        cur.execute("SELECT request_id, count(*) FROM request_logs WHERE request_id LIKE %s "
                    "GROUP BY request_id", (prefix.replace("_", r"\_") + "%",))
        return dict(cur.fetchall())


def wait_rows(log_pg, wait_for, prefix, expected_ids, timeout=30):
    """Polls until every id in expected_ids is in the table; returns the id -> count map."""
    expected_ids = set(expected_ids)

    def present():
        ids = table_ids(log_pg, prefix)
        return ids if expected_ids <= set(ids) else None

    return wait_for(present, timeout=timeout,
                    message=f"{len(expected_ids)} log records with prefix {prefix}")


def admin_logs_all(api, params):
    """Follows the cursor to the end; returns the items in the order served."""
    items, cursor, pages = [], None, 0
    while True:
        p = dict(params)
        if cursor is not None:
            p["before_id"] = cursor
        r = api("GET", "/admin/logs", params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_before_id"]
        pages += 1
        assert pages < 1000
        if cursor is None:
            return items


# ---------------------------------------------------------------- validation

def rec(**kw):
    base = {"request_id": uid("v")}
    base.update(kw)
    return base


BAD_RECORDS = [
    # (record, field)
    ({}, "request_id"),
    ({"request_id": ""}, "request_id"),
    ({"request_id": "x" * 129}, "request_id"),
    ({"request_id": 5}, "request_id"),
    (rec(created_at="yesterday"), "created_at"),
    (rec(created_at="2026-02-30T00:00:00Z"), "created_at"),
    (rec(created_at=-1), "created_at"),
    (rec(master_id=-1), "master_id"),
    (rec(key_id="12"), "key_id"),
    (rec(key_id=1.5), "key_id"),
    (rec(provider_group_id=True), "provider_group_id"),
    (rec(api_key_id=99999999999999999999), "api_key_id"),
    (rec(status_code=99), "status_code"),
    (rec(status_code=600), "status_code"),
    (rec(status_code="200"), "status_code"),
    (rec(latency_ms=-5), "latency_ms"),
    (rec(latency_ms=2 ** 31), "latency_ms"),
    (rec(ttfb_ms=[1]), "ttfb_ms"),
    (rec(prompt_tokens=-1), "prompt_tokens"),
    (rec(completion_tokens="7"), "completion_tokens"),
    (rec(total_tokens={"n": 1}), "total_tokens"),
    (rec(stream="true"), "stream"),
    (rec(stream=1), "stream"),
    (rec(client_ip="300.1.1.1"), "client_ip"),
    (rec(client_ip="example.com"), "client_ip"),
    (rec(client_ip=""), "client_ip"),
    (rec(user_agent="u" * 513), "user_agent"),
    (rec(model=7), "model"),
    (rec(namespace=["a"]), "namespace"),
    (rec(error=False), "error"),
]


@pytest.mark.parametrize("bad,field", BAD_RECORDS,
                         ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_RECORDS)])
def test_invalid_record_names_index_and_field(api, log_pg, bad, field):
    good = [rec(), rec()]
    # The bad record at index 2, after two good ones: all or nothing.
    r = post_logs(api, good + [bad])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_argument"
    assert err["field"] == f"logs[2].{field}"
    assert f"logs[2].{field}" in err["message"]
    # Nothing of the batch was accepted.
    for g in good:
        assert table_ids(log_pg, g["request_id"]) == {}


def test_invalid_record_ndjson_names_index(api):
    r = post_logs(api, [rec(), rec(status_code=700), rec()], ndjson=True)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "logs[1].status_code"


def test_record_not_an_object(api):
    r = api("POST", "/internal/logs", json={"logs": [rec(), "text", rec()]})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "logs[1]"


@pytest.mark.parametrize("body,field", [
    ({}, "logs"),
    ({"logs": None}, "logs"),
    ({"logs": {}}, "logs"),
    ({"logs": "x"}, "logs"),
    ({"logs": []}, "logs"),
])
def test_bad_envelope(api, body, field):
    r = api("POST", "/internal/logs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize("data", [b"", b"{", b"[1,2]", b'{"logs": [}', b"\xff\xfe"])
def test_malformed_json_body(api, data):
    r = api("POST", "/internal/logs", data=data, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"


def test_ndjson_errors(api):
    ndj = {"Content-Type": "application/x-ndjson"}
    # A line that is not JSON: invalid_json naming the record's index.
    body = json.dumps(rec()) + "\n" + "{not json\n" + json.dumps(rec()) + "\n"
    r = api("POST", "/internal/logs", data=body.encode(), headers=ndj)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"
    assert r.json()["error"]["field"] == "logs[1]"
    # Blank lines do not count as records.
    body = json.dumps(rec()) + "\n\n  \r\n" + "[1]\n"
    r = api("POST", "/internal/logs", data=body.encode(), headers=ndj)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "logs[1]"
    # Empty body, or only blank lines: an empty batch.
    for data in (b"", b"\n\n \n"):
        r = api("POST", "/internal/logs", data=data, headers=ndj)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["field"] == "logs"
    # Duplicate keys are refused like everywhere else.
    r = api("POST", "/internal/logs", data=b'{"request_id":"a","request_id":"b"}\n', headers=ndj)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "logs[0]"


def test_batch_size_limit(api, log_pg, wait_for):
    prefix = uid("max")
    too_many = [{"request_id": f"{prefix}-{i}"} for i in range(MAX_BATCH + 1)]
    r = post_logs(api, too_many)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "logs"
    r = post_logs(api, too_many, ndjson=True)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "logs"
    assert table_ids(log_pg, prefix) == {}
    # Exactly the maximum goes through, and every record arrives once.
    r = post_logs(api, too_many[:MAX_BATCH])
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": MAX_BATCH}
    ids = wait_rows(log_pg, wait_for, prefix, [x["request_id"] for x in too_many[:MAX_BATCH]])
    assert len(ids) == MAX_BATCH and set(ids.values()) == {1}


def test_content_type_and_auth(api, stack):
    r = api("POST", "/internal/logs", data=json.dumps({"logs": [rec()]}),
            headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = api("POST", "/internal/logs", json={"logs": [rec()]}, token=None)
    assert r.status_code == 401
    r = api("POST", "/internal/logs", json={"logs": [rec()]}, token="wrong-" + secrets.token_hex(8))
    assert r.status_code == 401
    r = api("GET", "/internal/logs")
    assert r.status_code == 405


def test_body_limit(api):
    # 8 MiB is the limit for this route (8 x EZ_MAX_BODY_BYTES): one byte more is refused.
    filler = "x" * (8 * 1024 * 1024)
    body = '{"logs":[{"request_id":"big","error":"' + filler + '"}]}'
    r = api("POST", "/internal/logs", data=body.encode(),
            headers={"Content-Type": "application/json"})
    assert r.status_code == 413


# ---------------------------------------------------------------- acceptance

def test_every_field_stored(api, log_pg, wait_for):
    rid = uid("full")
    record = {
        "request_id": rid,
        "created_at": "2026-01-03T11:07:57.123456+02:00",
        "master_id": 11, "key_id": 22, "namespace": "ns-a", "model": "gpt-x",
        "upstream_model": "gpt-x-2025", "provider_group_id": 33, "api_key_id": 44,
        "provider_type": "openai", "status_code": 502, "error": "upstream\tfailed\n\\ \"q\" ü",
        "latency_ms": 1234, "ttfb_ms": 56, "prompt_tokens": 7, "completion_tokens": 8,
        "total_tokens": 15, "stream": True, "client_ip": "2001:DB8:0:0::1",
        "user_agent": "curl/8 (x; y)", "unknown_field": {"ignored": True},
    }
    r = post_logs(api, [record])
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1}
    wait_rows(log_pg, wait_for, rid, [rid])

    r = api("GET", "/admin/logs", params={"request_id": rid})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 1
    got = items[0]
    expect = dict(record)
    del expect["unknown_field"]
    expect["created_at"] = "2026-01-03T09:07:57.123456Z"
    expect["client_ip"] = "2001:db8::1"
    for k, v in expect.items():
        assert got[k] == v, k
    assert isinstance(got["id"], int) and got["id"] > 0
    assert got["received_at"].endswith("Z")
    assert "unknown_field" not in got


def test_defaults_and_truncation(api, log_pg, wait_for):
    prefix = uid("def")
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    records = [
        {"request_id": f"{prefix}-min"},
        {"request_id": f"{prefix}-long", "error": "é" * (ERROR_MAX + 100)},
        {"request_id": f"{prefix}-unix", "created_at": 1767431277},
        {"request_id": f"{prefix}-nulls", "model": None, "status_code": None, "stream": None},
    ]
    r = post_logs(api, records, ndjson=True)
    assert r.status_code == 202, r.text
    wait_rows(log_pg, wait_for, prefix, [x["request_id"] for x in records])
    with log_pg.cursor() as cur:
        cur.execute("SELECT request_id, created_at, error, model, status_code, stream, received_at "
                    "FROM request_logs WHERE request_id LIKE %s", (prefix + "%",))
        rows = {r[0]: r[1:] for r in cur.fetchall()}
    after = datetime.now(timezone.utc) + timedelta(seconds=5)
    created, err, model, status, stream, received = rows[f"{prefix}-min"]
    assert before <= created <= after  # default: the time of receipt
    assert created == received
    assert err is None and model is None and status is None and stream is None
    assert rows[f"{prefix}-long"][1] == "é" * ERROR_MAX
    assert rows[f"{prefix}-unix"][0] == datetime(2026, 1, 3, 9, 7, 57, tzinfo=timezone.utc)
    assert rows[f"{prefix}-nulls"][2:5] == (None, None, None)


def test_accepted_exactly_once(api, log_pg, wait_for):
    prefix = uid("once")
    ids = []
    for b in range(20):
        batch = [{"request_id": f"{prefix}-{b}-{i}", "status_code": 200} for i in range(1 + b)]
        r = post_logs(api, batch, ndjson=(b % 2 == 1))
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": len(batch)}
        ids += [x["request_id"] for x in batch]
    got = wait_rows(log_pg, wait_for, prefix, ids)
    assert set(got) == set(ids)
    assert set(got.values()) == {1}


# ---------------------------------------------------------------- queries

STATUSES = [200, 200, 201, 429, 500, 502, 404, 200, 204]


def make_dataset(prefix, base, n=45, masters=(1001, 1002, 1003)):
    ns = prefix
    recs = []
    for i in range(n):
        r = {
            "request_id": f"{prefix}-{i:03d}",
            "created_at": rfc3339(base + timedelta(minutes=23 * i, microseconds=1000 * i)),
            "master_id": masters[i % len(masters)],
            "key_id": 5000 + i % 4,
            "namespace": ns,
            "model": ["m-alpha", "m-beta", "m-gamma", "m-delta", "m-alpha"][i % 5],
            "upstream_model": "up-%d" % (i % 2),
            "provider_group_id": 70 + i % 2,
            "api_key_id": 80 + i % 3,
            "provider_type": "openai",
            "status_code": STATUSES[i % len(STATUSES)],
            "prompt_tokens": 3 * i,
            "completion_tokens": i % 7,
            "total_tokens": 3 * i + i % 7,
            "stream": i % 2 == 0,
            "client_ip": "10.1.0.%d" % (i % 250),
            "user_agent": "ua/%d" % i,
        }
        if i % 6 != 5:
            r["latency_ms"] = (i * 397) % 1000
        if i % 8 == 3:
            r["error"] = "boom %d" % i
        recs.append(r)
    return recs


def parse_time(s):
    """RFC 3339 as this API writes it (UTC, "Z", 0-6 fraction digits)."""
    assert s.endswith("Z"), s
    main, _, frac = s[:-1].partition(".")
    dt = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return dt.replace(microsecond=int((frac + "000000")[:6])) if frac else dt


def percentile_cont(values, p):
    v = sorted(values)
    if not v:
        return None
    pos = p * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def aggregate(recs):
    lat = [r["latency_ms"] for r in recs if "latency_ms" in r]
    return {
        "requests": len(recs),
        "errors": sum(1 for r in recs if r.get("status_code", 0) >= 400 or r.get("error")),
        "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in recs),
        "completion_tokens": sum(r.get("completion_tokens", 0) for r in recs),
        "total_tokens": sum(r.get("total_tokens", 0) for r in recs),
        "avg_latency_ms": (sum(lat) / len(lat)) if lat else None,
        "p50_latency_ms": percentile_cont(lat, 0.5),
        "p95_latency_ms": percentile_cont(lat, 0.95),
    }


def assert_stats_equal(got, want, what):
    assert set(got) >= set(want), what
    for k, v in want.items():
        if v is None or k in ("requests", "errors") or k.endswith("_tokens"):
            assert got[k] == v, f"{what}: {k} = {got[k]}, expected {v}"
        else:
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), f"{what}: {k}"


@pytest.fixture(scope="module")
def dataset(stack):
    """45 records in their own namespace, spread over ~17 hours of 2025-03-04/05."""
    from conftest import wait_for as poll

    prefix = uid("q")
    base = datetime(2025, 3, 4, 6, 5, 0, tzinfo=timezone.utc)
    recs = make_dataset(prefix, base)
    r = post_logs(stack.api, recs)
    assert r.status_code == 202, r.text
    conn = stack.pg(log_db=True)
    try:
        wait_rows(conn, poll, prefix, [x["request_id"] for x in recs])
    finally:
        conn.close()
    return prefix, recs


def ids_of(items):
    return {it["request_id"] for it in items}


def select(recs, pred):
    return {r["request_id"] for r in recs if pred(r)}


def test_filters(api, dataset):
    ns, recs = dataset
    t = [parse_time(r["created_at"]) for r in recs]
    since, until = recs[10]["created_at"], recs[30]["created_at"]
    cases = [
        ({}, lambda r: True),
        ({"master_id": 1002}, lambda r: r["master_id"] == 1002),
        ({"key_id": 5003}, lambda r: r["key_id"] == 5003),
        ({"model": "m-alpha"}, lambda r: r["model"] == "m-alpha"),
        ({"provider_group_id": 71}, lambda r: r["provider_group_id"] == 71),
        ({"status_code": 200}, lambda r: r["status_code"] == 200),
        ({"status_class": "2xx"}, lambda r: 200 <= r["status_code"] <= 299),
        ({"status_class": "4xx"}, lambda r: 400 <= r["status_code"] <= 499),
        ({"status_class": "5xx"}, lambda r: 500 <= r["status_code"] <= 599),
        ({"request_id": recs[7]["request_id"]}, lambda r: r is recs[7]),
        # since is inclusive, until exclusive
        ({"since": since}, lambda r: parse_time(r["created_at"]) >= t[10]),
        ({"until": until}, lambda r: parse_time(r["created_at"]) < t[30]),
        ({"since": since, "until": until}, lambda r: t[10] <= parse_time(r["created_at"]) < t[30]),
        # unix seconds (the record times carry milliseconds: 10's is after its whole second)
        ({"since": str(int(t[10].timestamp()))}, lambda r: parse_time(r["created_at"]) >= t[10]),
        ({"master_id": 1001, "status_class": "5xx", "model": "m-beta"},
         lambda r: r["master_id"] == 1001 and r["status_code"] >= 500 and r["model"] == "m-beta"),
        ({"model": "no-such-model"}, lambda r: False),
    ]
    for params, pred in cases:
        p = {"namespace": ns, "limit": 1000}
        p.update(params)
        r = api("GET", "/admin/logs", params=p)
        assert r.status_code == 200, (params, r.text)
        body = r.json()
        assert body["next_before_id"] is None
        assert ids_of(body["items"]) == select(recs, pred), params
    # Another namespace: none of ours.
    r = api("GET", "/admin/logs", params={"namespace": ns + "-other"})
    assert r.json() == {"items": [], "next_before_id": None}


def test_cursor_pagination(api, dataset):
    ns, recs = dataset
    seen, cursor, sizes = [], None, []
    while True:
        p = {"namespace": ns, "limit": 7}
        if cursor:
            p["before_id"] = cursor
        r = api("GET", "/admin/logs", params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        sizes.append(len(body["items"]))
        seen += body["items"]
        if body["next_before_id"] is None:
            break
        assert body["next_before_id"] == body["items"][-1]["id"]
        cursor = body["next_before_id"]
    ids = [it["id"] for it in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert ids_of(seen) == select(recs, lambda r: True)
    assert sizes == [7] * (len(recs) // 7) + ([len(recs) % 7] if len(recs) % 7 else [])
    # Default page size is 50; the cursor works with filters too.
    r = api("GET", "/admin/logs", params={"namespace": ns, "status_class": "2xx", "limit": 2})
    first = r.json()
    assert len(first["items"]) == 2
    rest = admin_logs_all(api, {"namespace": ns, "status_class": "2xx", "limit": 2})
    assert ids_of(rest) == select(recs, lambda r: 200 <= r["status_code"] <= 299)


@pytest.mark.parametrize("params,field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "x"}, "limit"),
    ({"before_id": "abc"}, "before_id"), ({"before_id": -1}, "before_id"),
    ({"status_code": 99}, "status_code"), ({"status_code": "2xx"}, "status_code"),
    ({"status_class": "6xx"}, "status_class"), ({"status_class": "2XX"}, "status_class"),
    ({"since": "garbage"}, "since"), ({"until": "2026-13-01T00:00:00Z"}, "until"),
    ({"master_id": -1}, "master_id"), ({"key_id": "1 OR 1=1"}, "key_id"),
    ({"provider_group_id": "99999999999999999999"}, "provider_group_id"),
])
def test_list_bad_params(api, params, field):
    r = api("GET", "/admin/logs", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field


def test_sql_metacharacters_are_data(api, dataset):
    ns, _ = dataset
    for v in ["' OR '1'='1", "x'; DROP TABLE request_logs; --", "%", "_", "\\"]:
        r = api("GET", "/admin/logs", params={"namespace": ns, "model": v})
        assert r.status_code == 200
        assert r.json()["items"] == []


# Keys are strings whatever the grouping (OpenAPI LogStatsItem.key).
GROUPS = {
    "model": lambda r: r["model"],
    "master": lambda r: str(r["master_id"]),
    "key": lambda r: str(r["key_id"]),
    "provider_group": lambda r: str(r["provider_group_id"]),
    "status_code": lambda r: str(r["status_code"]),
    "hour": lambda r: parse_time(r["created_at"]).strftime("%Y-%m-%dT%H:00:00Z"),
    "day": lambda r: parse_time(r["created_at"]).strftime("%Y-%m-%dT00:00:00Z"),
}


@pytest.mark.parametrize("group_by", sorted(GROUPS))
def test_stats_match_independent_aggregates(api, dataset, group_by):
    ns, recs = dataset
    r = api("GET", "/admin/logs/stats", params={"namespace": ns, "group_by": group_by})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_stats_equal(body["totals"], aggregate(recs), "totals")
    groups = {}
    for x in recs:
        groups.setdefault(GROUPS[group_by](x), []).append(x)
    got = body["items"]
    assert [list(it)[0] for it in got] == ["key"] * len(got)  # "key" comes first
    assert {it["key"] for it in got} == set(groups)
    for it in got:
        assert_stats_equal(it, aggregate(groups[it["key"]]), f"{group_by}={it['key']}")
    keys = [it["key"] for it in got]
    if group_by in ("hour", "day"):
        assert keys == sorted(keys)
    else:
        req = [it["requests"] for it in got]
        assert req == sorted(req, reverse=True)


def test_stats_with_filters_and_empty(api, dataset):
    ns, recs = dataset
    r = api("GET", "/admin/logs/stats",
            params={"namespace": ns, "status_class": "5xx", "group_by": "model"})
    assert r.status_code == 200, r.text
    sel = [x for x in recs if x["status_code"] >= 500]
    assert_stats_equal(r.json()["totals"], aggregate(sel), "5xx totals")
    # No group_by: totals only.
    r = api("GET", "/admin/logs/stats", params={"namespace": ns, "master_id": 1003})
    body = r.json()
    assert body["items"] == []
    assert_stats_equal(body["totals"], aggregate([x for x in recs if x["master_id"] == 1003]),
                       "master 1003")
    # Nothing matches: zero totals, null latencies.
    r = api("GET", "/admin/logs/stats", params={"namespace": ns + "-none", "group_by": "day"})
    body = r.json()
    assert body["items"] == []
    assert body["totals"]["requests"] == 0 and body["totals"]["p95_latency_ms"] is None
    r = api("GET", "/admin/logs/stats", params={"group_by": "week"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "group_by"


def test_admin_logs_need_admin(api, dataset):
    for path in ("/admin/logs", "/admin/logs/stats"):
        assert api("GET", path, token=None).status_code == 401
        assert api("GET", path, token="nope").status_code == 401
    assert api("DELETE", "/admin/logs?before=0", token=None).status_code == 401


# ---------------------------------------------------------------- delete

def test_delete_before(api, pg, log_pg, wait_for):
    prefix = uid("del")
    old = datetime(1987, 5, 1, tzinfo=timezone.utc)
    recs = [{"request_id": f"{prefix}-{i}", "namespace": prefix,
             "created_at": rfc3339(old + timedelta(days=20 * i))} for i in range(8)]
    # days 0..140: 0, 20, 40, 60, 80 are before the cut (day 90), 100, 120, 140 after
    r = post_logs(api, recs)
    assert r.status_code == 202
    wait_rows(log_pg, wait_for, prefix, [x["request_id"] for x in recs])

    assert api("DELETE", "/admin/logs").status_code == 400
    r = api("DELETE", "/admin/logs", params={"before": "not-a-time"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "before"

    # A microsecond part unique to this run, to find this run's audit rows.
    cut = rfc3339(old + timedelta(days=90, microseconds=secrets.randbelow(999999) + 1))
    r = api("DELETE", "/admin/logs", params={"before": cut})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deleted"] >= 5 and body["complete"] is True
    left = table_ids(log_pg, prefix)
    assert set(left) == {f"{prefix}-{i}" for i in (5, 6, 7)}
    # Again: nothing older is left.
    r = api("DELETE", "/admin/logs", params={"before": cut})
    assert r.json()["deleted"] == 0
    # The purge is in the audit trail.
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, changes FROM operation_logs WHERE resource = "
                    "'request_logs' AND changes->>'before' = %s ORDER BY id", (cut,))
        rows = cur.fetchall()
    assert len(rows) == 2 and rows[0][0] == "admin" and rows[0][1] == "delete"
    assert rows[0][2]["deleted"] >= 5 and rows[1][2]["deleted"] == 0


# ---------------------------------------------------------------- tenant API

def make_master(pg, name):
    key = "mk-" + secrets.token_hex(24)
    with pg.cursor() as cur:
        cur.execute("INSERT INTO masters (name, key_hash, key_prefix) VALUES (%s, %s, %s) "
                    "RETURNING id", (name, hashlib.sha256(key.encode()).hexdigest(), key[:7]))
        return cur.fetchone()[0], key


def test_tenant_sees_only_its_logs(api, pg, log_pg, wait_for):
    prefix = uid("ten")
    a_id, a_key = make_master(pg, prefix + "-a")
    b_id, b_key = make_master(pg, prefix + "-b")
    base = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    recs = make_dataset(prefix, base, n=24, masters=(a_id, b_id, a_id))
    assert post_logs(api, recs).status_code == 202
    wait_rows(log_pg, wait_for, prefix, [x["request_id"] for x in recs])
    mine = [x for x in recs if x["master_id"] == a_id]

    r = api("GET", "/v1/logs", token=a_key, params={"namespace": prefix, "limit": 1000})
    assert r.status_code == 200, r.text
    assert ids_of(r.json()["items"]) == {x["request_id"] for x in mine}
    # A master_id filter naming another master is ignored.
    r = api("GET", "/v1/logs", token=a_key,
            params={"namespace": prefix, "master_id": b_id, "limit": 1000})
    assert ids_of(r.json()["items"]) == {x["request_id"] for x in mine}
    # Cursor pagination, as for the admin.
    items, cursor = [], None
    while True:
        p = {"namespace": prefix, "limit": 5}
        if cursor:
            p["before_id"] = cursor
        body = api("GET", "/v1/logs", token=a_key, params=p).json()
        items += body["items"]
        cursor = body["next_before_id"]
        if cursor is None:
            break
    assert ids_of(items) == {x["request_id"] for x in mine}

    r = api("GET", "/v1/logs/stats", token=a_key,
            params={"namespace": prefix, "master_id": b_id, "group_by": "model"})
    assert r.status_code == 200, r.text
    assert_stats_equal(r.json()["totals"], aggregate(mine), "tenant totals")
    r = api("GET", "/v1/logs/stats", token=b_key, params={"namespace": prefix, "group_by": "master"})
    items = r.json()["items"]
    assert [it["key"] for it in items] == [str(b_id)]

    assert api("GET", "/v1/logs", token=None).status_code == 401
    assert api("GET", "/v1/logs", token="mk-unknown").status_code == 401


# ---------------------------------------------------------------- metrics

def test_pipeline_metrics(api, wait_for):
    prefix = uid("met")
    before = api("GET", "/internal/metrics", params={"format": "json"})
    assert before.status_code == 200
    written_before = before.json().get("log_pipeline", {}).get("records_written_total", 0)
    assert post_logs(api, [{"request_id": f"{prefix}-{i}"} for i in range(5)]).status_code == 202

    def advanced():
        m = api("GET", "/internal/metrics", params={"format": "json"}).json()["log_pipeline"]
        return m if m["background_metrics_up"] and \
            m["records_written_total"] >= written_before + 5 else None

    m = wait_for(advanced, timeout=30, message="records_written_total to grow")
    assert m["records_accepted_total"] >= m["records_written_total"] - m["records_quarantined_total"]
    assert m["ready"] == 1 and m["spool_segments"] >= 1 and m["spool_fsyncs_total"] >= 1

    text = api("GET", "/internal/metrics").text
    for name in ("ezapi_log_records_received_total", "ezapi_log_records_written_total",
                 "ezapi_log_records_queued", "ezapi_log_records_rejected_total",
                 "ezapi_log_spool_bytes", "ezapi_log_batch_write_duration_seconds_count",
                 'ezapi_log_batch_write_duration_seconds_bucket{le="+Inf"}'):
        assert f"\n{name} " in text, name
    assert "# TYPE ezapi_log_batch_write_duration_seconds histogram" in text


# ---------------------------------------------------------------- wire protocol

def test_wire_protocol(stack, log_pg, wait_for):
    """The background's side of [logs][seq][payload] -> [ack|nack][seq][...], spoken directly
    (python3-zmq): the seq is echoed, a late or invalid batch is refused and not written."""
    zmq = pytest.importorskip("zmq")
    import time

    prefix = uid("wire")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(stack.env["EZ_ZMQ_ENDPOINT"])
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)

    def call(seq, payload):
        sock.send_multipart([b"logs", seq, payload])
        assert poller.poll(20000), "no reply from the background"
        return sock.recv_multipart()

    import socket

    def batch(ids, expires_in_ms=60000, host=socket.gethostname(), **extra):
        now = int(time.time() * 1000)
        body = {"received_at": now, "expires_at": now + expires_in_ms, "host": host,
                "logs": [dict({"request_id": i}, **extra) for i in ids]}
        return json.dumps(body).encode()

    try:
        assert call(b"17", batch([f"{prefix}-ok1", f"{prefix}-ok2"])) == [b"ack", b"17"]
        # Arrived after the worker's deadline: refused, not spooled.
        rep = call(b"18", batch([f"{prefix}-late"], expires_in_ms=-1))
        assert rep[:2] == [b"nack", b"18"] and json.loads(rep[2])["reason"] == "expired"
        # From another host the clocks may disagree: the deadline is not applied.
        assert call(b"18b", batch([f"{prefix}-far"], expires_in_ms=-60000, host="elsewhere")) \
            == [b"ack", b"18b"]
        # The background validates again: never trust the payload blindly.
        rep = call(b"19", batch([f"{prefix}-bad"], status_code=42))
        assert rep[:2] == [b"nack", b"19"] and json.loads(rep[2])["reason"] == "invalid"
        rep = call(b"20", b"not json")
        assert rep[:2] == [b"nack", b"20"] and json.loads(rep[2])["reason"] == "invalid"
        rep = call(b"21", json.dumps({"received_at": 1, "logs": []}).encode())
        assert rep[:2] == [b"nack", b"21"]
        assert call(b"22", batch([f"{prefix}-ok3"])) == [b"ack", b"22"]
    finally:
        sock.close()
        ctx.term()
    ok = [f"{prefix}-ok1", f"{prefix}-ok2", f"{prefix}-far", f"{prefix}-ok3"]
    got = wait_rows(log_pg, wait_for, prefix, ok)
    assert got == {i: 1 for i in ok}
