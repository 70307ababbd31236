"""POST /internal/stats/flush: deltas applied once per flush_id, atomically,
with the active -> exhausted transition of keys whose quota is used up."""

import concurrent.futures
import datetime
import hashlib
import json
import secrets
import uuid

import pytest

PATH = "/internal/stats/flush"


class Rows:
    """Masters and keys made with SQL (the resource APIs are not needed for
    these tests); removed at teardown with the outbox rows a deletion writes,
    so that Redis forgets them too."""

    def __init__(self, pg):
        self.pg = pg
        self.masters = []

    def master(self):
        name = f"flush-{uuid.uuid4().hex[:12]}"
        with self.pg.cursor() as cur:
            cur.execute("INSERT INTO masters (name, key_hash, key_prefix) VALUES (%s, %s, %s) "
                        "RETURNING id",
                        (name, hashlib.sha256(secrets.token_bytes(16)).hexdigest(), "mk-test"))
            mid = cur.fetchone()[0]
        self.masters.append(mid)
        return mid

    def key(self, master_id, quota_limit=-1, status="active", quota_used=0,
            last_accessed_at=None):
        with self.pg.cursor() as cur:
            cur.execute("INSERT INTO keys (master_id, token_hash, token_prefix, quota_limit, "
                        "status, quota_used, last_accessed_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "RETURNING id",
                        (master_id, hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
                         "sk-test", quota_limit, status, quota_used, last_accessed_at))
            return cur.fetchone()[0]

    def cleanup(self):
        with self.pg.cursor() as cur:
            for mid in self.masters:
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


@pytest.fixture
def rows(pg):
    r = Rows(pg)
    yield r
    r.cleanup()


def flush(api, body, **kw):
    return api("POST", PATH, json=body, **kw)


def fid():
    return f"test-{uuid.uuid4()}"


def key_row(pg, kid):
    with pg.cursor() as cur:
        cur.execute("SELECT request_count, token_count, quota_used, status, last_accessed_at "
                    "FROM keys WHERE id = %s", (kid,))
        return cur.fetchone()


def master_row(pg, mid):
    with pg.cursor() as cur:
        cur.execute("SELECT request_count, token_count FROM masters WHERE id = %s", (mid,))
        return cur.fetchone()


def flush_recorded(pg, flush_id):
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM stats_flushes WHERE flush_id = %s", (flush_id,))
        return cur.fetchone()[0] == 1


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


def test_applied(api, pg, rows):
    m = rows.master()
    k1, k2 = rows.key(m), rows.key(m)
    body = {"flush_id": fid(),
            "keys": [{"key_id": k1, "requests": 3, "tokens": 120, "quota_used": 100,
                      "last_accessed_at": 1700000000},
                     {"key_id": k2, "requests": 1, "tokens": 5, "quota_used": 5,
                      "last_accessed_at": "2023-11-14T22:13:21Z"}],
            "masters": [{"master_id": m, "requests": 4, "tokens": 125}]}
    r = flush(api, body)
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True
    assert r.json()["unknown_keys"] == 0
    assert key_row(pg, k1)[:4] == (3, 120, 100, "active")
    assert key_row(pg, k1)[4].timestamp() == 1700000000
    assert key_row(pg, k2)[:4] == (1, 5, 5, "active")
    assert key_row(pg, k2)[4].timestamp() == 1700000001
    assert master_row(pg, m) == (4, 125)
    assert flush_recorded(pg, body["flush_id"])

    # A second flush adds to the totals.
    r = flush(api, {"flush_id": fid(), "keys": [{"key_id": k1, "requests": 2, "tokens": 10,
                                                  "quota_used": 10}],
                    "masters": [{"master_id": m, "requests": 2, "tokens": 10}]})
    assert r.status_code == 200 and r.json()["applied"] is True
    assert key_row(pg, k1)[:3] == (5, 130, 110)
    assert key_row(pg, k1)[4].timestamp() == 1700000000  # no last_accessed_at: unchanged
    assert master_row(pg, m) == (6, 135)


