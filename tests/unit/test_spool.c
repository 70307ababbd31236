/* Unit tests for the log spool: framing, CRC-32C, replay after a position, torn tails, rotation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"
#include "spool.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    ez_log_min_level = EZ_LOG_ERROR; /* the truncation warnings are expected */
    snprintf(dir, sizeof(dir), "%s/ezspool-test.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    if (d) {
        for (struct dirent *e = readdir(d); e; e = readdir(d)) {
            if (e->d_name[0] == '.')
                continue;
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
    return 0;
}

static void seg_file(uint64_t first, char *out, size_t len)
{
    char name[64];
    spool_segment_name(first, name, sizeof(name));
    snprintf(out, len, "%s/%s", dir, name);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static int count_segments(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e = readdir(d); e; e = readdir(d))
        if (strncmp(e->d_name, "spool-", 6) == 0)
            n++;
    closedir(d);
    return n;
}

static struct spool *open_ok(uint64_t seg_bytes)
{
    struct spool *sp = NULL;
    char err[256] = "";
    assert_int_equal(spool_open(dir, seg_bytes, &sp, err, sizeof(err)), 0);
    assert_non_null(sp);
    return sp;
}

static uint64_t append_str(struct spool *sp, const char *s)
{
    uint64_t seq = 0;
    assert_int_equal(spool_append(sp, s, strlen(s), &seq), 0);
    return seq;
}

/* Replay collector: sequences and payloads, concatenated as "seq:payload;". */
struct seen {
    int n;
    char text[8192];
    uint64_t seqs[64];
};

static int collect(uint64_t seq, const void *payload, size_t len, void *arg)
{
    struct seen *s = arg;
    size_t used = strlen(s->text);
    snprintf(s->text + used, sizeof(s->text) - used, "%llu:%.*s;", (unsigned long long)seq,
             (int)len, (const char *)payload);
    if (s->n < 64)
        s->seqs[s->n] = seq;
    s->n++;
    return 0;
}

static void replay(struct spool *sp, uint64_t after, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(spool_replay(sp, after, collect, s), 0);
}

/* ---- CRC ---- */

static void test_crc32c_vectors(void **state)
{
    (void)state;
    /* The standard check value of CRC-32C (iSCSI, RFC 3720 appendix B.4). */
    assert_int_equal(spool_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(spool_crc32c(0, "", 0), 0);
    unsigned char zeros[32] = {0};
    assert_int_equal(spool_crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
    /* Chaining over pieces equals one pass. */
    uint32_t c = spool_crc32c(0, "1234", 4);
    c = spool_crc32c(c, "56789", 5);
    assert_int_equal(c, 0xE3069283u);
}

/* ---- framing ---- */

static void test_frame_layout(void **state)
{
    (void)state;
    struct spool *sp = open_ok(0);
    assert_true(spool_was_fresh(sp));
    assert_int_equal(spool_next_seq(sp), 1);
    assert_int_equal(append_str(sp, "hello"), 1);
    assert_true(spool_needs_sync(sp));
    assert_int_equal(spool_sync(sp), 0);
    assert_false(spool_needs_sync(sp));
    spool_close(sp);

    char path[512];
    seg_file(1, path, sizeof(path));
    assert_int_equal(file_size(path), SPOOL_MAGIC_LEN + SPOOL_FRAME_HEADER + 5);
    unsigned char b[64];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(b, 1, sizeof(b), f), SPOOL_MAGIC_LEN + SPOOL_FRAME_HEADER + 5);
    fclose(f);
    assert_memory_equal(b, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
    const unsigned char *h = b + SPOOL_MAGIC_LEN;
    /* [u32 length][u32 crc32c][u64 sequence], little-endian */
    assert_int_equal(h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24, 5);
    uint64_t seq = 0;
    for (int i = 7; i >= 0; i--)
        seq = seq << 8 | h[8 + i];
    assert_int_equal(seq, 1);
    uint32_t crc = spool_crc32c(0, h, 4);
    crc = spool_crc32c(crc, h + 8, 8);
    crc = spool_crc32c(crc, "hello", 5);
    assert_int_equal(h[4] | h[5] << 8 | h[6] << 16 | (uint32_t)h[7] << 24, crc);
    assert_memory_equal(h + SPOOL_FRAME_HEADER, "hello", 5);
}

static void test_roundtrip_and_replay_after(void **state)
{
    (void)state;
    struct spool *sp = open_ok(0);
    assert_int_equal(spool_begin(sp), 0);
    assert_int_equal(append_str(sp, "a"), 1);
    assert_int_equal(append_str(sp, "bb"), 2);
    assert_int_equal(append_str(sp, ""), 3); /* an empty payload is a valid frame */
    assert_int_equal(append_str(sp, "dddd"), 4);
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);

    sp = open_ok(0);
    assert_false(spool_was_fresh(sp));
    assert_int_equal(spool_next_seq(sp), 5);
    struct seen s;
    replay(sp, 0, &s);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.text, "1:a;2:bb;3:;4:dddd;");
    replay(sp, 2, &s);
    assert_string_equal(s.text, "3:;4:dddd;");
    replay(sp, 4, &s);
    assert_int_equal(s.n, 0);
    replay(sp, 99, &s);
    assert_int_equal(s.n, 0);
    /* Appends continue the sequence after a reopen. */
    assert_int_equal(append_str(sp, "e"), 5);
    assert_int_equal(spool_sync(sp), 0);
    replay(sp, 3, &s);
    assert_string_equal(s.text, "4:dddd;5:e;");
    spool_close(sp);
}

/* A callback returning -1 stops the replay. */
static int stop_at_two(uint64_t seq, const void *payload, size_t len, void *arg)
{
    (void)payload;
    (void)len;
    (*(int *)arg)++;
    return seq >= 2 ? -1 : 0;
}

static void test_replay_stops_on_callback_error(void **state)
{
    (void)state;
    struct spool *sp = open_ok(0);
    for (int i = 0; i < 4; i++)
        append_str(sp, "x");
    assert_int_equal(spool_sync(sp), 0);
    int calls = 0;
    assert_int_equal(spool_replay(sp, 0, stop_at_two, &calls), -1);
    assert_int_equal(calls, 2);
    spool_close(sp);
}

/* ---- torn and corrupt tails ---- */

static void write_three(void)
{
    struct spool *sp = open_ok(0);
    append_str(sp, "first-record");
    append_str(sp, "second-record");
    append_str(sp, "third-record");
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);
}

