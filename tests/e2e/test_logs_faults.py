"""The log pipeline under faults (QUALITY.md "Reliability"): a record answered
202 reaches request_logs exactly once whatever happens to ezapi-background,
and a refused batch (503) is not half-accepted.

* background stopped: 503 unavailable with Retry-After at once, not a hang;
  accepted again once it is back;
* SIGKILL during sustained load from several threads, then restart: every
  acknowledged request_id is in the table exactly once;
* SIGTERM: what is queued is written before the process exits;
* a torn spool tail (a crash in the middle of an append) is cut off, logged,
  and the rest of the spool is replayed;
* PostgreSQL down: batches keep being accepted into the spool up to
  EZ_LOG_QUEUE, then 503; everything accepted is written once it is back.
* a COPY stuck behind a lock on request_logs: the loop keeps acknowledging
  (the writer thread waits alone), and everything is written once it is free.

The outcome of a POST is one of: 202 (acknowledged: must be in the table
exactly once), a 503 that says the batch was refused (never queued: must
not be in the table), or unknown (the worker gave up waiting for the ack,
or the connection failed: the batch may or may not have been spooled, like
any request whose answer is lost). Unknown batches may appear in the table,
at most once each.
"""

import json
import pathlib
import struct
import threading

import pytest
import requests

from test_logs import post_logs, table_ids, uid, wait_rows

# The background with a flush interval so long that nothing is written unless drained.
HOLD = {"EZ_LOG_FLUSH_MS": "600000", "EZ_LOG_BATCH_SIZE": "100000"}


def outcome(resp):
    """'ok', 'refused' (definitely not accepted) or 'unknown' (answer lost or timed out)."""
    if resp is None:
        return "unknown"
    if resp.status_code == 202:
        return "ok"
    if resp.status_code == 503:
        msg = resp.json()["error"]["message"]
        assert resp.headers.get("Retry-After") == "1"
        return "unknown" if "did not confirm" in msg else "refused"
    raise AssertionError(f"unexpected answer {resp.status_code}: {resp.text}")


