"""/admin/bindings: CRUD, filters, validation (namespace and group must exist,
regex must compile), uniqueness, the selector_value default, the "resolved"
view of GET /admin/bindings/:id (exact, normalize_exact, regex, no active
API key, inactive), batch, outbox binding keys (old and new), operation logs,
SQL metacharacters."""

import uuid

import pytest

PATH = "/admin/bindings"
FIELDS = {"id", "namespace", "public_model", "group_id", "weight", "selector_type",
          "selector_value", "status", "created_at", "updated_at"}
MINE = ["provider_groups", "api_keys", "bindings", "models"]


def uniq(prefix="b"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


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


class World:
    """Namespaces, provider groups (with keys) and bindings made by one test;
    removed afterwards through the API."""

    def __init__(self, api):
        self.api = api
        self.groups, self.namespaces = [], []

    def ns(self):
        name = f"ns-{uuid.uuid4().hex[:10]}"
        r = self.api("POST", "/admin/namespaces", json={"name": name})
        assert r.status_code == 201, r.text
        self.namespaces.append(r.json()["id"])
        return name

    def group(self, models=("gpt-4o",), keys=1, key_status="active", **body):
        body.setdefault("name", uniq("grp"))
        body.setdefault("type", "openai")
        body["models"] = list(models)
        r = self.api("POST", "/admin/provider-groups", json=body)
        assert r.status_code == 201, r.text
        g = r.json()
        self.groups.append(g["id"])
        g["key_ids"] = []
        for _ in range(keys):
            r = self.api("POST", "/admin/api-keys", json={
                "group_id": g["id"], "api_key": f"sk-{uuid.uuid4().hex}", "status": key_status})
            assert r.status_code == 201, r.text
            g["key_ids"].append(r.json()["id"])
        return g

    def binding(self, **body):
        r = self.api("POST", PATH, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def cleanup(self):
        for gid in self.groups:
            self.api("DELETE", f"/admin/provider-groups/{gid}", params={"force": "true"})
        for nid in self.namespaces:
            self.api("DELETE", f"/admin/namespaces/{nid}")


@pytest.fixture
def world(api):
    w = World(api)
    yield w
    w.cleanup()


def resolved(api, bid):
    r = api("GET", f"{PATH}/{bid}")
    assert r.status_code == 200, r.text
    return r.json()["resolved"]


# ---------------------------------------------------------------- CRUD

def test_create_read_defaults(api, world):
    ns, g = world.ns(), world.group()
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g["id"])
    assert set(b) == FIELDS
    assert (b["weight"], b["selector_type"], b["selector_value"], b["status"]) == \
        (1, "exact", "gpt-4o", "active")
    r = api("GET", f"{PATH}/{b['id']}")
    assert r.status_code == 200
    got = r.json()
    assert set(got) == FIELDS | {"resolved"}
    assert {k: v for k, v in got.items() if k != "resolved"} == b
    # an explicit empty selector_value also means the public model
    b2 = world.binding(namespace=ns, public_model="other", group_id=g["id"], selector_value="")
    assert b2["selector_value"] == "other"


def test_partial_update_and_selector_value_default_on_update(api, world):
    ns, g = world.ns(), world.group(models=["gpt-4o", "m2"])
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g["id"], weight=5)
    r = api("PUT", f"{PATH}/{b['id']}", json={"status": "disabled"})
    assert r.status_code == 200
    u = r.json()
    assert u["status"] == "disabled" and u["weight"] == 5 and u["selector_value"] == "gpt-4o"
    r = api("PUT", f"{PATH}/{b['id']}", json={"public_model": "m2", "selector_value": ""})
    assert r.status_code == 200, r.text
    assert r.json()["selector_value"] == "m2" and r.json()["public_model"] == "m2"


def test_delete_then_404(api, world):
    ns, g = world.ns(), world.group()
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g["id"])
    assert api("DELETE", f"{PATH}/{b['id']}").status_code == 204
    assert api("GET", f"{PATH}/{b['id']}").status_code == 404
    assert api("DELETE", f"{PATH}/{b['id']}").status_code == 404


