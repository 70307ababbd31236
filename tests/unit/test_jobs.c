/* Unit tests for the background's job scheduler (pure functions, explicit clocks). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../background/bg.h"
#include "../../background/jobs.h"
#include "log.h"
#include "../../background/zmq_server.h"

/* ---- fixtures: fake jobs, a fake clock ---- */

static int64_t fake_now;
static int runs_a, runs_b, runs_c;
static int fail_b; /* 0 ok, 1 fail with message, 2 fail silently */
static const char *fail_msg = "boom";
static int64_t run_cost_ms; /* how far each run advances the fake clock */

static int64_t fake_clock(void)
{
    return fake_now;
}

static int64_t iv_1000(const struct ez_config *cfg)
{
    (void)cfg;
    return 1000;
}

static int64_t iv_5000(const struct ez_config *cfg)
{
    (void)cfg;
    return 5000;
}

/* Interval read from the configuration, like the real jobs (quota reset, outbox). */
static int64_t iv_from_cfg(const struct ez_config *cfg)
{
    return (int64_t)cfg->quota_reset_interval_seconds * 1000;
}

static int64_t iv_none(const struct ez_config *cfg)
{
    (void)cfg;
    return 0;
}

static int run_a(struct bg_ctx *ctx)
{
    (void)ctx;
    runs_a++;
    fake_now += run_cost_ms;
    return EZ_OK;
}

static int run_b(struct bg_ctx *ctx)
{
    runs_b++;
    fake_now += run_cost_ms;
    if (fail_b == 1)
        return job_fail(ctx, "%s\n", fail_msg);
    if (fail_b == 2)
        return EZ_ERR;
    return EZ_OK;
}

static int run_c(struct bg_ctx *ctx)
{
    (void)ctx;
    runs_c++;
    return EZ_OK;
}

static struct bg_job table[3];
static struct ez_config cfg;
static struct bg_ctx ctx;

static int setup(void **state)
{
    (void)state;
    memset(table, 0, sizeof(table));
    table[0] = (struct bg_job){.name = "a", .interval_ms = iv_1000, .run = run_a, .at_start = true};
    table[1] = (struct bg_job){.name = "b", .interval_ms = iv_5000, .run = run_b};
    table[2] = (struct bg_job){.name = "c", .interval_ms = iv_none, .run = run_c};
    memset(&cfg, 0, sizeof(cfg));
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;
    fake_now = 100000;
    runs_a = runs_b = runs_c = 0;
    fail_b = 0;
    fail_msg = "boom";
    run_cost_ms = 0;
    ez_log_min_level = EZ_LOG_ERROR; /* keep the test output quiet */
    jobs_schedule_init(table, 3, &cfg, fake_now);
    return 0;
}

/* ---- scheduling ---- */

static void test_init_schedule(void **state)
{
    (void)state;
    assert_int_equal(table[0].next_due, 100000); /* at_start: due at once */
    assert_int_equal(table[1].next_due, 105000); /* one interval later */
    assert_int_equal(table[2].next_due, JOB_NEVER);
    assert_int_equal(table[0].cur_interval, 1000);
    assert_int_equal(table[2].cur_interval, 0);
    assert_true(job_is_due(&table[0], 100000));
    assert_false(job_is_due(&table[1], 104999));
    assert_true(job_is_due(&table[1], 105000));
    assert_false(job_is_due(&table[2], INT64_MAX - 1));
}

static void test_wait_ms(void **state)
{
    (void)state;
    /* a is due now */
    assert_int_equal(jobs_wait_ms(table, 3, 100000, 60000), 0);
    /* overdue still means 0, never negative */
    assert_int_equal(jobs_wait_ms(table, 3, 200000, 60000), 0);
    table[0].next_due = 101500;
    assert_int_equal(jobs_wait_ms(table, 3, 100000, 60000), 1500);
    /* capped */
    assert_int_equal(jobs_wait_ms(table, 3, 100000, 1000), 1000);
    /* nothing scheduled: the cap */
    table[0].next_due = table[1].next_due = JOB_NEVER;
    assert_int_equal(jobs_wait_ms(table, 3, 100000, 60000), 60000);
    assert_int_equal(jobs_wait_ms(table, 0, 100000, 777), 777);
}