def test_duplicate_flush_id_counted_once(api, pg, rows):
    m = rows.master()
    k = rows.key(m)
    body = {"flush_id": fid(), "keys": [{"key_id": k, "requests": 1, "tokens": 7,
                                          "quota_used": 7}],
            "masters": [{"master_id": m, "requests": 1, "tokens": 7}]}
    assert flush(api, body).json() == {"applied": True, "unknown_keys": 0, "unknown_masters": 0,
                                       "exhausted": 0}
    for _ in range(3):
        r = flush(api, body)
        assert r.status_code == 200
        assert r.json() == {"applied": False, "duplicate": True}
    # even with other content: the flush_id decides
    r = flush(api, dict(body, keys=[{"key_id": k, "requests": 100}]))
    assert r.json() == {"applied": False, "duplicate": True}
    assert key_row(pg, k)[:3] == (1, 7, 7)
    assert master_row(pg, m) == (1, 7)


def test_same_key_twice_in_one_flush_adds_up(api, pg, rows):
    m = rows.master()
    k = rows.key(m)
    r = flush(api, {"flush_id": fid(),
                    "keys": [{"key_id": k, "requests": 1, "tokens": 2, "quota_used": 3,
                              "last_accessed_at": 1700000100},
                             {"key_id": k, "requests": 10, "tokens": 20, "quota_used": 30,
                              "last_accessed_at": 1700000000}],
                    "masters": [{"master_id": m, "requests": 1}, {"master_id": m, "tokens": 9}]})
    assert r.status_code == 200, r.text
    row = key_row(pg, k)
    assert row[:3] == (11, 22, 33)
    assert row[4].timestamp() == 1700000100
    assert master_row(pg, m) == (1, 9)


def test_last_accessed_never_goes_back_nor_into_the_future(api, pg, rows):
    m = rows.master()
    old = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    k = rows.key(m, last_accessed_at=old)
    flush(api, {"flush_id": fid(), "keys": [{"key_id": k, "last_accessed_at": 1000}]})
    assert key_row(pg, k)[4] == old
    with pg.cursor() as cur:
        cur.execute("SELECT now()")
        before = cur.fetchone()[0]
    flush(api, {"flush_id": fid(), "keys": [{"key_id": k,
                                             "last_accessed_at": "9999-01-01T00:00:00Z"}]})
    with pg.cursor() as cur:
        cur.execute("SELECT now()")
        after = cur.fetchone()[0]
    got = key_row(pg, k)[4]
    assert before <= got <= after  # clamped to the server's clock


def test_unknown_ids_ignored_and_counted(api, pg, rows):
    m = rows.master()
    k = rows.key(m)
    r = flush(api, {"flush_id": fid(),
                    "keys": [{"key_id": k, "requests": 1},
                             {"key_id": 9007199254740000, "requests": 1},
                             {"key_id": 9007199254740001, "requests": 1},
                             {"key_id": 9007199254740001, "requests": 1}],
                    "masters": [{"master_id": 9007199254740002, "requests": 5}]})
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True
    assert r.json()["unknown_keys"] == 2
    assert r.json()["unknown_masters"] == 1
    assert key_row(pg, k)[0] == 1


def test_empty_flush_is_recorded(api, pg):
    f = fid()
    r = flush(api, {"flush_id": f})
    assert r.status_code == 200 and r.json()["applied"] is True
    assert flush_recorded(pg, f)
    r = flush(api, {"flush_id": f, "keys": [], "masters": None})
    assert r.json() == {"applied": False, "duplicate": True}


def test_exhausted_transition(api, pg, rows):
    m = rows.master()
    k = rows.key(m, quota_limit=100)
    unlimited = rows.key(m, quota_limit=-1)
    disabled = rows.key(m, quota_limit=10, status="disabled")
    before_ops = max_id(pg, "operation_logs")
    before_out = max_id(pg, "sync_outbox")

    r = flush(api, {"flush_id": fid(), "keys": [{"key_id": k, "quota_used": 60},
                                                 {"key_id": unlimited, "quota_used": 10 ** 12},
                                                 {"key_id": disabled, "quota_used": 50}]})
    assert r.json()["exhausted"] == 0
    assert key_row(pg, k)[2:4] == (60, "active")
    assert key_row(pg, unlimited)[3] == "active"
    assert key_row(pg, disabled)[3] == "disabled"  # only active keys become exhausted
    assert max_id(pg, "operation_logs") == before_ops

    r = flush(api, {"flush_id": fid(), "keys": [{"key_id": k, "quota_used": 40,
                                                  "requests": 1}]},
              headers={"X-Request-ID": "flush-exhaust-1"})
    assert r.status_code == 200
    assert r.json()["exhausted"] == 1
    assert key_row(pg, k)[2:4] == (100, "exhausted")  # reaching the limit exactly is enough
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, resource, resource_id, request_id, changes "
                    "FROM operation_logs WHERE id > %s", (before_ops,))
        ops = cur.fetchall()
        cur.execute("SELECT resource, resource_id, action FROM sync_outbox WHERE id > %s",
                    (before_out,))
        outbox = cur.fetchall()
    assert ops == [("system", "exhaust", "keys", str(k), "flush-exhaust-1",
                    {"status": "exhausted", "quota_used": 100, "quota_limit": 100})]
    assert outbox == [("keys", k, "upsert")]

    # Later usage still counts, but the transition is not repeated.
    r = flush(api, {"flush_id": fid(), "keys": [{"key_id": k, "quota_used": 5}]})
    assert r.json()["exhausted"] == 0
    assert key_row(pg, k)[2:4] == (105, "exhausted")
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM operation_logs WHERE resource = 'keys' "
                    "AND resource_id = %s AND action = 'exhaust'", (str(k),))
        assert cur.fetchone()[0] == 1