@pytest.mark.parametrize("method,body", [("GET", None), ("PUT", {"weight": 2}),
                                         ("PUT", {"public_model": "x"}), ("DELETE", None)])
def test_missing_id_404(api, method, body):
    r = api(method, f"{PATH}/987654321012", json=body)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("body,field", [
    ({"public_model": "m", "group_id": "G"}, "namespace"),
    ({"namespace": "no-such-ns-x1", "public_model": "m", "group_id": "G"}, "namespace"),
    ({"namespace": "Bad.NS", "public_model": "m", "group_id": "G"}, "namespace"),
    ({"namespace": "NS", "group_id": "G"}, "public_model"),
    ({"namespace": "NS", "public_model": "has space", "group_id": "G"}, "public_model"),
    ({"namespace": "NS", "public_model": "x" * 65, "group_id": "G"}, "public_model"),
    ({"namespace": "NS", "public_model": "m"}, "group_id"),
    ({"namespace": "NS", "public_model": "m", "group_id": 987654321012}, "group_id"),
    ({"namespace": "NS", "public_model": "m", "group_id": "7"}, "group_id"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "weight": 0}, "weight"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "weight": 1001}, "weight"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "selector_type": "glob"},
     "selector_type"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "selector_type": "regex",
      "selector_value": "gpt-(4"}, "selector_value"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "selector_type": "regex",
      "selector_value": "a)|(b)"}, "selector_value"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "selector_value": "x" * 1025},
     "selector_value"),
    ({"namespace": "NS", "public_model": "m", "group_id": "G", "status": "paused"}, "status"),
])
def test_validation_names_the_field(api, pg, world, body, field):
    ns, g = world.ns(), world.group()
    body = {k: (ns if v == "NS" else g["id"] if v == "G" else v) for k, v in body.items()}
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    r = api("POST", PATH, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_argument"
    assert err_field(r) == field
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []


def test_switching_to_regex_checks_the_stored_value(api, world):
    ns, g = world.ns(), world.group()
    b = world.binding(namespace=ns, public_model="m", group_id=g["id"], selector_value="gpt-(4")
    r = api("PUT", f"{PATH}/{b['id']}", json={"selector_type": "regex"})
    assert r.status_code == 400 and err_field(r) == "selector_value"
    r = api("PUT", f"{PATH}/{b['id']}", json={"selector_type": "regex", "selector_value": "gpt-4.*"})
    assert r.status_code == 200


def test_update_to_missing_namespace_or_group_400(api, world):
    ns, g = world.ns(), world.group()
    b = world.binding(namespace=ns, public_model="m", group_id=g["id"])
    r = api("PUT", f"{PATH}/{b['id']}", json={"namespace": "no-such-ns-x2"})
    assert r.status_code == 400 and err_field(r) == "namespace"
    r = api("PUT", f"{PATH}/{b['id']}", json={"group_id": 987654321012})
    assert r.status_code == 400 and err_field(r) == "group_id"


def test_unique_namespace_model_group_409(api, world):
    ns, g1, g2 = world.ns(), world.group(), world.group()
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g1["id"])
    r = api("POST", PATH, json={"namespace": ns, "public_model": "gpt-4o", "group_id": g1["id"]})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert str(b["id"]) in r.json()["error"]["message"]
    # the same binding key on another group is a second candidate
    b2 = world.binding(namespace=ns, public_model="gpt-4o", group_id=g2["id"])
    # moving it onto the first group's slot conflicts
    r = api("PUT", f"{PATH}/{b2['id']}", json={"group_id": g1["id"]})
    assert r.status_code == 409
    # an update that keeps its own slot is fine
    r = api("PUT", f"{PATH}/{b2['id']}", json={"group_id": g2["id"], "weight": 3})
    assert r.status_code == 200


