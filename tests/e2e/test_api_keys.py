"""/admin/api-keys: CRUD, ?group_id= and other list options, validation,
the write-only secret (masked in every response, redacted in operation logs,
absent from server logs), batch (all or nothing), outbox payloads when a key
is deleted or moves to another group, SQL metacharacters."""

import uuid

import pytest

PATH = "/admin/api-keys"
FIELDS = {"id", "group_id", "api_key", "weight", "status", "auto_ban", "ban_until", "created_at",
          "updated_at"}
MINE = ["provider_groups", "api_keys", "bindings", "models"]


def uniq(prefix="ak"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def secret():
    return f"sk-test-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


def rows_after(pg, table, after, cols, resources=MINE):
    with pg.cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {table} WHERE id > %s AND resource = ANY(%s) ORDER BY id",
                    (after, list(resources)))
        return cur.fetchall()


def err_field(r):
    return r.json()["error"].get("field")


@pytest.fixture
def group(api):
    """A fresh provider group factory; groups (and their keys) are deleted afterwards."""
    made = []

    def make(**body):
        body.setdefault("name", uniq("grp"))
        body.setdefault("type", "openai")
        r = api("POST", "/admin/provider-groups", json=body)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()

    yield make
    for gid in made:
        api("DELETE", f"/admin/provider-groups/{gid}", params={"force": "true"})


