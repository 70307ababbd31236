"""request_logs partitions and retention (docs/log-pipeline.md, "Partitions
and retention"): sql/log/002 made request_logs partitioned by RANGE
(created_at) with a DEFAULT partition; the background's log_partitions job
keeps the current UTC day/month and the next two covered when
EZ_LOG_PARTITIONING is day/month, moving rows out of the default; its
log_retention job drops partitions entirely older than the cut and deletes
the rest in batches, for EZ_LOG_RETENTION_DAYS and for EZ_LOG_MAX_RECORDS.

Each test restarts the background with the settings it needs and the stack's
own settings are restored afterwards. Partitions made here stay (other tests
then run against a partitioned layout, which is the point). Rows are
recognised by a request-id prefix; old rows carry old created_at values sent
through POST /internal/logs, and partitions standing for ones the upkeep made
in the past are created here with SQL.
"""

from datetime import datetime, timedelta, timezone

import pytest

from test_logs import post_logs, rfc3339, table_ids, uid, wait_rows

QUIET = {"EZ_LOG_RETENTION_DAYS": "0", "EZ_LOG_MAX_RECORDS": "0"}
MODES = ["off", "month", "day"]
DAY = timedelta(days=1)
EPOCH_DAY = datetime(1970, 1, 2, tzinfo=timezone.utc)


# ---------------------------------------------------------------- helpers

@pytest.fixture
def restore_background(stack):
    yield
    stack.ctl("restart", "background")


def restart(ctl, mode, **settings):
    env = dict(QUIET)
    env["EZ_LOG_PARTITIONING"] = mode
    env.update({k: str(v) for k, v in settings.items()})
    ctl("restart", "background", env=env)


def post_all(api, wait_for, records):
    """POST (retrying a 503 while the restarted background gets ready), then wait for the rows."""
    def accepted():
        r = post_logs(api, records)
        assert r.status_code in (202, 503), r.text
        return r.status_code == 202

    wait_for(accepted, timeout=30, message="the batch to be accepted")


def db_now(log_pg):
    with log_pg.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


def layout(log_pg):
    """(default partition name or None, [(name, lo, hi)] sorted; None = unbounded)."""
    with log_pg.cursor() as cur:
        cur.execute("SELECT d.oid::regclass::text FROM pg_partitioned_table pt "
                    "LEFT JOIN pg_class d ON d.oid = pt.partdefid "
                    "WHERE pt.partrelid = 'request_logs'::regclass")
        default = cur.fetchone()[0]
        cur.execute(
            "SELECT name, CASE WHEN m[1] LIKE '''%' THEN btrim(m[1], '''')::timestamptz END, "
            "CASE WHEN m[2] LIKE '''%' THEN btrim(m[2], '''')::timestamptz END "
            "FROM (SELECT c.oid::regclass::text AS name, "
            "  regexp_match(pg_get_expr(c.relpartbound, c.oid), "
            "  '^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') AS m "
            "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "  WHERE i.inhparent = 'request_logs'::regclass) p WHERE m IS NOT NULL "
            "ORDER BY 2 NULLS FIRST")
        return default, cur.fetchall()


def uncovered(ranges, a, b):
    """The parts of [a, b) that no range covers."""
    gaps, cur = [], a
    for _, lo, hi in ranges:
        if hi is not None and hi <= cur:
            continue
        if lo is not None and lo >= b:
            break
        if lo is not None and lo > cur:
            gaps.append((cur, lo))
        cur = hi if hi is not None else b
        if cur >= b:
            break
    if cur < b:
        gaps.append((cur, b))
    return gaps


def overlaps(ranges, a, b):
    return uncovered(ranges, a, b) != [(a, b)]


def where(log_pg, prefix):
    """request_id -> the partition holding it."""
    with log_pg.cursor() as cur:
        cur.execute("SELECT request_id, tableoid::regclass::text FROM request_logs "
                    "WHERE request_id LIKE %s", (prefix + "%",))
        return dict(cur.fetchall())


def relation_exists(log_pg, name):
    with log_pg.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        return cur.fetchone()[0]


def make_partition(log_pg, name, lo, hi):
    """A partition as the upkeep makes it: rows of the range moved out of the default."""
    default, _ = layout(log_pg)
    with log_pg.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(f"CREATE TABLE {name} (LIKE request_logs INCLUDING DEFAULTS)")
        cur.execute(f"WITH m AS (DELETE FROM {default} WHERE created_at >= %s AND "
                    f"created_at < %s RETURNING *) INSERT INTO {name} SELECT * FROM m", (lo, hi))
        cur.execute(f"ALTER TABLE request_logs ATTACH PARTITION {name} "
                    "FOR VALUES FROM (%s) TO (%s)", (lo, hi))
        cur.execute("COMMIT")


def day_start(t):
    return t.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(t):
    return day_start(t).replace(day=1)


def next_month(t):
    return (t.replace(day=28) + timedelta(days=4)).replace(day=1)