class Ledger:
    """Request ids by outcome, filled by the load threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = {"ok": set(), "refused": set(), "unknown": set()}
        self.count = {"ok": 0, "refused": 0, "unknown": 0}
        self.errors = []

    def add(self, kind, ids):
        with self.lock:
            self.ids[kind].update(ids)
            self.count[kind] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.count)


def send_batch(stack, ledger, ids, session=None):
    body = {"logs": [{"request_id": i, "status_code": 200, "latency_ms": 5} for i in ids]}
    headers = {"X-Internal-Token": stack.internal_token}
    try:
        r = (session or stack.session).post(stack.url + "/internal/logs", json=body,
                                            headers=headers, timeout=30)
    except requests.RequestException:
        r = None
    kind = outcome(r)
    ledger.add(kind, ids)
    return kind


def accept_one(stack, ledger, prefix, wait_for, tag):
    """Posts small batches until one is acknowledged (the workers' sockets reconnect by themselves)."""
    n = [0]

    def attempt():
        n[0] += 1
        return send_batch(stack, ledger, [f"{prefix}-{tag}-{n[0]}"]) == "ok"

    wait_for(attempt, timeout=30, message="a batch to be accepted")


def check_ledger(log_pg, wait_for, prefix, ledger):
    """Every acknowledged id exactly once; nothing refused; unknown ids at most once."""
    got = wait_rows(log_pg, wait_for, prefix, ledger.ids["ok"], timeout=90)
    dup = {k: v for k, v in got.items() if v != 1}
    assert not dup, f"written more than once: {sorted(dup)[:10]}"
    assert ledger.ids["ok"] <= set(got)
    assert not (set(got) & ledger.ids["refused"]), "a refused batch was written"
    stray = set(got) - ledger.ids["ok"] - ledger.ids["unknown"]
    assert not stray, f"rows nobody sent: {sorted(stray)[:10]}"
    return got


@pytest.fixture
def background_restored(stack):
    """Whatever a test does, the background (and PostgreSQL) run with the stack's settings after."""
    yield
    if stack.pid("postgres") is None:
        stack.ctl("start", "postgres")
    stack.ctl("restart", "background")


def log_since(stack, mark):
    return stack.log("background")[mark:]


# ---------------------------------------------------------------- tests

def test_background_stopped_answers_503_then_recovers(stack, api, ctl, log_pg, wait_for,
                                                      background_restored):
    prefix = uid("stop")
    ledger = Ledger()
    ctl("stop", "background")
    # Refused at once (a hang would hit the timeout of 20 s here).
    for ndjson in (False, True):
        ids = [f"{prefix}-down-{int(ndjson)}-{i}" for i in range(3)]
        r = post_logs(api, [{"request_id": i} for i in ids], ndjson=ndjson, timeout=20)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "unavailable"
        assert outcome(r) == "refused"
        ledger.add("refused", ids)
    ctl("start", "background")
    accept_one(stack, ledger, prefix, wait_for, "up")
    check_ledger(log_pg, wait_for, prefix, ledger)


def test_sigkill_during_load_loses_and_duplicates_nothing(stack, ctl, log_pg, wait_for,
                                                          background_restored):
    prefix = uid("kill")
    ledger = Ledger()
    stop = threading.Event()

    def load(n):
        s = requests.Session()
        i = 0
        try:
            while not stop.is_set():
                send_batch(stack, ledger, [f"{prefix}-{n}-{i}-{k}" for k in range(10)], s)
                i += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            ledger.errors.append(repr(exc))
        finally:
            s.close()

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: ledger.snapshot()["ok"] >= 40, timeout=60,
                 message="load to be accepted")
        before = ledger.snapshot()
        ctl("kill", "background")
        # The pipeline is seen down: batches refused (or left unanswered) while it is dead.
        wait_for(lambda: ledger.snapshot()["refused"] + ledger.snapshot()["unknown"]
                 >= before["refused"] + before["unknown"] + 8,
                 timeout=60, message="batches refused while the background is dead")
        ctl("start", "background")
        after_start = ledger.snapshot()["ok"]
        wait_for(lambda: ledger.snapshot()["ok"] >= after_start + 40, timeout=60,
                 message="load to be accepted again after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not ledger.errors, ledger.errors
    got = check_ledger(log_pg, wait_for, prefix, ledger)
    counts = ledger.snapshot()
    print(f"sigkill: {counts}, rows {len(got)}, acked records {len(ledger.ids['ok'])}")
    assert counts["refused"] + counts["unknown"] > 0


def test_sigterm_writes_queued_records_before_exit(stack, ctl, log_pg, wait_for,
                                                    background_restored):
    prefix = uid("term")
    ledger = Ledger()
    ctl("restart", "background", env=HOLD)
    accept_one(stack, ledger, prefix, wait_for, "first")
    for b in range(5):
        assert send_batch(stack, ledger, [f"{prefix}-{b}-{k}" for k in range(20)]) == "ok"
    # Held in the queue: with these settings nothing is written before a drain.
    assert table_ids(log_pg, prefix) == {}
    mark = len(stack.log("background"))
    ctl("stop", "background")
    # The process has exited: its records are in the table already, no waiting.
    got = table_ids(log_pg, prefix)
    assert set(got) == ledger.ids["ok"]
    assert set(got.values()) == {1}
    assert "event=log_sink_drained" in log_since(stack, mark)


def test_torn_spool_tail_is_cut_and_the_rest_replayed(stack, ctl, log_pg, wait_for,
                                                      background_restored):
    prefix = uid("torn")
    ledger = Ledger()
    ctl("restart", "background", env=HOLD)
    accept_one(stack, ledger, prefix, wait_for, "first")
    for b in range(4):
        assert send_batch(stack, ledger, [f"{prefix}-{b}-{k}" for k in range(5)]) == "ok"
    assert table_ids(log_pg, prefix) == {}
    ctl("kill", "background")

    # A crash in the middle of an append: a frame header announcing 1000 bytes, 10 of them there.
    spool = pathlib.Path(stack.env["EZ_LOG_SPOOL_DIR"])
    seg = sorted(spool.glob("spool-*.seg"))[-1]
    size = seg.stat().st_size
    torn = struct.pack("<IIQ", 1000, 0xDEADBEEF, 1 << 40) + b"x" * 10
    with open(seg, "ab") as f:
        f.write(torn)

    mark = len(stack.log("background"))
    ctl("start", "background")
    check_ledger(log_pg, wait_for, prefix, ledger)
    assert set(table_ids(log_pg, prefix)) == ledger.ids["ok"]
    log = log_since(stack, mark)
    line = next((ln for ln in log.splitlines() if "event=spool_tail_truncated" in ln), None)
    assert line is not None, log
    assert f"file={seg}" in line and f"offset={size}" in line
    assert f"dropped_bytes={len(torn)}" in line
    assert "truncated_bytes=%d" % len(torn) in log
    if seg.exists():
        assert seg.stat().st_size >= size  # cut back to the last whole frame (then appended to)


def test_postgres_down_spools_up_to_queue_capacity(stack, ctl, log_pg, wait_for,
                                                   background_restored):
    prefix = uid("pgdown")
    ledger = Ledger()
    ctl("restart", "background", env={"EZ_LOG_QUEUE": "60"})
    accept_one(stack, ledger, prefix, wait_for, "first")
    wait_rows(log_pg, wait_for, prefix, ledger.ids["ok"])
    log_pg.close()
    ctl("stop", "postgres")
    try:
        kinds = []
        for b in range(20):
            kinds.append(send_batch(stack, ledger, [f"{prefix}-{b}-{k}" for k in range(10)]))
            if kinds[-1] == "refused":
                break
        # Accepted into the spool while PostgreSQL is down, then refused once 60 are queued.
        assert kinds.count("ok") == 6, kinds
        assert kinds[-1] == "refused", kinds
        r = post_logs(stack.api, [{"request_id": f"{prefix}-full"}], timeout=20)
        assert r.status_code == 503 and "full" in r.json()["error"]["message"]
        assert r.headers["Retry-After"] == "1"
        ledger.add("refused", [f"{prefix}-full"])
    finally:
        ctl("start", "postgres")
    conn = stack.pg(log_db=True)
    try:
        check_ledger(conn, wait_for, prefix, ledger)
        # The pipeline drains and accepts again.
        accept_one(stack, ledger, prefix, wait_for, "after")
        check_ledger(conn, wait_for, prefix, ledger)
    finally:
        conn.close()


def test_acks_do_not_wait_for_a_blocked_copy(stack, ctl, log_pg, wait_for, background_restored):
    """The COPY runs on the writer thread: while it waits behind a lock on
    request_logs, the loop keeps fsyncing and acknowledging (up to EZ_LOG_QUEUE).
    With the COPY on the loop, these POSTs waited for it and got 503 after the
    worker's ack deadline."""
    prefix = uid("blocked")
    ledger = Ledger()
    ctl("restart", "background", env={"EZ_LOG_BATCH_SIZE": "1", "EZ_LOG_FLUSH_MS": "10"})
    accept_one(stack, ledger, prefix, wait_for, "first")
    wait_rows(log_pg, wait_for, prefix, ledger.ids["ok"])
    locker = stack.pg(log_db=True)
    locker.autocommit = False
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE")
        # The first batch sends the writer into a COPY that waits for the lock ...
        assert send_batch(stack, ledger, [f"{prefix}-held-0"]) == "ok"
        wait_for(lambda: lock_waiters(log_pg) > 0, timeout=30,
                 message="the writer's COPY to wait for the lock")
        # ... and the loop still acknowledges every batch behind it.
        for b in range(1, 11):
            kind = send_batch(stack, ledger, [f"{prefix}-held-{b}-{k}" for k in range(10)])
            assert kind == "ok", f"batch {b} answered {kind} while the COPY waited"
        # (no SELECT on request_logs here: it would queue behind the lock too)
        assert lock_waiters(log_pg) > 0
    finally:
        locker.rollback()
        locker.close()
    check_ledger(log_pg, wait_for, prefix, ledger)


def lock_waiters(log_pg):
    """Sessions waiting for a lock on request_logs (the writer's COPY)."""
    with log_pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = 'request_logs'::regclass")
        return cur.fetchone()[0]


def test_a_log_schema_behind_stops_the_background_with_code_3(stack, log_pg, tmp_path):
    """A log DB whose schema is older than the build (here: empty) is refused at start,
    like the main schema: event=log_schema_behind and exit code 3, no batch accepted.
    A second daemon on its own socket and spool; the stack's daemon is not touched."""
    import os
    import subprocess

    db = f"ezapi_behind_{uid('s').replace('-', '_')}"
    with log_pg.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    try:
        env = dict(os.environ)
        env.update(stack.env)
        env.update({
            "EZ_LOG_PG_DSN": stack.log_pg_dsn.replace("dbname=ezapi_logs", f"dbname={db}"),
            "EZ_ZMQ_ENDPOINT": f"ipc://{tmp_path}/bg.ipc",
            "EZ_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        })
        assert f"dbname={db}" in env["EZ_LOG_PG_DSN"]
        res = subprocess.run([str(stack.build / "ezapi-background")], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 3, res.stderr[-2000:]
        assert "event=log_schema_behind schema_version=0" in res.stderr
        assert "event=log_sink_ready" not in res.stderr
    finally:
        with log_pg.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
