#!/usr/bin/python3
"""tests/bench/propagation.py: how long an admin write takes to show in Redis.

Used by scripts/bench.d/20-snapshot (see docs/bench.md). Each write is one
admin PUT over a kept-alive HTTP connection; as soon as its answer has been
read, Redis is polled in a tight loop (HGET, no sleep) until the hash field
holds the value just written. The latency of one write is the time from the
end of the HTTP answer to the HGET reply that showed the value.

  propagation.py master [--master-id ID] --writes N [--warmup W]
      PUT /admin/masters/:id {"global_qps": v}; polls auth:master:<id> global_qps.
      Without --master-id a master named bench-snap-<pid> is created first.
  propagation.py key [--master-id M --key-id K --token-hash H] --writes N [--warmup W]
      PUT /admin/masters/:m/keys/:k {"name": v}; polls auth:token:<H> name.
      Without ids a master and a key are created first (the hash is the
      SHA-256 of the token the API answers).

Settings come from the environment the stack writes (stack.env): STACK_URL,
EZ_ADMIN_TOKEN (or --token-file), EZ_REDIS_ADDR, EZ_REDIS_PASSWORD,
EZ_REDIS_DB. Prints one JSON object: the ids used, the count, p50/p90/p99/max
/mean in ms, writes not visible within --timeout, how many were visible at
the first poll, the HTTP answer's own p50, and the warm-up writes that took
longer than 1 s (nudges lost while a worker's ZeroMQ socket connects: those
fell back to the outbox interval). The warm-up writes are not in the figures.
"""
import argparse
import hashlib
import http.client
import json
import math
import os
import sys
import time
import urllib.parse

import redis


def die(msg):
    print("propagation.py: error: " + msg, file=sys.stderr)
    sys.exit(1)


class Admin:
    """A kept-alive HTTP connection to the stack's admin API."""

    def __init__(self, url, token):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Authorization": "Bearer " + token,
                        "Content-Type": "application/json"}
        self.conn = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # nginx closed the kept-alive connection (keepalive_requests): once more.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        if resp.status >= 300:
            die("%s %s answered %d: %s" % (method, path, resp.status, raw[:200]))
        return json.loads(raw) if raw else None


def percentile(sorted_ms, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, math.ceil(q / 100.0 * len(sorted_ms)) - 1))
    return sorted_ms[k]


def measure(admin, rds, path, body_of, key, field, value_of, n, warmup, timeout):
    """n + warmup writes; returns (latencies ms, http ms, timeouts, first-poll hits, slow warm-ups)."""
    lat, http_ms = [], []
    timeouts = first = slow_warmup = 0
    for i in range(warmup + n):
        value = value_of(i)
        t0 = time.perf_counter()
        admin.call("PUT", path, body_of(value))
        t1 = time.perf_counter()
        polls = 0
        while True:
            got = rds.hget(key, field)
            polls += 1
            t2 = time.perf_counter()
            if got is not None and got.decode() == str(value):
                break
            if t2 - t1 > timeout:
                break
        visible = got is not None and got.decode() == str(value)
        if i < warmup:
            slow_warmup += (not visible) or (t2 - t1 > 1.0)
            continue
        http_ms.append((t1 - t0) * 1000.0)
        if not visible:
            timeouts += 1
            continue
        first += polls == 1
        lat.append((t2 - t1) * 1000.0)
    return lat, http_ms, timeouts, first, slow_warmup


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("master", "key"))
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per write")
    ap.add_argument("--master-id", type=int)
    ap.add_argument("--key-id", type=int)
    ap.add_argument("--token-hash")
    ap.add_argument("--token-file", help="file holding the admin token")
    a = ap.parse_args()

    url = os.environ.get("STACK_URL") or die("STACK_URL not set (source stack.env)")
    token = os.environ.get("EZ_ADMIN_TOKEN", "")
    if a.token_file:
        with open(a.token_file) as f:
            token = f.read().strip()
    token or die("no admin token (EZ_ADMIN_TOKEN or --token-file)")
    host, _, port = os.environ.get("EZ_REDIS_ADDR", "127.0.0.1:6379").rpartition(":")
    rds = redis.Redis(host=host or "127.0.0.1", port=int(port),
                      password=os.environ.get("EZ_REDIS_PASSWORD") or None,
                      db=int(os.environ.get("EZ_REDIS_DB") or 0))
    admin = Admin(url, token)
    tag = "bench-snap-%d-%d" % (os.getpid(), int(time.time()))

    created = {}
    if a.what == "master":
        mid = a.master_id
        if mid is None:
            mid = admin.call("POST", "/admin/masters", {"name": tag})["id"]
            created["master_id"] = mid
        path, key, field = "/admin/masters/%d" % mid, "auth:master:%d" % mid, "global_qps"
        base = 1000 + int(time.time()) % 100000  # never a value the master had just now
        body_of = lambda v: {"global_qps": v}  # noqa: E731
        value_of = lambda i: base + i  # noqa: E731
        ids = {"master_id": mid}
    else:
        mid, kid, th = a.master_id, a.key_id, a.token_hash
        if mid is None or kid is None or not th:
            mid = admin.call("POST", "/admin/masters", {"name": tag})["id"]
            k = admin.call("POST", "/admin/masters/%d/keys" % mid, {"name": tag})
            kid, th = k["id"], hashlib.sha256(k["token"].encode()).hexdigest()
            created["master_id"] = mid
        path = "/admin/masters/%d/keys/%d" % (mid, kid)
        key, field = "auth:token:" + th, "name"
        body_of = lambda v: {"name": v}  # noqa: E731
        value_of = lambda i: "%s-%d" % (tag, i)  # noqa: E731
        ids = {"master_id": mid, "key_id": kid}

    lat, http_ms, timeouts, first, slow_warmup = measure(
        admin, rds, path, body_of, key, field, value_of, a.writes, a.warmup, a.timeout)
    lat.sort()
    http_ms.sort()
    r2 = lambda v: None if v is None else round(v, 3)  # noqa: E731
    print(json.dumps({
        "what": a.what, "ids": ids, "created": created, "writes": a.writes,
        "visible": len(lat), "timeouts": timeouts, "first_poll": first,
        "p50_ms": r2(percentile(lat, 50)), "p90_ms": r2(percentile(lat, 90)),
        "p99_ms": r2(percentile(lat, 99)), "max_ms": r2(lat[-1] if lat else None),
        "mean_ms": r2(sum(lat) / len(lat) if lat else None),
        "http_p50_ms": r2(percentile(http_ms, 50)),
        "warmup": a.warmup, "warmup_slow": slow_warmup,
    }))


if __name__ == "__main__":
    main()
