/* Unit tests for the batch-key table of the log sink (background/log_dedup.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../background/log_dedup.h"

/* A distinct valid key per i (32 lower-case hex digits). */
static const char *key_of(unsigned i, char buf[LOG_DEDUP_KEY_HEX + 1])
{
    snprintf(buf, LOG_DEDUP_KEY_HEX + 1, "%08x%08x%08x%08x", i * 2654435761u, i, ~i,
             i ^ 0x5a5a5a5au);
    return buf;
}

static int teardown(void **state)
{
    (void)state;
    log_dedup_free();
    return 0;
}

static void test_add_then_find(void **state)
{
    (void)state;
    char k[LOG_DEDUP_KEY_HEX + 1], other[LOG_DEDUP_KEY_HEX + 1];
    uint64_t seq = 0;
    log_dedup_init(16, 1000);
    assert_false(log_dedup_find(key_of(1, k), 0, &seq));
    log_dedup_add(key_of(1, k), 42, 0);
    assert_true(log_dedup_find(key_of(1, k), 10, &seq));
    assert_int_equal(seq, 42);
    assert_false(log_dedup_find(key_of(2, other), 10, &seq));
    assert_int_equal(log_dedup_count(), 1);
}

static void test_not_hex_is_ignored(void **state)
{
    (void)state;
    uint64_t seq;
    log_dedup_init(16, 1000);
    log_dedup_add("ABCDEF0123456789ABCDEF0123456789", 1, 0); /* upper case: not ours */
    log_dedup_add("0123456789abcdef0123456789abcde", 2, 0);  /* too short */
    assert_int_equal(log_dedup_count(), 0);
    assert_false(log_dedup_find("zz23456789abcdef0123456789abcdef", 0, &seq));
}

static void test_keys_expire_after_the_ttl(void **state)
{
    (void)state;
    char k[LOG_DEDUP_KEY_HEX + 1];
    uint64_t seq;
    log_dedup_init(16, 1000);
    log_dedup_add(key_of(1, k), 1, 0);
    log_dedup_add(key_of(2, k), 2, 600);
    assert_true(log_dedup_find(key_of(1, k), 1000, &seq));
    assert_false(log_dedup_find(key_of(1, k), 1001, &seq));
    assert_true(log_dedup_find(key_of(2, k), 1001, &seq));
    assert_int_equal(seq, 2);
    assert_int_equal(log_dedup_count(), 1);
}

/* Full: the oldest go first; every key still held is found, whatever bucket it shares. */
static void test_capacity_evicts_the_oldest(void **state)
{
    (void)state;
    char k[LOG_DEDUP_KEY_HEX + 1];
    uint64_t seq;
    log_dedup_init(100, 1000000);
    for (unsigned i = 0; i < 1000; i++)
        log_dedup_add(key_of(i, k), i, i);
    assert_int_equal(log_dedup_count(), 100);
    for (unsigned i = 0; i < 900; i++)
        assert_false(log_dedup_find(key_of(i, k), 1000, &seq));
    for (unsigned i = 900; i < 1000; i++) {
        assert_true(log_dedup_find(key_of(i, k), 1000, &seq));
        assert_int_equal(seq, i);
    }
}

/* Keys in one bucket (same first 8 bytes): chains survive evictions in any order. */
static void test_colliding_keys(void **state)
{
    (void)state;
    char k[LOG_DEDUP_KEY_HEX + 1];
    uint64_t seq;
    log_dedup_init(4, 1000000);
    for (unsigned i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "0000000000000000%016x", i);
        log_dedup_add(k, i, i);
    }
    for (unsigned i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "0000000000000000%016x", i);
        assert_int_equal(log_dedup_find(k, 10, &seq), i >= 6);
        if (i >= 6)
            assert_int_equal(seq, i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_add_then_find, teardown),
        cmocka_unit_test_teardown(test_not_hex_is_ignored, teardown),
        cmocka_unit_test_teardown(test_keys_expire_after_the_ttl, teardown),
        cmocka_unit_test_teardown(test_capacity_evicts_the_oldest, teardown),
        cmocka_unit_test_teardown(test_colliding_keys, teardown),
    };
    return cmocka_run_group_tests_name("log_dedup", tests, NULL, NULL);
}
