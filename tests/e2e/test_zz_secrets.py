"""Runs last (file order): no secret the suite created or sent may appear in
any server log, nginx log, operation log or request log (QUALITY.md)."""

import conftest


def test_no_secret_in_logs_or_tables(stack):
    secrets = sorted(conftest.SECRETS)
    if len(secrets) < 5:
        # Run alone (-k): nothing to check against; the full suite collects hundreds.
        import pytest
        pytest.skip("run with the full suite")
    logs = {p.name: p.read_text(errors="replace") for p in stack.logs_dir.glob("*.log")}
    leaks = []
    for sec in secrets:
        for name, text in logs.items():
            if sec in text:
                leaks.append(f"{name}: {sec[:6]}…")
    with stack.pg() as conn, conn.cursor() as cur:
        cur.execute("SELECT changes::text FROM operation_logs")
        audit = "\n".join(r[0] for r in cur.fetchall())
    with stack.pg(log_db=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(error, '') || ' ' || coalesce(user_agent, '') FROM request_logs")
        reqlogs = "\n".join(r[0] for r in cur.fetchall())
    for sec in secrets:
        if sec in audit:
            leaks.append(f"operation_logs: {sec[:6]}…")
        if sec in reqlogs:
            leaks.append(f"request_logs: {sec[:6]}…")
    assert not leaks, leaks