def test_zero_quota_key_exhausted_on_first_flush(api, pg, rows):
    m = rows.master()
    k = rows.key(m, quota_limit=0)
    r = flush(api, {"flush_id": fid(), "keys": [{"key_id": k, "requests": 1}]})
    assert r.json()["exhausted"] == 1
    assert key_row(pg, k)[3] == "exhausted"


def test_concurrent_flushes_lose_nothing(api, pg, rows):
    masters = [rows.master() for _ in range(2)]
    keys = [rows.key(masters[i % 2], quota_limit=10 ** 15) for i in range(6)]
    threads, per_thread = 8, 8

    def worker(t):
        out = []
        for j in range(per_thread):
            # Different orders in different flushes: row locks must not deadlock.
            ks = keys if (t + j) % 2 else list(reversed(keys))
            body = {"flush_id": f"conc-{uuid.uuid4()}",
                    "keys": [{"key_id": k, "requests": 1, "tokens": t + 1, "quota_used": 2}
                             for k in ks],
                    "masters": [{"master_id": mm, "requests": 1, "tokens": 3}
                                for mm in (masters if j % 2 else masters[::-1])]}
            r = flush(api, body)
            out.append((r.status_code, r.json()))
        return out

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        results = [x for res in ex.map(worker, range(threads)) for x in res]
    assert all(s == 200 and b["applied"] is True for s, b in results), results
    n = threads * per_thread
    token_sum = per_thread * sum(t + 1 for t in range(threads))
    for k in keys:
        assert key_row(pg, k)[:3] == (n, token_sum, 2 * n)
    for mm in masters:
        assert master_row(pg, mm) == (n, 3 * n)


def test_concurrent_retries_of_one_flush_apply_once(api, pg, rows):
    m = rows.master()
    k = rows.key(m)
    body = {"flush_id": fid(), "keys": [{"key_id": k, "requests": 1, "tokens": 1}]}
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: flush(api, body), range(16)))
    assert all(r.status_code == 200 for r in results)
    applied = [r for r in results if r.json()["applied"]]
    assert len(applied) == 1
    assert key_row(pg, k)[:2] == (1, 1)