def test_mass_assignment_ignored(api, world):
    ns, g = world.ns(), world.group()
    b = world.binding(namespace=ns, public_model="m", group_id=g["id"], id=919191,
                      created_at="2001-01-01T00:00:00Z", resolved={"status": "ok"})
    assert b["id"] != 919191 and not b["created_at"].startswith("2001")
    assert "resolved" not in b


# ---------------------------------------------------------------- lists

def test_list_filters_pagination_sort_q(api, world):
    ns1, ns2 = world.ns(), world.ns()
    g1, g2 = world.group(), world.group()
    a = world.binding(namespace=ns1, public_model="a_b", group_id=g1["id"], weight=3)
    b = world.binding(namespace=ns1, public_model="axb", group_id=g2["id"], weight=1)
    c = world.binding(namespace=ns2, public_model="a_b", group_id=g1["id"], weight=2)

    r = api("GET", PATH, params={"namespace": ns1})
    assert [it["id"] for it in r.json()["items"]] == [a["id"], b["id"]]
    r = api("GET", PATH, params={"group_id": g1["id"], "sort": "-id"})
    assert [it["id"] for it in r.json()["items"]] == [c["id"], a["id"]]
    r = api("GET", PATH, params={"group_id": g1["id"], "public_model": "a_b", "namespace": ns2})
    assert [it["id"] for it in r.json()["items"]] == [c["id"]]
    r = api("GET", PATH, params={"namespace": ns1, "q": "a_b"})  # _ is literal
    assert [it["id"] for it in r.json()["items"]] == [a["id"]]
    r = api("GET", PATH, params={"namespace": ns1, "q": "a%"})
    assert r.json()["total"] == 0
    r = api("GET", PATH, params={"group_id": g1["id"], "page_size": 1, "page": 2, "sort": "weight"})
    body = r.json()
    assert body["total"] == 2 and [it["id"] for it in body["items"]] == [a["id"]]
    r = api("GET", PATH, params={"namespace": ns1, "selector_type": "exact", "status": "active"})
    assert r.json()["total"] == 2


@pytest.mark.parametrize("params,status", [
    ({"namespace": "' OR '1'='1"}, 200), ({"public_model": "x'; DROP TABLE bindings; --"}, 200),
    ({"q": "' UNION SELECT api_key FROM api_keys --"}, 200), ({"group_id": "1 OR 1=1"}, 400),
    ({"group_id": "1);--"}, 400), ({"sort": "namespace, (SELECT 1)"}, 400),
    ({"selector_type": "exact' --"}, 400), ({"status": "'"}, 400),
])
def test_sql_metacharacters_in_list(api, params, status):
    r = api("GET", PATH, params=params)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["total"] == 0


@pytest.mark.parametrize("suffix", ["1%27", "1%3BSELECT%201", "-1", "0", "99999999999999999999"])
def test_sql_metacharacters_in_ids(api, suffix):
    assert api("GET", f"{PATH}/{suffix}").status_code in (400, 404)


# ---------------------------------------------------------------- resolved view

def test_resolved_exact_hit_lists_every_active_key(api, world):
    ns = world.ns()
    g = world.group(models=["gpt-4o", "gpt-4o-mini"], keys=2)
    off = api("POST", "/admin/api-keys", json={"group_id": g["id"], "api_key": "sk-disabled-1234",
                                               "status": "disabled"}).json()["id"]
    banned = api("POST", "/admin/api-keys", json={"group_id": g["id"], "api_key": "sk-banned-1234",
                                                  "status": "banned"}).json()["id"]
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g["id"])
    res = resolved(api, b["id"])
    assert res == {"status": "ok", "error": "",
                   "upstreams": {str(k): "gpt-4o" for k in g["key_ids"]}}
    assert str(off) not in res["upstreams"] and str(banned) not in res["upstreams"]


def test_resolved_exact_miss_is_config_error(api, world):
    ns, g = world.ns(), world.group(models=["gpt-4o"])
    b = world.binding(namespace=ns, public_model="gpt-4", group_id=g["id"])
    assert resolved(api, b["id"]) == {"status": "error", "error": "config_error", "upstreams": {}}


