"""Redis snapshots for the data plane (REDIS.md, docs/snapshots.md): contract
shapes against the goldens in tests/contract/, incremental publishing (each
admin write changes exactly the entries that depend on it), keys that stop
being valid, selector results in config:bindings, model capability lookup,
the full rebuild repairing drift, and scripts/verify-snapshot itself.

The module restarts the background with EZ_SYNC_RECONCILE_SECONDS=0, so that
nothing but the outbox (and the start-up rebuild) publishes while it runs:
a passing incremental test cannot be a periodic rebuild in disguise.
Fault tests (Redis down or refusing writes, SIGKILL) are in
test_snapshot_faults.py and reuse the helpers here.
"""

import hashlib
import json
import os
import subprocess
import uuid

import pytest

from conftest import ROOT, wait_for

VERIFY = ROOT / "scripts" / "verify-snapshot"
CONTRACT = ROOT / "tests" / "contract"

TOKEN_FIELDS = {"key_id", "master_id", "name", "group", "status", "scopes", "namespaces",
                "model_limits_enabled", "model_limits", "allow_ips", "expires_at",
                "quota_limit", "quota_used", "quota_reset_at"}
MASTER_FIELDS = {"name", "group", "status", "epoch", "global_qps", "namespaces",
                 "default_namespace"}
RESOURCES = {"tokens", "masters", "providers", "bindings", "models", "features"}
# Hashes of the contract whose fields are compared one by one.
FIELD_HASHES = ("config:providers", "config:bindings", "meta:models", "config:features")


# ---------------------------------------------------------------- helpers

