"""/admin/masters/:id/keys: issuing, listing, updating, deleting and rotating a
master's child keys; validation, quota reset times, max_child_keys, scoping
to the master of the path, and the operation-log and outbox rows."""

import concurrent.futures
import datetime
import hashlib
import json
import uuid

import pytest

READ_FIELDS = {"id", "master_id", "name", "group", "scopes", "namespaces",
               "model_limits_enabled", "model_limits", "allow_ips", "expires_at",
               "quota_limit", "quota_used", "quota_reset_period", "quota_reset_at", "status",
               "token_prefix", "last_accessed_at", "request_count", "token_count",
               "created_at", "updated_at"}
UTC = datetime.timezone.utc


def uniq(prefix="k"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def iso(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def master(api, **body):
    body.setdefault("name", uniq("m"))
    r = api("POST", "/admin/masters", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def create_ns(api):
    name = f"ns-{uuid.uuid4().hex[:10]}"
    assert api("POST", "/admin/namespaces", json={"name": name}).status_code == 201
    return name


def kpath(mid, kid=None, suffix=""):
    p = f"/admin/masters/{mid}/keys"
    return (p if kid is None else f"{p}/{kid}") + suffix


def new_key(api, mid, **body):
    r = api("POST", kpath(mid), json=body)
    assert r.status_code == 201, r.text
    return r.json()


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


def outbox(pg, since_id):
    with pg.cursor() as cur:
        cur.execute("SELECT resource, resource_id, action, payload FROM sync_outbox "
                    "WHERE id > %s ORDER BY id", (since_id,))
        return cur.fetchall()


def oplogs(pg, since_id):
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, resource, resource_id, changes::text "
                    "FROM operation_logs WHERE id > %s ORDER BY id", (since_id,))
        return cur.fetchall()


def key_row(pg, kid):
    with pg.cursor() as cur:
        cur.execute("SELECT token_hash, prev_token_hash, "
                    "extract(epoch FROM prev_token_expires_at - updated_at), status, master_id, "
                    "quota_used, created_at FROM keys WHERE id = %s", (kid,))
        return cur.fetchone()


def err(r, status, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    if field is not None:
        assert e.get("field") == field, e
    return e


@pytest.fixture
def m(api):
    return master(api, group="mgroup", max_child_keys=100)


# ---------------------------------------------------------------- create / read


def test_create_returns_the_token_once(api, pg, m):
    k = new_key(api, m["id"], name="first")
    tok = k["token"]
    assert tok.startswith("sk-") and len(tok) == 3 + 64
    assert k["token_prefix"] == tok[:7] + "\u2026"
    assert set(k) == READ_FIELDS | {"token"}
    assert key_row(pg, k["id"])[0] == sha(tok)
    g = api("GET", kpath(m["id"], k["id"]))
    assert g.status_code == 200 and set(g.json()) == READ_FIELDS
    lst = api("GET", kpath(m["id"]))
    assert set(lst.json()["items"][0]) == READ_FIELDS
    for text in (g.text, lst.text):
        assert tok not in text and sha(tok) not in text


def test_create_defaults(api, m):
    k = new_key(api, m["id"])
    assert k["master_id"] == m["id"]
    assert k["name"] == "" and k["group"] == "mgroup"  # the master's group
    assert (k["scopes"], k["namespaces"], k["model_limits"], k["allow_ips"]) == ([], [], [], [])
    assert k["model_limits_enabled"] is False
    assert (k["expires_at"], k["quota_limit"], k["quota_used"]) == (None, -1, 0)
    assert (k["quota_reset_period"], k["quota_reset_at"]) == ("none", None)
    assert k["status"] == "active"
    assert (k["last_accessed_at"], k["request_count"], k["token_count"]) == (None, 0, 0)


def test_create_all_fields(api, m):
    ns = create_ns(api)
    api("PUT", f"/admin/masters/{m['id']}", json={"namespaces": ["default", ns]})
    exp = iso(datetime.datetime.now(UTC) + datetime.timedelta(days=3))
    body = {"name": "caf\u00e9 key \u2603", "group": "other.g", "scopes": ["chat", "models:read"],
            "namespaces": [ns], "model_limits_enabled": True,
            "model_limits": ["gpt-4o", f"{ns}.claude"], "allow_ips": ["10.0.0.0/8", "::1",
                                                                       "192.168.1.7"],
            "expires_at": exp, "quota_limit": 0, "status": "disabled"}
    k = new_key(api, m["id"], **body)
    for f, v in body.items():
        assert k[f] == v, f


def test_group_empty_means_the_masters(api, m):
    k = new_key(api, m["id"], group="")
    assert k["group"] == "mgroup"
    r = api("PUT", kpath(m["id"], k["id"]), json={"group": "x"})
    assert r.json()["group"] == "x"
    r = api("PUT", kpath(m["id"], k["id"]), json={"group": ""})
    assert r.json()["group"] == "mgroup"


# ---------------------------------------------------------------- quota reset times


def next_boundary(period, now):
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day + datetime.timedelta(days=1)
    if period == "weekly":
        d = (7 - day.weekday()) % 7 or 7
        return day + datetime.timedelta(days=d)
    first = day.replace(day=1)
    return (first + datetime.timedelta(days=32)).replace(day=1)


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_quota_reset_at_is_the_next_utc_boundary(api, m, period):
    before = datetime.datetime.now(UTC)
    k = new_key(api, m["id"], quota_reset_period=period)
    after = datetime.datetime.now(UTC)
    want = {iso(next_boundary(period, before)), iso(next_boundary(period, after))}
    assert k["quota_reset_at"] in want
    at = datetime.datetime.strptime(k["quota_reset_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert (at.hour, at.minute, at.second) == (0, 0, 0)
    if period == "weekly":
        assert at.weekday() == 0
    if period == "monthly":
        assert at.day == 1
    r = api("PUT", kpath(m["id"], k["id"]), json={"quota_reset_period": "none"})
    assert r.json()["quota_reset_at"] is None


def test_quota_reset_at_is_read_only(api, m):
    k = new_key(api, m["id"], quota_reset_at="2030-01-01T00:00:00Z")
    assert k["quota_reset_at"] is None


# ---------------------------------------------------------------- lists


@pytest.fixture
def listed(api, m, pg):
    names = ["50%off", "50xoff", "a_b", "axb", "back\\slash", "zeta"]
    ks = [new_key(api, m["id"], name=n, quota_limit=i) for i, n in enumerate(names)]
    with pg.cursor() as cur:  # the system sets expired / exhausted
        cur.execute("UPDATE keys SET status = 'expired' WHERE id = %s", (ks[4]["id"],))
        cur.execute("UPDATE keys SET status = 'exhausted' WHERE id = %s", (ks[5]["id"],))
    return ks


def ids(r):
    assert r.status_code == 200, r.text
    return [it["id"] for it in r.json()["items"]]


def test_list_pagination_and_sort(api, m, listed):
    all_ids = [k["id"] for k in listed]
    got = []
    for page in (1, 2, 3):
        r = api("GET", kpath(m["id"]), params={"page": page, "page_size": 2})
        assert r.json()["total"] == 6 and r.json()["page"] == page
        got += ids(r)
    assert got == all_ids
    assert ids(api("GET", kpath(m["id"]), params={"sort": "-quota_limit"})) == all_ids[::-1]
    by_name = sorted(listed, key=lambda k: k["name"])
    assert ids(api("GET", kpath(m["id"]), params={"sort": "name"})) == [k["id"] for k in by_name]
    err(api("GET", kpath(m["id"]), params={"sort": "token_hash"}), 400, "sort")


def test_list_q_is_literal(api, m, listed):
    assert ids(api("GET", kpath(m["id"]), params={"q": "50%"})) == [listed[0]["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"q": "a_"})) == [listed[2]["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"q": "k\\s"})) == [listed[4]["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"q": "%"})) == [listed[0]["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"q": "OFF"})) == [listed[0]["id"],
                                                                     listed[1]["id"]]


@pytest.mark.parametrize("status,idx", [("active", [0, 1, 2, 3]), ("expired", [4]),
                                        ("exhausted", [5]), ("disabled", [])])
def test_list_status_filter_takes_all_four(api, m, listed, status, idx):
    assert ids(api("GET", kpath(m["id"]), params={"status": status})) == [
        listed[i]["id"] for i in idx]


def test_list_other_filters(api, m):
    a = new_key(api, m["id"], scopes=["chat"], group="ga", model_limits_enabled=True)
    b = new_key(api, m["id"], scopes=["embed"], quota_reset_period="daily")
    assert ids(api("GET", kpath(m["id"]), params={"scopes": "chat"})) == [a["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"group": "ga"})) == [a["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"model_limits_enabled": "true"})) == [a["id"]]
    assert ids(api("GET", kpath(m["id"]), params={"quota_reset_period": "daily"})) == [b["id"]]
    err(api("GET", kpath(m["id"]), params={"model_limits_enabled": "yes"}), 400,
        "model_limits_enabled")
    err(api("GET", kpath(m["id"]), params={"quota_reset_period": "hourly"}), 400,
        "quota_reset_period")


def test_list_is_scoped_to_the_master(api, m):
    other = master(api)
    mine = new_key(api, m["id"])
    new_key(api, other["id"])
    assert ids(api("GET", kpath(m["id"]))) == [mine["id"]]
    # an unknown master_id filter changes nothing
    assert ids(api("GET", kpath(m["id"]), params={"master_id": other["id"]})) == [mine["id"]]
    err(api("GET", kpath(999999999)), 404)


@pytest.mark.parametrize("params,status", [
    ({"q": "1'; DROP TABLE keys;--"}, 200), ({"q": "%27"}, 200),
    ({"group": "' OR 1=1 --"}, 200), ({"namespaces": "x'); DROP TABLE keys;--"}, 200),
    ({"scopes": "'"}, 200), ({"sort": "name; DROP TABLE keys"}, 400),
    ({"status": "active'--"}, 400), ({"page_size": "2; DROP"}, 400)])
def test_list_sql_metacharacters(api, m, params, status):
    new_key(api, m["id"], name="plain")
    r = api("GET", kpath(m["id"]), params=params)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["total"] == 0
    assert api("GET", kpath(m["id"])).json()["total"] == 1


@pytest.mark.parametrize("kid", ["abc", "-1", "0", "99999999999999999999",
                                 "1'%3B%20DROP%20TABLE%20keys%3B--", "%27"])
def test_bad_key_ids(api, m, kid):
    for method in ("GET", "PUT", "DELETE"):
        r = api(method, f"/admin/masters/{m['id']}/keys/{kid}", json={})
        assert r.status_code == 400, (method, r.text)
    r = api("POST", f"/admin/masters/{m['id']}/keys/{kid}/rotate", json={})
    assert r.status_code == 400


# ---------------------------------------------------------------- update


def test_partial_update_and_null_clearing(api, m):
    exp = iso(datetime.datetime.now(UTC) + datetime.timedelta(days=1))
    k = new_key(api, m["id"], name="n1", scopes=["a"], expires_at=exp, quota_limit=10)
    r = api("PUT", kpath(m["id"], k["id"]), json={"name": "n2"})
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["name"] == "n2"
    for f in ("scopes", "expires_at", "quota_limit", "group", "status", "token_prefix"):
        assert u[f] == k[f], f
    assert "token" not in u
    r = api("PUT", kpath(m["id"], k["id"]), json={"expires_at": None})
    assert r.status_code == 200 and r.json()["expires_at"] is None
    err(api("PUT", kpath(m["id"], k["id"]), json={"quota_limit": None}), 400, "quota_limit")


def test_status_writes(api, m, pg):
    k = new_key(api, m["id"])
    assert api("PUT", kpath(m["id"], k["id"]), json={"status": "disabled"}).json()["status"] == \
        "disabled"
    assert api("PUT", kpath(m["id"], k["id"]), json={"status": "active"}).json()["status"] == \
        "active"
    for st in ("expired", "exhausted", "gone"):
        err(api("PUT", kpath(m["id"], k["id"]), json={"status": st}), 400, "status")
        err(api("POST", kpath(m["id"]), json={"status": st}), 400, "status")


def test_extending_an_expired_key_or_lifting_an_exhausted_quota_revives_it(api, m, pg):
    a = new_key(api, m["id"])
    b = new_key(api, m["id"], quota_limit=100)
    with pg.cursor() as cur:
        cur.execute("UPDATE keys SET status = 'expired', expires_at = now() - interval '1 hour' "
                    "WHERE id = %s", (a["id"],))
        cur.execute("UPDATE keys SET status = 'exhausted', quota_used = 100 WHERE id = %s",
                    (b["id"],))
    # unrelated changes keep the system status
    assert api("PUT", kpath(m["id"], a["id"]), json={"name": "x"}).json()["status"] == "expired"
    assert api("PUT", kpath(m["id"], b["id"]), json={"quota_limit": 100}).json()["status"] == \
        "exhausted"
    exp = iso(datetime.datetime.now(UTC) + datetime.timedelta(days=1))
    assert api("PUT", kpath(m["id"], a["id"]), json={"expires_at": exp}).json()["status"] == \
        "active"
    assert api("PUT", kpath(m["id"], b["id"]), json={"quota_limit": 500}).json()["status"] == \
        "active"


PAST = "2001-01-01T00:00:00Z"


@pytest.mark.parametrize("body,field", [
    ({"name": "n" * 65}, "name"),
    ({"name": "tab\there"}, "name"),
    ({"name": 5}, "name"),
    ({"group": "bad group"}, "group"),
    ({"scopes": "chat"}, "scopes"),
    ({"scopes": [""]}, "scopes"),
    ({"scopes": ["a b"]}, "scopes"),
    ({"scopes": ["s" * 65]}, "scopes"),
    ({"scopes": [None]}, "scopes"),
    ({"namespaces": ["Bad"]}, "namespaces"),
    ({"namespaces": ["not-the-masters"]}, "namespaces"),
    ({"model_limits": ["has space"]}, "model_limits"),
    ({"model_limits": [".x"]}, "model_limits"),
    ({"model_limits": ["otherns.model"]}, "model_limits"),
    ({"model_limits_enabled": "true"}, "model_limits_enabled"),
    ({"allow_ips": ["300.1.1.1"]}, "allow_ips"),
    ({"allow_ips": ["10.0.0.0/33"]}, "allow_ips"),
    ({"allow_ips": ["::1/129"]}, "allow_ips"),
    ({"allow_ips": ["example.com"]}, "allow_ips"),
    ({"expires_at": PAST}, "expires_at"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"expires_at": 5}, "expires_at"),
    ({"quota_limit": -2}, "quota_limit"),
    ({"quota_limit": "12"}, "quota_limit"),
    ({"quota_limit": 1.5}, "quota_limit"),
    ({"quota_limit": 2 ** 63}, "quota_limit"),
    ({"quota_reset_period": "hourly"}, "quota_reset_period"),
    ({"status": "expired"}, "status"),
])
def test_validation(api, pg, m, body, field):
    k = new_key(api, m["id"])
    ob = max_id(pg, "sync_outbox")
    err(api("POST", kpath(m["id"]), json=body), 400, field)
    err(api("PUT", kpath(m["id"], k["id"]), json=body), 400, field)
    assert outbox(pg, ob) == []
    assert api("GET", kpath(m["id"])).json()["total"] == 1


@pytest.mark.parametrize("raw", ['{"quota_limit": 1e309}', '{"quota_limit": -1e400}',
                                 '{"name": "a", "name": "b"}', '{"scopes": [[[[]]]]}', "null"])
def test_bad_bodies(api, m, raw):
    r = api("POST", kpath(m["id"]), data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_mass_assignment_is_ignored(api, pg, m):
    other = master(api)
    evil = {"id": 987654321, "master_id": other["id"], "quota_used": 99,
            "created_at": "2001-01-01T00:00:00Z", "token_hash": "0" * 64,
            "token_prefix": "sk-evil", "prev_token_hash": "1" * 64, "request_count": 7,
            "token_count": 8, "last_accessed_at": "2001-01-01T00:00:00Z", "token": "sk-mine"}
    k = new_key(api, m["id"], **evil)
    assert k["id"] != 987654321 and k["master_id"] == m["id"]
    assert (k["quota_used"], k["request_count"], k["token_count"]) == (0, 0, 0)
    assert k["token"] != "sk-mine" and k["last_accessed_at"] is None
    row = key_row(pg, k["id"])
    assert row[0] == sha(k["token"]) and row[1] is None and row[6].year != 2001
    r = api("PUT", kpath(m["id"], k["id"]), json=evil)
    assert r.status_code == 200, r.text
    row2 = key_row(pg, k["id"])
    assert row2[:2] == row[:2] and row2[4] == m["id"] and row2[5] == 0
    assert r.json()["created_at"] == k["created_at"]


# ---------------------------------------------------------------- other master / 404


def test_a_key_of_another_master_is_404_under_this_path(api, pg, m):
    other = master(api)
    theirs = new_key(api, other["id"], name="theirs")
    ob = max_id(pg, "sync_outbox")
    err(api("GET", kpath(m["id"], theirs["id"])), 404)
    err(api("PUT", kpath(m["id"], theirs["id"]), json={"name": "stolen"}), 404)
    err(api("DELETE", kpath(m["id"], theirs["id"])), 404)
    err(api("POST", kpath(m["id"], theirs["id"], "/rotate"), json={}), 404)
    assert outbox(pg, ob) == []
    g = api("GET", kpath(other["id"], theirs["id"])).json()
    assert g["name"] == "theirs" and key_row(pg, theirs["id"])[0] == sha(theirs["token"])


def test_missing_key_is_404(api, m):
    for method in ("GET", "PUT", "DELETE"):
        err(api(method, kpath(m["id"], 999999999), json={}), 404)
    err(api("POST", kpath(m["id"], 999999999, "/rotate"), json={}), 404)


# ---------------------------------------------------------------- max_child_keys


def test_max_child_keys_is_enforced(api, pg):
    mm = master(api, max_child_keys=2)
    a = new_key(api, mm["id"])
    new_key(api, mm["id"])
    ob = max_id(pg, "sync_outbox")
    e = err(api("POST", kpath(mm["id"]), json={}), 409)
    assert e["code"] == "conflict" and "max_child_keys" in e["message"]
    assert outbox(pg, ob) == []
    assert api("DELETE", kpath(mm["id"], a["id"])).status_code == 204
    new_key(api, mm["id"])
    zero = master(api, max_child_keys=0)
    err(api("POST", kpath(zero["id"]), json={}), 409)


def test_concurrent_creates_cannot_pass_max_child_keys(stack):
    r = stack.api("POST", "/admin/masters", json={"name": uniq("m"), "max_child_keys": 3})
    mid = r.json()["id"]

    def one(_):
        # a session per thread: requests.Session is not thread-safe
        import requests
        return requests.post(f"{stack.url}{kpath(mid)}", json={},
                             headers={"Authorization": f"Bearer {stack.admin_token}"},
                             timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(one, range(12)))
    assert sorted(codes) == [201] * 3 + [409] * 9
    assert stack.api("GET", kpath(mid)).json()["total"] == 3


# ---------------------------------------------------------------- delete


def test_delete_writes_token_hashes_to_the_outbox(api, pg, m):
    k = new_key(api, m["id"])
    rot = api("POST", kpath(m["id"], k["id"], "/rotate"), json={"grace_seconds": 300}).json()
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    assert api("DELETE", kpath(m["id"], k["id"])).status_code == 204
    err(api("GET", kpath(m["id"], k["id"])), 404)
    rows = outbox(pg, ob)
    assert [(r[0], r[1], r[2]) for r in rows] == [("keys", k["id"], "delete")]
    assert set(rows[0][3]["token_hashes"]) == {sha(k["token"]), sha(rot["token"])}
    assert [(x[1], x[2], x[3]) for x in oplogs(pg, ol)] == [("delete", "keys", str(k["id"]))]


# ---------------------------------------------------------------- rotate


def test_rotate_with_grace_keeps_the_previous_hash(api, pg, m):
    k = new_key(api, m["id"], name="keep", quota_limit=5)
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    r = api("POST", kpath(m["id"], k["id"], "/rotate"), json={"grace_seconds": 3600})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["id"] == k["id"] and new["token"] != k["token"]
    assert new["token"].startswith("sk-") and new["token_prefix"] == new["token"][:7] + "\u2026"
    assert (new["name"], new["quota_limit"]) == ("keep", 5)
    row = key_row(pg, k["id"])
    assert row[0] == sha(new["token"]) and row[1] == sha(k["token"])
    assert row[2] == 3600
    assert [(x[0], x[1], x[2], x[3]) for x in outbox(pg, ob)] == [("keys", k["id"], "upsert", {})]
    logs = oplogs(pg, ol)
    assert [(x[1], x[2]) for x in logs] == [("rotate", "keys")]
    assert json.loads(logs[0][4]) == {"grace_seconds": 3600, "token": "[redacted]"}
    assert k["token"] not in logs[0][4] and new["token"] not in logs[0][4]
    assert new["token"] not in api("GET", kpath(m["id"], k["id"])).text
    # rotating again replaces the one in grace: it stops now
    ob = max_id(pg, "sync_outbox")
    r2 = api("POST", kpath(m["id"], k["id"], "/rotate"), json={"grace_seconds": 60}).json()
    row = key_row(pg, k["id"])
    assert row[1] == sha(new["token"]) and row[2] == 60
    assert outbox(pg, ob)[0][3] == {"old_token_hashes": [sha(k["token"])]}
    # grace 0: previous cleared, both old hashes listed
    ob = max_id(pg, "sync_outbox")
    r3 = api("POST", kpath(m["id"], k["id"], "/rotate"), json={"grace_seconds": 0}).json()
    row = key_row(pg, k["id"])
    assert row[0] == sha(r3["token"]) and row[1] is None and row[2] is None
    assert set(outbox(pg, ob)[0][3]["old_token_hashes"]) == {sha(new["token"]),
                                                             sha(r2["token"])}


@pytest.mark.parametrize("kwargs", [{}, {"json": {}}, {"json": {"grace_seconds": None}},
                                    {"json": {"grace_seconds": 0}}])
def test_rotate_default_grace_is_zero(api, pg, m, kwargs):
    k = new_key(api, m["id"])
    ob = max_id(pg, "sync_outbox")
    r = api("POST", kpath(m["id"], k["id"], "/rotate"), **kwargs)
    assert r.status_code == 200, r.text
    assert key_row(pg, k["id"])[1] is None
    assert outbox(pg, ob)[0][3] == {"old_token_hashes": [sha(k["token"])]}


@pytest.mark.parametrize("grace", [-1, 86401, "5", 1.5, True, 1e20])
def test_rotate_validates_grace(api, pg, m, grace):
    k = new_key(api, m["id"])
    err(api("POST", kpath(m["id"], k["id"], "/rotate"), json={"grace_seconds": grace}), 400,
        "grace_seconds")
    assert key_row(pg, k["id"])[0] == sha(k["token"])


def test_rotate_accepts_the_grace_bounds(api, pg, m):
    k = new_key(api, m["id"])
    r = api("POST", kpath(m["id"], k["id"], "/rotate"), json={"grace_seconds": 86400})
    assert r.status_code == 200 and key_row(pg, k["id"])[2] == 86400


# ---------------------------------------------------------------- audit / outbox


def test_each_write_leaves_oplog_and_outbox_rows_without_secrets(api, pg, m):
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    k = new_key(api, m["id"], name="aud", scopes=["x"])
    api("PUT", kpath(m["id"], k["id"]), json={"quota_limit": 9})
    rot = api("POST", kpath(m["id"], k["id"], "/rotate"), json={}).json()
    api("DELETE", kpath(m["id"], k["id"]))
    logs = oplogs(pg, ol)
    assert [(x[0], x[1], x[2], x[3]) for x in logs] == [
        ("admin", a, "keys", str(k["id"])) for a in ("create", "update", "rotate", "delete")]
    assert json.loads(logs[0][4]) == {"name": "aud", "scopes": ["x"]}
    assert json.loads(logs[1][4]) == {"quota_limit": 9}
    secrets = [k["token"], rot["token"], sha(k["token"]), sha(rot["token"])]
    for x in logs:
        for s in secrets:
            assert s not in x[4]
    assert [(r[0], r[1], r[2]) for r in outbox(pg, ob)] == [
        ("keys", k["id"], a) for a in ("upsert", "upsert", "upsert", "delete")]