def periods(mode, now, n=3):
    """The n periods from the one holding now: [(start, end)]."""
    out, start = [], day_start(now) if mode == "day" else month_start(now)
    for _ in range(n):
        end = start + DAY if mode == "day" else next_month(start)
        out.append((start, end))
        start = end
    return out


def period_name(mode, start):
    return "request_logs_p" + start.strftime("%Y%m%d" if mode == "day" else "%Y%m")


# ---------------------------------------------------------------- schema

def test_request_logs_is_range_partitioned_with_a_default(log_pg):
    with log_pg.cursor() as cur:
        cur.execute("SELECT pg_get_partkeydef('request_logs'::regclass)")
        assert cur.fetchone()[0] == "RANGE (created_at)"
        cur.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = 'request_logs'::regclass AND contype = 'p'")
        assert cur.fetchone()[0] == "PRIMARY KEY (id, created_at)"
        cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'request_logs'")
        defs = {d.split(" USING ")[1] for (d,) in cur.fetchall()}
    assert defs == {"btree (id, created_at)", "btree (created_at)",
                    "btree (master_id, created_at)", "btree (key_id, created_at)",
                    "btree (model, created_at)", "btree (request_id)"}
    default, _ = layout(log_pg)
    assert default == "request_logs_default"
    with log_pg.cursor() as cur:
        cur.execute("SELECT version FROM log_schema_migrations ORDER BY version DESC LIMIT 1")
        assert cur.fetchone()[0] >= 2


# ---------------------------------------------------------------- upkeep

@pytest.mark.parametrize("mode", ["day", "month"])
def test_partitions_created_ahead_and_rows_routed(api, ctl, log_pg, wait_for, restore_background,
                                                 mode):
    prefix = uid(f"part{mode}")
    now = db_now(log_pg)
    want = periods(mode, now)
    _, before = layout(log_pg)
    fresh = [p for p in want if not overlaps(before, *p)]
    # Rows for the coming periods, sent before the upkeep covers them, and two strays.
    early = [{"request_id": f"{prefix}-early{k}", "created_at": rfc3339(start + timedelta(hours=12))}
             for k, (start, _) in enumerate(want)]
    strays = [{"request_id": f"{prefix}-stray-past", "created_at": "2001-01-01T00:00:00Z"},
              {"request_id": f"{prefix}-stray-future", "created_at": "2200-01-01T00:00:00Z"}]
    restart(ctl, "off")
    post_all(api, wait_for, early + strays)
    wait_rows(log_pg, wait_for, prefix, [r["request_id"] for r in early + strays])

    restart(ctl, mode)

    def covered():
        _, ranges = layout(log_pg)
        return not uncovered(ranges, want[0][0], want[-1][1])

    wait_for(covered, timeout=30, message=f"{mode} partitions for the next periods")
    default, ranges = layout(log_pg)
    by_name = {name: (lo, hi) for name, lo, hi in ranges}
    for start, end in fresh:
        assert by_name.get(period_name(mode, start)) == (start, end), (start, by_name)
    # The early rows were moved out of the default; the strays stay there.
    homes = where(log_pg, prefix)
    for r in early:
        assert homes[r["request_id"]] != default, r
    assert homes[f"{prefix}-stray-past"] == default
    assert homes[f"{prefix}-stray-future"] == default
    # New rows go straight to their partition.
    late = [{"request_id": f"{prefix}-late{k}", "created_at": rfc3339(start + timedelta(hours=1))}
            for k, (start, _) in enumerate(want)]
    post_all(api, wait_for, late)
    wait_rows(log_pg, wait_for, prefix, [r["request_id"] for r in late])
    homes = where(log_pg, prefix)
    for (start, end), r in zip(want, late):
        home = homes[r["request_id"]]
        assert home != default
        lo, hi = by_name[home]
        assert lo <= start + timedelta(hours=1) < hi


