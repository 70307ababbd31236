/*
 * Unit tests for the log writer's queue (background/log_writer.c): what the
 * loop may take back, what the writer may write, the drain bound. No
 * database: the writer's DSN points at a closed port.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../background/log_writer.h"
#include "log.h"
#include "util.h"

/* Port 1 on loopback: connection refused at once, so every write fails fast. */
#define DEAD_DSN "host=127.0.0.1 port=1 dbname=none connect_timeout=1"

static int setup(void **state)
{
    (void)state;
    ez_log_min_level = EZ_LOG_ERROR; /* the refused connections would log at warn */
    log_writer_init(DEAD_DSN, "/nonexistent");
    log_writer_settings(1000, 60000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    log_writer_free();
    return 0;
}

/* A batch of n rows ("r\n" each), owned by the queue once pushed. */
static void push(uint64_t seq, uint32_t n)
{
    char *rows = ez_malloc(2 * (size_t)n);
    for (uint32_t i = 0; i < n; i++)
        memcpy(rows + 2 * i, "r\n", 2);
    log_writer_push(seq, n, rows, 2 * (size_t)n, 0);
}

static void assert_queued(uint64_t rows, uint64_t batches)
{
    struct log_writer_status st;
    log_writer_status(&st);
    assert_int_equal(st.queued_rows, rows);
    assert_int_equal(st.queued_batches, batches);
    assert_int_equal(log_writer_queued_rows(), rows);
}

static void test_unpush_takes_back_only_unsynced(void **state)
{
    (void)state;
    push(1, 3);
    push(2, 4);
    log_writer_synced();
    push(3, 5);
    push(4, 6);
    assert_queued(18, 4);
    /* A failed fsync takes back the turn's batches; asking for more never reaches synced ones. */
    log_writer_unpush(10);
    assert_queued(7, 2);
    log_writer_unpush(1);
    assert_queued(7, 2);
}

static void test_unpush_then_push_again(void **state)
{
    (void)state;
    push(1, 2);
    log_writer_unpush(1);
    assert_queued(0, 0);
    push(2, 3);
    log_writer_synced();
    push(3, 1);
    log_writer_unpush(1);
    assert_queued(3, 1);
}

static void test_queue_grows_past_initial_capacity(void **state)
{
    (void)state;
    for (uint64_t s = 1; s <= 500; s++)
        push(s, 1);
    log_writer_synced();
    for (uint64_t s = 501; s <= 700; s++)
        push(s, 2);
    assert_queued(900, 700);
    log_writer_unpush(200);
    assert_queued(500, 500);
}

static void test_stop_without_start_keeps_the_queue(void **state)
{
    (void)state;
    push(1, 4);
    log_writer_synced();
    assert_int_equal(log_writer_stop(0), 4);
}

/* The writer cannot reach its database: the drain gives up at its bound, nothing is dropped. */
static void test_drain_gives_up_with_the_database_down(void **state)
{
    (void)state;
    assert_int_equal(log_writer_start(), 0);
    push(1, 5);
    push(2, 7);
    log_writer_synced();
    assert_int_equal(log_writer_stop(300), 12);
    struct log_writer_status st;
    log_writer_status(&st);
    assert_int_equal(st.written, 0);
    assert_int_equal(st.written_upto, 0);
    assert_false(st.schema_bad);
}

/* Started and stopped with nothing queued: the thread leaves at once. */
static void test_start_stop_empty(void **state)
{
    (void)state;
    assert_int_equal(log_writer_start(), 0);
    log_writer_settings(10, 5);
    assert_int_equal(log_writer_stop(10000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unpush_takes_back_only_unsynced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unpush_then_push_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_grows_past_initial_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_without_start_keeps_the_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_gives_up_with_the_database_down, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_stop_empty, setup, teardown),
    };
    return cmocka_run_group_tests_name("log_writer", tests, NULL, NULL);
}
