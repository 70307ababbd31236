"""A retried body is stored once (docs/log-pipeline.md, "Retries"): the
background remembers the key (SHA-256 of the body) of every batch it spooled
recently, so the same body posted again - a data plane retrying after a lost
202, or after a 503 for a batch the background had spooled just before it
died - is acknowledged without a second copy. Across a restart too, for a
batch still in the spool (the keys are in its frames).

"Not stored twice" is checked without waiting for time to pass: a different
batch posted after the retry is written after it (one writer, in spool
order), so once its rows are visible a second copy would be too."""

import json

from test_logs import table_ids, uid, wait_rows
from test_logs_faults import HOLD, background_restored  # noqa: F401 (fixture)


def post_body(stack, body):
    return stack.session.post(stack.url + "/internal/logs", data=body,
                              headers={"X-Internal-Token": stack.internal_token,
                                       "Content-Type": "application/json"}, timeout=30)


def batch_body(prefix, n=5):
    return json.dumps({"logs": [{"request_id": f"{prefix}-{i}", "status_code": 200,
                                 "latency_ms": i} for i in range(n)]})


def assert_stored_once(stack, log_pg, wait_for, prefix, n=5):
    """Posts a fresh marker batch, waits for it, then checks prefix's rows are there once."""
    marker = uid("mark")
    assert post_body(stack, batch_body(marker, 1)).status_code == 202
    wait_rows(log_pg, wait_for, marker, {f"{marker}-0"})
    got = wait_rows(log_pg, wait_for, prefix, {f"{prefix}-{i}" for i in range(n)})
    assert got == {f"{prefix}-{i}": 1 for i in range(n)}


def metrics(api):
    return api("GET", "/internal/metrics", params={"format": "json"}).json()["log_pipeline"]


def test_the_same_body_twice_is_stored_once(stack, api, log_pg, wait_for):
    prefix = uid("again")
    body = batch_body(prefix)
    dup_before = metrics(api).get("records_duplicate_total", 0)
    first = post_body(stack, body)
    assert first.status_code == 202 and first.json() == {"accepted": 5}
    again = post_body(stack, body)
    assert again.status_code == 202 and again.json() == {"accepted": 5}
    assert_stored_once(stack, log_pg, wait_for, prefix)
    wait_for(lambda: metrics(api).get("records_duplicate_total", 0) >= dup_before + 5,
             timeout=30, message="records_duplicate_total to count the retry")
    assert "\nezapi_log_records_duplicate_total " in api("GET", "/internal/metrics").text


def test_a_different_body_with_other_records_is_stored(stack, log_pg, wait_for):
    # Same shape, other request ids: a new key, a new batch.
    a, b = uid("one"), uid("two")
    assert post_body(stack, batch_body(a)).status_code == 202
    assert post_body(stack, batch_body(b)).status_code == 202
    assert_stored_once(stack, log_pg, wait_for, a)
    assert_stored_once(stack, log_pg, wait_for, b)


def test_a_retry_after_a_crash_is_recognised_from_the_spool(stack, ctl, log_pg, wait_for,
                                                             background_restored):
    # Spooled, not written (HOLD), then SIGKILL: the retry meets the key read back at replay.
    prefix = uid("crash")
    body = batch_body(prefix)
    ctl("restart", "background", env=HOLD)
    wait_for(lambda: post_body(stack, batch_body(uid("warm"), 1)).status_code == 202,
             timeout=30, message="the restarted background to accept batches")
    assert post_body(stack, body).status_code == 202
    assert table_ids(log_pg, prefix) == {}
    ctl("kill", "background")
    ctl("start", "background")
    wait_for(lambda: post_body(stack, body).status_code == 202, timeout=30,
             message="the retry to be acknowledged after the restart")
    assert_stored_once(stack, log_pg, wait_for, prefix)
