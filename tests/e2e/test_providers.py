"""/admin/provider-groups: CRUD, list options, every validation rule, type
normalisation and defaults, in-use deletes (409 / ?force=true) with their
cascade, operation-log and outbox rows, mass assignment, SQL metacharacters."""

import uuid

import pytest

PATH = "/admin/provider-groups"
FIELDS = {"id", "name", "type", "base_url", "google_project", "google_location", "models",
          "group", "status", "created_at", "updated_at"}


def uniq(prefix="pg"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


MINE = ["provider_groups", "api_keys", "bindings", "models"]


def rows_after(pg, table, after, cols, resources=MINE):
    """Rows of operation_logs / sync_outbox newer than id `after` about these
    resources (other jobs of the stack may write rows of their own meanwhile)."""
    with pg.cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {table} WHERE id > %s AND resource = ANY(%s) ORDER BY id",
                    (after, list(resources)))
        return cur.fetchall()


@pytest.fixture
def groups(api):
    """Creates provider groups (POST body -> response json); force-deletes them afterwards."""
    made = []

    def make(**body):
        body.setdefault("name", uniq())
        body.setdefault("type", "openai")
        r = api("POST", PATH, json=body)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()

    yield make
    for gid in made:
        api("DELETE", f"{PATH}/{gid}", params={"force": "true"})


def err_field(r):
    return r.json()["error"].get("field")


# ---------------------------------------------------------------- CRUD

def test_create_read_normalises_type_and_defaults(api, groups):
    g = groups(type="  OpenAI ", models=["gpt-4o", "gpt-4o-mini"], group="")
    assert set(g) == FIELDS
    assert g["type"] == "openai"
    assert g["group"] == "default"
    assert g["status"] == "active"
    assert g["base_url"] == "" and g["google_location"] == ""
    assert g["models"] == ["gpt-4o", "gpt-4o-mini"]
    r = api("GET", f"{PATH}/{g['id']}")
    assert r.status_code == 200
    assert r.json() == g


@pytest.mark.parametrize("typ", ["vertex", "vertex-express", "Vertex "])
def test_vertex_location_defaults_to_global(groups, typ):
    assert groups(type=typ)["google_location"] == "global"


def test_vertex_location_kept_when_given_and_set_on_type_change(api, groups):
    assert groups(type="vertex", google_location="us-central1")["google_location"] == "us-central1"
    g = groups(type="openai")
    assert g["google_location"] == ""
    r = api("PUT", f"{PATH}/{g['id']}", json={"type": "vertex-express"})
    assert r.status_code == 200, r.text
    assert r.json()["google_location"] == "global"


def test_compatible_requires_base_url(api, groups):
    r = api("POST", PATH, json={"name": uniq(), "type": "compatible"})
    assert r.status_code == 400
    assert err_field(r) == "base_url"
    g = groups(type="compatible", base_url="https://llm.example.com/v1")
    assert g["base_url"] == "https://llm.example.com/v1"
    # clearing it on a compatible group is refused too
    r = api("PUT", f"{PATH}/{g['id']}", json={"base_url": ""})
    assert r.status_code == 400 and err_field(r) == "base_url"
    # turning an openai group without base_url into compatible is refused
    o = groups(type="openai")
    r = api("PUT", f"{PATH}/{o['id']}", json={"type": "compatible"})
    assert r.status_code == 400 and err_field(r) == "base_url"


def test_partial_update_keeps_absent_fields(api, groups):
    g = groups(models=["a", "b"], google_project="proj-1", group="team-a")
    r = api("PUT", f"{PATH}/{g['id']}", json={"status": "disabled"})
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["status"] == "disabled"
    for k in ("name", "type", "models", "google_project", "group", "created_at"):
        assert u[k] == g[k]
    assert u["updated_at"] >= g["updated_at"]
    r = api("PUT", f"{PATH}/{g['id']}", json={"models": ["c"], "name": g["name"] + "-x"})
    assert r.status_code == 200, r.text
    assert r.json()["models"] == ["c"] and r.json()["name"] == g["name"] + "-x"