static void test_torn_tail_short_payload(void **state)
{
    (void)state;
    write_three();
    char path[512];
    seg_file(1, path, sizeof(path));
    off_t full = file_size(path);
    /* The crash cut the third frame's payload. */
    assert_int_equal(truncate(path, full - 5), 0);

    struct spool *sp = open_ok(0);
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.truncated, SPOOL_FRAME_HEADER + strlen("third-record") - 5);
    assert_int_equal(file_size(path), full - SPOOL_FRAME_HEADER - (off_t)strlen("third-record"));
    assert_int_equal(spool_next_seq(sp), 3);
    struct seen s;
    replay(sp, 0, &s);
    assert_string_equal(s.text, "1:first-record;2:second-record;");
    /* The next append lands on the frame boundary and is read back. */
    assert_int_equal(append_str(sp, "new-third"), 3);
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);
    sp = open_ok(0);
    spool_get_stats(sp, &st);
    assert_int_equal(st.truncated, 0);
    replay(sp, 1, &s);
    assert_string_equal(s.text, "2:second-record;3:new-third;");
    spool_close(sp);
}

static void test_torn_tail_short_header(void **state)
{
    (void)state;
    write_three();
    char path[512];
    seg_file(1, path, sizeof(path));
    off_t full = file_size(path);
    /* Half a frame header after the last frame. */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x05\x00\x00\x00\xaa\xbb", 6), 6);
    close(fd);

    struct spool *sp = open_ok(0);
    assert_int_equal(file_size(path), full);
    assert_int_equal(spool_next_seq(sp), 4);
    struct seen s;
    replay(sp, 0, &s);
    assert_int_equal(s.n, 3);
    spool_close(sp);
}

static void test_corrupt_checksum_ends_segment(void **state)
{
    (void)state;
    write_three();
    char path[512];
    seg_file(1, path, sizeof(path));
    /* Flip one byte inside the second frame's payload. */
    off_t second = SPOOL_MAGIC_LEN + SPOOL_FRAME_HEADER + (off_t)strlen("first-record");
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, second + SPOOL_FRAME_HEADER + 3), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, second + SPOOL_FRAME_HEADER + 3), 1);
    close(fd);

    struct spool *sp = open_ok(0);
    assert_int_equal(file_size(path), second);
    struct seen s;
    replay(sp, 0, &s);
    assert_string_equal(s.text, "1:first-record;");
    assert_int_equal(spool_next_seq(sp), 2);
    spool_close(sp);
}

/* A frame whose length field is absurd (garbage after a crash) is a torn tail, not an allocation.
 */