def create(api, **body):
    r = api("POST", PATH, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def assert_masked(item, sec):
    assert item["api_key"] != sec
    assert sec not in item["api_key"]
    assert item["api_key"].startswith(sec[:4]) and item["api_key"].endswith(sec[-4:])
    assert len(item["api_key"]) < 16


# ---------------------------------------------------------------- CRUD and masking

def test_create_read_defaults_and_masking_everywhere(api, group):
    g = group()
    sec = secret()
    k = create(api, group_id=g["id"], api_key=sec)
    assert set(k) == FIELDS
    assert k["group_id"] == g["id"]
    assert (k["weight"], k["status"], k["auto_ban"], k["ban_until"]) == (1, "active", True, None)
    assert_masked(k, sec)

    r = api("GET", f"{PATH}/{k['id']}")
    assert r.status_code == 200 and r.json() == k
    r = api("GET", PATH, params={"group_id": g["id"]})
    assert [it["id"] for it in r.json()["items"]] == [k["id"]]
    assert_masked(r.json()["items"][0], sec)
    r = api("PUT", f"{PATH}/{k['id']}", json={"weight": 5})
    assert r.status_code == 200
    assert_masked(r.json(), sec)
    sec2 = secret()
    r = api("PUT", f"{PATH}/{k['id']}", json={"api_key": sec2})
    assert r.status_code == 200
    assert_masked(r.json(), sec2)
    r = api("POST", f"{PATH}/batch", json={"action": "disable", "ids": [k["id"]]})
    assert r.status_code == 200
    assert_masked(r.json()["items"][0], sec2)
    r = api("POST", f"{PATH}/batch", json={"action": "create",
                                           "items": [{"group_id": g["id"], "api_key": sec}]})
    assert r.status_code == 200
    assert_masked(r.json()["items"][0], sec)
    for resp in (api("GET", PATH, params={"group_id": g["id"]}), ):
        assert sec not in resp.text and sec2 not in resp.text


def test_short_secret_fully_masked(api, group):
    k = create(api, group_id=group()["id"], api_key="abc123")
    assert "abc123" not in k["api_key"]


def test_partial_update_and_null_clearing(api, group):
    g = group()
    k = create(api, group_id=g["id"], api_key=secret(), weight=7, auto_ban=False,
               ban_until="2030-01-02T03:04:05Z")
    assert k["ban_until"] == "2030-01-02T03:04:05Z"
    r = api("PUT", f"{PATH}/{k['id']}", json={"status": "banned"})
    assert r.status_code == 200
    u = r.json()
    assert u["status"] == "banned"
    assert (u["weight"], u["auto_ban"], u["ban_until"]) == (7, False, "2030-01-02T03:04:05Z")
    r = api("PUT", f"{PATH}/{k['id']}", json={"ban_until": None})
    assert r.status_code == 200
    assert r.json()["ban_until"] is None
    assert r.json()["status"] == "banned"
    # an offset time is stored and shown in UTC
    r = api("PUT", f"{PATH}/{k['id']}", json={"ban_until": "2030-01-02T05:04:05+02:00"})
    assert r.json()["ban_until"] == "2030-01-02T03:04:05Z"


def test_delete_then_404(api, pg, group):
    g = group()
    k = create(api, group_id=g["id"], api_key=secret())
    before_box = max_id(pg, "sync_outbox")
    assert api("DELETE", f"{PATH}/{k['id']}").status_code == 204
    assert api("GET", f"{PATH}/{k['id']}").status_code == 404
    assert api("DELETE", f"{PATH}/{k['id']}").status_code == 404
    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action, payload")
    assert box == [("api_keys", k["id"], "delete", {"group_id": g["id"], "binding_keys": []})]


@pytest.mark.parametrize("method,body", [("GET", None), ("PUT", {"weight": 2}),
                                         ("PUT", {"group_id": 1, "weight": 2}),
                                         ("DELETE", None)])
def test_missing_id_404(api, group, method, body):
    if body and "group_id" in body:
        body = dict(body, group_id=group()["id"])
    r = api(method, f"{PATH}/987654321012", json=body)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("body,field", [
    ({"api_key": "sk-x"}, "group_id"),
    ({"group_id": 987654321012, "api_key": "sk-x"}, "group_id"),
    ({"group_id": "G", "api_key": "sk-x", "_str": True}, "group_id"),
    ({"group_id": 0, "api_key": "sk-x"}, "group_id"),
    ({"group_id": "G"}, "api_key"),
    ({"group_id": "G", "api_key": ""}, "api_key"),
    ({"group_id": "G", "api_key": "k" * 4097}, "api_key"),
    ({"group_id": "G", "api_key": "sk abc"}, "api_key"),
    ({"group_id": "G", "api_key": 12345}, "api_key"),
    ({"group_id": "G", "api_key": "sk-x", "weight": 0}, "weight"),
    ({"group_id": "G", "api_key": "sk-x", "weight": 1001}, "weight"),
    ({"group_id": "G", "api_key": "sk-x", "weight": 1.5}, "weight"),
    ({"group_id": "G", "api_key": "sk-x", "weight": "3"}, "weight"),
    ({"group_id": "G", "api_key": "sk-x", "status": "expired"}, "status"),
    ({"group_id": "G", "api_key": "sk-x", "auto_ban": "yes"}, "auto_ban"),
    ({"group_id": "G", "api_key": "sk-x", "auto_ban": None}, "auto_ban"),
    ({"group_id": "G", "api_key": "sk-x", "ban_until": "tomorrow"}, "ban_until"),
])
def test_validation_names_the_field(api, pg, group, body, field):
    gid = group()["id"]
    body = dict(body)
    as_str = body.pop("_str", False)
    if body.get("group_id") == "G":
        body["group_id"] = str(gid) if as_str else gid
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    r = api("POST", PATH, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_argument"
    assert err_field(r) == field
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []


def test_4096_char_secret_accepted(api, group):
    k = create(api, group_id=group()["id"], api_key="k" * 4096)
    assert "k" * 10 not in k["api_key"]


def test_update_to_missing_group_400(api, group):
    k = create(api, group_id=group()["id"], api_key=secret())
    r = api("PUT", f"{PATH}/{k['id']}", json={"group_id": 987654321012})
    assert r.status_code == 400 and err_field(r) == "group_id"


def test_mass_assignment_ignored(api, group):
    g = group()
    k = create(api, group_id=g["id"], api_key=secret(), id=5151515,
               created_at="2001-01-01T00:00:00Z", name="x")
    assert k["id"] != 5151515 and not k["created_at"].startswith("2001")
    assert "name" not in k


# ---------------------------------------------------------------- lists

def test_list_filter_pagination_sort(api, group):
    g1, g2 = group(), group()
    a = create(api, group_id=g1["id"], api_key=secret(), weight=3)
    b = create(api, group_id=g1["id"], api_key=secret(), weight=1, status="banned")
    c = create(api, group_id=g1["id"], api_key=secret(), weight=2, auto_ban=False)
    other = create(api, group_id=g2["id"], api_key=secret())

    r = api("GET", PATH, params={"group_id": g1["id"], "page_size": 2})
    body = r.json()
    assert body["total"] == 3 and len(body["items"]) == 2 and body["page_size"] == 2
    r2 = api("GET", PATH, params={"group_id": g1["id"], "page_size": 2, "page": 2})
    ids = [it["id"] for it in body["items"]] + [it["id"] for it in r2.json()["items"]]
    assert ids == [a["id"], b["id"], c["id"]]
    assert other["id"] not in ids

    r = api("GET", PATH, params={"group_id": g1["id"], "sort": "-weight"})
    assert [it["id"] for it in r.json()["items"]] == [a["id"], c["id"], b["id"]]
    r = api("GET", PATH, params={"group_id": g1["id"], "status": "banned"})
    assert [it["id"] for it in r.json()["items"]] == [b["id"]]
    r = api("GET", PATH, params={"group_id": g1["id"], "auto_ban": "false"})
    assert [it["id"] for it in r.json()["items"]] == [c["id"]]
    # q has no name to search here: ignored, never a search on the secret
    r = api("GET", PATH, params={"group_id": g1["id"], "q": "sk-test"})
    assert r.json()["total"] == 3


@pytest.mark.parametrize("params", [
    {"group_id": "1 OR 1=1"}, {"group_id": "1;DROP TABLE api_keys"}, {"group_id": "abc"},
    {"auto_ban": "' OR '1'='1"}, {"status": "active' --"}, {"sort": "api_key"},
    {"sort": "weight;DELETE FROM api_keys"}, {"page_size": "1e3"},
])
def test_sql_metacharacters_in_filters_400(api, params):
    r = api("GET", PATH, params=params)
    assert r.status_code == 400, r.text


def test_sql_metacharacters_in_q_ignored(api):
    r = api("GET", PATH, params={"q": "' OR 1=1; --", "group_id": 987654321012})
    assert r.status_code == 200 and r.json()["total"] == 0


@pytest.mark.parametrize("suffix", ["1%27--", "1%20OR%201=1", "0", "-5", "1.0", "0x10"])
def test_sql_metacharacters_in_ids(api, suffix):
    assert api("GET", f"{PATH}/{suffix}").status_code in (400, 404)


# ---------------------------------------------------------------- batch

def test_batch_create_all_or_nothing(api, pg, group):
    g = group()
    before = max_id(pg, "api_keys")
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    items = [{"group_id": g["id"], "api_key": secret()},
             {"group_id": g["id"], "api_key": secret()},
             {"group_id": g["id"], "api_key": secret(), "weight": 5000}]
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 400
    assert err_field(r) == "items[2].weight"
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_keys WHERE id > %s AND group_id = %s",
                    (before, g["id"]))
        assert cur.fetchone()[0] == 0
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []

    items[1]["group_id"] = 987654321012
    items[2]["weight"] = 5
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 400 and err_field(r) == "items[1].group_id"

    items[1]["group_id"] = g["id"]
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "create" and body["count"] == 3
    assert [it["weight"] for it in body["items"]] == [1, 1, 5]
    ids = [it["id"] for it in body["items"]]
    logs = rows_after(pg, "operation_logs", before_log, "action, resource, resource_id")
    assert logs == [("batch_create", "api_keys", str(i)) for i in ids]
    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action")
    assert box == [("api_keys", i, "upsert") for i in ids]


def test_batch_status_and_delete(api, pg, group):
    g = group()
    ids = [create(api, group_id=g["id"], api_key=secret())["id"] for _ in range(3)]
    r = api("POST", f"{PATH}/batch", json={"action": "disable", "ids": ids[:2]})
    assert r.status_code == 200 and r.json()["count"] == 2
    assert [it["status"] for it in r.json()["items"]] == ["disabled", "disabled"]
    r = api("POST", f"{PATH}/batch", json={"action": "enable", "ids": ids[:1]})
    assert r.json()["items"][0]["status"] == "active"

    before_box = max_id(pg, "sync_outbox")
    r = api("POST", f"{PATH}/batch", json={"action": "delete", "ids": [ids[0], 987654321012]})
    assert r.status_code == 404 and err_field(r) == "ids[1]"
    assert api("GET", f"{PATH}/{ids[0]}").status_code == 200
    assert rows_after(pg, "sync_outbox", before_box, "id") == []
    r = api("POST", f"{PATH}/batch", json={"action": "delete", "ids": ids})
    assert r.status_code == 200 and r.json()["items"] == ids
    for i in ids:
        assert api("GET", f"{PATH}/{i}").status_code == 404
    box = rows_after(pg, "sync_outbox", before_box, "resource, action, payload")
    assert box == [("api_keys", "delete", {"group_id": g["id"], "binding_keys": []})] * 3


@pytest.mark.parametrize("body,field", [
    ({"action": "explode", "ids": [1]}, "action"),
    ({"action": "suspend", "ids": [1]}, "action"),
    ({"action": "delete", "ids": []}, "ids"),
    ({"action": "delete", "ids": ["1"]}, "ids[0]"),
    ({"action": "create", "items": "x"}, "items"),
    ({"action": "create", "items": [1]}, "items[0]"),
    ({"action": "delete", "ids": list(range(1, 1002))}, "ids"),
])
def test_batch_bad_requests(api, body, field):
    r = api("POST", f"{PATH}/batch", json=body)
    assert r.status_code == 400, r.text
    assert err_field(r).rstrip(".") == field


# ---------------------------------------------------------------- audit, secrets, outbox

def test_secret_never_in_operation_logs_or_server_logs(api, pg, stack, group):
    g = group()
    sec, sec2, sec3 = secret(), secret(), secret()
    before_log = max_id(pg, "operation_logs")
    k = create(api, group_id=g["id"], api_key=sec)
    assert api("PUT", f"{PATH}/{k['id']}", json={"api_key": sec2}).status_code == 200
    r = api("POST", f"{PATH}/batch", json={"action": "create",
                                           "items": [{"group_id": g["id"], "api_key": sec3}]})
    assert r.status_code == 200
    # a refused write must not leak the secret either
    assert api("POST", PATH, json={"group_id": g["id"], "api_key": sec + " x"}).status_code == 400
    assert api("DELETE", f"{PATH}/{k['id']}").status_code == 204
    logs = rows_after(pg, "operation_logs", before_log, "action, changes::text",
                      resources=["api_keys"])
    assert [l[0] for l in logs] == ["create", "update", "batch_create", "delete"]
    for _, changes in logs:
        for s in (sec, sec2, sec3):
            assert s not in changes
    assert '"api_key": "[redacted]"' in logs[0][1]
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM operation_logs WHERE changes::text LIKE %s "
                    "OR changes::text LIKE %s OR changes::text LIKE %s",
                    (f"%{sec}%", f"%{sec2}%", f"%{sec3}%"))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM sync_outbox WHERE payload::text LIKE %s", (f"%{sec}%",))
        assert cur.fetchone()[0] == 0
    for f in stack.logs_dir.glob("*.log"):
        text = f.read_text(errors="replace")
        for s in (sec, sec2, sec3):
            assert s not in text, f"secret found in {f}"


