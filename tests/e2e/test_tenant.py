"""The tenant API (/v1, master-key authentication): /v1/self, /v1/tokens scoped
to the caller (another tenant's ids answer 404), what a tenant may not widen
(namespaces, quota_limit), and /v1/realtime."""

import hashlib
import time
import uuid

import pytest

KEY_FIELDS = {"id", "master_id", "name", "group", "scopes", "namespaces",
              "model_limits_enabled", "model_limits", "allow_ips", "expires_at",
              "quota_limit", "quota_used", "quota_reset_period", "quota_reset_at", "status",
              "token_prefix", "last_accessed_at", "request_count", "token_count",
              "created_at", "updated_at"}
MASTER_FIELDS = {"id", "name", "group", "namespaces", "default_namespace", "max_child_keys",
                 "global_qps", "status", "epoch", "key_prefix", "request_count", "token_count",
                 "created_at", "updated_at"}


def uniq(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


def err(r, status, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    if field is not None:
        assert e.get("field") == field, e
    return e


def create_ns(api):
    name = f"ns-{uuid.uuid4().hex[:10]}"
    assert api("POST", "/admin/namespaces", json={"name": name}).status_code == 201
    return name


class Tenant:
    """A master created through the admin API, calling /v1 with its master key."""

    def __init__(self, api, **body):
        body.setdefault("name", uniq())
        r = api("POST", "/admin/masters", json=body)
        assert r.status_code == 201, r.text
        self.master = r.json()
        self.id = self.master["id"]
        self.key = self.master["master_key"]
        self._api = api

    def __call__(self, method, path, **kw):
        return self._api(method, path, token=self.key, **kw)

    def token(self, **body):
        r = self("POST", "/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def tenant(api):
    return Tenant(api, max_child_keys=20)


@pytest.fixture
def other(api):
    return Tenant(api)


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize("token", [
    None, "", "mk-" + "0" * 64, "1'; DROP TABLE masters;--", "' OR '1'='1", "%27", "x" * 300,
])
def test_unknown_or_missing_master_key_is_401(api, pg, token):
    r = api("GET", "/v1/self", token=token)
    e = err(r, 401)
    assert e["code"] == "unauthorized"
    assert max_id(pg, "masters") >= 0  # still there


def test_admin_token_does_not_open_the_tenant_api(stack, api):
    err(api("GET", "/v1/self", token=stack.admin_token), 401)


def test_master_key_does_not_open_the_admin_api(api, tenant):
    err(api("GET", "/admin/masters", token=tenant.key), 401)


def test_suspended_master_is_403(api, tenant):
    assert api("POST", f"/admin/masters/{tenant.id}/manage",
               json={"action": "suspend"}).status_code == 200
    for method, path in (("GET", "/v1/self"), ("GET", "/v1/tokens"), ("POST", "/v1/tokens"),
                         ("GET", "/v1/realtime")):
        e = err(tenant(method, path, json={}), 403)
        assert e["code"] == "forbidden"
    assert api("POST", f"/admin/masters/{tenant.id}/manage",
               json={"action": "activate"}).status_code == 200
    assert tenant("GET", "/v1/self").status_code == 200


# ---------------------------------------------------------------- /v1/self


def test_self_shows_the_master_with_usage_and_no_secrets(api, pg, tenant):
    a = tenant.token()
    b = tenant.token()
    with pg.cursor() as cur:
        cur.execute("UPDATE keys SET quota_used = %s WHERE id = %s", (40, a["id"]))
        cur.execute("UPDATE keys SET quota_used = %s WHERE id = %s", (2, b["id"]))
        cur.execute("UPDATE masters SET request_count = 11, token_count = 2222 WHERE id = %s",
                    (tenant.id,))
    r = tenant("GET", "/v1/self")
    assert r.status_code == 200
    s = r.json()
    assert set(s) == MASTER_FIELDS | {"key_count", "quota_used"}
    assert s["id"] == tenant.id and s["name"] == tenant.master["name"]
    assert (s["key_count"], s["quota_used"]) == (2, 42)
    assert (s["request_count"], s["token_count"]) == (11, 2222)
    assert tenant.key not in r.text and sha(tenant.key) not in r.text


def test_self_of_a_new_master(tenant):
    s = tenant("GET", "/v1/self").json()
    assert (s["key_count"], s["quota_used"], s["request_count"]) == (0, 0, 0)


# ---------------------------------------------------------------- /v1/tokens


def test_tokens_crud(pg, tenant):
    k = tenant.token(name="app", scopes=["chat"])
    assert k["master_id"] == tenant.id and k["token"].startswith("sk-")
    assert k["group"] == tenant.master["group"]
    assert set(k) == KEY_FIELDS | {"token"}
    g = tenant("GET", f"/v1/tokens/{k['id']}")
    assert g.status_code == 200 and set(g.json()) == KEY_FIELDS
    assert k["token"] not in g.text
    u = tenant("PUT", f"/v1/tokens/{k['id']}", json={"name": "app2", "status": "disabled"})
    assert u.status_code == 200 and (u.json()["name"], u.json()["status"]) == ("app2", "disabled")
    assert u.json()["scopes"] == ["chat"]
    lst = tenant("GET", "/v1/tokens")
    assert [it["id"] for it in lst.json()["items"]] == [k["id"]]
    assert k["token"] not in lst.text
    assert tenant("DELETE", f"/v1/tokens/{k['id']}").status_code == 204
    err(tenant("GET", f"/v1/tokens/{k['id']}"), 404)
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM keys WHERE id = %s", (k["id"],))
        assert cur.fetchone()[0] == 0


def test_token_list_pagination_filter_sort_q(tenant):
    names = ["a%1", "ax1", "b_2", "bx2", "c3"]
    ks = [tenant.token(name=n, quota_limit=i) for i, n in enumerate(names)]
    tenant("PUT", f"/v1/tokens/{ks[4]['id']}", json={"status": "disabled"})
    r = tenant("GET", "/v1/tokens", params={"page": 2, "page_size": 2, "sort": "-quota_limit"})
    body = r.json()
    assert (body["total"], body["page"], body["page_size"]) == (5, 2, 2)
    assert [it["id"] for it in body["items"]] == [ks[2]["id"], ks[1]["id"]]
    for q, want in (("a%", [0]), ("b_", [2]), ("%", [0]), ("_", [2])):
        r = tenant("GET", "/v1/tokens", params={"q": q})
        assert [it["id"] for it in r.json()["items"]] == [ks[i]["id"] for i in want], q
    r = tenant("GET", "/v1/tokens", params={"status": "disabled"})
    assert [it["id"] for it in r.json()["items"]] == [ks[4]["id"]]
    err(tenant("GET", "/v1/tokens", params={"sort": "1; DROP TABLE keys"}), 400, "sort")
    r = tenant("GET", "/v1/tokens", params={"q": "'; DROP TABLE keys;--"})
    assert r.status_code == 200 and r.json()["total"] == 0


def test_another_tenants_key_is_404_never_403(api, pg, tenant, other):
    theirs = other.token(name="theirs")
    ob = max_id(pg, "sync_outbox")
    for method, path, body in (("GET", "", None), ("PUT", "", {"name": "mine"}),
                               ("DELETE", "", None), ("POST", "/rotate", {})):
        e = err(tenant(method, f"/v1/tokens/{theirs['id']}{path}", json=body), 404)
        assert e["code"] == "not_found"
    assert max_id(pg, "sync_outbox") == ob
    # not in the list, whatever the query says
    r = tenant("GET", "/v1/tokens", params={"master_id": other.id})
    assert theirs["id"] not in [it["id"] for it in r.json()["items"]]
    # untouched
    g = other("GET", f"/v1/tokens/{theirs['id']}").json()
    assert g["name"] == "theirs"
    with pg.cursor() as cur:
        cur.execute("SELECT token_hash FROM keys WHERE id = %s", (theirs["id"],))
        assert cur.fetchone()[0] == sha(theirs["token"])


def test_mass_assignment_cannot_move_a_key_to_another_master(pg, tenant, other):
    k = tenant.token(master_id=other.id, id=987654321, quota_used=5, status="active",
                     created_at="2001-01-01T00:00:00Z")
    assert k["master_id"] == tenant.id and k["quota_used"] == 0 and k["id"] != 987654321
    r = tenant("PUT", f"/v1/tokens/{k['id']}", json={"master_id": other.id, "quota_used": 9})
    assert r.status_code == 200
    with pg.cursor() as cur:
        cur.execute("SELECT master_id, quota_used FROM keys WHERE id = %s", (k["id"],))
        assert cur.fetchone() == (tenant.id, 0)


def test_bad_token_ids(tenant):
    for bad in ("abc", "-1", "0", "99999999999999999999", "1'%3B%20DROP%20TABLE%20keys%3B--"):
        for method in ("GET", "PUT", "DELETE"):
            r = tenant(method, f"/v1/tokens/{bad}", json={})
            assert r.status_code == 400, (bad, method, r.text)
    err(tenant("GET", "/v1/tokens/999999999"), 404)


def test_max_child_keys_409(api, pg):
    t = Tenant(api, max_child_keys=1)
    t.token()
    ob = max_id(pg, "sync_outbox")
    e = err(t("POST", "/v1/tokens", json={}), 409)
    assert "max_child_keys" in e["message"]
    assert max_id(pg, "sync_outbox") == ob
    assert t("GET", "/v1/self").json()["key_count"] == 1


# ---------------------------------------------------------------- what a tenant may not widen


def test_tenant_may_not_widen_namespaces(api):
    ns, ns_other = create_ns(api), create_ns(api)
    t = Tenant(api, namespaces=[ns, "default"], default_namespace="default")
    err(t("POST", "/v1/tokens", json={"namespaces": [ns_other]}), 400, "namespaces")
    err(t("POST", "/v1/tokens", json={"namespaces": [ns, "nope-none"]}), 400, "namespaces")
    k = t.token(namespaces=[ns])
    err(t("PUT", f"/v1/tokens/{k['id']}", json={"namespaces": [ns, ns_other]}), 400, "namespaces")
    err(t("PUT", f"/v1/tokens/{k['id']}", json={"model_limits": [f"{ns_other}.gpt"]}), 400,
        "model_limits")
    assert t("GET", f"/v1/tokens/{k['id']}").json()["namespaces"] == [ns]
    r = t("PUT", f"/v1/tokens/{k['id']}", json={"namespaces": [ns, "default"],
                                                 "model_limits": [f"{ns}.gpt", "m"]})
    assert r.status_code == 200, r.text


def test_a_master_with_no_list_has_its_default_namespace(api):
    ns = create_ns(api)
    t = Tenant(api, default_namespace=ns)
    assert t.token(namespaces=[ns])["namespaces"] == [ns]
    err(t("POST", "/v1/tokens", json={"namespaces": ["default"]}), 400, "namespaces")


def test_tenant_may_not_raise_quota_limit(api, pg, tenant):
    k = tenant.token(quota_limit=100)
    ob = max_id(pg, "sync_outbox")
    for q in (101, -1, 2 ** 40):
        e = err(tenant("PUT", f"/v1/tokens/{k['id']}", json={"quota_limit": q}), 403,
                "quota_limit")
        assert e["code"] == "forbidden"
    assert max_id(pg, "sync_outbox") == ob
    assert tenant("GET", f"/v1/tokens/{k['id']}").json()["quota_limit"] == 100
    assert tenant("PUT", f"/v1/tokens/{k['id']}", json={"quota_limit": 100}).status_code == 200
    assert tenant("PUT", f"/v1/tokens/{k['id']}",
                  json={"quota_limit": 40}).json()["quota_limit"] == 40
    err(tenant("PUT", f"/v1/tokens/{k['id']}", json={"quota_limit": 100}), 403, "quota_limit")
    # the admin may raise it
    r = api("PUT", f"/admin/masters/{tenant.id}/keys/{k['id']}", json={"quota_limit": -1})
    assert r.status_code == 200 and r.json()["quota_limit"] == -1
    # an unlimited key may be limited by the tenant
    assert tenant("PUT", f"/v1/tokens/{k['id']}",
                  json={"quota_limit": 7}).json()["quota_limit"] == 7
    err(tenant("PUT", f"/v1/tokens/{k['id']}", json={"quota_limit": -2}), 400, "quota_limit")


def test_tenant_validation_is_the_admin_one(tenant):
    err(tenant("POST", "/v1/tokens", json={"allow_ips": ["1.2.3.4/40"]}), 400, "allow_ips")
    err(tenant("POST", "/v1/tokens", json={"status": "exhausted"}), 400, "status")
    err(tenant("POST", "/v1/tokens", json={"expires_at": "2001-01-01T00:00:00Z"}), 400,
        "expires_at")
    err(tenant("POST", "/v1/tokens", data="{", headers={"Content-Type": "application/json"}), 400)


# ---------------------------------------------------------------- audit / outbox / rotate


def test_tenant_writes_are_audited_as_the_master(pg, tenant):
    ol, ob = max_id(pg, "operation_logs"), max_id(pg, "sync_outbox")
    k = tenant.token(name="aud")
    tenant("PUT", f"/v1/tokens/{k['id']}", json={"name": "aud2"})
    rot = tenant("POST", f"/v1/tokens/{k['id']}/rotate", json={"grace_seconds": 30}).json()
    tenant("DELETE", f"/v1/tokens/{k['id']}")
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, resource, resource_id, changes::text "
                    "FROM operation_logs WHERE id > %s ORDER BY id", (ol,))
        logs = cur.fetchall()
    assert [x[:4] for x in logs] == [(f"master:{tenant.id}", a, "keys", str(k["id"]))
                                     for a in ("create", "update", "rotate", "delete")]
    for x in logs:
        for s in (k["token"], rot["token"], tenant.key):
            assert s not in x[4]
    with pg.cursor() as cur:
        cur.execute("SELECT resource, resource_id, action, payload FROM sync_outbox "
                    "WHERE id > %s ORDER BY id", (ob,))
        rows = cur.fetchall()
    assert [r[:3] for r in rows] == [("keys", k["id"], a)
                                     for a in ("upsert", "upsert", "upsert", "delete")]
    assert set(rows[3][3]["token_hashes"]) == {sha(k["token"]), sha(rot["token"])}


def test_tenant_rotate(pg, tenant):
    k = tenant.token()
    r = tenant("POST", f"/v1/tokens/{k['id']}/rotate")
    assert r.status_code == 200 and r.json()["token"] != k["token"]
    with pg.cursor() as cur:
        cur.execute("SELECT token_hash, prev_token_hash FROM keys WHERE id = %s", (k["id"],))
        assert cur.fetchone() == (sha(r.json()["token"]), None)
    err(tenant("POST", f"/v1/tokens/{k['id']}/rotate", json={"grace_seconds": 86401}), 400,
        "grace_seconds")


def test_revoke_keys_shows_in_the_tenants_view(api, tenant):
    ks = [tenant.token() for _ in range(2)]
    api("POST", f"/admin/masters/{tenant.id}/manage", json={"action": "revoke_keys"})
    items = tenant("GET", "/v1/tokens").json()["items"]
    assert {it["id"]: it["status"] for it in items} == {k["id"]: "disabled" for k in ks}
    assert tenant("GET", "/v1/self").json()["epoch"] == 1


# ---------------------------------------------------------------- /v1/realtime


def test_realtime_is_the_callers(api, rds, tenant, other):
    now = int(time.time())
    pipe = rds.pipeline()
    for t in range(now - 90, now + 10):
        pipe.hset(f"rt:master:{tenant.id}:s:{t}", mapping={"requests": 4, "tokens": 40})
        pipe.expire(f"rt:master:{tenant.id}:s:{t}", 300)
    pipe.hset(f"rt:master:{tenant.id}", mapping={"requests": 900, "tokens": 9000, "errors": 9,
                                                 "last_request_at": now})
    pipe.hset(f"rt:master:{other.id}", mapping={"requests": 1, "tokens": 1, "errors": 1})
    pipe.execute()
    r = tenant("GET", "/v1/realtime")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["master_id"], body["requests"], body["tokens"], body["errors"]) == (
        tenant.id, 900, 9000, 9)
    assert (body["qps_10s"], body["qps_60s"], body["limited"]) == (4, 4, False)
    assert body["global_qps"] == tenant.master["global_qps"]
    admin = api("GET", f"/admin/masters/{tenant.id}/realtime").json()
    assert admin == body
    # a master_id in the query is not a way into another tenant's counters
    r = tenant("GET", "/v1/realtime", params={"master_id": other.id})
    assert r.json()["master_id"] == tenant.id


def test_realtime_of_a_quiet_tenant_is_zeros(tenant):
    body = tenant("GET", "/v1/realtime").json()
    assert (body["requests"], body["qps_10s"], body["qps_60s"], body["limited"],
            body["last_request_at"]) == (0, 0, 0, False, None)


def test_no_secret_in_the_app_logs(stack, tenant):
    k = tenant.token()
    tenant("POST", f"/v1/tokens/{k['id']}/rotate")
    logs = "".join(p.read_text(errors="replace") for p in stack.logs_dir.glob("*.log"))
    assert "/v1/tokens" in logs  # the access log saw these requests
    for s in (tenant.key, k["token"]):
        assert s not in logs