def uniq(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def golden(name):
    return json.loads((CONTRACT / name).read_text())


def created(r):
    assert r.status_code == 201, r.text
    return r.json()


def ok(r, status=200):
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def make_master(api, **body):
    body.setdefault("name", uniq("m"))
    return created(api("POST", "/admin/masters", json=body))


def make_key(api, mid, **body):
    return created(api("POST", f"/admin/masters/{mid}/keys", json=body))


def make_group(api, models, **body):
    body.setdefault("name", uniq("pg"))
    body.setdefault("type", "openai")
    body["models"] = models
    return created(api("POST", "/admin/provider-groups", json=body))


def make_api_key(api, gid, **body):
    body.setdefault("api_key", "sk-" + uuid.uuid4().hex)
    body["group_id"] = gid
    return created(api("POST", "/admin/api-keys", json=body))


def make_binding(api, ns, pm, gid, **body):
    body.update(namespace=ns, public_model=pm, group_id=gid)
    return created(api("POST", "/admin/bindings", json=body))


def make_model(api, name, **body):
    body["name"] = name
    return created(api("POST", "/admin/models", json=body))


def make_ns(api):
    return created(api("POST", "/admin/namespaces", json={"name": uniq("ns")}))["name"]


def pending_rows(pg):
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM sync_outbox WHERE status = 'pending'")
        return cur.fetchone()[0]


def max_outbox_id(pg):
    with pg.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM sync_outbox")
        return cur.fetchone()[0]


def wait_drained(pg, timeout=30):
    """Every outbox row is applied (or failed): the snapshot is as current as it gets."""
    wait_for(lambda: pending_rows(pg) == 0, timeout=timeout, message="outbox drained")


def add_outbox(pg, resource, resource_id=None, action="upsert", payload=None):
    """A row as a worker writes it (for changes made with SQL, like a data fix)."""
    with pg.cursor() as cur:
        cur.execute("INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                    "VALUES (%s, %s, %s, %s) RETURNING id",
                    (resource, resource_id, action, json.dumps(payload or {})))
        return cur.fetchone()[0]


def verify(stack):
    """(exit code, output) of scripts/verify-snapshot against the stack."""
    env = dict(os.environ, EZ_PG_DSN=stack.pg_dsn, EZ_REDIS_ADDR=stack.redis_addr)
    res = subprocess.run([str(VERIFY), "--max-lines", "40"], env=env, capture_output=True,
                         text=True, timeout=120)
    return res.returncode, res.stdout + res.stderr


def wait_verified(stack, timeout=60):
    """Polls verify-snapshot until Redis matches PostgreSQL; fails with its last diff."""
    last = {}

    def matches():
        rc, last["out"] = verify(stack)
        return rc == 0

    try:
        wait_for(matches, timeout=timeout, interval=0.2, message="Redis to match PostgreSQL")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; verify-snapshot said:\n{last.get('out', '')}") from None


def dump(rds):
    """Every contract entry in Redis as {entry: value}: one entry per auth:* key,
    one per field of the shared hashes, and meta:models_meta's checksum."""
    out = {}
    for prefix in ("auth:token:", "auth:master:"):
        for k in rds.scan_iter(match=prefix + "*", count=1000):
            out[k] = rds.hgetall(k)
    for h in FIELD_HASHES:
        for f, v in rds.hgetall(h).items():
            out[f"{h}[{f}]"] = v
    out["meta:models_meta.checksum"] = rds.hget("meta:models_meta", "checksum")
    return out


def changed(before, after):
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


class Watch:
    """Records the contract entries around a change: `with Watch(...) as w: change()`,
    then w.changes is the set of entries that differ once the outbox drained."""

    def __init__(self, pg, rds):
        self.pg, self.rds = pg, rds

    def __enter__(self):
        wait_drained(self.pg)
        self.before = dump(self.rds)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            wait_drained(self.pg)
            self.after = dump(self.rds)
            self.changes = changed(self.before, self.after)
        return False


def token(rds, tok):
    return rds.hgetall(f"auth:token:{sha(tok)}")


def binding(rds, key):
    v = rds.hget("config:bindings", key)
    return json.loads(v) if v is not None else None


def provider(rds, aid):
    v = rds.hget("config:providers", str(aid))
    return json.loads(v) if v is not None else None


def model_meta(rds, key):
    v = rds.hget("meta:models", key)
    return json.loads(v) if v is not None else None


def kinds(obj):
    """{member: JSON type name} of an object, the shape the goldens fix."""
    return {k: type(v).__name__ for k, v in obj.items()}


@pytest.fixture(scope="module", autouse=True)
def outbox_only(stack):
    """Background without periodic rebuilds for this module; stack defaults after."""
    stack.ctl("restart", "background", env={"EZ_SYNC_RECONCILE_SECONDS": "0"})
    yield
    stack.ctl("restart", "background")


# ---------------------------------------------------------------- contract shapes

def test_contract_shapes_match_the_goldens(api, pg, rds):
    g = make_group(api, ["gemini-3-pro-preview"], type="vertex-express",
                   google_project="proj-1")
    a = make_api_key(api, g["id"], weight=3)
    ns = make_ns(api)
    make_binding(api, ns, "gemini", g["id"], selector_value="gemini-3-pro-preview")
    gm = golden("model_snapshot.json")
    make_model(api, f"{ns}.gemini", kind="chat", context_window=gm["context_window"],
               supports_vision=True, supports_functions=True, supports_tool_choice=True,
               supports_fim=True, max_output_tokens=gm["max_output_tokens"])
    m = make_master(api)
    k = make_key(api, m["id"], scopes=["chat"])
    wait_drained(pg)

    # provider: the golden's members and types, plus weight and ban_until
    p = provider(rds, a["id"])
    gp = golden("provider_snapshot.json")
    assert kinds(p) == {**kinds(gp), "weight": "int", "ban_until": "int"}
    assert p["name"] == f"{g['name']}#{a['id']}" and p["group_id"] == g["id"]
    assert p["google_location"] == "global" and p["google_project"] == "proj-1"
    assert p["weight"] == 3 and p["ban_until"] == 0 and p["auto_ban"] is True

    # model capability: exactly the golden (name is the binding key)
    mm = model_meta(rds, f"{ns}.gemini")
    assert mm == {**gm, "name": f"{ns}.gemini"}

    # models_meta: the golden's fields, all strings (a hash)
    meta = rds.hgetall("meta:models_meta")
    assert set(meta) == set(golden("models_meta.json"))
    assert len(meta["checksum"]) == 64 and meta["updated_at"].isdigit()

    # binding snapshot (REDIS.md)
    b = binding(rds, f"{ns}.gemini")
    assert kinds(b) == {"namespace": "str", "public_model": "str", "status": "str",
                        "updated_at": "int", "candidates": "list"}
    cand = b["candidates"][0]
    assert kinds(cand) == {"group_id": "int", "route_group": "str", "weight": "int",
                           "selector_type": "str", "selector_value": "str", "status": "str",
                           "upstreams": "dict"}
    assert cand["upstreams"] == {str(a["id"]): "gemini-3-pro-preview"}

    # token and master hashes: the fields of REDIS.md
    t = token(rds, k["token"])
    assert set(t) == TOKEN_FIELDS
    assert json.loads(t["scopes"]) == ["chat"] and t["model_limits_enabled"] in ("0", "1")
    assert set(rds.hgetall(f"auth:master:{m['id']}")) == MASTER_FIELDS

    versions = rds.hgetall("config:version")
    assert set(versions) >= RESOURCES and all(v.isdigit() for v in versions.values())


def test_refresh_notification_and_versions_grow(api, pg, rds):
    wait_drained(pg)
    before = rds.hgetall("config:version")
    sub = rds.pubsub(ignore_subscribe_messages=True)
    sub.subscribe("dp:config:refresh")
    try:
        wait_for(lambda: sub.connection is not None and rds.pubsub_numsub(
            "dp:config:refresh")[0][1] >= 1, message="subscribed")
        ok(api("PUT", "/admin/features", json={"x_snapshot_probe": uniq("v")}))
        msgs = []

        def got_features():
            m = sub.get_message(timeout=0.2)
            if m:
                msgs.append(json.loads(m["data"]))
            return any(x["resource"] == "features" for x in msgs)

        wait_for(got_features, timeout=30, message="dp:config:refresh for features")
    finally:
        sub.close()
    msg = next(x for x in msgs if x["resource"] == "features")
    assert kinds(msg) == {"resource": "str", "version": "str", "active_key": "str",
                          "timestamp": "int"}
    assert msg["active_key"] == "config:features"
    after = rds.hgetall("config:version")
    assert after["features"] == msg["version"]
    assert int(after["features"]) > int(before["features"])
    # only the resource that changed got a new version
    assert after["bindings"] == before["bindings"]
    assert float(rds.hget("ezapi:snapshot:published_at", "features")) >= msg["timestamp"] - 1


# ---------------------------------------------------------------- incremental: exactly what depends

def test_master_and_key_writes_touch_only_their_entries(api, pg, rds):
    with Watch(pg, rds) as w:
        m = make_master(api)
    assert w.changes == {f"auth:master:{m['id']}"}

    with Watch(pg, rds) as w:
        k = make_key(api, m["id"], name="one")
    tk = f"auth:token:{sha(k['token'])}"
    assert w.changes == {tk}
    assert w.after[tk]["status"] == "active" and w.after[tk]["key_id"] == str(k["id"])

    with Watch(pg, rds) as w:
        ok(api("PUT", f"/admin/masters/{m['id']}/keys/{k['id']}", json={"name": "renamed"}))
    assert w.changes == {tk} and w.after[tk]["name"] == "renamed"

    with Watch(pg, rds) as w:
        ok(api("PUT", f"/admin/masters/{m['id']}", json={"global_qps": 7}))
    assert w.changes == {f"auth:master:{m['id']}"}
    assert w.after[f"auth:master:{m['id']}"]["global_qps"] == "7"


def test_provider_writes_touch_providers_and_their_bindings(api, pg, rds):
    g = make_group(api, ["gpt-4o", "gpt-4o-mini"])
    other = make_group(api, ["gpt-4o"])
    ns = make_ns(api)
    make_binding(api, ns, "gpt-4o", g["id"])
    make_binding(api, ns, "other", other["id"], selector_value="gpt-4o")
    a_other = make_api_key(api, other["id"])

    with Watch(pg, rds) as w:
        a = make_api_key(api, g["id"])
    # its provider field, and the binding key of its group (now with an upstream)
    assert w.changes == {f"config:providers[{a['id']}]", f"config:bindings[{ns}.gpt-4o]"}
    assert binding(rds, f"{ns}.gpt-4o")["candidates"][0]["upstreams"] == {
        str(a["id"]): "gpt-4o"}

    with Watch(pg, rds) as w:
        ok(api("PUT", f"/admin/api-keys/{a['id']}", json={"status": "disabled"}))
    assert f"config:providers[{a['id']}]" in w.changes
    assert w.changes <= {f"config:providers[{a['id']}]", f"config:bindings[{ns}.gpt-4o]"}
    assert provider(rds, a["id"])["status"] == "disabled"
    cand = binding(rds, f"{ns}.gpt-4o")["candidates"][0]
    assert cand["error"] == "no_provider" and cand["upstreams"] == {}

    with Watch(pg, rds) as w:
        ok(api("DELETE", f"/admin/api-keys/{a['id']}"), 204)
    assert f"config:providers[{a['id']}]" in w.changes
    assert w.changes <= {f"config:providers[{a['id']}]", f"config:bindings[{ns}.gpt-4o]"}
    assert provider(rds, a["id"]) is None
    assert provider(rds, a_other["id"]) is not None

    # a group change: its keys' provider fields and its binding keys, nothing of the other group
    a2 = make_api_key(api, g["id"])
    with Watch(pg, rds) as w:
        ok(api("PUT", f"/admin/provider-groups/{g['id']}", json={"group": "vip"}))
    assert w.changes == {f"config:providers[{a2['id']}]", f"config:bindings[{ns}.gpt-4o]"}
    assert provider(rds, a2["id"])["group"] == "vip"
    assert binding(rds, f"{ns}.gpt-4o")["candidates"][0]["route_group"] == "vip"


def test_binding_and_model_writes(api, pg, rds):
    g = make_group(api, ["gpt-4o"])
    a = make_api_key(api, g["id"])
    ns = make_ns(api)
    key = f"{ns}.chat"

    with Watch(pg, rds) as w:
        b = make_binding(api, ns, "chat", g["id"], selector_value="gpt-4o")
    assert w.changes == {f"config:bindings[{key}]", f"meta:models[{key}]",
                         "meta:models_meta.checksum"}
    assert binding(rds, key)["candidates"][0]["upstreams"] == {str(a["id"]): "gpt-4o"}
    assert model_meta(rds, key) == {"name": key, "kind": "chat"}

    with Watch(pg, rds) as w:
        mo = make_model(api, key, context_window=4096)
    assert w.changes == {f"meta:models[{key}]", "meta:models_meta.checksum"}
    assert model_meta(rds, key) == {"name": key, "kind": "chat", "context_window": 4096}

    with Watch(pg, rds) as w:
        ok(api("PUT", f"/admin/bindings/{b['id']}", json={"public_model": "talk"}))
    # renamed: the old key leaves both hashes, the new one arrives
    assert w.changes == {f"config:bindings[{key}]", f"meta:models[{key}]",
                         f"config:bindings[{ns}.talk]", f"meta:models[{ns}.talk]",
                         "meta:models_meta.checksum"}
    assert binding(rds, key) is None and model_meta(rds, key) is None
    assert model_meta(rds, f"{ns}.talk") == {"name": f"{ns}.talk", "kind": "chat"}

    with Watch(pg, rds) as w:
        ok(api("DELETE", f"/admin/models/{mo['id']}"), 204)
    assert w.changes == set()  # the model named the old key: nothing uses it now

    with Watch(pg, rds) as w:
        ok(api("DELETE", f"/admin/bindings/{b['id']}"), 204)
    assert w.changes == {f"config:bindings[{ns}.talk]", f"meta:models[{ns}.talk]",
                         "meta:models_meta.checksum"}


def test_features_write_touches_only_config_features(api, pg, rds):
    name = "x_" + uuid.uuid4().hex[:10]
    with Watch(pg, rds) as w:
        ok(api("PUT", "/admin/features", json={name: "on"}))
    assert w.changes == {f"config:features[{name}]"}
    assert rds.hget("config:features", name) == "on"
    with Watch(pg, rds) as w:
        ok(api("PUT", "/admin/features", json={name: None}))
    assert w.changes == {f"config:features[{name}]"}
    assert rds.hget("config:features", name) is None


# ---------------------------------------------------------------- keys that stop being valid

def test_disabled_suspended_deleted_keys(api, pg, rds):
    m = make_master(api)
    k1 = make_key(api, m["id"])
    k2 = make_key(api, m["id"])
    wait_drained(pg)
    assert token(rds, k1["token"])["status"] == "active"

    ok(api("PUT", f"/admin/masters/{m['id']}/keys/{k1['id']}", json={"status": "disabled"}))
    wait_for(lambda: token(rds, k1["token"])["status"] == "disabled", message="disabled")

    # a suspended master: its own entry and every key say so
    ok(api("POST", f"/admin/masters/{m['id']}/manage", json={"action": "suspend"}))
    wait_for(lambda: rds.hget(f"auth:master:{m['id']}", "status") == "suspended",
             message="master suspended")
    wait_for(lambda: token(rds, k2["token"])["status"] == "suspended", message="key suspended")
    ok(api("POST", f"/admin/masters/{m['id']}/manage", json={"action": "activate"}))
    wait_for(lambda: token(rds, k2["token"])["status"] == "active", message="key active again")

    ok(api("DELETE", f"/admin/masters/{m['id']}/keys/{k2['id']}"), 204)
    wait_for(lambda: not rds.exists(f"auth:token:{sha(k2['token'])}"), message="key deleted")

    # revoke_keys: every key disabled
    k3 = make_key(api, m["id"])
    wait_for(lambda: token(rds, k3["token"]).get("status") == "active", message="k3 active")
    ok(api("POST", f"/admin/masters/{m['id']}/manage", json={"action": "revoke_keys"}))
    wait_for(lambda: token(rds, k3["token"])["status"] == "disabled", message="revoked")

    # a deleted master takes its keys' entries with it
    ok(api("DELETE", f"/admin/masters/{m['id']}"), 204)
    wait_for(lambda: not rds.exists(f"auth:master:{m['id']}") and
             not rds.exists(f"auth:token:{sha(k1['token'])}") and
             not rds.exists(f"auth:token:{sha(k3['token'])}"), message="master deleted")


def test_expired_key_by_the_expiry_job(api, pg, rds):
    m = make_master(api)
    k = make_key(api, m["id"])
    wait_for(lambda: token(rds, k["token"]).get("status") == "active", message="published")
    # Time passes: set expires_at in the past the way only the clock can.
    with pg.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM operation_logs")
        log_since = cur.fetchone()[0]
        cur.execute("UPDATE keys SET expires_at = now() - interval '1 second' WHERE id = %s",
                    (k["id"],))
    wait_for(lambda: token(rds, k["token"])["status"] == "expired", timeout=30,
             message="expired in Redis")
    with pg.cursor() as cur:
        cur.execute("SELECT status FROM keys WHERE id = %s", (k["id"],))
        assert cur.fetchone()[0] == "expired"
        cur.execute("SELECT actor, action, resource, changes FROM operation_logs "
                    "WHERE id > %s AND resource_id = %s", (log_since, str(k["id"])))
        assert ("system", "expire", "keys", {"status": "expired"}) in cur.fetchall()
    assert int(token(rds, k["token"])["expires_at"]) > 0


def test_exhausted_key_via_stats_flush(api, pg, rds):
    m = make_master(api)
    k = make_key(api, m["id"], quota_limit=100)
    wait_for(lambda: token(rds, k["token"]).get("status") == "active", message="published")
    r = api("POST", "/internal/stats/flush", json={
        "flush_id": uniq("f"), "keys": [{"key_id": k["id"], "requests": 1, "tokens": 100,
                                         "quota_used": 100}]})
    assert r.status_code == 200, r.text
    wait_for(lambda: token(rds, k["token"])["status"] == "exhausted", message="exhausted")
    assert token(rds, k["token"])["quota_used"] == "100"


def test_rotation_grace_and_its_end(api, pg, rds):
    m = make_master(api)
    k = make_key(api, m["id"])
    old = k["token"]
    wait_for(lambda: token(rds, old).get("status") == "active", message="published")

    rot = ok(api("POST", f"/admin/masters/{m['id']}/keys/{k['id']}/rotate",
                 json={"grace_seconds": 600}))
    new = rot["token"]
    wait_for(lambda: token(rds, new).get("status") == "active", message="new token")
    # the old token keeps working during its grace, and carries its expiry
    assert token(rds, old)["key_id"] == str(k["id"])
    ttl = rds.ttl(f"auth:token:{sha(old)}")
    assert 0 < ttl <= 600
    assert rds.ttl(f"auth:token:{sha(new)}") == -1

    # The grace period ends (moved into the past with SQL): the expiry job forgets it.
    with pg.cursor() as cur:
        cur.execute("UPDATE keys SET prev_token_expires_at = now() - interval '1 second' "
                    "WHERE id = %s", (k["id"],))
    wait_for(lambda: not rds.exists(f"auth:token:{sha(old)}"), timeout=30,
             message="old token gone after its grace")
    with pg.cursor() as cur:
        cur.execute("SELECT prev_token_hash FROM keys WHERE id = %s", (k["id"],))
        assert cur.fetchone()[0] is None
    assert token(rds, new)["status"] == "active"

    # no grace: the old token stops at once
    rot2 = ok(api("POST", f"/admin/masters/{m['id']}/keys/{k['id']}/rotate",
                  json={"grace_seconds": 0}))
    wait_for(lambda: not rds.exists(f"auth:token:{sha(new)}") and
             token(rds, rot2["token"]).get("status") == "active", message="rotated, no grace")


# ---------------------------------------------------------------- selectors in config:bindings

def test_selector_cases_in_config_bindings(stack, api, pg, rds):
    g = make_group(api, ["Moonshot/Kimi2", "gpt-4o", "gpt-4o-mini"])
    a1 = make_api_key(api, g["id"])
    a2 = make_api_key(api, g["id"])
    make_api_key(api, g["id"], status="disabled")
    empty = make_group(api, ["gpt-4o"])  # no API key at all
    ns = make_ns(api)
    make_binding(api, ns, "exact", g["id"], selector_value="gpt-4o")
    make_binding(api, ns, "kimi", g["id"], selector_type="normalize_exact",
                 selector_value="KIMI2")
    make_binding(api, ns, "mini", g["id"], selector_type="regex", selector_value="gpt-4o-m.*")
    make_binding(api, ns, "many", g["id"], selector_type="regex", selector_value="gpt-4o.*")
    make_binding(api, ns, "none", g["id"], selector_value="claude")
    make_binding(api, ns, "gpt-4o", empty["id"])
    wait_drained(pg)

    both = {str(a1["id"]), str(a2["id"])}  # the disabled key serves nothing

    def only(key):
        b = binding(rds, key)
        assert b is not None, key
        assert len(b["candidates"]) == 1
        return b, b["candidates"][0]

    b, c = only(f"{ns}.exact")
    assert b["status"] == "active" and c["status"] == "active" and "error" not in c
    assert c["upstreams"] == {i: "gpt-4o" for i in both}
    _, c = only(f"{ns}.kimi")
    assert c["upstreams"] == {i: "Moonshot/Kimi2" for i in both}
    _, c = only(f"{ns}.mini")
    assert c["upstreams"] == {i: "gpt-4o-mini" for i in both}
    for key in (f"{ns}.many", f"{ns}.none"):
        b, c = only(key)
        assert (b["status"], c["status"], c["error"], c["upstreams"]) == (
            "error", "error", "config_error", {}), key
    _, c = only(f"{ns}.gpt-4o")
    assert c["error"] == "no_provider" and c["upstreams"] == {}

    # several candidates for one key; a disabled binding or group is no candidate
    b2 = make_binding(api, ns, "exact", empty["id"], selector_value="gpt-4o", weight=9)
    wait_for(lambda: len(binding(rds, f"{ns}.exact")["candidates"]) == 2, message="2 candidates")
    ok(api("PUT", f"/admin/bindings/{b2['id']}", json={"status": "disabled"}))
    wait_for(lambda: len(binding(rds, f"{ns}.exact")["candidates"]) == 1, message="1 candidate")
    ok(api("PUT", f"/admin/provider-groups/{empty['id']}", json={"status": "disabled"}))
    wait_for(lambda: binding(rds, f"{ns}.gpt-4o") is None, message="no candidate left")
    assert model_meta(rds, f"{ns}.gpt-4o") is None
    wait_verified(stack)


# ---------------------------------------------------------------- model capability lookup

def test_model_capability_precedence(api, pg, rds):
    g = make_group(api, ["up-model"])
    make_api_key(api, g["id"])
    ns = make_ns(api)
    pm = uniq("pm")
    make_binding(api, ns, pm, g["id"], selector_value="up-model")
    generic = make_model(api, pm, kind="embedding", context_window=1000)
    specific = make_model(api, f"{ns}.{pm}", kind="rerank", supports_stream=True)
    wait_drained(pg)
    assert model_meta(rds, f"{ns}.{pm}") == {"name": f"{ns}.{pm}", "kind": "rerank",
                                             "supports_stream": True}
    ok(api("DELETE", f"/admin/models/{specific['id']}"), 204)
    wait_for(lambda: model_meta(rds, f"{ns}.{pm}")["kind"] == "embedding", message="generic")
    assert model_meta(rds, f"{ns}.{pm}") == {"name": f"{ns}.{pm}", "kind": "embedding",
                                             "context_window": 1000}
    ok(api("PUT", f"/admin/models/{generic['id']}", json={"cost_per_token": 0.25}))
    wait_for(lambda: model_meta(rds, f"{ns}.{pm}").get("cost_per_token") == 0.25,
             message="cost")
    ok(api("DELETE", f"/admin/models/{generic['id']}"), 204)
    wait_for(lambda: model_meta(rds, f"{ns}.{pm}") == {"name": f"{ns}.{pm}", "kind": "chat"},
             message="fallback")


# ---------------------------------------------------------------- rebuild and verifier

def test_verify_snapshot_finds_drift_and_a_rebuild_repairs_it(stack, api, pg, rds):
    m = make_master(api)
    k = make_key(api, m["id"])
    wait_drained(pg)
    wait_verified(stack)

    stray = "auth:token:" + "0" * 64
    rds.hset(stray, mapping={"key_id": "1", "status": "active"})
    rds.hset(f"auth:token:{sha(k['token'])}", "status", "active-forever")
    rds.hset("config:bindings", "nope.nothing", "{}")
    rds.hdel("config:features", *(rds.hkeys("config:features") or ["-"]))
    rds.hset("config:features", "x_stray", "1")
    rc, out = verify(stack)
    assert rc == 1, out
    assert f"auth:token:{'0' * 12}...: stale" in out
    assert "field status = active-forever" in out
    assert "config:bindings[nope.nothing]: unexpected" in out
    assert "config:features[x_stray]" in out
    assert "meta:models_meta[checksum]" not in out  # untouched meta:models still matches

    # an "all" row asks for a full rebuild: temporary hashes renamed over, stale tokens SCANned out
    since = rds.hget("config:version", "tokens")
    add_outbox(pg, "all")
    wait_for(lambda: rds.hget("config:version", "tokens") != since, message="rebuilt")
    wait_verified(stack)
    assert not rds.exists(stray)
    assert not list(rds.scan_iter(match="ezapi:tmp:*"))
    log = stack.log("background")
    assert "event=snapshot_rebuilt reason=requested" in log


def test_redis_flushed_is_rebuilt_within_an_outbox_interval(stack, api, pg, rds):
    make_key(api, make_master(api)["id"])
    wait_drained(pg)
    rds.flushdb()
    wait_for(lambda: rds.exists("config:version"), timeout=30, message="marker back")
    wait_verified(stack)
    assert "reason=redis_empty" in stack.log("background")


def test_metrics_show_outbox_and_publishes(api, pg):
    ok(api("PUT", "/admin/features", json={"x_metrics_probe": uniq("v")}))
    wait_drained(pg)
    # the applied counter is bumped just after the rows are marked done
    j = wait_for(lambda: (lambda m: m if m["outbox"]["applied"] > 0 else None)(
        ok(api("GET", "/internal/metrics?format=json"))), message="applied counted")
    assert j["outbox"]["pending"] >= 0 and j["outbox"]["failed"] >= 0
    for res in RESOURCES:
        assert j["snapshot"][res]["publishes"] >= 1
        assert j["snapshot"][res]["last_published_at"] > 0
    text = api("GET", "/internal/metrics").text
    for name in ("ezapi_outbox_pending ", "ezapi_outbox_failed ", "ezapi_outbox_applied_total ",
                 'ezapi_snapshot_publishes_total{resource="bindings"} ',
                 'ezapi_snapshot_last_publish_timestamp_seconds{resource="tokens"} '):
        assert name in text, name
    # (polled: a worker thread whose Redis connection died idle answers null once)
    wait_for(lambda: ok(api("GET", "/admin/stats"))["snapshot"]["last_published_at"],
             message="/admin/stats snapshot.last_published_at")


def test_outbox_rows_are_done_and_unknown_ones_failed(pg):
    wait_drained(pg)
    rid = add_outbox(pg, "no_such_resource", 1)
    nid = add_outbox(pg, "namespaces", 1)

    def status(i):
        with pg.cursor() as cur:
            cur.execute("SELECT status, last_error FROM sync_outbox WHERE id = %s", (i,))
            return cur.fetchone()

    wait_for(lambda: status(rid)[0] == "failed" and status(nid)[0] == "done",
             message="rows handled")
    assert status(rid)[1] == "unknown resource"