static void test_corrupt_length_field(void **state)
{
    (void)state;
    write_three();
    char path[512];
    seg_file(1, path, sizeof(path));
    off_t full = file_size(path);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    unsigned char junk[SPOOL_FRAME_HEADER + 4];
    memset(junk, 0xff, sizeof(junk));
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    struct spool *sp = open_ok(0);
    assert_int_equal(file_size(path), full);
    assert_int_equal(spool_next_seq(sp), 4);
    spool_close(sp);
}

/* Writes a hand-made frame, as the spool would, for sequences it would never produce. */
static void put_frame(int fd, uint64_t seq, const char *payload)
{
    unsigned char h[SPOOL_FRAME_HEADER];
    uint32_t len = (uint32_t)strlen(payload);
    for (int i = 0; i < 4; i++)
        h[i] = (unsigned char)(len >> (8 * i));
    for (int i = 0; i < 8; i++)
        h[8 + i] = (unsigned char)(seq >> (8 * i));
    uint32_t crc = spool_crc32c(0, h, 4);
    crc = spool_crc32c(crc, h + 8, 8);
    crc = spool_crc32c(crc, payload, len);
    for (int i = 0; i < 4; i++)
        h[4 + i] = (unsigned char)(crc >> (8 * i));
    assert_int_equal(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
    assert_int_equal(write(fd, payload, len), (ssize_t)len);
}

static void test_sequence_out_of_order_truncated(void **state)
{
    (void)state;
    char path[512];
    seg_file(1, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, SPOOL_MAGIC, SPOOL_MAGIC_LEN), SPOOL_MAGIC_LEN);
    put_frame(fd, 5, "five");
    put_frame(fd, 7, "seven");
    put_frame(fd, 6, "six"); /* valid checksum, but going backwards */
    close(fd);
    struct spool *sp = open_ok(0);
    struct seen s;
    replay(sp, 0, &s);
    assert_string_equal(s.text, "5:five;7:seven;");
    assert_int_equal(spool_next_seq(sp), 8);
    spool_close(sp);
}

static void test_torn_segment_header_repaired(void **state)
{
    (void)state;
    char path[512];
    seg_file(42, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "EZS", 3), 3);
    close(fd);
    struct spool *sp = open_ok(0);
    assert_false(spool_was_fresh(sp));
    assert_int_equal(spool_next_seq(sp), 42); /* the name still tells the sequence */
    assert_int_equal(file_size(path), SPOOL_MAGIC_LEN);
    assert_int_equal(append_str(sp, "x"), 42);
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);
}

static void test_foreign_file_refused(void **state)
{
    (void)state;
    char path[512];
    seg_file(1, path, sizeof(path));
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("NOTSPOOL and some text that is not ours", f);
    fclose(f);
    struct spool *sp = NULL;
    char err[256] = "";
    assert_int_equal(spool_open(dir, 0, &sp, err, sizeof(err)), -1);
    assert_null(sp);
    assert_non_null(strstr(err, "not a spool segment"));
    /* Untouched. */
    assert_int_equal(file_size(path), (off_t)strlen("NOTSPOOL and some text that is not ours"));
}

static void test_other_files_ignored(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/README", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("notes", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/spool-12.seg", dir); /* not 20 digits */
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    struct spool *sp = open_ok(0);
    assert_true(spool_was_fresh(sp));
    spool_close(sp);
}

/* ---- sequence bookkeeping ---- */

static void test_advance_seq_and_begin(void **state)
{
    (void)state;
    struct spool *sp = open_ok(0);
    assert_true(spool_was_fresh(sp));
    spool_advance_seq(sp, 1000);
    spool_advance_seq(sp, 10); /* never lowers */
    assert_int_equal(spool_next_seq(sp), 1000);
    assert_int_equal(spool_begin(sp), 0);
    assert_int_equal(spool_begin(sp), 0); /* idempotent */
    spool_close(sp);
    assert_int_equal(count_segments(), 1);

    /* An empty segment remembers where numbering continues. */
    sp = open_ok(0);
    assert_false(spool_was_fresh(sp));
    assert_int_equal(spool_next_seq(sp), 1000);
    assert_int_equal(append_str(sp, "x"), 1000);
    spool_close(sp);
}

/* ---- rotation and release ---- */