def test_delete_then_404(api, groups):
    g = groups()
    r = api("DELETE", f"{PATH}/{g['id']}")
    assert r.status_code == 204
    assert api("GET", f"{PATH}/{g['id']}").status_code == 404
    assert api("DELETE", f"{PATH}/{g['id']}").status_code == 404


@pytest.mark.parametrize("method,body", [("GET", None), ("PUT", {"status": "active"}),
                                         ("DELETE", None)])
def test_missing_id_404(api, method, body):
    r = api(method, f"{PATH}/987654321012", json=body)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("body,field", [
    ({"type": "openai"}, "name"),
    ({"name": "has space", "type": "openai"}, "name"),
    ({"name": "x" * 65, "type": "openai"}, "name"),
    ({"name": 5, "type": "openai"}, "name"),
    ({"name": "N"}, "type"),
    ({"name": "N", "type": "azure"}, "type"),
    ({"name": "N", "type": ""}, "type"),
    ({"name": "N", "type": ["openai"]}, "type"),
    ({"name": "N", "type": "openai", "base_url": "ftp://x.example.com"}, "base_url"),
    ({"name": "N", "type": "openai", "base_url": "https://"}, "base_url"),
    ({"name": "N", "type": "openai", "base_url": "https://a b.example.com"}, "base_url"),
    ({"name": "N", "type": "openai", "models": "gpt-4o"}, "models"),
    ({"name": "N", "type": "openai", "models": [""]}, "models"),
    ({"name": "N", "type": "openai", "models": [7]}, "models"),
    ({"name": "N", "type": "openai", "models": ["gpt 4o"]}, "models"),
    ({"name": "N", "type": "openai", "models": ["m" * 256]}, "models"),
    ({"name": "N", "type": "openai", "models": ["a", "b", "a"]}, "models[2]"),
    ({"name": "N", "type": "openai", "models": None}, "models"),
    ({"name": "N", "type": "openai", "group": "bad group"}, "group"),
    ({"name": "N", "type": "openai", "status": "paused"}, "status"),
    ({"name": "N", "type": "openai", "google_location": "us central"}, "google_location"),
    ({"name": "N", "type": "openai", "google_project": "p\n"}, "google_project"),
])
def test_validation_names_the_field(api, pg, body, field):
    body = dict(body)
    if body.get("name") == "N":
        body["name"] = uniq()
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    r = api("POST", PATH, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_argument"
    assert err_field(r) == field
    # nothing half-written
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []


def test_unique_name_409(api, groups):
    g = groups()
    r = api("POST", PATH, json={"name": g["name"], "type": "openai"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert err_field(r) == "name"
    other = groups()
    r = api("PUT", f"{PATH}/{other['id']}", json={"name": g["name"]})
    assert r.status_code == 409


def test_mass_assignment_ignored(api, groups):
    g = groups(id=424242, created_at="2001-01-01T00:00:00Z", updated_at="2001-01-01T00:00:00Z")
    assert g["id"] != 424242
    assert not g["created_at"].startswith("2001")
    r = api("PUT", f"{PATH}/{g['id']}", json={"id": 1, "created_at": "2001-01-01T00:00:00Z"})
    assert r.status_code == 200
    assert r.json()["id"] == g["id"] and r.json()["created_at"] == g["created_at"]


# ---------------------------------------------------------------- lists

def test_list_pagination_sort_filter_and_literal_q(api, groups):
    p = uniq("lst")
    a = groups(name=f"{p}-a_b", type="anthropic", group="grp-x")
    b = groups(name=f"{p}-axb", type="openai", group="grp-x")
    c = groups(name=f"{p}-c", type="openai", status="disabled")

    r = api("GET", PATH, params={"q": p, "page_size": 2, "sort": "name"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"items", "total", "page", "page_size"}
    assert body["total"] == 3 and body["page"] == 1 and body["page_size"] == 2
    assert [it["id"] for it in body["items"]] == [a["id"], b["id"]]
    r = api("GET", PATH, params={"q": p, "page_size": 2, "page": 2, "sort": "name"})
    assert [it["id"] for it in r.json()["items"]] == [c["id"]]
    r = api("GET", PATH, params={"q": p, "sort": "-name"})
    assert [it["id"] for it in r.json()["items"]] == [c["id"], b["id"], a["id"]]

    # _ and % are literal
    r = api("GET", PATH, params={"q": f"{p}-a_b"})
    assert [it["id"] for it in r.json()["items"]] == [a["id"]]
    r = api("GET", PATH, params={"q": f"{p}%"})
    assert r.json()["total"] == 0

    r = api("GET", PATH, params={"q": p, "type": "openai", "sort": "id"})
    assert [it["id"] for it in r.json()["items"]] == [b["id"], c["id"]]
    r = api("GET", PATH, params={"q": p, "status": "disabled"})
    assert [it["id"] for it in r.json()["items"]] == [c["id"]]
    r = api("GET", PATH, params={"q": p, "group": "grp-x", "sort": "-id"})
    assert [it["id"] for it in r.json()["items"]] == [b["id"], a["id"]]


@pytest.mark.parametrize("params", [{"page": 0}, {"page_size": 201}, {"page": "x"},
                                    {"sort": "base_url"}, {"sort": "nope"},
                                    {"status": "paused"}])
def test_list_bad_options_400(api, params):
    assert api("GET", PATH, params=params).status_code == 400


# ---------------------------------------------------------------- in use / cascade

def make_ns(api):
    name = f"ns-{uuid.uuid4().hex[:10]}"
    r = api("POST", "/admin/namespaces", json={"name": name})
    assert r.status_code == 201, r.text
    return name


def test_delete_group_used_by_bindings_409_then_force(api, pg, groups):
    g = groups(models=["gpt-4o"])
    ns = make_ns(api)
    bids = []
    for m in ("gpt-4o", "alias"):
        r = api("POST", "/admin/bindings", json={"namespace": ns, "public_model": m,
                                                 "group_id": g["id"], "selector_value": "gpt-4o"})
        assert r.status_code == 201, r.text
        bids.append(r.json()["id"])
    r = api("POST", "/admin/api-keys", json={"group_id": g["id"], "api_key": "sk-" + "k" * 30})
    assert r.status_code == 201
    kid = r.json()["id"]

    before_box = max_id(pg, "sync_outbox")
    r = api("DELETE", f"{PATH}/{g['id']}")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    msg = r.json()["error"]["message"]
    assert all(str(b) in msg for b in bids)
    assert api("GET", f"{PATH}/{g['id']}").status_code == 200
    assert api("GET", f"/admin/bindings/{bids[0]}").status_code == 200
    assert rows_after(pg, "sync_outbox", before_box, "id") == []

    assert api("DELETE", f"{PATH}/{g['id']}", params={"force": "maybe"}).status_code == 400

    before_log = max_id(pg, "operation_logs")
    r = api("DELETE", f"{PATH}/{g['id']}", params={"force": "true"})
    assert r.status_code == 204, r.text
    assert api("GET", f"{PATH}/{g['id']}").status_code == 404
    for b in bids:
        assert api("GET", f"/admin/bindings/{b}").status_code == 404
    assert api("GET", f"/admin/api-keys/{kid}").status_code == 404

    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action, payload")
    assert [(b[0], b[1], b[2]) for b in box] == [("provider_groups", g["id"], "delete")]
    payload = box[0][3]
    assert payload["api_key_ids"] == [kid]
    assert sorted(payload["binding_keys"]) == sorted([f"{ns}.gpt-4o", f"{ns}.alias"])

    logs = rows_after(pg, "operation_logs", before_log, "action, resource, resource_id")
    assert ("delete", "provider_groups", str(g["id"])) in logs
    assert ("delete", "api_keys", str(kid)) in logs
    for b in bids:
        assert ("delete", "bindings", str(b)) in logs


def test_delete_group_deletes_its_api_keys(api, pg, groups):
    g = groups()
    kids = []
    for i in range(2):
        r = api("POST", "/admin/api-keys", json={"group_id": g["id"], "api_key": f"sk-{i}" * 8})
        assert r.status_code == 201
        kids.append(r.json()["id"])
    r = api("DELETE", f"{PATH}/{g['id']}")
    assert r.status_code == 204
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_keys WHERE id = ANY(%s)", (kids,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT payload FROM sync_outbox WHERE resource = 'provider_groups' "
                    "AND resource_id = %s AND action = 'delete'", (g["id"],))
        payload = cur.fetchone()[0]
    assert sorted(payload["api_key_ids"]) == sorted(kids)
    assert payload["binding_keys"] == []


# ---------------------------------------------------------------- audit and outbox

def test_every_write_has_oplog_and_outbox_rows(api, pg, groups):
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    g = groups(models=["m1"])
    r = api("PUT", f"{PATH}/{g['id']}", json={"models": ["m1", "m2"]})
    assert r.status_code == 200
    assert api("DELETE", f"{PATH}/{g['id']}").status_code == 204
    logs = rows_after(pg, "operation_logs", before_log, "actor, action, resource, resource_id, changes")
    assert [(l[0], l[1], l[2], l[3]) for l in logs] == [
        ("admin", "create", "provider_groups", str(g["id"])),
        ("admin", "update", "provider_groups", str(g["id"])),
        ("admin", "delete", "provider_groups", str(g["id"])),
    ]
    assert logs[1][4] == {"models": ["m1", "m2"]}
    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action")
    assert box == [("provider_groups", g["id"], "upsert"), ("provider_groups", g["id"], "upsert"),
                   ("provider_groups", g["id"], "delete")]


def test_failed_update_leaves_no_rows(api, pg, groups):
    g = groups()
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    r = api("PUT", f"{PATH}/{g['id']}", json={"status": "disabled", "type": "nope"})
    assert r.status_code == 400
    assert api("GET", f"{PATH}/{g['id']}").json()["status"] == "active"
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []


# ---------------------------------------------------------------- hostile input

@pytest.mark.parametrize("path", [
    f"{PATH}/1%27%20OR%201=1", f"{PATH}/1;DROP%20TABLE%20provider_groups", f"{PATH}/-1",
    f"{PATH}/99999999999999999999", f"{PATH}/abc",
])
def test_sql_metacharacters_in_ids(api, path):
    r = api("GET", path)
    assert r.status_code in (400, 404), r.text


@pytest.mark.parametrize("params", [
    {"q": "'; DROP TABLE provider_groups; --"}, {"type": "' OR '1'='1"},
    {"group": "x' OR 'x'='x"}, {"name": "\\' OR 1=1 --"}, {"q": "\\"},
])
def test_sql_metacharacters_in_filters_match_nothing(api, params):
    r = api("GET", PATH, params=params)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 0


@pytest.mark.parametrize("sort", ["name;DROP TABLE x", "name DESC", "(select 1)", "-", "\"name\""])
def test_sql_metacharacters_in_sort_400(api, sort):
    assert api("GET", PATH, params={"sort": sort}).status_code == 400


def test_hostile_bodies_never_5xx(api):
    for body in ['{"name": "x", "type": "openai", "models": [[[[]]]]}',
                 '{"name": "\'; DROP TABLE provider_groups; --", "type": "openai"}',
                 '{"name": "x", "type": "openai\\u0000"}', '[]', '', '{"name": 1e309}']:
        r = api("POST", PATH, data=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
