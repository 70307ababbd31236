"""GET /admin/operation-logs: filters, cursor pagination, validation."""

import datetime
import json
import uuid

import pytest

PATH = "/admin/operation-logs"
ITEM_KEYS = {"id", "actor", "action", "resource", "resource_id", "request_id", "client_ip",
             "changes", "created_at"}
BASE = datetime.datetime(2001, 2, 3, 4, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture
def seeded(pg):
    """35 rows of a resource name of their own, one hour apart from BASE,
    alternating actors and actions. Returns (resource, [row ids ascending])."""
    resource = f"test_oplog_{uuid.uuid4().hex[:10]}"
    ids = []
    with pg.cursor() as cur:
        for i in range(35):
            cur.execute(
                "INSERT INTO operation_logs (actor, action, resource, resource_id, request_id, "
                "client_ip, changes, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING id",
                ("admin" if i % 2 == 0 else "master:7", "create" if i % 3 else "delete",
                 resource, str(i % 5), f"req-{i}", "127.0.0.1", json.dumps({"i": i}),
                 BASE + datetime.timedelta(hours=i)))
            ids.append(cur.fetchone()[0])
    yield resource, ids
    with pg.cursor() as cur:
        cur.execute("DELETE FROM operation_logs WHERE resource = %s", (resource,))


def get(api, **params):
    return api("GET", PATH, params=params)


def fetch_all(api, page, **params):
    """Follows next_before_id to the end; returns the ids seen, page by page."""
    pages, before = [], None
    for _ in range(1000):
        p = dict(params, limit=page)
        if before is not None:
            p["before_id"] = before
        r = get(api, **p)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_before_id"}
        pages.append([it["id"] for it in body["items"]])
        before = body["next_before_id"]
        if before is None:
            return pages
        assert before == body["items"][-1]["id"]
    raise AssertionError("pagination did not end")


def test_item_shape(api, seeded):
    resource, ids = seeded
    r = get(api, resource=resource, limit=1)
    assert r.status_code == 200
    body = r.json()
    item = body["items"][0]
    assert set(item) == ITEM_KEYS
    assert item["id"] == ids[-1]
    assert item["resource"] == resource
    assert item["actor"] == "admin"  # i = 34
    assert item["resource_id"] == "4"
    assert item["request_id"] == "req-34"
    assert item["client_ip"] == "127.0.0.1"
    assert item["changes"] == {"i": 34}
    assert item["created_at"] == "2001-02-04T14:00:00Z"
    assert body["next_before_id"] == ids[-1]


@pytest.mark.parametrize("page", [1, 7, 10, 34, 35, 36, 1000])
def test_cursor_pagination_no_duplicates_no_gaps(api, seeded, page):
    resource, ids = seeded
    pages = fetch_all(api, page, resource=resource)
    seen = [i for p in pages for i in p]
    assert seen == sorted(ids, reverse=True)  # newest first, each once, none missing
    assert all(len(p) == page for p in pages[:-1])
    assert 0 < len(pages[-1]) <= page
    # exactly ceil(35 / page) pages: no empty trailing page
    assert len(pages) == -(-35 // page)


def test_default_limit_is_50(api, pg):
    resource = f"test_oplog_{uuid.uuid4().hex[:10]}"
    with pg.cursor() as cur:
        cur.execute("INSERT INTO operation_logs (actor, action, resource) "
                    "SELECT 'admin', 'create', %s FROM generate_series(1, 60)", (resource,))
    try:
        body = get(api, resource=resource).json()
        assert len(body["items"]) == 50
        assert body["next_before_id"] is not None
        rest = get(api, resource=resource, before_id=body["next_before_id"]).json()
        assert len(rest["items"]) == 10 and rest["next_before_id"] is None
    finally:
        with pg.cursor() as cur:
            cur.execute("DELETE FROM operation_logs WHERE resource = %s", (resource,))


def test_filters(api, seeded):
    resource, ids = seeded
    rows = {ids[i]: i for i in range(35)}

    def ids_for(**params):
        pages = fetch_all(api, 8, resource=resource, **params)
        return sorted(i for p in pages for i in p)

    assert ids_for(actor="master:7") == sorted(k for k, i in rows.items() if i % 2 == 1)
    assert ids_for(action="delete") == sorted(k for k, i in rows.items() if i % 3 == 0)
    assert ids_for(resource_id="3") == sorted(k for k, i in rows.items() if i % 5 == 3)
    assert ids_for(actor="admin", action="create", resource_id="2") == sorted(
        k for k, i in rows.items() if i % 2 == 0 and i % 3 and i % 5 == 2)
    assert ids_for(actor="nobody") == []
    # since inclusive, until exclusive; RFC 3339, offsets and unix seconds
    since = BASE + datetime.timedelta(hours=10)
    until = BASE + datetime.timedelta(hours=20)
    want = sorted(k for k, i in rows.items() if 10 <= i < 20)
    assert ids_for(since=since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   until=until.strftime("%Y-%m-%dT%H:%M:%SZ")) == want
    assert ids_for(since=str(int(since.timestamp())), until=str(int(until.timestamp()))) == want
    assert ids_for(since=(since + datetime.timedelta(hours=2)).strftime(
        "%Y-%m-%dT%H:%M:%S+02:00")) == sorted(k for k, i in rows.items() if i >= 10)
    assert ids_for(until=BASE.strftime("%Y-%m-%dT%H:%M:%SZ")) == []
    # other resources are not mixed in
    assert all(i in rows for i in ids_for())


def test_filters_combine_with_cursor(api, seeded):
    resource, ids = seeded
    pages = fetch_all(api, 3, resource=resource, actor="admin")
    seen = [i for p in pages for i in p]
    assert seen == sorted((ids[i] for i in range(0, 35, 2)), reverse=True)


def test_writes_through_the_api_are_listed(api, pg):
    name = f"oplog-{uuid.uuid4().hex[:8]}"
    r = api("POST", "/admin/namespaces", json={"name": name},
            headers={"X-Request-ID": f"ns-{name}"})
    assert r.status_code == 201, r.text
    ns_id = r.json()["id"]
    try:
        body = get(api, resource="namespaces", resource_id=str(ns_id)).json()
        assert len(body["items"]) == 1
        item = body["items"][0]
        assert (item["actor"], item["action"]) == ("admin", "create")
        assert item["request_id"] == f"ns-{name}"
        assert item["changes"]["name"] == name
    finally:
        assert api("DELETE", f"/admin/namespaces/{ns_id}").status_code == 204
    body = get(api, resource="namespaces", resource_id=str(ns_id)).json()
    assert [i["action"] for i in body["items"]] == ["delete", "create"]


@pytest.mark.parametrize("params,field", [
    ({"since": "yesterday"}, "since"),
    ({"since": "2024-13-01T00:00:00Z"}, "since"),
    ({"until": "2024-01-01"}, "until"),
    ({"since": "-5"}, "since"),
    ({"since": "1' OR '1'='1"}, "since"),
    ({"before_id": "abc"}, "before_id"),
    ({"before_id": "0"}, "before_id"),
    ({"before_id": "-1"}, "before_id"),
    ({"before_id": "1.5"}, "before_id"),
    ({"before_id": "99999999999999999999"}, "before_id"),
    ({"before_id": "1 OR 1=1"}, "before_id"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "5;DROP TABLE operation_logs"}, "limit"),
    ({"since": "2001-01-02T00:00:00Z", "until": "2001-01-01T00:00:00Z"}, "since"),
])
def test_bad_parameters_400(api, params, field):
    r = get(api, **params)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_argument"
    assert err["field"] == field


def test_limit_bounds_accepted(api):
    assert get(api, limit=1).status_code == 200
    r = get(api, limit=1000)
    assert r.status_code == 200
    assert len(r.json()["items"]) <= 1000


@pytest.mark.parametrize("value", [
    "' OR '1'='1", "admin'--", "1; DROP TABLE operation_logs; --", "%", "_", "\\",
    "admin\" OR \"\"=\"", "$1", "🙂",
])
def test_sql_metacharacters_in_filters_match_nothing(api, pg, seeded, value):
    for f in ("actor", "action", "resource", "resource_id"):
        r = get(api, **{f: value})
        assert r.status_code == 200, r.text
        assert r.json()["items"] == []
    with pg.cursor() as cur:
        cur.execute("SELECT to_regclass('operation_logs') IS NOT NULL")
        assert cur.fetchone()[0]


def test_invalid_utf8_filter_400(stack, api):
    r = api("GET", PATH + "?actor=%ff%fe")
    assert r.status_code == 400


def test_auth_and_methods(api):
    assert api("GET", PATH, token=None).status_code == 401
    assert api("GET", PATH, token="nope").status_code == 401
    r = api("POST", PATH, json={})
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")