static void test_run_table_runs_due_only(void **state)
{
    (void)state;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 1);
    assert_int_equal(runs_a, 1);
    assert_int_equal(runs_b, 0);
    assert_int_equal(runs_c, 0);
    assert_int_equal(table[0].next_due, 101000);
    assert_int_equal(table[0].last_run, 100000);
    /* nothing due until 101000 */
    fake_now = 100999;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 0);
    fake_now = 105000; /* both a and b */
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(runs_a, 2);
    assert_int_equal(runs_b, 1);
    assert_int_equal(table[1].next_due, 110000);
}

static void test_next_due_counts_from_end_of_run(void **state)
{
    (void)state;
    run_cost_ms = 300; /* a slow job */
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 1);
    assert_int_equal(table[0].last_run, 100300);
    assert_int_equal(table[0].next_due, 101300);
    /* Late wake-up: one run, not one per missed interval. */
    fake_now = 150000;
    run_cost_ms = 0;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(runs_a, 2);
    assert_int_equal(table[0].next_due, 151000);
}

/* ---- kicks ---- */

static void test_kick(void **state)
{
    (void)state;
    assert_int_equal(jobs_kick_at(table, 3, "b", 100200), EZ_OK);
    assert_int_equal(table[1].next_due, 100200);
    assert_int_equal(jobs_wait_ms(table, 3, 100100, 60000), 0); /* a still due */
    /* A kick never postpones a job that is due earlier. */
    assert_int_equal(jobs_kick_at(table, 3, "a", 100500), EZ_OK);
    assert_int_equal(table[0].next_due, 100000);
    assert_int_equal(jobs_kick_at(table, 3, "outbox", 100200), EZ_ERR);
    assert_int_equal(jobs_kick_at(table, 3, "", 100200), EZ_ERR);

    fake_now = 100200;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(runs_b, 1);
    /* After a kicked run, the job goes back to its period. */
    assert_int_equal(table[1].next_due, 105200);
}

static void test_kick_non_periodic(void **state)
{
    (void)state;
    assert_int_equal(jobs_kick_at(table, 3, "c", 100050), EZ_OK);
    fake_now = 100050;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(runs_c, 1);
    assert_int_equal(table[2].next_due, JOB_NEVER);
    /* Several kicks before the job runs coalesce into one run. */
    assert_int_equal(jobs_kick_at(table, 3, "c", 100060), EZ_OK);
    assert_int_equal(jobs_kick_at(table, 3, "c", 100070), EZ_OK);
    fake_now = 100080;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 1);
    assert_int_equal(runs_c, 2);
}

/*
 * A job that kicks others during its run: a later row runs in the same pass,
 * the job itself again on the next pass (its kick survives its rescheduling).
 */
static int run_kicker(struct bg_ctx *c)
{
    (void)c;
    runs_a++;
    assert_int_equal(jobs_kick_at(table, 3, "c", fake_now), EZ_OK);
    assert_int_equal(jobs_kick_at(table, 3, "a", fake_now), EZ_OK); /* itself */
    return EZ_OK;
}

static void test_kick_during_run(void **state)
{
    (void)state;
    table[0].run = run_kicker;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(runs_a, 1);
    assert_int_equal(runs_c, 1);
    assert_int_equal(table[2].next_due, JOB_NEVER);
    /* The self-kick survived the end-of-run rescheduling. */
    assert_int_equal(table[0].next_due, 100000);
    assert_int_equal(jobs_wait_ms(table, 3, fake_now, 60000), 0);
    table[0].run = run_a;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 1);
    assert_int_equal(runs_a, 2);
    assert_int_equal(table[0].next_due, 101000);
}

/* ---- failures ---- */

static void test_failure_retried_at_interval(void **state)
{
    (void)state;
    fail_b = 1;
    fake_now = 105000;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(table[1].failures, 1);
    assert_int_equal(table[1].next_due, 110000);
    assert_string_equal(table[1].last_err, "boom"); /* trailing newline folded */
    assert_true(table[1].failure_logged);
    fake_now = 110000;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(table[1].failures, 2);
    fail_b = 0;
    fake_now = 115000;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 2);
    assert_int_equal(table[1].failures, 0);
    assert_false(table[1].failure_logged);
    assert_string_equal(table[1].last_err, "");
}

