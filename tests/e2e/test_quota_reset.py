"""The background's quota_reset job: keys whose quota_reset_at has passed get
quota_used = 0, exhausted -> active, the next UTC calendar boundary, an
operation-log row and an outbox row (so Redis follows).

The module restarts the background with EZ_QUOTA_RESET_INTERVAL_SECONDS=1
(the stack's default is 300 s) and restores the default at the end. Time
passing is simulated by moving quota_reset_at into the past with SQL.
"""

import datetime
import hashlib
import json
import secrets
import uuid

import pytest

from conftest import wait_for

UTC = datetime.timezone.utc


def uniq(prefix="qr"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def created(r):
    assert r.status_code == 201, r.text
    return r.json()


def next_boundary(period, now):
    """The next UTC calendar boundary strictly after now (DATA.md)."""
    day = datetime.datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "daily":
        return day + datetime.timedelta(days=1)
    if period == "weekly":
        return day + datetime.timedelta(days=7 - now.weekday())
    return datetime.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow():
    return datetime.datetime.now(UTC)


@pytest.fixture(scope="module", autouse=True)
def fast_reset(stack):
    """Background with a 1 s quota-reset interval for this module; stack defaults after."""
    stack.ctl("restart", "background", env={"EZ_QUOTA_RESET_INTERVAL_SECONDS": "1"})
    try:
        yield
    finally:
        stack.ctl("restart", "background")


@pytest.fixture
def master(api):
    m = created(api("POST", "/admin/masters", json={"name": uniq("m")}))
    yield m
    api("DELETE", f"/admin/masters/{m['id']}")


def make_key(api, mid, **body):
    return created(api("POST", f"/admin/masters/{mid}/keys", json=body))


def token(rds, tok):
    return rds.hgetall(f"auth:token:{sha(tok)}")


def key_row(pg, kid):
    with pg.cursor() as cur:
        cur.execute("SELECT quota_used, status, quota_reset_at, quota_reset_period "
                    "FROM keys WHERE id = %s", (kid,))
        return cur.fetchone()


def high_water(pg):
    """The newest operation-log and outbox ids: what a change writes comes after."""
    with pg.cursor() as cur:
        cur.execute("SELECT (SELECT coalesce(max(id), 0) FROM operation_logs), "
                    "(SELECT coalesce(max(id), 0) FROM sync_outbox)")
        return cur.fetchone()


def make_due(pg, *kids):
    """The period ends: what only the clock can do, done with SQL."""
    with pg.cursor() as cur:
        cur.execute("UPDATE keys SET quota_reset_at = now() - interval '1 second' "
                    "WHERE id = ANY(%s)", (list(kids),))


def wait_reset(pg, kid, timeout=30):
    """Polls until the key's quota_reset_at is in the future again."""
    def moved():
        with pg.cursor() as cur:
            cur.execute("SELECT quota_reset_at > now() FROM keys WHERE id = %s", (kid,))
            return cur.fetchone()[0]
    wait_for(moved, timeout=timeout, message=f"key {kid} reset")


def audit_rows(pg, since, kid):
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, resource, changes FROM operation_logs "
                    "WHERE id > %s AND resource = 'keys' AND resource_id = %s "
                    "AND action = 'quota_reset'", (since, str(kid)))
        return cur.fetchall()


def outbox_rows(pg, since, kid):
    with pg.cursor() as cur:
        cur.execute("SELECT resource, action FROM sync_outbox WHERE id > %s "
                    "AND resource = 'keys' AND resource_id = %s", (since, kid))
        return cur.fetchall()


