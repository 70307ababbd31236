"""/admin/models: CRUD, list options, every validation rule, read-only
`source`, batch (all or nothing), outbox payload names (old and new),
operation logs, SQL metacharacters."""

import uuid

import pytest

PATH = "/admin/models"
FIELDS = {"id", "name", "kind", "context_window", "cost_per_token", "supports_vision",
          "supports_functions", "supports_tool_choice", "supports_fim", "supports_stream",
          "max_output_tokens", "source", "created_at", "updated_at"}
MINE = ["provider_groups", "api_keys", "bindings", "models"]


def uniq(prefix="m"):
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


@pytest.fixture
def models(api):
    """Creates models (POST body -> json); deletes them afterwards."""
    made = []

    def make(**body):
        body.setdefault("name", uniq())
        r = api("POST", PATH, json=body)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()

    yield make
    for mid in made:
        api("DELETE", f"{PATH}/{mid}")


# ---------------------------------------------------------------- CRUD

def test_create_read_defaults(api, models):
    m = models()
    assert set(m) == FIELDS
    assert m["kind"] == "chat" and m["source"] == "manual"
    assert m["context_window"] == 0 and m["cost_per_token"] == 0 and m["max_output_tokens"] == 0
    assert not any(m[k] for k in FIELDS if k.startswith("supports_"))
    r = api("GET", f"{PATH}/{m['id']}")
    assert r.status_code == 200 and r.json() == m


def test_create_all_fields_and_binding_key_name(models):
    m = models(name=f"default.{uniq()}", kind="embedding", context_window=128000,
               cost_per_token=0.0000025, supports_vision=True, supports_functions=True,
               supports_tool_choice=True, supports_fim=True, supports_stream=True,
               max_output_tokens=4096)
    assert m["name"].startswith("default.")
    assert m["kind"] == "embedding" and m["context_window"] == 128000
    assert m["cost_per_token"] == pytest.approx(0.0000025)
    assert all(m[k] for k in FIELDS if k.startswith("supports_"))
    assert m["max_output_tokens"] == 4096


def test_empty_kind_means_chat(api, models):
    m = models(kind="")
    assert m["kind"] == "chat"
    r = api("PUT", f"{PATH}/{m['id']}", json={"kind": "rerank"})
    assert r.json()["kind"] == "rerank"
    r = api("PUT", f"{PATH}/{m['id']}", json={"kind": ""})
    assert r.json()["kind"] == "chat"


def test_partial_update(api, models):
    m = models(context_window=1000, supports_stream=True)
    r = api("PUT", f"{PATH}/{m['id']}", json={"max_output_tokens": 77})
    assert r.status_code == 200
    u = r.json()
    assert u["max_output_tokens"] == 77
    assert u["context_window"] == 1000 and u["supports_stream"] is True and u["name"] == m["name"]


def test_delete_then_404(api, models):
    m = models()
    assert api("DELETE", f"{PATH}/{m['id']}").status_code == 204
    assert api("GET", f"{PATH}/{m['id']}").status_code == 404
    assert api("DELETE", f"{PATH}/{m['id']}").status_code == 404


@pytest.mark.parametrize("method,body", [("GET", None), ("PUT", {"kind": "chat"}),
                                         ("PUT", {"name": "renamed"}), ("DELETE", None)])