static void test_failure_log_levels(void **state)
{
    (void)state;
    struct bg_job *j = &table[1];
    j->cur_interval = 5000;
    /* Success with no prior failure: nothing to log. */
    assert_int_equal(job_finish(j, EZ_OK, "", 1), -1);
    /* First failure: warn; the same error again: debug only. */
    assert_int_equal(job_finish(j, EZ_ERR, "connection refused", 2), EZ_LOG_WARN);
    assert_int_equal(job_finish(j, EZ_ERR, "connection refused", 3), EZ_LOG_DEBUG);
    assert_int_equal(job_finish(j, EZ_ERR, "connection refused", 4), EZ_LOG_DEBUG);
    /* A different error is news. */
    assert_int_equal(job_finish(j, EZ_ERR, "permission denied", 5), EZ_LOG_WARN);
    assert_int_equal(j->failures, 4);
    /* Recovery after a logged failure: info. */
    assert_int_equal(job_finish(j, EZ_OK, "", 6), EZ_LOG_INFO);
    assert_int_equal(j->failures, 0);
    /* Failures already logged elsewhere (no message): debug, and recovery is debug too. */
    assert_int_equal(job_finish(j, EZ_ERR, "", 7), EZ_LOG_DEBUG);
    assert_int_equal(job_finish(j, EZ_ERR, NULL, 8), EZ_LOG_DEBUG);
    assert_int_equal(job_finish(j, EZ_OK, "", 9), EZ_LOG_DEBUG);
    /* Each result schedules one interval after the run. */
    assert_int_equal(j->next_due, 9 + 5000);
}

static void test_job_fail_sanitises(void **state)
{
    (void)state;
    assert_int_equal(job_fail(&ctx, "ERROR:  relation \"x\" does not exist\nLINE 1: %d\n", 7),
                     EZ_ERR);
    assert_string_equal(ctx.job_err, "ERROR:  relation 'x' does not exist LINE 1: 7");
    assert_int_equal(job_fail(&ctx, "%s", "\n"), EZ_ERR);
    assert_string_equal(ctx.job_err, "unspecified error");
}

static void test_stop_skips_remaining(void **state)
{
    (void)state;
    ctx.stop = true;
    assert_int_equal(jobs_run_table(table, 3, &ctx, fake_clock), 0);
    assert_int_equal(runs_a, 0);
}

/* ---- reconfiguration ---- */

static void test_reschedule(void **state)
{
    (void)state;
    table[1].interval_ms = iv_from_cfg;
    cfg.quota_reset_interval_seconds = 300;
    jobs_schedule_init(table, 3, &cfg, 100000);
    assert_int_equal(table[1].next_due, 400000);

    /* Unchanged configuration: nothing moves. */
    assert_int_equal(jobs_reschedule(table, 3, &cfg, 150000), 0);
    assert_int_equal(table[1].next_due, 400000);

    /* Shorter interval, never ran: one new interval from now. */
    cfg.quota_reset_interval_seconds = 10;
    assert_int_equal(jobs_reschedule(table, 3, &cfg, 150000), 1);
    assert_int_equal(table[1].cur_interval, 10000);
    assert_int_equal(table[1].next_due, 160000);

    /* Ran at 160000; interval grows: counted from that run. */
    table[1].last_run = 160000;
    table[1].next_due = 170000;
    cfg.quota_reset_interval_seconds = 60;
    assert_int_equal(jobs_reschedule(table, 3, &cfg, 165000), 1);
    assert_int_equal(table[1].next_due, 220000);

    /* Shrinks so that the next run is already overdue: due now, not in the past. */
    cfg.quota_reset_interval_seconds = 1;
    assert_int_equal(jobs_reschedule(table, 3, &cfg, 200000), 1);
    assert_int_equal(table[1].next_due, 200000);

    /* Turned off (0): no longer scheduled. */
    cfg.quota_reset_interval_seconds = 0;
    table[1].next_due = 201000;
    assert_int_equal(jobs_reschedule(table, 3, &cfg, 200500), 1);
    assert_int_equal(table[1].next_due, JOB_NEVER);

    /* A kicked job stays due even when its interval changes. */
    cfg.quota_reset_interval_seconds = 30;
    assert_int_equal(jobs_kick_at(table, 3, "b", 200600), EZ_OK);
    assert_int_equal(jobs_reschedule(table, 3, &cfg, 200700), 1);
    assert_int_equal(table[1].next_due, 200600);
}

