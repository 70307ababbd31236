"""POST /admin/import: a New API migration file (EXPORT-FORMAT.md) loaded in one
transaction: provider groups and API keys (multi-key channels share a group),
masters with new master keys, keys that keep their original tokens, bindings,
namespaces; warnings item by item; dry_run; importing twice creates nothing;
a bad file writes nothing; no secret in the audit trail."""

import hashlib
import json
import uuid

import pytest

from conftest import wait_for

COUNTED = ("provider_groups", "api_keys", "masters", "keys", "bindings")


def uniq(prefix="i"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def do_import(api, doc, dry_run=False, status=200):
    path = "/admin/import" + ("?dry_run=true" if dry_run else "")
    r = api("POST", path, data=json.dumps(doc), headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    return r.json()


def one(pg, sql, *args):
    with pg.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def rows(pg, sql, *args):
    with pg.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def has_warning(res, item, text):
    return any(w.startswith(item + ":") and text in w for w in res["warnings"])


class File:
    """A migration file with names unique to one test."""

    def __init__(self):
        u = uuid.uuid4().hex[:8]
        self.u = u
        self.ns = f"ns-{u}"
        self.rg = f"rg-{u}"
        self.rg_multi = f"rgm-{u}"
        self.p_openai = f"OpenAI Main {u}"       # spaces: made a valid name
        self.p_openai_name = f"OpenAI-Main-{u}"
        self.multi = f"multi-{u}"
        self.m1 = f"alice-{u}"
        self.m2 = f"bob-{u}"
        self.t1 = f"sk-imp{u}one{uuid.uuid4().hex}"
        self.t2 = f"sk-imp{u}two{uuid.uuid4().hex}"
        self.api_secret = f"sk-upstream-{uuid.uuid4().hex}"
        self.multi_secrets = [f"sk-ant-{uuid.uuid4().hex}", f"sk-ant-{uuid.uuid4().hex}"]
        self.doc = {
            "version": "1.0.0",
            "source": {"type": "newapi", "version": "unknown",
                       "exported_at": "2025-01-01T00:00:00Z"},
            "data": {
                "providers": [
                    {"original_id": 1, "name": self.p_openai, "type": "OpenAI",
                     "base_url": "https://api.openai.com", "api_key": self.api_secret,
                     "models": ["gpt-4o", "gpt-4o-mini", "gpt-4o"], "primary_group": self.rg,
                     "all_groups": [self.rg], "weight": 0, "priority": 5, "status": "active",
                     "auto_ban": True, "is_multi_key": False, "multi_key_index": 0,
                     "original_name": self.p_openai, "_original": {"anything": [1, 2]}},
                    {"original_id": 2, "name": f"{self.multi}#1", "type": "anthropic",
                     "base_url": "", "api_key": self.multi_secrets[0], "models": ["claude-x"],
                     "primary_group": self.rg_multi, "all_groups": [self.rg_multi, "vip"],
                     "weight": 3, "status": "active", "auto_ban": False, "is_multi_key": True,
                     "multi_key_index": 0, "original_name": self.multi},
                    {"original_id": 2, "name": f"{self.multi}#2", "type": "anthropic",
                     "base_url": "", "api_key": self.multi_secrets[1],
                     "models": ["claude-x", "claude-y"], "primary_group": self.rg_multi,
                     "weight": 2000, "status": "disabled", "is_multi_key": True,
                     "multi_key_index": 1, "original_name": self.multi},
                    {"original_id": 3, "name": f"azure-{u}", "type": "azure",
                     "base_url": "https://example.openai.azure.com",
                     "api_key": f"az-{uuid.uuid4().hex}", "models": ["gpt-35"],
                     "primary_group": self.rg},
                    {"original_id": 4, "name": f"weird-{u}", "type": "mystery",
                     "api_key": f"x-{uuid.uuid4().hex}", "models": ["m"]},
                    {"original_id": 5, "name": f"nokey-{u}", "type": "openai", "api_key": "",
                     "models": ["gpt-4o"]},
                ],
                "masters": [
                    {"name": self.m1, "group": self.rg, "namespaces": [self.ns, "Bad NS"],
                     "default_namespace": self.ns, "max_child_keys": 5, "global_qps": 7,
                     "status": "active", "_source_user_id": 42, "_source_email": "a@example.com"},
                    {"name": self.m2, "group": "", "namespaces": [], "default_namespace": "default",
                     "max_child_keys": 1, "global_qps": 0, "status": "suspended"},
                ],
                "keys": [
                    {"master_ref": self.m1, "original_token": self.t1, "group": "",
                     "status": "active", "scopes": ["chat"], "namespaces": [self.ns, "other"],
                     "model_limits_enabled": True,
                     "model_limits": ["gpt-4o", f"{self.ns}.gpt-4o-mini", "other.x"],
                     "allow_ips": ["10.0.0.0/8", "not-an-ip"], "quota_limit": 1000,
                     "quota_used": 10, "unlimited_quota": False, "_original_id": 77,
                     "_token_plaintext_available": True},
                    {"master_ref": self.m2, "original_token": self.t2, "status": "disabled",
                     "expires_at": "2030-01-02T03:04:05Z", "quota_limit": 5,
                     "unlimited_quota": True},
                    {"master_ref": self.m2, "original_token": f"sk-{uuid.uuid4().hex}"},
                    {"master_ref": f"ghost-{u}", "original_token": f"sk-{uuid.uuid4().hex}"},
                    {"master_ref": self.m1, "_token_plaintext_available": False},
                    {"master_ref": self.m1, "original_token": self.t1},
                ],
                "bindings": [
                    {"namespace": self.ns, "route_group": self.rg, "model": "gpt-4o",
                     "status": "active"},
                    {"namespace": self.ns, "route_group": self.rg_multi, "model": "claude-x",
                     "status": "active"},
                    {"namespace": self.ns, "route_group": self.rg, "model": "not-served",
                     "status": "active"},
                    {"namespace": self.ns, "route_group": self.rg, "model": "bad/model",
                     "status": "active"},
                ],
            },
            "warnings": ["channel 9 skipped by the exporter"],
        }

    def secrets(self):
        return [self.t1, self.t2, self.api_secret] + self.multi_secrets


@pytest.fixture
def f():
    return File()


def test_import_creates_everything(api, pg, rds, f):
    res = do_import(api, f.doc)
    assert res["dry_run"] is False
    assert res["created"] == {"namespaces": 1, "provider_groups": 3, "api_keys": 4, "masters": 2,
                              "keys": 3, "bindings": 2}
    assert res["existing"] == {k: 0 for k in COUNTED}
    assert res["skipped"] == {"provider_groups": 0, "api_keys": 2, "masters": 0, "keys": 3,
                              "bindings": 2}
    assert res["updated"] == {"masters": 1}

    # warnings name the entry and say what happened
    w = res["warnings"]
    assert has_warning(res, "export", "channel 9 skipped")
    assert has_warning(res, "data.providers[0]", "is used")           # name made valid
    assert has_warning(res, "data.providers[1]", "primary_group")    # all_groups "vip"
    assert has_warning(res, "data.providers[2]", "out of range")     # weight 2000
    assert has_warning(res, "data.providers[3]", "compatible")       # azure -> compatible
    assert has_warning(res, "data.providers[4]", "skipped")          # unknown type, no base_url
    assert has_warning(res, "data.providers[5]", "api_key")          # no secret
    assert has_warning(res, "data.masters[0]", "Bad NS")
    assert has_warning(res, "data.keys[0]", "other")                 # beyond the master
    assert has_warning(res, "data.keys[0]", "not-an-ip")
    assert has_warning(res, "data.keys[3]", "master_ref")
    assert has_warning(res, "data.keys[4]", "original_token")
    assert has_warning(res, "data.keys[5]", "repeats")
    assert has_warning(res, "data.keys", "max_child_keys")           # bob: 2 keys, limit 1
    assert has_warning(res, "data.bindings[2]", "no provider group")
    assert has_warning(res, "data.bindings[3]", "public model")
    for s in f.secrets():
        assert s not in json.dumps(res)

    # masters: new keys returned once, and they work
    new = {m["name"]: m for m in res["masters"]}
    assert set(new) == {f.m1, f.m2}
    alice = new[f.m1]
    assert alice["master_key"].startswith("mk-") and alice["id"] > 0
    r = api("GET", "/v1/self", token=alice["master_key"])
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["name"] == f.m1 and me["group"] == f.rg and me["global_qps"] == 7
    assert me["namespaces"] == [f.ns] and me["default_namespace"] == f.ns
    bob = one(pg, "SELECT status, max_child_keys, \"group\" FROM masters WHERE name = %s", f.m2)
    assert bob == ("suspended", 2, "default")

    # keys keep their original tokens (hashed), narrowed to the master
    k1 = one(pg, "SELECT master_id, name, \"group\", namespaces, model_limits, allow_ips, "
                 "quota_limit, quota_used, status, token_prefix FROM keys WHERE token_hash = %s",
             sha(f.t1))
    assert k1 == (alice["id"], "newapi-77", f.rg, [f.ns], ["gpt-4o", f"{f.ns}.gpt-4o-mini"],
                  ["10.0.0.0/8"], 1000, 10, "active", f.t1[:7] + "\u2026")
    k2 = one(pg, "SELECT quota_limit, status, expires_at IS NOT NULL FROM keys "
                 "WHERE token_hash = %s", sha(f.t2))
    assert k2 == (-1, "disabled", True)
    # ... and are usable: the snapshot publishes them under the original token's hash
    wait_for(lambda: rds.hget(f"auth:token:{sha(f.t1)}", "master_id") == str(alice["id"]),
             timeout=30, message="imported token published")

    # provider groups: one per provider, one shared by the multi-key channel
    g = {n: (t, b, m, rg) for n, t, b, m, rg in rows(
        pg, "SELECT name, type, base_url, models, \"group\" FROM provider_groups "
            "WHERE name = ANY(%s)", [f.p_openai_name, f.multi, f"azure-{f.u}"])}
    assert g[f.p_openai_name] == ("openai", "https://api.openai.com", ["gpt-4o", "gpt-4o-mini"],
                                  f.rg)
    assert g[f.multi] == ("anthropic", "", ["claude-x", "claude-y"], f.rg_multi)
    assert g[f"azure-{f.u}"][0] == "compatible"
    keys = rows(pg, "SELECT a.weight, a.status, a.auto_ban FROM api_keys a "
                    "JOIN provider_groups g ON g.id = a.group_id WHERE g.name = %s ORDER BY a.id",
                f.multi)
    assert keys == [(3, "active", False), (1000, "disabled", True)]
    assert one(pg, "SELECT weight FROM api_keys a JOIN provider_groups g ON g.id = a.group_id "
                   "WHERE g.name = %s", f.p_openai_name) == (1,)

    # bindings: one per serving group, exact selector
    b = rows(pg, "SELECT b.public_model, g.name, b.selector_type, b.selector_value FROM bindings b "
                 "JOIN provider_groups g ON g.id = b.group_id WHERE b.namespace = %s "
                 "ORDER BY b.public_model", f.ns)
    assert b == [("claude-x", f.multi, "exact", "claude-x"),
                 ("gpt-4o", f.p_openai_name, "exact", "gpt-4o")]
    assert one(pg, "SELECT description FROM namespaces WHERE name = %s", f.ns) is not None

    # one audit row, no secret in it
    audit = one(pg, "SELECT actor, resource, changes FROM operation_logs WHERE action = 'import' "
                    "ORDER BY id DESC LIMIT 1")
    assert audit[0] == "admin" and audit[1] == "import"
    assert audit[2]["created"]["keys"] == 3
    text = json.dumps(audit[2])
    for s in f.secrets() + [alice["master_key"], new[f.m2]["master_key"]]:
        assert s not in text


def test_importing_twice_creates_nothing(api, pg, f):
    first = do_import(api, f.doc)
    again = do_import(api, f.doc)
    assert again["created"] == {"namespaces": 0, "provider_groups": 0, "api_keys": 0,
                                "masters": 0, "keys": 0, "bindings": 0}
    assert again["masters"] == []
    for k in COUNTED:
        assert again["existing"][k] == first["created"][k], k
    assert one(pg, "SELECT count(*) FROM masters WHERE name = ANY(%s)", [f.m1, f.m2]) == (2,)
    assert one(pg, "SELECT count(*) FROM keys WHERE token_hash = ANY(%s)",
               [sha(f.t1), sha(f.t2)]) == (2,)
    # the existing master's key still works (the re-import made no new key)
    alice = next(m for m in first["masters"] if m["name"] == f.m1)
    assert api("GET", "/v1/self", token=alice["master_key"]).status_code == 200


def test_dry_run_writes_nothing(api, pg, f):
    audits = one(pg, "SELECT count(*) FROM operation_logs WHERE action = 'import'")[0]
    outbox = one(pg, "SELECT coalesce(max(id), 0) FROM sync_outbox")[0]
    res = do_import(api, f.doc, dry_run=True)
    assert res["dry_run"] is True
    assert res["created"]["masters"] == 2 and res["created"]["keys"] == 3
    assert res["created"]["bindings"] == 2
    assert {m["name"] for m in res["masters"]} == {f.m1, f.m2}
    assert all("master_key" not in m and m["id"] is None for m in res["masters"])
    assert has_warning(res, "data.keys[3]", "master_ref")
    assert one(pg, "SELECT count(*) FROM masters WHERE name = ANY(%s)", [f.m1, f.m2]) == (0,)
    assert one(pg, "SELECT count(*) FROM keys WHERE token_hash = %s", sha(f.t1)) == (0,)
    assert one(pg, "SELECT count(*) FROM namespaces WHERE name = %s", f.ns) == (0,)
    assert one(pg, "SELECT count(*) FROM operation_logs WHERE action = 'import'")[0] == audits
    assert one(pg, "SELECT count(*) FROM sync_outbox WHERE id > %s", outbox) == (0,)
    # the real import does what the dry run said
    real = do_import(api, f.doc)
    for k in ("created", "existing", "skipped", "updated"):
        assert real[k] == res[k], k


def test_keys_attach_to_an_existing_master(api, pg):
    name = uniq("m")
    r = api("POST", "/admin/masters", json={"name": name, "max_child_keys": 1})
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    toks = [f"sk-{uuid.uuid4().hex}" for _ in range(3)]
    doc = {"version": "1.0.0", "data": {"keys": [{"master_ref": name, "original_token": t}
                                                 for t in toks]}}
    res = do_import(api, doc)
    assert res["created"]["masters"] == 0 and res["created"]["keys"] == 3
    assert res["masters"] == []
    assert res["updated"] == {"masters": 1}
    assert one(pg, "SELECT max_child_keys FROM masters WHERE id = %s", mid) == (3,)
    assert one(pg, "SELECT count(*) FROM keys WHERE master_id = %s", mid) == (3,)
    # the master's group is the keys' group when the file gives none
    assert rows(pg, "SELECT DISTINCT \"group\" FROM keys WHERE master_id = %s", mid) == [
        ("default",)]


@pytest.mark.parametrize("doc,field", [
    ({"data": {}}, "version"),
    ({"version": 1, "data": {}}, "version"),
    ({"version": "2.0.0", "data": {}}, "version"),
    ({"version": "1.0.0"}, "data"),
    ({"version": "1.0.0", "data": []}, "data"),
    ({"version": "1.0.0", "source": "newapi", "data": {}}, "source"),
    ({"version": "1.0.0", "data": {"providers": {}}}, "data.providers"),
    ({"version": "1.0.0", "data": {"masters": [{"name": "ok"}, "x"]}}, "data.masters[1]"),
    ({"version": "1.0.0", "data": {"providers": [{"name": "p", "models": "gpt"}]}},
     "data.providers[0].models"),
    ({"version": "1.0.0", "data": {"providers": [{"name": "p", "weight": "5"}]}},
     "data.providers[0].weight"),
    ({"version": "1.0.0", "data": {"keys": [{"master_ref": "m", "quota_limit": 1.5}]}},
     "data.keys[0].quota_limit"),
    ({"version": "1.0.0", "data": {"keys": [{"master_ref": "m", "allow_ips": [1]}]}},
     "data.keys[0].allow_ips"),
    ({"version": "1.0.0", "data": {"bindings": [{"model": "m", "status": True}]}},
     "data.bindings[0].status"),
    ({"version": "1.0.0", "data": {}, "warnings": "x"}, "warnings"),
])
def test_a_file_not_of_the_format_is_refused(api, pg, doc, field):
    # a valid master in the same file is not written either
    name = uniq("never")
    doc = json.loads(json.dumps(doc))
    if isinstance(doc.get("data"), dict):
        doc["data"].setdefault("masters", []).insert(0, {"name": name})
        if field.startswith("data.masters["):
            field = f"data.masters[{int(field[13:-1]) + 1}]"
    r = api("POST", "/admin/import", json=doc)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_argument" and err["field"] == field, err
    assert one(pg, "SELECT count(*) FROM masters WHERE name = %s", name) == (0,)


def test_bad_bodies(api):
    r = api("POST", "/admin/import", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = api("POST", "/admin/import", data="[]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = api("POST", "/admin/import", data="{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = api("POST", "/admin/import?dry_run=maybe", json={"version": "1.0.0", "data": {}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "dry_run"
    assert api("POST", "/admin/import", json={"version": "1.0.0", "data": {}},
               token=None).status_code == 401
    assert api("GET", "/admin/import").status_code == 405
    # an empty file is fine and changes nothing
    res = do_import(api, {"version": "1.0.0", "data": {}})
    assert res["created"]["masters"] == 0 and res["warnings"] == []


def test_sql_metacharacters_are_data(api, pg):
    name = uniq("q") + "'; DROP TABLE masters; --"
    res = do_import(api, {"version": "1.0.0", "data": {"masters": [{"name": name}]}})
    made = res["masters"][0]["name"]
    assert made.startswith("q-") and "'" not in made and " " not in made
    assert one(pg, "SELECT count(*) FROM masters WHERE name = %s", made) == (1,)


def test_a_file_over_one_mib_passes_nginx_up_to_eight(api, f):
    # Whitespace padding keeps the document valid: nginx's 1 MiB cap of /admin/
    # would answer 413 here if /admin/import did not have its own 8 MiB.
    doc = json.dumps(f.doc)
    r = api("POST", "/admin/import?dry_run=true", data=doc + " " * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["dry_run"] is True and r.json()["created"]["masters"] == 2
    r = api("POST", "/admin/import?dry_run=true", data=doc + " " * (9 * 1024 * 1024),
            headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    # other /admin/ routes keep the 1 MiB cap
    r = api("POST", "/admin/masters", data="{}" + " " * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json"})
    assert r.status_code == 413
