"""/admin/masters: CRUD, lists, validation, batch, manage (suspend / activate /
rotate_key / revoke_keys), realtime counters, and the operation-log and outbox
rows every write leaves (secrets never in them, never in a GET)."""

import datetime
import hashlib
import json
import time
import uuid

import pytest

PATH = "/admin/masters"
READ_FIELDS = {"id", "name", "group", "namespaces", "default_namespace", "max_child_keys",
               "global_qps", "status", "epoch", "key_prefix", "request_count", "token_count",
               "created_at", "updated_at"}
BAD_IDS = ["abc", "-1", "0", "99999999999999999999", "1'%3B%20DROP%20TABLE%20masters%3B--",
           "%27", "1.5"]


def uniq(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def create(api, **body):
    body.setdefault("name", uniq())
    r = api("POST", PATH, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def create_ns(api):
    name = f"ns-{uuid.uuid4().hex[:10]}"
    r = api("POST", "/admin/namespaces", json={"name": name})
    assert r.status_code == 201, r.text
    return name


def new_key(api, master_id, **body):
    r = api("POST", f"{PATH}/{master_id}/keys", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


def oplogs(pg, since_id, resource="masters"):
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, resource_id, changes::text FROM operation_logs "
                    "WHERE id > %s AND resource = %s ORDER BY id", (since_id, resource))
        return cur.fetchall()


def outbox(pg, since_id):
    with pg.cursor() as cur:
        cur.execute("SELECT resource, resource_id, action, payload FROM sync_outbox "
                    "WHERE id > %s ORDER BY id", (since_id,))
        return cur.fetchall()


def row(pg, master_id):
    with pg.cursor() as cur:
        cur.execute("SELECT name, status, epoch, key_hash, key_prefix, created_at, "
                    "max_child_keys FROM masters WHERE id = %s", (master_id,))
        return cur.fetchone()


def err(r, status, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    if field is not None:
        assert e.get("field") == field, e
    return e


# ---------------------------------------------------------------- create / read


def test_create_returns_master_key_once_and_stores_only_its_hash(api, pg):
    m = create(api)
    key = m["master_key"]
    assert key.startswith("mk-") and len(key) == 3 + 64
    assert all(c in "0123456789abcdef" for c in key[3:])
    assert m["key_prefix"] == key[:7] + "\u2026"
    assert set(m) == READ_FIELDS | {"master_key"}
    stored = row(pg, m["id"])
    assert stored[3] == sha(key)
    # Never again: not in a GET, not in a list, no hash either.
    g = api("GET", f"{PATH}/{m['id']}")
    assert g.status_code == 200
    assert set(g.json()) == READ_FIELDS
    assert key not in g.text and sha(key) not in g.text
    lst = api("GET", PATH, params={"q": m["name"]}).json()
    assert lst["total"] == 1 and set(lst["items"][0]) == READ_FIELDS
    assert key not in json.dumps(lst)


def test_create_defaults(api):
    m = create(api)
    assert m["group"] == "default"
    assert m["namespaces"] == []
    assert m["default_namespace"] == "default"
    assert m["max_child_keys"] == 10
    assert m["global_qps"] == 0
    assert m["status"] == "active"
    assert m["epoch"] == 0
    assert m["request_count"] == 0 and m["token_count"] == 0


def test_create_all_fields(api):
    ns = create_ns(api)
    m = create(api, group="g.1", namespaces=[ns, "default"], default_namespace="default",
               max_child_keys=0, global_qps=1000000)
    assert (m["group"], m["namespaces"], m["default_namespace"]) == ("g.1", [ns, "default"],
                                                                     "default")
    assert (m["max_child_keys"], m["global_qps"]) == (0, 1000000)


def test_empty_group_means_default(api):
    m = create(api, group="")
    assert m["group"] == "default"
    r = api("PUT", f"{PATH}/{m['id']}", json={"group": "gx"})
    assert r.json()["group"] == "gx"
    r = api("PUT", f"{PATH}/{m['id']}", json={"group": ""})
    assert r.json()["group"] == "default"


def test_namespaces_without_default_take_the_first(api):
    ns = create_ns(api)
    m = create(api, namespaces=[ns])
    assert m["default_namespace"] == ns


# ---------------------------------------------------------------- lists


@pytest.fixture
def three(api):
    tag = uuid.uuid4().hex[:8]
    ms = [create(api, name=f"ls{tag}-{n}", global_qps=q) for n, q in (("b", 1), ("a", 3), ("c", 2))]
    return tag, ms


def test_list_pagination(api, three):
    tag, ms = three
    seen = []
    for page in (1, 2):
        r = api("GET", PATH, params={"q": f"ls{tag}", "page": page, "page_size": 2})
        assert r.status_code == 200
        body = r.json()
        assert (body["total"], body["page"], body["page_size"]) == (3, page, 2)
        seen += [it["id"] for it in body["items"]]
    assert seen == sorted(m["id"] for m in ms)
    r = api("GET", PATH, params={"q": f"ls{tag}", "page": 3, "page_size": 2})
    assert r.json()["items"] == [] and r.json()["total"] == 3


@pytest.mark.parametrize("sort,key,reverse", [
    ("name", "name", False), ("-name", "name", True), ("-id", "id", True),
    ("global_qps", "global_qps", False), ("-created_at", "id", True)])
def test_list_sort(api, three, sort, key, reverse):
    tag, ms = three
    r = api("GET", PATH, params={"q": f"ls{tag}", "sort": sort})
    assert r.status_code == 200
    got = [it["id"] for it in r.json()["items"]]
    want = [m["id"] for m in sorted(ms, key=lambda m: (m[key], m["id"]), reverse=reverse)]
    if sort == "-created_at":  # same second: ties broken by id in the same direction
        assert set(got) == set(want)
    else:
        assert got == want


def test_list_filters(api, three):
    tag, ms = three
    r = api("POST", f"{PATH}/{ms[0]['id']}/manage", json={"action": "suspend"})
    assert r.status_code == 200
    r = api("GET", PATH, params={"q": f"ls{tag}", "status": "suspended"})
    assert [it["id"] for it in r.json()["items"]] == [ms[0]["id"]]
    r = api("GET", PATH, params={"q": f"ls{tag}", "status": "active"})
    assert r.json()["total"] == 2
    err(api("GET", PATH, params={"status": "gone"}), 400, "status")
    g = uniq("grp")
    m = create(api, group=g)
    r = api("GET", PATH, params={"group": g})
    assert [it["id"] for it in r.json()["items"]] == [m["id"]]


def test_q_wildcards_are_literal(api):
    tag = uuid.uuid4().hex[:8]
    a = create(api, name=f"q{tag}_x")
    create(api, name=f"q{tag}yx")
    r = api("GET", PATH, params={"q": f"q{tag}_"})
    assert [it["id"] for it in r.json()["items"]] == [a["id"]]
    for q in ("%", f"q{tag}%", "\\", f"q{tag}\\"):
        r = api("GET", PATH, params={"q": q})
        assert r.status_code == 200 and r.json()["total"] == 0, q


@pytest.mark.parametrize("params,status", [
    ({"q": "1'; DROP TABLE masters;--"}, 200),
    ({"q": "%27"}, 200),
    ({"group": "' OR '1'='1"}, 200),
    ({"namespaces": "x'); DROP TABLE masters;--"}, 200),
    ({"sort": "name; DROP TABLE masters"}, 400),
    ({"sort": "-id'--"}, 400),
    ({"sort": "key_hash"}, 400),
    ({"status": "active' OR '1'='1"}, 400),
    ({"page": "1'"}, 400),
    ({"page_size": "201"}, 400),
    ({"page": "0"}, 400),
])
def test_list_sql_metacharacters(api, pg, params, status):
    r = api("GET", PATH, params=params)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["total"] == 0
    else:
        assert r.json()["error"]["code"] == "invalid_argument"
    assert max_id(pg, "masters") >= 0  # the table is still there


# ---------------------------------------------------------------- update


def test_partial_update_keeps_absent_fields(api):
    ns = create_ns(api)
    m = create(api, namespaces=[ns], global_qps=5, max_child_keys=3, group="gg")
    r = api("PUT", f"{PATH}/{m['id']}", json={"global_qps": 9})
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["global_qps"] == 9
    for k in ("name", "group", "namespaces", "default_namespace", "max_child_keys", "status"):
        assert u[k] == m[k], k
    assert "master_key" not in u


def test_rename_and_unique_name(api):
    a, b = create(api), create(api)
    err(api("POST", PATH, json={"name": a["name"]}), 409, "name")
    err(api("PUT", f"{PATH}/{b['id']}", json={"name": a["name"]}), 409, "name")
    new = uniq()
    assert api("PUT", f"{PATH}/{b['id']}", json={"name": new}).json()["name"] == new


def test_update_validates_the_merged_state(api):
    ns = create_ns(api)
    m = create(api, namespaces=[ns, "default"], default_namespace=ns)
    # dropping the current default from the list without naming a new one
    err(api("PUT", f"{PATH}/{m['id']}", json={"namespaces": ["default"]}), 400,
        "default_namespace")
    # a default that is not listed
    err(api("PUT", f"{PATH}/{m['id']}", json={"default_namespace": "other"}), 400,
        "default_namespace")
    r = api("PUT", f"{PATH}/{m['id']}", json={"namespaces": ["default"],
                                              "default_namespace": "default"})
    assert r.status_code == 200, r.text
    # empty list: any existing default is fine
    r = api("PUT", f"{PATH}/{m['id']}", json={"namespaces": [], "default_namespace": ns})
    assert r.status_code == 200 and r.json()["default_namespace"] == ns


def test_narrowing_namespaces_used_by_keys_is_refused(api):
    ns = create_ns(api)
    m = create(api, namespaces=[ns, "default"], default_namespace="default")
    k = new_key(api, m["id"], namespaces=[ns])
    e = err(api("PUT", f"{PATH}/{m['id']}", json={"namespaces": ["default"]}), 409, "namespaces")
    assert str(k["id"]) in e["message"]
    assert api("DELETE", f"{PATH}/{m['id']}/keys/{k['id']}").status_code == 204
    assert api("PUT", f"{PATH}/{m['id']}", json={"namespaces": ["default"]}).status_code == 200


def test_lowering_max_child_keys_below_the_key_count_is_allowed(api):
    m = create(api, max_child_keys=3)
    new_key(api, m["id"])
    new_key(api, m["id"])
    r = api("PUT", f"{PATH}/{m['id']}", json={"max_child_keys": 1})
    assert r.status_code == 200 and r.json()["max_child_keys"] == 1
    assert api("GET", f"{PATH}/{m['id']}/keys").json()["total"] == 2
    err(api("POST", f"{PATH}/{m['id']}/keys", json={}), 409)


NAME65 = "n" * 65


@pytest.mark.parametrize("body,field", [
    ({"name": None}, "name"),
    ({"name": ""}, "name"),
    ({"name": "bad name"}, "name"),
    ({"name": NAME65}, "name"),
    ({"name": 12}, "name"),
    ({"group": "bad group"}, "group"),
    ({"group": "g" * 65}, "group"),
    ({"namespaces": "default"}, "namespaces"),
    ({"namespaces": ["Upper"]}, "namespaces"),
    ({"namespaces": ["does-not-exist-x"]}, "namespaces"),
    ({"namespaces": ["default", "default"]}, "namespaces"),
    ({"namespaces": [1]}, "namespaces"),
    ({"default_namespace": "does-not-exist-x"}, "default_namespace"),
    ({"default_namespace": ""}, "default_namespace"),
    ({"max_child_keys": -1}, "max_child_keys"),
    ({"max_child_keys": 100001}, "max_child_keys"),
    ({"max_child_keys": "12"}, "max_child_keys"),
    ({"max_child_keys": 1.5}, "max_child_keys"),
    ({"global_qps": -1}, "global_qps"),
    ({"global_qps": 1000001}, "global_qps"),
    ({"global_qps": True}, "global_qps"),
])
def test_validation(api, pg, body, field):
    before = (max_id(pg, "masters"), max_id(pg, "sync_outbox"), max_id(pg, "operation_logs"))
    b = {"name": uniq(), **body}
    if b["name"] is None:
        del b["name"]
    err(api("POST", PATH, json=b), 400, field)
    m = create(api)
    upd = {k: v for k, v in body.items() if v is not None}
    if upd:
        err(api("PUT", f"{PATH}/{m['id']}", json=upd), 400, field)
    # nothing written by the failed requests
    after_create = max_id(pg, "masters")
    assert after_create == m["id"] and m["id"] > before[0]
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM sync_outbox WHERE id > %s", (before[1],))
        assert cur.fetchone()[0] == 1  # the successful create only


def test_default_namespace_must_be_listed_on_create(api):
    ns = create_ns(api)
    err(api("POST", PATH, json={"name": uniq(), "namespaces": [ns],
                                "default_namespace": "default"}), 400, "default_namespace")


@pytest.mark.parametrize("raw", ['{"name": "x", "global_qps": 1e309}', '{"name": "x", "max_child_keys": 99999999999999999999}', "[]", "{", ""])
def test_bad_bodies(api, raw):
    r = api("POST", PATH, data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_mass_assignment_is_ignored(api, pg):
    body = {"name": uniq(), "id": 987654321, "epoch": 7, "status": "suspended",
            "created_at": "2001-01-01T00:00:00Z", "key_hash": "0" * 64,
            "key_prefix": "mk-evil", "request_count": 5, "token_count": 6,
            "master_key": "mk-chosen"}
    r = api("POST", PATH, json=body)
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["id"] != 987654321
    assert (m["status"], m["epoch"], m["request_count"], m["token_count"]) == ("active", 0, 0, 0)
    assert m["master_key"] != "mk-chosen"
    stored = row(pg, m["id"])
    assert stored[3] == sha(m["master_key"]) and stored[5].year != 2001
    before = api("GET", f"{PATH}/{m['id']}").json()
    r = api("PUT", f"{PATH}/{m['id']}", json={k: v for k, v in body.items() if k != "name"})
    assert r.status_code == 200, r.text
    after = r.json()
    for k in ("id", "epoch", "status", "created_at", "key_prefix", "request_count"):
        assert after[k] == before[k], k
    assert row(pg, m["id"])[3] == sha(m["master_key"])


# ---------------------------------------------------------------- delete / 404


def test_delete_cascades_keys_and_the_outbox_row_lists_their_hashes(api, pg):
    m = create(api)
    k1 = new_key(api, m["id"])
    k2 = new_key(api, m["id"])
    rot = api("POST", f"{PATH}/{m['id']}/keys/{k2['id']}/rotate", json={"grace_seconds": 600})
    assert rot.status_code == 200
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    assert api("DELETE", f"{PATH}/{m['id']}").status_code == 204
    err(api("GET", f"{PATH}/{m['id']}"), 404)
    err(api("DELETE", f"{PATH}/{m['id']}"), 404)
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM keys WHERE master_id = %s", (m["id"],))
        assert cur.fetchone()[0] == 0
    rows = outbox(pg, ob)
    assert [(r[0], r[1], r[2]) for r in rows] == [("masters", m["id"], "delete")]
    want = {sha(k1["token"]), sha(k2["token"]), sha(rot.json()["token"])}
    assert set(rows[0][3]["token_hashes"]) == want
    assert oplogs(pg, ol) == [("admin", "delete", str(m["id"]), "{}")]


@pytest.mark.parametrize("method,suffix,body", [
    ("GET", "", None), ("PUT", "", {"global_qps": 1}), ("DELETE", "", None),
    ("POST", "/manage", {"action": "suspend"}), ("GET", "/realtime", None),
    ("GET", "/keys", None), ("POST", "/keys", {}), ("GET", "/keys/1", None)])
def test_missing_master_is_404(api, pg, method, suffix, body):
    ob = max_id(pg, "sync_outbox")
    r = api(method, f"{PATH}/999999999{suffix}", json=body)
    err(r, 404)
    assert outbox(pg, ob) == []


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("method,suffix", [("GET", ""), ("PUT", ""), ("DELETE", ""),
                                           ("POST", "/manage"), ("GET", "/realtime"),
                                           ("GET", "/keys")])
def test_bad_ids_are_400(api, bad, method, suffix):
    r = api(method, f"{PATH}/{bad}{suffix}", json={"action": "suspend"})
    assert r.status_code in (400, 404), r.text
    assert r.status_code < 500


# ---------------------------------------------------------------- audit / outbox


def test_each_write_leaves_one_oplog_and_outbox_row_without_secrets(api, pg):
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    m = create(api, global_qps=1)
    api("PUT", f"{PATH}/{m['id']}", json={"global_qps": 2})
    rot = api("POST", f"{PATH}/{m['id']}/manage", json={"action": "rotate_key"}).json()
    api("DELETE", f"{PATH}/{m['id']}")
    logs = oplogs(pg, ol)
    assert [(a, act, rid) for a, act, rid, _ in logs] == [
        ("admin", "create", str(m["id"])), ("admin", "update", str(m["id"])),
        ("admin", "manage_rotate_key", str(m["id"])), ("admin", "delete", str(m["id"]))]
    assert json.loads(logs[0][3]) == {"name": m["name"], "global_qps": 1}
    assert json.loads(logs[1][3]) == {"global_qps": 2}
    assert json.loads(logs[2][3]) == {"master_key": "[redacted]"}
    for secret in (m["master_key"], rot["master_key"], sha(m["master_key"])):
        for _, _, _, ch in logs:
            assert secret not in ch
    assert [(r[0], r[1], r[2]) for r in outbox(pg, ob)] == [
        ("masters", m["id"], "upsert"), ("masters", m["id"], "upsert"),
        ("masters", m["id"], "upsert"), ("masters", m["id"], "delete")]


def test_failed_write_leaves_no_outbox_or_oplog_row(api, pg):
    a, b = create(api), create(api)
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    err(api("PUT", f"{PATH}/{b['id']}", json={"name": a["name"]}), 409)  # fails in the UPDATE
    err(api("POST", PATH, json={"name": a["name"]}), 409)  # fails in the INSERT
    err(api("POST", f"{PATH}/{b['id']}/manage", json={"action": "nope"}), 400, "action")
    assert outbox(pg, ob) == [] and oplogs(pg, ol) == []
    assert row(pg, b["id"])[0] == b["name"]


# ---------------------------------------------------------------- batch


def test_batch_create_returns_keys_and_is_all_or_nothing(api, pg):
    tag = uuid.uuid4().hex[:8]
    ob = max_id(pg, "sync_outbox")
    items = [{"name": f"bt{tag}-0"}, {"name": f"bt{tag}-1"}, {"name": "bad name"}]
    e = err(api("POST", f"{PATH}/batch", json={"action": "create", "items": items}), 400,
            "items[2].name")
    assert "items[2].name" in e["message"]
    assert api("GET", PATH, params={"q": f"bt{tag}"}).json()["total"] == 0
    assert outbox(pg, ob) == []
    # a duplicate inside the batch: 409 naming the index, nothing written
    dup = [{"name": f"bt{tag}-0"}, {"name": f"bt{tag}-0"}]
    err(api("POST", f"{PATH}/batch", json={"action": "create", "items": dup}), 409, "items[1].name")
    assert api("GET", PATH, params={"q": f"bt{tag}"}).json()["total"] == 0
    ol = max_id(pg, "operation_logs")
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items[:2]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "create" and body["count"] == 2
    for it in body["items"]:
        assert it["master_key"].startswith("mk-")
        assert api("GET", "/v1/self", token=it["master_key"]).status_code == 200
    assert [x[1] for x in oplogs(pg, ol)] == ["batch_create", "batch_create"]
    for _, _, _, ch in oplogs(pg, ol):
        assert "mk-" not in ch


def test_batch_suspend_activate_delete(api, pg):
    a, b = create(api), create(api)
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    err(api("POST", f"{PATH}/batch", json={"action": "suspend", "ids": [a["id"], 999999999]}),
        404, "ids[1]")
    assert row(pg, a["id"])[1] == "active"
    assert outbox(pg, ob) == []
    err(api("POST", f"{PATH}/batch", json={"action": "suspend", "ids": [a["id"], "x"]}), 400,
        "ids[1]")
    r = api("POST", f"{PATH}/batch", json={"action": "suspend", "ids": [a["id"], b["id"]]})
    assert r.status_code == 200, r.text
    assert [it["status"] for it in r.json()["items"]] == ["suspended", "suspended"]
    assert api("GET", "/v1/self", token=a["master_key"]).status_code == 403
    rows = {(x[0], x[1]) for x in outbox(pg, ob)}
    assert rows == {("masters", a["id"]), ("master_keys", a["id"]), ("masters", b["id"]),
                    ("master_keys", b["id"])}
    assert [x[1] for x in oplogs(pg, ol)] == ["batch_suspend", "batch_suspend"]
    r = api("POST", f"{PATH}/batch", json={"action": "activate", "ids": [a["id"]]})
    assert r.status_code == 200 and r.json()["items"][0]["status"] == "active"
    assert api("GET", "/v1/self", token=a["master_key"]).status_code == 200
    err(api("POST", f"{PATH}/batch", json={"action": "explode", "ids": [a["id"]]}), 400, "action")
    err(api("POST", f"{PATH}/batch", json={"action": "disable", "ids": [a["id"]]}), 400)
    err(api("POST", f"{PATH}/batch", json={"action": "delete", "ids": []}), 400, "ids")
    r = api("POST", f"{PATH}/batch", json={"action": "delete", "ids": [a["id"], b["id"]]})
    assert r.status_code == 200 and r.json()["items"] == [a["id"], b["id"]]
    err(api("GET", f"{PATH}/{a['id']}"), 404)


# ---------------------------------------------------------------- manage


def test_manage_suspend_and_activate(api, pg):
    m = create(api)
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    r = api("POST", f"{PATH}/{m['id']}/manage", json={"action": "suspend"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert "master_key" not in r.json()
    e = err(api("GET", "/v1/self", token=m["master_key"]), 403)
    assert e["code"] == "forbidden"
    r = api("POST", f"{PATH}/{m['id']}/manage", json={"action": "activate"})
    assert r.json()["status"] == "active"
    assert api("GET", "/v1/self", token=m["master_key"]).status_code == 200
    assert [(x[0], x[1]) for x in outbox(pg, ob)] == [
        ("masters", m["id"]), ("master_keys", m["id"])] * 2
    assert [(x[1], json.loads(x[3])) for x in oplogs(pg, ol)] == [
        ("manage_suspend", {"status": "suspended"}), ("manage_activate", {"status": "active"})]


def test_status_and_epoch_are_not_writable_by_put(api):
    m = create(api)
    r = api("PUT", f"{PATH}/{m['id']}", json={"status": "suspended", "epoch": 3})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["epoch"]) == ("active", 0)


def test_manage_rotate_key_stops_the_old_key_at_once(api, pg):
    m = create(api)
    assert api("GET", "/v1/self", token=m["master_key"]).status_code == 200
    ob = max_id(pg, "sync_outbox")
    r = api("POST", f"{PATH}/{m['id']}/manage", json={"action": "rotate_key"})
    assert r.status_code == 200
    new = r.json()["master_key"]
    assert new != m["master_key"] and new.startswith("mk-")
    assert r.json()["key_prefix"] == new[:7] + "\u2026"
    err(api("GET", "/v1/self", token=m["master_key"]), 401)
    assert api("GET", "/v1/self", token=new).json()["id"] == m["id"]
    assert row(pg, m["id"])[3] == sha(new)
    assert [(x[0], x[1]) for x in outbox(pg, ob)] == [("masters", m["id"])]
    assert new not in api("GET", f"{PATH}/{m['id']}").text


def test_manage_revoke_keys_disables_every_key_and_bumps_epoch(api, pg):
    m = create(api)
    keys = [new_key(api, m["id"]) for _ in range(3)]
    api("PUT", f"{PATH}/{m['id']}/keys/{keys[0]['id']}", json={"status": "disabled"})
    other = create(api)
    ok = new_key(api, other["id"])
    ob, ol = max_id(pg, "sync_outbox"), max_id(pg, "operation_logs")
    r = api("POST", f"{PATH}/{m['id']}/manage", json={"action": "revoke_keys"})
    assert r.status_code == 200 and r.json()["epoch"] == 1
    with pg.cursor() as cur:
        cur.execute("SELECT DISTINCT status FROM keys WHERE master_id = %s", (m["id"],))
        assert cur.fetchall() == [("disabled",)]
        cur.execute("SELECT status FROM keys WHERE id = %s", (ok["id"],))
        assert cur.fetchone()[0] == "active"
    assert [(x[0], x[1]) for x in outbox(pg, ob)] == [("masters", m["id"]),
                                                      ("master_keys", m["id"])]
    logs = oplogs(pg, ol)
    assert logs[0][1] == "manage_revoke_keys"
    assert json.loads(logs[0][3]) == {"epoch": 1, "keys_disabled": 2}
    r = api("POST", f"{PATH}/{m['id']}/manage", json={"action": "revoke_keys"})
    assert r.json()["epoch"] == 2


@pytest.mark.parametrize("body", [{}, {"action": "delete"}, {"action": 1}, {"action": None}])
def test_manage_bad_action(api, body):
    m = create(api)
    err(api("POST", f"{PATH}/{m['id']}/manage", json=body), 400, "action")


# ---------------------------------------------------------------- realtime


def rt_seed(rds, master_id, now, per_second):
    """Writes the data plane's counters: per_second(t) requests in second t."""
    pipe = rds.pipeline()
    for t in range(now - 100, now + 20):
        n = per_second(t)
        if n:
            pipe.hset(f"rt:master:{master_id}:s:{t}", mapping={"requests": n, "tokens": n * 10})
            pipe.expire(f"rt:master:{master_id}:s:{t}", 300)
    pipe.execute()


def test_realtime_zeros_when_there_are_no_counters(api):
    m = create(api, global_qps=12)
    r = api("GET", f"{PATH}/{m['id']}/realtime")
    assert r.status_code == 200
    assert r.json() == {"master_id": m["id"], "requests": 0, "tokens": 0, "errors": 0,
                        "qps_10s": 0, "qps_60s": 0, "global_qps": 12, "limited": False,
                        "last_request_at": None}


def test_realtime_reads_the_data_plane_counters(api, rds):
    m = create(api, global_qps=50)
    mid = m["id"]
    now = int(time.time())
    # 6 requests per second in the last 30 s (and a few seconds ahead, for clock
    # skew between this process and the server), none before.
    rt_seed(rds, mid, now, lambda t: 6 if t >= now - 30 else 0)
    rds.hset(f"rt:master:{mid}", mapping={"requests": 1234, "tokens": 56789, "errors": 7,
                                          "last_request_at": now - 5})
    rds.set(f"rt:master:{mid}:limited", "1", ex=120)
    r = api("GET", f"{PATH}/{mid}/realtime")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["master_id"], body["requests"], body["tokens"], body["errors"]) == (
        mid, 1234, 56789, 7)
    assert body["global_qps"] == 50 and body["limited"] is True
    assert body["qps_10s"] == 6
    # the server's "now" is this second or one of the next few: 30..33 busy seconds of 60
    assert body["qps_60s"] in {6 * n / 60 for n in range(30, 34)}
    want_last = datetime.datetime.fromtimestamp(now - 5, datetime.timezone.utc)
    assert body["last_request_at"] == want_last.strftime("%Y-%m-%dT%H:%M:%SZ")
    rds.delete(f"rt:master:{mid}:limited")
    assert api("GET", f"{PATH}/{mid}/realtime").json()["limited"] is False


def test_realtime_ignores_garbage_counters(api, rds):
    m = create(api)
    rds.hset(f"rt:master:{m['id']}", mapping={"requests": "lots", "tokens": "-5"})
    r = api("GET", f"{PATH}/{m['id']}/realtime")
    assert r.status_code == 200
    assert (r.json()["requests"], r.json()["tokens"]) == (0, 0)


def test_realtime_answers_503_when_redis_is_down(api, ctl, wait_for):
    m = create(api)
    ctl("stop", "redis")
    try:
        r = api("GET", f"{PATH}/{m['id']}/realtime")
        e = err(r, 503)
        assert e["code"] == "unavailable" and "redis" in e["message"].lower()
        # writes still work: PostgreSQL is the truth
        assert api("PUT", f"{PATH}/{m['id']}", json={"global_qps": 3}).status_code == 200
    finally:
        ctl("start", "redis")
    wait_for(lambda: api("GET", f"{PATH}/{m['id']}/realtime").status_code == 200,
             message="realtime after Redis came back")