static void test_rotation_and_release(void **state)
{
    (void)state;
    /* Tiny segments: every frame of 40 bytes pushes the segment past 50 bytes. */
    struct spool *sp = open_ok(50);
    char payload[41];
    memset(payload, 'p', 40);
    payload[40] = '\0';
    for (int i = 1; i <= 5; i++)
        assert_int_equal(append_str(sp, payload), (uint64_t)i);
    assert_int_equal(spool_sync(sp), 0);
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.segments, 5);
    assert_int_equal(count_segments(), 5);
    assert_int_equal(st.bytes, 5 * (SPOOL_MAGIC_LEN + SPOOL_FRAME_HEADER + 40));

    struct seen s;
    replay(sp, 2, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.seqs[0], 3);
    assert_int_equal(s.seqs[2], 5);

    /* Written up to 3: the segments of 1, 2 and 3 go; 4 and the active 5 stay. */
    assert_int_equal(spool_release(sp, 3), 3);
    assert_int_equal(count_segments(), 2);
    /* Everything written: the active segment is small, so it is kept (it holds the sequence). */
    assert_int_equal(spool_release(sp, 5), 1);
    assert_int_equal(count_segments(), 1);
    spool_close(sp);

    sp = open_ok(50);
    assert_int_equal(spool_next_seq(sp), 6);
    replay(sp, 5, &s);
    assert_int_equal(s.n, 0);
    replay(sp, 0, &s);
    assert_string_equal(s.text, "5:pppppppppppppppppppppppppppppppppppppppp;");
    spool_close(sp);
}

static void test_recycle_active_segment(void **state)
{
    (void)state;
    struct spool *sp = open_ok(0);
    size_t big = SPOOL_RECYCLE_BYTES / 2 + 1;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, 'r', big);
    uint64_t seq;
    assert_int_equal(spool_append(sp, p, big, &seq), 0);
    assert_int_equal(spool_append(sp, p, big, &seq), 0);
    free(p);
    assert_int_equal(seq, 2);
    /* Not yet synced: never recycle under unsynced frames. */
    assert_int_equal(spool_release(sp, 2), 0);
    assert_int_equal(spool_sync(sp), 0);
    /* Partly written: kept. */
    assert_int_equal(spool_release(sp, 1), 0);
    assert_int_equal(count_segments(), 1);
    /* All written and large: replaced by an empty segment named after the next sequence. */
    assert_int_equal(spool_release(sp, 2), 1);
    assert_int_equal(count_segments(), 1);
    char path[512];
    seg_file(3, path, sizeof(path));
    assert_int_equal(file_size(path), SPOOL_MAGIC_LEN);
    assert_int_equal(append_str(sp, "after"), 3);
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);
    sp = open_ok(0);
    struct seen s;
    replay(sp, 0, &s);
    assert_string_equal(s.text, "3:after;");
    spool_close(sp);
}

/* A torn tail in a middle segment (disk trouble) costs that tail only; later segments replay. */
static void test_corrupt_middle_segment(void **state)
{
    (void)state;
    struct spool *sp = open_ok(50);
    char payload[41];
    memset(payload, 'q', 40);
    payload[40] = '\0';
    for (int i = 1; i <= 3; i++)
        append_str(sp, payload);
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);
    char path[512];
    seg_file(2, path, sizeof(path));
    assert_int_equal(truncate(path, SPOOL_MAGIC_LEN + 10), 0);
    sp = open_ok(50);
    struct seen s;
    replay(sp, 0, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seqs[0], 1);
    assert_int_equal(s.seqs[1], 3);
    assert_int_equal(spool_next_seq(sp), 4);
    spool_close(sp);
}

static void test_missing_dir_created(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/a", dir);
    char deep[600];
    snprintf(deep, sizeof(deep), "%s/b", sub);
    struct spool *sp = NULL;
    char err[256];
    assert_int_equal(spool_open(deep, 0, &sp, err, sizeof(err)), 0);
    assert_int_equal(append_str(sp, "x"), 1);
    assert_int_equal(spool_sync(sp), 0);
    spool_close(sp);
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    /* clean up the nested dirs for teardown */
    char seg[700];
    spool_segment_name(1, seg, sizeof(seg));
    char segpath[1400];
    snprintf(segpath, sizeof(segpath), "%s/%s", deep, seg);
    unlink(segpath);
    rmdir(deep);
    rmdir(sub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crc32c_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frame_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_and_replay_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_stops_on_callback_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_short_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_short_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_checksum_ends_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_length_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_out_of_order_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_segment_header_repaired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_files_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_advance_seq_and_begin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_and_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recycle_active_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_middle_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_dir_created, setup, teardown),
    };
    return cmocka_run_group_tests_name("spool", tests, NULL, NULL);
}