def test_moving_key_to_another_group_names_both_groups_binding_keys(api, pg, group):
    g1, g2 = group(models=["m"]), group(models=["m"])
    ns = f"ns-{uuid.uuid4().hex[:10]}"
    assert api("POST", "/admin/namespaces", json={"name": ns}).status_code == 201
    for gid, pm in ((g1["id"], "one"), (g2["id"], "two"), (g2["id"], "three")):
        r = api("POST", "/admin/bindings", json={"namespace": ns, "public_model": pm,
                                                 "group_id": gid, "selector_value": "m"})
        assert r.status_code == 201, r.text
    k = create(api, group_id=g1["id"], api_key=secret())
    before_box = max_id(pg, "sync_outbox")
    r = api("PUT", f"{PATH}/{k['id']}", json={"group_id": g2["id"], "weight": 9})
    assert r.status_code == 200 and r.json()["group_id"] == g2["id"]
    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action, payload")
    assert len(box) == 1 and box[0][:3] == ("api_keys", k["id"], "upsert")
    payload = box[0][3]
    # the group it left (the new one is the row's current state) and both groups' keys
    assert payload["group_id"] == g1["id"]
    assert sorted(payload["binding_keys"]) == sorted([f"{ns}.one", f"{ns}.two", f"{ns}.three"])

    # an update that keeps the group carries no payload
    before_box = max_id(pg, "sync_outbox")
    assert api("PUT", f"{PATH}/{k['id']}", json={"group_id": g2["id"]}).status_code == 200
    box = rows_after(pg, "sync_outbox", before_box, "payload")
    assert box == [({},)]

    # deleting it names its group's binding keys
    before_box = max_id(pg, "sync_outbox")
    assert api("DELETE", f"{PATH}/{k['id']}").status_code == 204
    payload = rows_after(pg, "sync_outbox", before_box, "payload")[0][0]
    assert payload["group_id"] == g2["id"]
    assert sorted(payload["binding_keys"]) == sorted([f"{ns}.two", f"{ns}.three"])
