/* Small shared helpers: allocation that aborts on OOM, a growable buffer, time. */
#ifndef EZ_UTIL_H
#define EZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define EZ_OK 0
#define EZ_ERR (-1)
#define EZ_MUSTCHECK __attribute__((warn_unused_result))
#define EZ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define EZ_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Out-of-memory policy (decided once, here): the worker and the daemon are
 * supervised processes, so an allocation failure logs and aborts, as Redis'
 * zmalloc does. Callers never check these for NULL.
 */
void *ez_malloc(size_t n);
void *ez_calloc(size_t n, size_t size);
void *ez_realloc(void *p, size_t n);
char *ez_strdup(const char *s);
char *ez_strndup(const char *s, size_t n);

/* Growable byte buffer, always NUL-terminated. The owner calls buf_free. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

void buf_init(buf_t *b);
void buf_free(buf_t *b);
void buf_reset(buf_t *b);
void buf_append(buf_t *b, const void *data, size_t n);
void buf_puts(buf_t *b, const char *s);
void buf_printf(buf_t *b, const char *fmt, ...) EZ_PRINTF(2, 3);
/* Hands the data to the caller (who frees it) and leaves b empty. */
char *buf_steal(buf_t *b);

/* Wall clock and monotonic time. */
int64_t ez_now_unix(void);
int64_t ez_now_ms(void);
int64_t ez_mono_us(void);
/* RFC 3339 UTC ("2026-01-03T09:07:57Z") of a unix time, into out (>= 32 bytes). */
void ez_format_time(int64_t unix_secs, char *out, size_t outlen);
/* Largest unix time accepted anywhere (9999-12-31T23:59:59Z). */
#define EZ_MAX_UNIX 253402300799LL
/*
 * Parses RFC 3339 (Z or offset, optional fraction, real calendar dates) or
 * unix seconds, between 1970 and EZ_MAX_UNIX. 0 ok, -1 bad.
 */
int ez_parse_time(const char *s, int64_t *out_unix) EZ_MUSTCHECK;
/* The same, keeping the fraction: microseconds since the epoch. */
int ez_parse_time_us(const char *s, int64_t *out_us) EZ_MUSTCHECK;

/* Strict decimal integer parse of the whole string, with bounds. 0 ok, -1 bad. */
int ez_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out) EZ_MUSTCHECK;

/* True when s is valid UTF-8 of length n with no NUL byte. */
bool ez_utf8_valid(const char *s, size_t n);

#endif