def test_cursor_pagination_across_partitions(api, ctl, log_pg, wait_for, restore_background):
    """Ids stay unique across partitions, so ?before_id pages through all of them."""
    prefix = uid("pag")
    restart(ctl, "day")
    now = db_now(log_pg)
    recs = [{"request_id": f"{prefix}-{i}", "namespace": prefix,
             "created_at": rfc3339(now + timedelta(hours=13 * (i % 5)) if i % 3 else
                                   now - timedelta(days=400 + i))} for i in range(23)]
    post_all(api, wait_for, recs)
    wait_rows(log_pg, wait_for, prefix, [r["request_id"] for r in recs])
    assert len(set(where(log_pg, prefix).values())) >= 3
    seen, cursor = [], None
    while True:
        params = {"namespace": prefix, "limit": 4}
        if cursor is not None:
            params["before_id"] = cursor
        body = api("GET", "/admin/logs", params=params).json()
        seen += [it["id"] for it in body["items"]]
        cursor = body["next_before_id"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == len(recs)
    r = api("GET", "/admin/logs/stats", params={"namespace": prefix})
    assert r.status_code == 200 and r.json()["totals"]["requests"] == len(recs)


# ---------------------------------------------------------------- retention

@pytest.mark.parametrize("mode", MODES)
def test_retention_days_removes_exactly_the_old_rows(api, ctl, log_pg, wait_for,
                                                     restore_background, mode):
    k = MODES.index(mode)
    prefix = uid(f"ret{mode}")
    restart(ctl, mode)
    now = db_now(log_pg)
    cut = now - timedelta(days=30)
    # A partition the upkeep made long ago: entirely older than the cut, dropped whole.
    old_lo = day_start(now - timedelta(days=200 + 2 * k))
    old_part = f"request_logs_t{prefix}"
    make_partition(log_pg, old_part, old_lo, old_lo + DAY)
    # One straddling the cut: its old rows are deleted, the partition stays.
    _, ranges = layout(log_pg)
    s_lo, s_hi = day_start(cut) - DAY, day_start(cut) + 2 * DAY
    if not overlaps(ranges, s_lo, s_hi):
        make_partition(log_pg, "request_logs_tstraddle", s_lo, s_hi)
    old = {
        "in-old-partition": old_lo + timedelta(hours=5),
        "straddle-old": cut - timedelta(hours=1),
        "default-old": now - timedelta(days=45),
        "ancient": datetime(2001, 1, 1, tzinfo=timezone.utc),
    }
    new = {
        "straddle-new": cut + timedelta(hours=2),
        "recent": now - timedelta(days=20),
        "yesterday": now - DAY,
        "now": now,
        "future": now + timedelta(days=40),
    }
    recs = [{"request_id": f"{prefix}-{name}", "created_at": rfc3339(t)}
            for name, t in {**old, **new}.items()]
    post_all(api, wait_for, recs)
    wait_rows(log_pg, wait_for, prefix, [r["request_id"] for r in recs])
    homes = where(log_pg, prefix)
    assert homes[f"{prefix}-in-old-partition"] == old_part

    restart(ctl, mode, EZ_LOG_RETENTION_DAYS=30)

    def purged():
        left = set(table_ids(log_pg, prefix))
        return not relation_exists(log_pg, old_part) and \
            not any(f"{prefix}-{n}" in left for n in old)

    wait_for(purged, timeout=60, message="the rows older than 30 days to go")
    assert set(table_ids(log_pg, prefix)) == {f"{prefix}-{n}" for n in new}
    _, ranges = layout(log_pg)
    assert not uncovered(ranges, s_lo, s_hi), "the straddling partition must stay"


@pytest.mark.parametrize("mode", MODES)
def test_max_records_keeps_the_newest(api, ctl, log_pg, wait_for, restore_background, mode):
    prefix = uid(f"cap{mode}")
    restart(ctl, mode)
    # The oldest rows of the table are this test's: created on 1970-01-02 and -03.
    with log_pg.cursor() as cur:
        cur.execute("DELETE FROM request_logs WHERE created_at < '1971-01-01'")
    part = f"request_logs_t{prefix}"
    make_partition(log_pg, part, EPOCH_DAY, EPOCH_DAY + DAY)
    # 0..19 in that partition, one a minute; 20..79 in the default, two per second
    # (equal created_at: the id decides which is older).
    recs = []
    for i in range(80):
        t = EPOCH_DAY + timedelta(minutes=i) if i < 20 else \
            EPOCH_DAY + DAY + timedelta(seconds=(i - 20) // 2)
        recs.append({"request_id": f"{prefix}-{i:02d}", "created_at": rfc3339(t)})
    post_all(api, wait_for, recs)
    wait_rows(log_pg, wait_for, prefix, [r["request_id"] for r in recs])
    with log_pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM request_logs")
        total = cur.fetchone()[0]
    cap = total - 31  # 0..30 must go: the whole partition, then 11 rows; 30 and 31 tie

    restart(ctl, mode, EZ_LOG_MAX_RECORDS=cap)

    keep = {f"{prefix}-{i:02d}" for i in range(31, 80)}
    wait_for(lambda: set(table_ids(log_pg, prefix)) == keep, timeout=60,
             message=f"the table to be cut down to {cap} rows")
    assert not relation_exists(log_pg, part)
    with log_pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM request_logs")
        assert cur.fetchone()[0] == cap
        cur.execute("DELETE FROM request_logs WHERE request_id LIKE %s", (prefix + "%",))


def test_mode_off_adds_no_partitions(api, ctl, log_pg, wait_for, restore_background):
    """Off: the upkeep runs (before retention, same turn) but creates nothing."""
    prefix = uid("off")
    restart(ctl, "off")
    before = layout(log_pg)
    post_all(api, wait_for, [{"request_id": f"{prefix}-old", "created_at": "2002-02-02T00:00:00Z"}])
    wait_rows(log_pg, wait_for, prefix, [f"{prefix}-old"])
    restart(ctl, "off", EZ_LOG_RETENTION_DAYS=3650)
    wait_for(lambda: not table_ids(log_pg, prefix), timeout=60, message="the old row to go")
    default, ranges = layout(log_pg)
    assert default == before[0]
    assert set(ranges) <= set(before[1])