def test_missing_id_404(api, method, body):
    r = api(method, f"{PATH}/987654321012", json=body)
    assert r.status_code == 404


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("body,field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "has space"}, "name"),
    ({"name": "BadNS.model"}, "name"),
    ({"name": ".model"}, "name"),
    ({"name": "ns."}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": None}, "name"),
    ({"name": "N", "kind": "llm"}, "kind"),
    ({"name": "N", "kind": 1}, "kind"),
    ({"name": "N", "context_window": -1}, "context_window"),
    ({"name": "N", "context_window": 1.5}, "context_window"),
    ({"name": "N", "context_window": "12"}, "context_window"),
    ({"name": "N", "context_window": 2 ** 63}, "context_window"),
    ({"name": "N", "cost_per_token": -0.1}, "cost_per_token"),
    ({"name": "N", "cost_per_token": "0.1"}, "cost_per_token"),
    ({"name": "N", "supports_vision": "true"}, "supports_vision"),
    ({"name": "N", "supports_stream": 1}, "supports_stream"),
    ({"name": "N", "max_output_tokens": -5}, "max_output_tokens"),
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
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []


def test_huge_float_refused(api):
    r = api("POST", PATH, data='{"name": "%s", "cost_per_token": 1e309}' % uniq(),
            headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_unique_name_409(api, models):
    m = models()
    r = api("POST", PATH, json={"name": m["name"]})
    assert r.status_code == 409 and err_field(r) == "name"
    other = models()
    r = api("PUT", f"{PATH}/{other['id']}", json={"name": m["name"]})
    assert r.status_code == 409


def test_source_and_ids_are_read_only(api, models):
    m = models(source="registry", id=777777, created_at="2001-01-01T00:00:00Z")
    assert m["source"] == "manual" and m["id"] != 777777
    assert not m["created_at"].startswith("2001")
    r = api("PUT", f"{PATH}/{m['id']}", json={"source": "registry", "updated_at": "2001-01-01T00:00:00Z"})
    assert r.status_code == 200
    assert r.json()["source"] == "manual" and not r.json()["updated_at"].startswith("2001")


# ---------------------------------------------------------------- lists

def test_list_pagination_sort_filter_literal_q(api, models):
    p = uniq("lst")
    a = models(name=f"{p}-a_b", context_window=10, kind="embedding")
    b = models(name=f"{p}-axb", context_window=30, supports_vision=True)
    c = models(name=f"{p}-a%c", context_window=20)

    r = api("GET", PATH, params={"q": p, "page_size": 2, "sort": "-context_window"})
    body = r.json()
    assert body["total"] == 3 and [it["id"] for it in body["items"]] == [b["id"], c["id"]]
    r = api("GET", PATH, params={"q": p, "page_size": 2, "page": 2, "sort": "-context_window"})
    assert [it["id"] for it in r.json()["items"]] == [a["id"]]
    r = api("GET", PATH, params={"q": f"{p}-a_b"})
    assert [it["id"] for it in r.json()["items"]] == [a["id"]]
    r = api("GET", PATH, params={"q": f"{p}-a%"})
    assert [it["id"] for it in r.json()["items"]] == [c["id"]]
    r = api("GET", PATH, params={"q": p, "kind": "embedding"})
    assert [it["id"] for it in r.json()["items"]] == [a["id"]]
    r = api("GET", PATH, params={"q": p, "supports_vision": "true"})
    assert [it["id"] for it in r.json()["items"]] == [b["id"]]
    r = api("GET", PATH, params={"q": p, "source": "manual", "sort": "name"})
    assert r.json()["total"] == 3


@pytest.mark.parametrize("params,status", [
    ({"q": "' OR 1=1 --"}, 200), ({"q": "%' OR name LIKE '%"}, 200),
    ({"kind": "chat' OR '1'='1"}, 400), ({"supports_vision": "1"}, 400),
    ({"source": "x'--"}, 400), ({"sort": "name; DROP TABLE models"}, 400),
    ({"sort": "-cost_per_token"}, 200),
])
def test_sql_metacharacters_in_list(api, params, status):
    r = api("GET", PATH, params=params)
    assert r.status_code == status, r.text
    if status == 200 and "q" in params:
        assert r.json()["total"] == 0


@pytest.mark.parametrize("suffix", ["1%27%3B--", "1%20OR%201%3D1", "-1", "18446744073709551616"])
def test_sql_metacharacters_in_ids(api, suffix):
    assert api("GET", f"{PATH}/{suffix}").status_code in (400, 404)


# ---------------------------------------------------------------- batch

def test_batch_create_all_or_nothing_and_delete(api, pg):
    p = uniq("bat")
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    items = [{"name": f"{p}-1"}, {"name": f"{p}-2"}, {"name": f"{p}-3", "kind": "bogus"}]
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 400 and err_field(r) == "items[2].kind"
    assert api("GET", PATH, params={"q": p}).json()["total"] == 0
    assert rows_after(pg, "operation_logs", before_log, "id") == []
    assert rows_after(pg, "sync_outbox", before_box, "id") == []

    # a duplicate inside the batch conflicts: nothing stays
    items[2] = {"name": f"{p}-1"}
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 409 and err_field(r) == "items[2].name"
    assert api("GET", PATH, params={"q": p}).json()["total"] == 0

    items[2] = {"name": f"{p}-3", "kind": "rerank"}
    r = api("POST", f"{PATH}/batch", json={"action": "create", "items": items})
    assert r.status_code == 200, r.text
    ids = [it["id"] for it in r.json()["items"]]
    assert r.json()["count"] == 3 and r.json()["items"][2]["kind"] == "rerank"
    box = rows_after(pg, "sync_outbox", before_box, "resource, resource_id, action, payload")
    assert box == [("models", i, "upsert", {"names": [f"{p}-{n}"]}) for i, n in zip(ids, (1, 2, 3))]

    r = api("POST", f"{PATH}/batch", json={"action": "disable", "ids": ids})
    assert r.status_code == 400  # models have no status

    r = api("POST", f"{PATH}/batch", json={"action": "delete", "ids": ids})
    assert r.status_code == 200 and r.json()["count"] == 3
    assert api("GET", PATH, params={"q": p}).json()["total"] == 0


# ---------------------------------------------------------------- audit and outbox

def test_oplog_and_outbox_names_old_and_new(api, pg, models):
    before_log, before_box = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    m = models(name=uniq("old"))
    new = "default." + uniq("new")
    r = api("PUT", f"{PATH}/{m['id']}", json={"name": new, "context_window": 5})
    assert r.status_code == 200
    assert api("DELETE", f"{PATH}/{m['id']}").status_code == 204
    logs = rows_after(pg, "operation_logs", before_log, "action, resource, resource_id, changes")
    assert [l[:3] for l in logs] == [("create", "models", str(m["id"])),
                                     ("update", "models", str(m["id"])),
                                     ("delete", "models", str(m["id"]))]
    assert logs[1][3] == {"name": new, "context_window": 5}
    box = rows_after(pg, "sync_outbox", before_box, "resource_id, action, payload")
    assert box == [(m["id"], "upsert", {"names": [m["name"]]}),
                   (m["id"], "upsert", {"names": [m["name"], new]}),
                   (m["id"], "delete", {"names": [new]})]