def test_resolved_normalize_exact(api, world):
    ns, g = world.ns(), world.group(models=["Moonshot/Kimi2", "other"])
    b = world.binding(namespace=ns, public_model="kimi2", group_id=g["id"],
                      selector_type="normalize_exact")
    assert b["selector_value"] == "kimi2"
    res = resolved(api, b["id"])
    assert res["status"] == "ok" and res["error"] == ""
    assert res["upstreams"] == {str(g["key_ids"][0]): "Moonshot/Kimi2"}
    # exact does not normalise
    r = api("PUT", f"{PATH}/{b['id']}", json={"selector_type": "exact"})
    assert r.status_code == 200
    assert resolved(api, b["id"])["error"] == "config_error"


@pytest.mark.parametrize("pattern,want", [
    ("gpt-4o-m.*", "gpt-4o-mini"),   # one hit
    ("claude-.*", None),             # zero hits
    ("gpt-4o.*", None),              # several hits
    ("gpt-4", None),                 # a prefix is not a full match
    ("o[0-9]|nothing", "o3"),        # alternation stays inside the anchors
])
def test_resolved_regex(api, world, pattern, want):
    ns, g = world.ns(), world.group(models=["gpt-4o", "gpt-4o-mini", "o3"])
    b = world.binding(namespace=ns, public_model="m", group_id=g["id"], selector_type="regex",
                      selector_value=pattern)
    res = resolved(api, b["id"])
    if want:
        assert res == {"status": "ok", "error": "",
                       "upstreams": {str(g["key_ids"][0]): want}}
    else:
        assert res == {"status": "error", "error": "config_error", "upstreams": {}}


def test_resolved_no_active_key_is_no_provider(api, world):
    ns = world.ns()
    g = world.group(models=["gpt-4o"], keys=1, key_status="disabled")
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g["id"])
    assert resolved(api, b["id"]) == {"status": "error", "error": "no_provider", "upstreams": {}}
    empty = world.group(models=["gpt-4o"], keys=0)
    b2 = world.binding(namespace=ns, public_model="gpt-4o", group_id=empty["id"])
    assert resolved(api, b2["id"])["error"] == "no_provider"
    # enabling the key fixes it
    r = api("PUT", f"/admin/api-keys/{g['key_ids'][0]}", json={"status": "active"})
    assert r.status_code == 200
    assert resolved(api, b["id"]) == {"status": "ok", "error": "",
                                      "upstreams": {str(g["key_ids"][0]): "gpt-4o"}}


def test_resolved_inactive_when_binding_or_group_disabled(api, world):
    ns, g = world.ns(), world.group(models=["gpt-4o"])
    b = world.binding(namespace=ns, public_model="gpt-4o", group_id=g["id"], status="disabled")
    res = resolved(api, b["id"])
    assert res["status"] == "inactive" and res["error"] == ""
    assert api("PUT", f"{PATH}/{b['id']}", json={"status": "active"}).status_code == 200
    assert resolved(api, b["id"])["status"] == "ok"
    r = api("PUT", f"/admin/provider-groups/{g['id']}", json={"status": "disabled"})
    assert r.status_code == 200
    assert resolved(api, b["id"])["status"] == "inactive"


def test_resolved_follows_group_models(api, world):
    ns, g = world.ns(), world.group(models=["a"])
    b = world.binding(namespace=ns, public_model="b", group_id=g["id"])
    assert resolved(api, b["id"])["error"] == "config_error"
    r = api("PUT", f"/admin/provider-groups/{g['id']}", json={"models": ["a", "b"]})
    assert r.status_code == 200
    assert resolved(api, b["id"])["upstreams"] == {str(g["key_ids"][0]): "b"}


# ---------------------------------------------------------------- batch

