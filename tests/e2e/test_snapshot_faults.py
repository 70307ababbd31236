"""Faults of the snapshot pipeline (QUALITY.md "Reliability"): Redis stopped
and back empty, Redis refusing writes (rows retried, then failed and visible,
then repaired by a full rebuild), the outbox switched off, and the background
killed with rows pending. Convergence is always judged by
scripts/verify-snapshot, polled with a deadline.

Each test restarts the background with the settings it needs; the module
leaves Redis writable and the background on the stack's settings.
"""

import pytest

from conftest import wait_for
from test_snapshot import (add_outbox, make_api_key, make_binding, make_group, make_key,
                           make_master, make_ns, max_outbox_id, ok, sha, uniq, wait_drained,
                           wait_verified)


def rows_since(pg, since):
    with pg.cursor() as cur:
        cur.execute("SELECT id, resource, status, attempts, last_error FROM sync_outbox "
                    "WHERE id > %s ORDER BY id", (since,))
        return cur.fetchall()


def row(pg, rid):
    with pg.cursor() as cur:
        cur.execute("SELECT status, attempts, last_error FROM sync_outbox WHERE id = %s", (rid,))
        return cur.fetchone()


def restart_background(stack, **env):
    stack.ctl("restart", "background", env={k: str(v) for k, v in env.items()})


class RefusingWrites:
    """Redis answers every write with OOM (maxmemory 1, noeviction) until exit."""

    def __init__(self, rds):
        self.rds = rds

    def __enter__(self):
        self.saved = {k: self.rds.config_get(k)[k] for k in ("maxmemory", "maxmemory-policy")}
        self.rds.config_set("maxmemory-policy", "noeviction")
        self.rds.config_set("maxmemory", "1")
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            self.rds.config_set(k, v)
        return False


@pytest.fixture(scope="module", autouse=True)
def back_to_normal(stack):
    yield
    try:
        r = stack.redis()
        r.config_set("maxmemory", "0")
        r.close()
    except Exception:  # noqa: BLE001 - Redis may be the thing a failed test left down
        stack.ctl("start", "redis", check=False)
    stack.ctl("restart", "background")


def some_writes(api):
    """A bit of everything, through the API; every answer must be 2xx."""
    m = make_master(api)
    k = make_key(api, m["id"])
    g = make_group(api, ["gpt-4o"])
    a = make_api_key(api, g["id"])
    ns = make_ns(api)
    make_binding(api, ns, "gpt-4o", g["id"])
    ok(api("PUT", "/admin/features", json={"x_fault": uniq("v")}))
    return {"master": m, "key": k, "group": g, "api_key": a, "binding_key": f"{ns}.gpt-4o"}


def test_redis_down_then_back_empty(stack, api, pg, ctl):
    restart_background(stack)
    wait_drained(pg)
    since = max_outbox_id(pg)
    outages = stack.log("background").count("event=redis_unavailable")
    ctl("stop", "redis")
    try:
        # once the background noticed (its Redis ping runs every 5 s)
        wait_for(lambda: stack.log("background").count("event=redis_unavailable") > outages,
                 message="background noticed the outage")
        made = some_writes(api)  # PostgreSQL is the truth: writes go on
        assert api("GET", "/health").status_code in (200, 503)
        # Nothing could be attempted: the rows wait, their retries untouched.
        assert all(r[2] == "pending" and r[3] == 0 for r in rows_since(pg, since))
    finally:
        ctl("start", "redis")
    wait_verified(stack, timeout=60)
    rds = stack.redis()
    assert rds.exists(f"auth:token:{sha(made['key']['token'])}")
    assert rds.hexists("config:bindings", made["binding_key"])
    wait_drained(pg)
    assert all(r[2] == "done" for r in rows_since(pg, since))
    assert "reason=redis_empty" in stack.log("background")


def test_redis_refusing_writes_then_rebuild_repairs(stack, api, pg):
    restart_background(stack, EZ_SYNC_OUTBOX_MAX_RETRIES=1, EZ_SYNC_OUTBOX_INTERVAL_SECONDS=1,
                       EZ_SYNC_RECONCILE_SECONDS=0)
    wait_drained(pg)
    wait_verified(stack)
    rds = stack.redis()
    since = max_outbox_id(pg)
    with RefusingWrites(rds):
        m = make_master(api)  # the admin write itself succeeds
        rid = next(r[0] for r in rows_since(pg, since) if r[1] == "masters")
        # one attempt and one retry (EZ_SYNC_OUTBOX_MAX_RETRIES=1), then failed
        wait_for(lambda: row(pg, rid)[0] == "failed", timeout=60, message="row failed")
        status, attempts, err = row(pg, rid)
        assert attempts == 2 and "OOM" in err
        assert not rds.exists(f"auth:master:{m['id']}")
        metrics = ok(api("GET", "/internal/metrics?format=json"))
        assert metrics["outbox"]["failed"] >= 1
        text = api("GET", "/internal/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("ezapi_outbox_failed "))
        assert int(line.split()[1]) >= 1
        assert ok(api("GET", "/admin/stats"))["outbox"]["failed"] >= 1
    # Writable again: a full rebuild (asked for with an "all" row) repairs Redis
    # and resolves the failed rows it covered.
    add_outbox(pg, "all")
    wait_verified(stack, timeout=60)
    assert rds.hget(f"auth:master:{m['id']}", "name") == m["name"]
    wait_for(lambda: row(pg, rid)[0] == "done", message="failed row resolved by the rebuild")


def test_outbox_disabled_fails_at_once(stack, api, pg):
    restart_background(stack, EZ_SYNC_OUTBOX_ENABLED="false", EZ_SYNC_OUTBOX_INTERVAL_SECONDS=1,
                       EZ_SYNC_RECONCILE_SECONDS=0)
    wait_drained(pg)
    rds = stack.redis()
    since = max_outbox_id(pg)
    with RefusingWrites(rds):
        m = make_master(api)
        rid = next(r[0] for r in rows_since(pg, since) if r[1] == "masters")
        wait_for(lambda: row(pg, rid)[0] == "failed", timeout=60, message="row failed")
        assert row(pg, rid)[1] == 1  # no retry
    # without failures the outbox still publishes everything at once
    m2 = make_master(api)
    wait_for(lambda: rds.exists(f"auth:master:{m2['id']}"), message="published")
    add_outbox(pg, "all")
    wait_verified(stack, timeout=60)
    assert rds.exists(f"auth:master:{m['id']}")


def test_background_killed_with_rows_pending(stack, api, pg, ctl):
    restart_background(stack)
    wait_drained(pg)
    wait_verified(stack)
    rds = stack.redis()
    ctl("kill", "background")
    since = max_outbox_id(pg)
    made = some_writes(api)
    doomed = make_key(api, made["master"]["id"])
    ok(api("DELETE", f"/admin/masters/{made['master']['id']}/keys/{doomed['id']}"), 204)
    assert rows_since(pg, since) and all(r[2] == "pending" for r in rows_since(pg, since))
    # what a rebuild killed half-way leaves behind: a temporary hash
    rds.hset("ezapi:tmp:config:providers", "999999999", "{}")

    ctl("start", "background")
    wait_drained(pg)
    wait_verified(stack, timeout=60)
    assert all(r[2] == "done" for r in rows_since(pg, since))
    assert rds.exists(f"auth:token:{sha(made['key']['token'])}")
    assert not rds.exists(f"auth:token:{sha(doomed['token'])}")
    assert not list(rds.scan_iter(match="ezapi:tmp:*"))
