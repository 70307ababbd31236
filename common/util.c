/* Allocation, buffers, time and parsing helpers shared by both binaries. */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *ez_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *ez_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *ez_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *ez_strdup(const char *s)
{
    return ez_strndup(s, strlen(s));
}

char *ez_strndup(const char *s, size_t n)
{
    char *p = ez_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void buf_init(buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_free(buf_t *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static void buf_reserve(buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = ez_realloc(b->data, cap);
    b->cap = cap;
}

void buf_append(buf_t *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(buf_t *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        buf_append(b, tmp, (size_t)n);
    } else {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

char *buf_steal(buf_t *b)
{
    char *p = b->data ? b->data : ez_strdup("");
    buf_init(b);
    return p;
}

int64_t ez_now_unix(void)
{
    return (int64_t)time(NULL);
}

int64_t ez_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ez_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void ez_format_time(int64_t unix_secs, char *out, size_t outlen)
{
    time_t t = (time_t)unix_secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int ez_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return EZ_ERR;
    /* strtoll accepts leading blanks and '+': an id or a count from the outside must not. */
    if (!(*s == '-' || (*s >= '0' && *s <= '9')))
        return EZ_ERR;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || end == s || *end != '\0')
        return EZ_ERR;
    if (v < min || v > max)
        return EZ_ERR;
    *out = (int64_t)v;
    return EZ_OK;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian); avoids timegm's TZ dependence. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int take_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return EZ_ERR;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return EZ_OK;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* The fraction after the seconds, as microseconds (digits past the 6th are dropped). */
static int take_fraction(const char **pp, int64_t *frac_us)
{
    const char *p = *pp;
    *frac_us = 0;
    if (*p != '.')
        return EZ_OK;
    p++;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (nd < 6)
            *frac_us = *frac_us * 10 + (*p - '0');
        nd++;
        p++;
    }
    if (nd == 0 || nd > 9)
        return EZ_ERR;
    for (int k = nd; k < 6; k++)
        *frac_us *= 10;
    *pp = p;
    return EZ_OK;
}

/* "Z", "+HH:MM" or "-HH:MM" ending the string, as seconds east of UTC. */
static int take_offset(const char *p, int64_t *offset)
{
    *offset = 0;
    if ((p[0] == 'Z' || p[0] == 'z') && p[1] == '\0')
        return EZ_OK;
    int oh, om;
    if ((*p != '+' && *p != '-') || strlen(p) != 6 || p[3] != ':' || take_digits(p + 1, 2, &oh) ||
        take_digits(p + 4, 2, &om) || oh > 23 || om > 59)
        return EZ_ERR;
    *offset = (int64_t)(oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
    return EZ_OK;
}

int ez_parse_time_us(const char *s, int64_t *out_us)
{
    size_t n = strlen(s);
    if (n == 0)
        return EZ_ERR;
    if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == n) {
        int64_t secs;
        if (n > 12 || ez_parse_int64(s, 0, EZ_MAX_UNIX, &secs) != EZ_OK)
            return EZ_ERR;
        *out_us = secs * 1000000;
        return EZ_OK;
    }
    /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
    int Y, M, D, h, m, sec;
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        s[13] != ':' || s[16] != ':')
        return EZ_ERR;
    if (take_digits(s, 4, &Y) || take_digits(s + 5, 2, &M) || take_digits(s + 8, 2, &D) ||
        take_digits(s + 11, 2, &h) || take_digits(s + 14, 2, &m) || take_digits(s + 17, 2, &sec))
        return EZ_ERR;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || (M == 2 && D == 29 && !leap(Y)) || h > 23 ||
        m > 59 || sec > 60)
        return EZ_ERR;
    const char *p = s + 19;
    int64_t frac_us, offset;
    if (take_fraction(&p, &frac_us) != EZ_OK || take_offset(p, &offset) != EZ_OK)
        return EZ_ERR;
    int64_t secs = days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + sec - offset;
    if (secs < 0 || secs > EZ_MAX_UNIX)
        return EZ_ERR;
    *out_us = secs * 1000000 + frac_us;
    return EZ_OK;
}

int ez_parse_time(const char *s, int64_t *out_unix)
{
    int64_t us;
    if (ez_parse_time_us(s, &us) != EZ_OK)
        return EZ_ERR;
    *out_unix = us / 1000000;
    return EZ_OK;
}

bool ez_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are invalid. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}