def flush(api, kid, used):
    r = api("POST", "/internal/stats/flush", json={
        "flush_id": uniq("f"),
        "keys": [{"key_id": kid, "requests": 1, "tokens": used, "quota_used": used}]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_due_key_is_reset_and_published(api, pg, rds, master, period):
    k = make_key(api, master["id"], quota_limit=100, quota_reset_period=period)
    flush(api, k["id"], 100)
    wait_for(lambda: token(rds, k["token"]).get("status") == "exhausted" and
             token(rds, k["token"])["quota_used"] == "100", message="exhausted in Redis")
    log_since, outbox_since = high_water(pg)

    before = utcnow()
    make_due(pg, k["id"])
    wait_reset(pg, k["id"])
    after = utcnow()

    used, status, reset_at, _ = key_row(pg, k["id"])
    assert (used, status) == (0, "active")
    want = {next_boundary(period, before), next_boundary(period, after)}
    assert reset_at in want
    assert reset_at > after

    audit = audit_rows(pg, log_since, k["id"])
    assert [(a, b, c) for a, b, c, _ in audit] == [("system", "quota_reset", "keys")]
    assert audit[0][3] == {"quota_used": 0, "previous_quota_used": 100, "status": "active",
                           "quota_reset_at": iso(reset_at)}
    assert ("keys", "upsert") in outbox_rows(pg, outbox_since, k["id"])

    # The outbox row publishes it: the rebuild ran at start-up, before the change.
    wait_for(lambda: token(rds, k["token"]).get("quota_used") == "0" and
             token(rds, k["token"])["status"] == "active", message="reset in Redis")
    assert int(token(rds, k["token"])["quota_reset_at"]) == int(reset_at.timestamp())

    # The API shows the same.
    r = api("GET", f"/admin/masters/{master['id']}/keys/{k['id']}")
    assert r.status_code == 200, r.text
    assert (r.json()["quota_used"], r.json()["status"], r.json()["quota_reset_at"]) == \
        (0, "active", iso(reset_at))


def test_only_due_keys_are_touched(api, pg, master):
    due = make_key(api, master["id"], quota_reset_period="daily")
    later = make_key(api, master["id"], quota_reset_period="daily")
    never = make_key(api, master["id"])
    disabled = make_key(api, master["id"], quota_reset_period="weekly", status="disabled")
    flush_body = {"flush_id": uniq("f"), "keys": [
        {"key_id": kid, "requests": 1, "tokens": 7, "quota_used": 7}
        for kid in (due["id"], later["id"], never["id"], disabled["id"])]}
    assert api("POST", "/internal/stats/flush", json=flush_body).status_code == 200
    later_at = key_row(pg, later["id"])[2]
    # period none: quota_reset_at is ignored even when a data fix left one in the past
    with pg.cursor() as cur:
        cur.execute("UPDATE keys SET quota_reset_at = now() - interval '1 day' WHERE id = %s",
                    (never["id"],))

    make_due(pg, due["id"], disabled["id"])
    wait_reset(pg, due["id"])
    wait_reset(pg, disabled["id"])

    assert key_row(pg, due["id"])[:2] == (0, "active")
    # a disabled key starts its new period too, and stays disabled
    assert key_row(pg, disabled["id"])[:2] == (0, "disabled")
    # one run saw every due key: the others were not due
    assert key_row(pg, later["id"])[:3] == (7, "active", later_at)
    used, status, reset_at, period = key_row(pg, never["id"])
    assert (used, status, period) == (7, "active", "none")
    assert reset_at < utcnow()


def test_idle_key_moves_without_an_audit_row(api, pg, rds, master):
    k = make_key(api, master["id"], quota_limit=10, quota_reset_period="daily")
    log_since, outbox_since = high_water(pg)
    before = utcnow()
    make_due(pg, k["id"])
    wait_reset(pg, k["id"])
    after = utcnow()
    used, status, reset_at, _ = key_row(pg, k["id"])
    assert (used, status) == (0, "active")
    assert reset_at in {next_boundary("daily", before), next_boundary("daily", after)}
    # nothing was used and nothing changed status: no audit noise every period
    assert audit_rows(pg, log_since, k["id"]) == []
    # but Redis carries quota_reset_at, so it is republished
    assert ("keys", "upsert") in outbox_rows(pg, outbox_since, k["id"])
    wait_for(lambda: token(rds, k["token"]).get("quota_reset_at") ==
             str(int(reset_at.timestamp())), message="new reset time in Redis")


def test_zero_limit_key_stays_exhausted(api, pg, rds, master):
    k = make_key(api, master["id"], quota_limit=0, quota_reset_period="monthly")
    flush(api, k["id"], 5)
    wait_for(lambda: key_row(pg, k["id"])[1] == "exhausted", message="exhausted")
    log_since, _ = high_water(pg)
    make_due(pg, k["id"])
    wait_reset(pg, k["id"])
    used, status, reset_at, _ = key_row(pg, k["id"])
    # with a limit of 0 the key would be exhausted at once: it stays so
    assert (used, status) == (0, "exhausted")
    audit = audit_rows(pg, log_since, k["id"])
    assert [c for _, _, _, c in audit] == [
        {"quota_used": 0, "previous_quota_used": 5, "quota_reset_at": iso(reset_at)}]
    wait_for(lambda: token(rds, k["token"]).get("quota_used") == "0" and
             token(rds, k["token"])["status"] == "exhausted", message="published")


def test_many_due_keys_are_reset_in_batches(pg, rds):
    """More keys than one batch (1000): every one is reset in the same run or the next."""
    n = 2100
    with pg.cursor() as cur:
        cur.execute("INSERT INTO masters (name, key_hash, key_prefix, max_child_keys) "
                    "VALUES (%s, %s, 'mk-test', %s) RETURNING id",
                    (uniq("bulk"), hashlib.sha256(secrets.token_bytes(16)).hexdigest(), n))
        mid = cur.fetchone()[0]
    try:
        log_since, _ = high_water(pg)
        with pg.cursor() as cur:
            cur.execute("INSERT INTO keys (master_id, token_hash, token_prefix, quota_limit, "
                        "quota_used, status, quota_reset_period, quota_reset_at) "
                        "SELECT %s, encode(sha256(convert_to(random()::text || g, 'UTF8')), 'hex'), "
                        "'sk-test', 10, 10, 'exhausted', 'daily', now() - interval '1 second' "
                        "FROM generate_series(1, %s) AS g", (mid, n))

        def all_reset():
            with pg.cursor() as cur:
                cur.execute("SELECT count(*) FROM keys WHERE master_id = %s "
                            "AND quota_used = 0 AND status = 'active' "
                            "AND quota_reset_at > now()", (mid,))
                return cur.fetchone()[0] == n
        wait_for(all_reset, timeout=60, message="every bulk key reset")
        with pg.cursor() as cur:
            cur.execute("SELECT count(DISTINCT o.resource_id) FROM operation_logs o "
                        "JOIN keys k ON o.resource_id = k.id::text "
                        "WHERE o.id > %s AND o.action = 'quota_reset' AND k.master_id = %s",
                        (log_since, mid))
            assert cur.fetchone()[0] == n
    finally:
        with pg.cursor() as cur:
            cur.execute("SELECT token_hash FROM keys WHERE master_id = %s", (mid,))
            hashes = [h for (h,) in cur.fetchall()]
            cur.execute("INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                        "VALUES ('masters', %s, 'delete', %s)",
                        (mid, json.dumps({"token_hashes": hashes})))
            cur.execute("DELETE FROM masters WHERE id = %s", (mid,))