@pytest.mark.parametrize("body,field", [
    ({}, "flush_id"),
    ({"flush_id": ""}, "flush_id"),
    ({"flush_id": "x" * 129}, "flush_id"),
    ({"flush_id": 12}, "flush_id"),
    ({"flush_id": None}, "flush_id"),
    ({"flush_id": "a\nb"}, "flush_id"),
    ({"flush_id": "ok", "keys": {}}, "keys"),
    ({"flush_id": "ok", "keys": "1"}, "keys"),
    ({"flush_id": "ok", "masters": 5}, "masters"),
    ({"flush_id": "ok", "keys": [1]}, "keys[0]"),
    ({"flush_id": "ok", "keys": [{}]}, "keys[0].key_id"),
    ({"flush_id": "ok", "keys": [{"key_id": 0}]}, "keys[0].key_id"),
    ({"flush_id": "ok", "keys": [{"key_id": -1}]}, "keys[0].key_id"),
    ({"flush_id": "ok", "keys": [{"key_id": "12"}]}, "keys[0].key_id"),
    ({"flush_id": "ok", "keys": [{"key_id": 1.5}]}, "keys[0].key_id"),
    ({"flush_id": "ok", "keys": [{"key_id": 1}, {"key_id": 2, "requests": -1}]},
     "keys[1].requests"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "tokens": "5"}]}, "keys[0].tokens"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "tokens": None}]}, "keys[0].tokens"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "quota_used": 2 ** 63}]}, "keys[0].quota_used"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "quota_used": 0.5}]}, "keys[0].quota_used"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "requests": True}]}, "keys[0].requests"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "last_accessed_at": "yesterday"}]},
     "keys[0].last_accessed_at"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "last_accessed_at": -5}]},
     "keys[0].last_accessed_at"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "last_accessed_at": 1.5}]},
     "keys[0].last_accessed_at"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "last_accessed_at": 10 ** 13}]},
     "keys[0].last_accessed_at"),
    ({"flush_id": "ok", "keys": [{"key_id": 1, "last_accessed_at": [1]}]},
     "keys[0].last_accessed_at"),
    ({"flush_id": "ok", "masters": [{"key_id": 1}]}, "masters[0].master_id"),
    ({"flush_id": "ok", "masters": [{"master_id": 1, "tokens": -3}]}, "masters[0].tokens"),
])
def test_validation_400(api, pg, body, field):
    if body.get("flush_id") == "ok":
        body = dict(body, flush_id=fid())
    r = flush(api, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_argument"
    assert err["field"] == field
    if isinstance(body.get("flush_id"), str) and body["flush_id"]:
        assert not flush_recorded(pg, body["flush_id"])  # a refused flush can be retried


def test_entry_count_limit(api, pg):
    f = fid()
    r = flush(api, {"flush_id": f, "keys": [{"key_id": 1}] * 10001})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "keys"
    r = flush(api, {"flush_id": f, "masters": [{"master_id": 1}] * 10001})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "masters"
    assert not flush_recorded(pg, f)


def test_max_entries_accepted(api, pg, rows):
    m = rows.master()
    k = rows.key(m)
    r = flush(api, {"flush_id": fid(), "keys": [{"key_id": k, "requests": 1}] * 10000,
                    "masters": [{"master_id": m, "tokens": 1}] * 10000})
    assert r.status_code == 200, r.text
    assert key_row(pg, k)[0] == 10000
    assert master_row(pg, m) == (0, 10000)


def test_overflow_refused_and_rolled_back(api, pg, rows):
    m = rows.master()
    k = rows.key(m, quota_used=9223372036854775000)
    k2 = rows.key(m)
    f = fid()
    r = flush(api, {"flush_id": f, "keys": [{"key_id": k2, "requests": 1},
                                             {"key_id": k, "quota_used": 10 ** 15}]})
    assert r.status_code == 400, r.text
    assert not flush_recorded(pg, f)
    assert key_row(pg, k2)[0] == 0  # all or nothing
    assert key_row(pg, k)[2] == 9223372036854775000


def test_bad_bodies(api):
    h = {"Content-Type": "application/json"}
    assert api("POST", PATH, data="", headers=h).status_code == 400
    assert api("POST", PATH, data="{", headers=h).status_code == 400
    assert api("POST", PATH, data="[]", headers=h).status_code == 400
    assert api("POST", PATH, data='{"flush_id": "a", "flush_id": "b"}',
               headers=h).status_code == 400
    assert api("POST", PATH, data='{"flush_id": "a"}',
               headers={"Content-Type": "text/plain"}).status_code == 415
    assert api("POST", PATH, data='{"flush_id": "x", "keys": [{"key_id": 1e309}]}',
               headers=h).status_code == 400


def test_sql_metacharacters_in_flush_id_are_data(api, pg):
    f = f"x'; DROP TABLE stats_flushes; -- {uuid.uuid4()}"
    r = flush(api, {"flush_id": f})
    assert r.status_code == 200 and r.json()["applied"] is True
    assert flush_recorded(pg, f)
    assert flush(api, {"flush_id": f}).json()["duplicate"] is True


def test_auth_401_without_internal_token(stack, api, pg, rows):
    m = rows.master()
    k = rows.key(m)
    f = fid()
    body = {"flush_id": f, "keys": [{"key_id": k, "requests": 1}]}
    for token in (None, "wrong-token", "' OR '1'='1"):
        r = flush(api, body, token=token)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
    # the admin bearer token is not the internal token either
    r = api("POST", PATH, json=body, token=None,
            headers={"Authorization": f"Bearer {stack.admin_token}"})
    assert r.status_code == 401
    assert key_row(pg, k)[0] == 0
    assert not flush_recorded(pg, f)


def test_methods(api):
    r = api("GET", PATH)
    assert r.status_code == 405
    assert "POST" in r.headers.get("Allow", "")