/* ---- helpers shared with main: config diff, ipc path ---- */

struct diff_seen {
    int n;
    char names[8][32];
    char olds[8][64];
    char news[8][64];
};

static void collect(const char *name, const char *oldv, const char *newv, void *arg)
{
    struct diff_seen *s = arg;
    if (s->n >= 8)
        return;
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
    snprintf(s->olds[s->n], sizeof(s->olds[0]), "%s", oldv ? oldv : "(none)");
    snprintf(s->news[s->n], sizeof(s->news[0]), "%s", newv ? newv : "(none)");
    s->n++;
}

static void test_config_diff(void **state)
{
    (void)state;
    struct diff_seen s = {0};
    const char *before = "EZ_LOG_LEVEL=info\nEZ_LOG_FLUSH_MS=1000\nEZ_GONE=1\nEZ_SAME=x=y\n";
    const char *after = "EZ_LOG_LEVEL=debug\nEZ_LOG_FLUSH_MS=1000\nEZ_SAME=x=y\nEZ_NEW=2";
    assert_int_equal(bg_config_diff(before, after, collect, &s), 3);
    assert_string_equal(s.names[0], "EZ_LOG_LEVEL");
    assert_string_equal(s.olds[0], "info");
    assert_string_equal(s.news[0], "debug");
    assert_string_equal(s.names[1], "EZ_GONE");
    assert_string_equal(s.news[1], "(none)");
    assert_string_equal(s.names[2], "EZ_NEW");
    assert_string_equal(s.olds[2], "(none)");
    assert_string_equal(s.news[2], "2");

    /* A name that is a prefix of another is not confused with it. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(bg_config_diff("EZ_A=1\nEZ_AB=2\n", "EZ_AB=2\nEZ_A=1\n", collect, &s), 0);
    assert_int_equal(bg_config_diff("", "", collect, &s), 0);
}

static void test_ipc_path(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(zmq_server_ipc_path("ipc:///tmp/x.ipc", out, sizeof(out)), 1);
    assert_string_equal(out, "/tmp/x.ipc");
    assert_int_equal(zmq_server_ipc_path("tcp://127.0.0.1:5555", out, sizeof(out)), 0);
    assert_int_equal(zmq_server_ipc_path("ipc://@abstract", out, sizeof(out)), 0);
    assert_int_equal(zmq_server_ipc_path("ipc://", out, sizeof(out)), -1);
    char longep[300] = "ipc:///";
    memset(longep + 7, 'a', 200);
    longep[207] = '\0';
    assert_int_equal(zmq_server_ipc_path(longep, out, sizeof(out)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_init_schedule, setup),
        cmocka_unit_test_setup(test_wait_ms, setup),
        cmocka_unit_test_setup(test_run_table_runs_due_only, setup),
        cmocka_unit_test_setup(test_next_due_counts_from_end_of_run, setup),
        cmocka_unit_test_setup(test_kick, setup),
        cmocka_unit_test_setup(test_kick_non_periodic, setup),
        cmocka_unit_test_setup(test_kick_during_run, setup),
        cmocka_unit_test_setup(test_failure_retried_at_interval, setup),
        cmocka_unit_test_setup(test_failure_log_levels, setup),
        cmocka_unit_test_setup(test_job_fail_sanitises, setup),
        cmocka_unit_test_setup(test_stop_skips_remaining, setup),
        cmocka_unit_test_setup(test_reschedule, setup),
        cmocka_unit_test_setup(test_config_diff, setup),
        cmocka_unit_test_setup(test_ipc_path, setup),
    };
    return cmocka_run_group_tests_name("jobs", tests, NULL, NULL);
}