def test_batch_all_or_nothing(api, pg, world):
    ns, g = world.ns(), world.group()
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    items = [{"namespace": ns, "public_model": "one", "group_id": g["id"]},
             {"namespace": ns, "public_model": "two", "group_id": g["id"]},
             {"namespace": "no-such-ns-x3", "public_model": "three", "group_id": g["id"]}]
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 400 and err_field(r) == "items[2].namespace"
    assert api("GET", PATH, params={"namespace": ns}).json()["total"] == 0
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []

    items[2] = {"namespace": ns, "public_model": "one", "group_id": g["id"]}
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 409 and err_field(r) == "items[2].public_model"
    assert api("GET", PATH, params={"namespace": ns}).json()["total"] == 0

    items[2] = {"namespace": ns, "public_model": "three", "group_id": g["id"],
                "selector_type": "regex", "selector_value": "("}
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 400 and err_field(r) == "items[2].selector_value"

    items[2]["selector_value"] = "gpt-4o|x"
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 200, r.text
    ids = [it["id"] for it in r.json()["items"]]
    assert [it["selector_value"] for it in r.json()["items"]] == ["one", "two", "gpt-4o|x"]

    r = api("POST", f"{PATH}/batch", json={"action": "disable", "ids": ids[:2]})
    assert r.status_code == 200
    assert [it["status"] for it in r.json()["items"]] == ["disabled", "disabled"]
    r = api("POST", f"{PATH}/batch", json={"action": "delete", "ids": ids})
    assert r.status_code == 200
    assert api("GET", PATH, params={"namespace": ns}).json()["total"] == 0
    logs = rows_after(pg, "operation_logs", before_log, "action", resources=["bindings"])
    assert [l[0] for l in logs] == ["batch_create"] * 3 + ["batch_disable"] * 2 + \
        ["batch_delete"] * 3
    box = rows_after(pg, "sync_outbox", before_box, "action, payload", resources=["bindings"])
    keys = [f"{ns}.one", f"{ns}.two", f"{ns}.three"]
    assert box == [("upsert", {"binding_keys": [k]}) for k in keys] + \
        [("upsert", {"binding_keys": [k]}) for k in keys[:2]] + \
        [("delete", {"binding_keys": [k]}) for k in keys]


# ---------------------------------------------------------------- audit and outbox

def test_oplog_and_outbox_binding_keys_old_and_new(api, pg, world):
    ns1, ns2, g = world.ns(), world.ns(), world.group()
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    b = world.binding(namespace=ns1, public_model="m", group_id=g["id"])
    r = api("PUT", f"{PATH}/{b['id']}", json={"namespace": ns2, "public_model": "n"})
    assert r.status_code == 200, r.text
    r = api("PUT", f"{PATH}/{b['id']}", json={"weight": 4})
    assert r.status_code == 200
    assert api("DELETE", f"{PATH}/{b['id']}").status_code == 204
    logs = rows_after(pg, "operation_logs", before_log, "actor, action, resource_id, changes",
                      resources=["bindings"])
    assert [l[:3] for l in logs] == [("admin", a, str(b["id"]))
                                     for a in ("create", "update", "update", "delete")]
    assert logs[1][3] == {"namespace": ns2, "public_model": "n"}
    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action, payload",
                     resources=["bindings"])
    assert box == [
        ("bindings", b["id"], "upsert", {"binding_keys": [f"{ns1}.m"]}),
        ("bindings", b["id"], "upsert", {"binding_keys": [f"{ns1}.m", f"{ns2}.n"]}),
        ("bindings", b["id"], "upsert", {"binding_keys": [f"{ns2}.n"]}),
        ("bindings", b["id"], "delete", {"binding_keys": [f"{ns2}.n"]}),
    ]


def test_failed_update_leaves_nothing(api, pg, world):
    ns, g = world.ns(), world.group()
    b = world.binding(namespace=ns, public_model="m", group_id=g["id"])
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    r = api("PUT", f"{PATH}/{b['id']}", json={"weight": 9, "selector_type": "regex",
                                              "selector_value": "(("})
    assert r.status_code == 400
    assert api("GET", f"{PATH}/{b['id']}").json()["weight"] == 1
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []
