"""GET /admin/stats: resource counts, last 24 h of request logs, outbox backlog
and the time of the last snapshot publish."""

import datetime
import hashlib
import json
import secrets
import time
import uuid

import pytest

PATH = "/admin/stats"
PUBLISHED_AT_KEY = "ezapi:snapshot:published_at"


def stats(api):
    r = api("GET", PATH)
    assert r.status_code == 200, r.text
    return r.json()


def sql_counts(pg):
    """What /admin/stats should say about the main DB, computed independently."""
    q = {
        ("masters", "total"): "SELECT count(*) FROM masters",
        ("masters", "active"): "SELECT count(*) FROM masters WHERE status = 'active'",
        ("masters", "suspended"): "SELECT count(*) FROM masters WHERE status = 'suspended'",
        ("keys", "total"): "SELECT count(*) FROM keys",
        ("keys", "active"): "SELECT count(*) FROM keys WHERE status = 'active' "
                            "AND (expires_at IS NULL OR expires_at > now())",
        ("keys", "disabled"): "SELECT count(*) FROM keys WHERE status = 'disabled'",
        ("keys", "expired"): "SELECT count(*) FROM keys WHERE status = 'expired' "
                             "OR (status = 'active' AND expires_at <= now())",
        ("keys", "exhausted"): "SELECT count(*) FROM keys WHERE status = 'exhausted'",
        ("provider_groups",): "SELECT count(*) FROM provider_groups",
        ("api_keys", "total"): "SELECT count(*) FROM api_keys",
        ("api_keys", "active"): "SELECT count(*) FROM api_keys WHERE status = 'active'",
        ("api_keys", "banned"): "SELECT count(*) FROM api_keys WHERE status = 'banned'",
        ("bindings",): "SELECT count(*) FROM bindings",
        ("models",): "SELECT count(*) FROM models",
        ("namespaces",): "SELECT count(*) FROM namespaces",
        ("outbox", "pending"): "SELECT count(*) FROM sync_outbox WHERE status = 'pending'",
        ("outbox", "failed"): "SELECT count(*) FROM sync_outbox WHERE status = 'failed'",
    }
    out = {}
    with pg.cursor() as cur:
        for k, sql in q.items():
            cur.execute(sql)
            out[k] = cur.fetchone()[0]
    return out


def log_counts(log_pg):
    with log_pg.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE status_code >= 400 OR "
                    "(status_code IS NULL AND coalesce(error, '') <> '')), "
                    "coalesce(sum(total_tokens), 0) FROM request_logs "
                    "WHERE created_at >= now() - interval '24 hours'")
        r, e, t = cur.fetchone()
    return {("last_24h", "requests"): r, ("last_24h", "errors"): e,
            ("last_24h", "total_tokens"): int(t)}


def flat(body):
    out = {}
    for k, v in body.items():
        if isinstance(v, dict) and k != "snapshot":
            for k2, v2 in v.items():
                out[(k, k2)] = v2
        elif k != "snapshot":
            out[(k,)] = v
    return out


def consistent(api, pg, log_pg, wait_for):
    """The API's answer, checked against SQL read just before and just after it.

    The background (outbox job, log sink) may change rows at any time; a
    reading is only compared when the SQL view did not move around it."""
    def attempt():
        s1 = {**sql_counts(pg), **log_counts(log_pg)}
        body = stats(api)
        s2 = {**sql_counts(pg), **log_counts(log_pg)}
        if s1 != s2:
            return None
        assert flat(body) == s1
        return body
    return wait_for(attempt, timeout=30, message="a stable reading of /admin/stats")


def test_shape(api):
    body = stats(api)
    assert set(body) == {"masters", "keys", "provider_groups", "api_keys", "bindings",
                         "models", "namespaces", "last_24h", "outbox", "snapshot"}
    assert set(body["masters"]) == {"total", "active", "suspended"}
    assert set(body["keys"]) == {"total", "active", "disabled", "expired", "exhausted"}
    assert set(body["api_keys"]) == {"total", "active", "banned"}
    assert set(body["last_24h"]) == {"requests", "errors", "total_tokens"}
    assert set(body["outbox"]) == {"pending", "failed"}
    assert set(body["snapshot"]) == {"last_published_at"}
    for k in ("provider_groups", "bindings", "models", "namespaces"):
        assert isinstance(body[k], int) and body[k] >= 0
    assert body["namespaces"] >= 1  # "default"
    k = body["keys"]
    assert k["active"] + k["disabled"] + k["expired"] + k["exhausted"] == k["total"]


def test_matches_the_database(api, pg, log_pg, wait_for):
    consistent(api, pg, log_pg, wait_for)


@pytest.fixture
def created(pg):
    """Rows of every counted kind, made with SQL; removed afterwards with the
    outbox rows a deletion writes (docs/outbox.md) so Redis forgets them too."""
    tag = uuid.uuid4().hex[:10]
    made = {"masters": [], "groups": [], "models": [], "ns": [], "outbox": []}
    yield tag, made
    with pg.cursor() as cur:
        for gid in made["groups"]:
            cur.execute("SELECT id FROM api_keys WHERE group_id = %s", (gid,))
            akids = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT namespace || '.' || public_model FROM bindings "
                        "WHERE group_id = %s", (gid,))
            bkeys = [r[0] for r in cur.fetchall()]
            cur.execute("DELETE FROM bindings WHERE group_id = %s", (gid,))
            cur.execute("DELETE FROM api_keys WHERE group_id = %s", (gid,))
            cur.execute("DELETE FROM provider_groups WHERE id = %s", (gid,))
            cur.execute("INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                        "VALUES ('provider_groups', %s, 'delete', %s)",
                        (gid, json.dumps({"api_key_ids": akids, "binding_keys": bkeys})))
        for mid, name in made["models"]:
            cur.execute("DELETE FROM models WHERE id = %s", (mid,))
            cur.execute("INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                        "VALUES ('models', %s, 'delete', %s)", (mid, json.dumps({"names": [name]})))
        for mid in made["masters"]:
            cur.execute("SELECT id, token_hash FROM keys WHERE master_id = %s", (mid,))
            keys = cur.fetchall()
            for kid, h in keys:
                cur.execute("INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                            "VALUES ('keys', %s, 'delete', %s)",
                            (kid, json.dumps({"token_hashes": [h]})))
            cur.execute("INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                        "VALUES ('masters', %s, 'delete', %s)",
                        (mid, json.dumps({"token_hashes": [h for _, h in keys]})))
            cur.execute("DELETE FROM masters WHERE id = %s", (mid,))
        for nid in made["ns"]:
            cur.execute("DELETE FROM namespaces WHERE id = %s", (nid,))
        for oid in made["outbox"]:
            cur.execute("DELETE FROM sync_outbox WHERE id = %s", (oid,))


def sha():
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def test_counts_follow_new_rows(api, pg, log_pg, wait_for, created):
    tag, made = created
    before = flat(consistent(api, pg, log_pg, wait_for))
    with pg.cursor() as cur:
        for status in ("active", "suspended", "suspended"):
            cur.execute("INSERT INTO masters (name, key_hash, key_prefix, status) "
                        "VALUES (%s, %s, 'mk-t', %s) RETURNING id",
                        (f"stats-{tag}-{len(made['masters'])}", sha(), status))
            made["masters"].append(cur.fetchone()[0])
        m = made["masters"][0]
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
        future = past + datetime.timedelta(days=30)
        for status, exp in (("active", None), ("active", future), ("active", past),
                            ("disabled", None), ("expired", past), ("exhausted", None),
                            ("exhausted", None)):
            cur.execute("INSERT INTO keys (master_id, token_hash, token_prefix, status, "
                        "expires_at) VALUES (%s, %s, 'sk-t', %s, %s)", (m, sha(), status, exp))
        cur.execute("INSERT INTO provider_groups (name, type) VALUES (%s, 'openai') RETURNING id",
                    (f"stats-{tag}",))
        gid = cur.fetchone()[0]
        made["groups"].append(gid)
        for status in ("active", "active", "banned", "disabled"):
            cur.execute("INSERT INTO api_keys (group_id, api_key, status) VALUES (%s, %s, %s)",
                        (gid, "sk-" + secrets.token_hex(8), status))
        cur.execute("INSERT INTO namespaces (name) VALUES (%s) RETURNING id", (f"stats-{tag}",))
        made["ns"].append(cur.fetchone()[0])
        for pm in ("m1", "m2"):
            cur.execute("INSERT INTO bindings (namespace, public_model, group_id) "
                        "VALUES ('default', %s, %s)", (f"stats-{tag}-{pm}", gid))
        cur.execute("INSERT INTO models (name) VALUES (%s) RETURNING id", (f"stats-{tag}",))
        made["models"].append((cur.fetchone()[0], f"stats-{tag}"))
        # a failed outbox row: terminal, the background does not pick it up again
        cur.execute("INSERT INTO sync_outbox (resource, resource_id, status, last_error) "
                    "VALUES ('features', NULL, 'failed', 'test') RETURNING id")
        made["outbox"].append(cur.fetchone()[0])
    after = flat(consistent(api, pg, log_pg, wait_for))
    delta = {k: after[k] - before[k] for k in after if k[0] not in ("last_24h", "outbox")}
    assert delta == {
        ("masters", "total"): 3, ("masters", "active"): 1, ("masters", "suspended"): 2,
        ("keys", "total"): 7, ("keys", "active"): 2, ("keys", "disabled"): 1,
        ("keys", "expired"): 2, ("keys", "exhausted"): 2,
        ("provider_groups",): 1,
        ("api_keys", "total"): 4, ("api_keys", "active"): 2, ("api_keys", "banned"): 1,
        ("bindings",): 2, ("models",): 1, ("namespaces",): 1,
    }
    assert after[("outbox", "failed")] >= before[("outbox", "failed")] + 1


def test_last_24h_from_request_logs(api, pg, log_pg, wait_for):
    rid = f"stats-{uuid.uuid4().hex}"
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = [  # (created_at, status_code, error, total_tokens): counted?
        (now - datetime.timedelta(minutes=5), 200, None, 100),
        (now - datetime.timedelta(hours=2), 500, "upstream", 7),
        (now - datetime.timedelta(hours=3), 429, None, None),
        (now - datetime.timedelta(hours=4), None, "client went away", 0),
        (now - datetime.timedelta(hours=30), 500, "old", 1000),  # outside the window
    ]
    before = flat(consistent(api, pg, log_pg, wait_for))
    with log_pg.cursor() as cur:
        for created_at, code, err, tok in rows:
            cur.execute("INSERT INTO request_logs (request_id, created_at, status_code, error, "
                        "total_tokens) VALUES (%s, %s, %s, %s, %s)",
                        (rid, created_at, code, err, tok))
    try:
        after = flat(consistent(api, pg, log_pg, wait_for))
        # other tests' log records may land in between: at least ours were added
        assert after[("last_24h", "requests")] - before[("last_24h", "requests")] >= 4
        assert after[("last_24h", "errors")] - before[("last_24h", "errors")] >= 3
        assert after[("last_24h", "total_tokens")] - before[("last_24h", "total_tokens")] >= 107
    finally:
        with log_pg.cursor() as cur:
            cur.execute("DELETE FROM request_logs WHERE request_id = %s", (rid,))


def test_snapshot_last_published_at(api, rds):
    field = f"test-{uuid.uuid4().hex[:8]}"
    far = int(time.time()) + 10 * 365 * 86400  # newer than any real publish
    rds.hset(PUBLISHED_AT_KEY, field, str(far))
    try:
        got = stats(api)["snapshot"]["last_published_at"]
        assert got == datetime.datetime.fromtimestamp(far, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        # garbage in the hash is ignored, never a 5xx
        rds.hset(PUBLISHED_AT_KEY, field + "-bad", "not-a-number")
        assert stats(api)["snapshot"]["last_published_at"] == got
    finally:
        rds.hdel(PUBLISHED_AT_KEY, field, field + "-bad")
    if not rds.exists(PUBLISHED_AT_KEY):  # no publisher has written it: null
        assert stats(api)["snapshot"]["last_published_at"] is None


def test_auth_and_methods(api):
    assert api("GET", PATH, token=None).status_code == 401
    assert api("GET", PATH, token="' OR 1=1 --").status_code == 401
    r = api("DELETE", PATH)
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")
