/* Recently spooled batch keys: a ring of entries in insertion order, chained in hash buckets. */
#include "log_dedup.h"

#include <stdlib.h>
#include <string.h>
#include "util.h"

#define NIL UINT32_MAX

struct entry {
    uint8_t key[LOG_DEDUP_KEY_HEX / 2];
    uint64_t seq;
    int64_t added_ms;
    uint32_t next; /* next entry in the same bucket, or NIL */
};

static struct {
    struct entry *ring; /* cap entries; live ones are [head, head + count) modulo cap */
    uint32_t *bucket;   /* nbuckets heads, NIL when empty */
    size_t cap, nbuckets, head, count;
    int64_t ttl_ms;
} D;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Lower-case hex (as ez_sha256_hex writes it) to bytes; false on anything else. */
static bool parse_key(const char *hex, uint8_t out[LOG_DEDUP_KEY_HEX / 2])
{
    for (size_t i = 0; i < LOG_DEDUP_KEY_HEX / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* The key is a hash already: its first bytes spread evenly. */
static size_t bucket_of(const uint8_t *key)
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)(h & (D.nbuckets - 1));
}

void log_dedup_init(size_t cap, int64_t ttl_ms)
{
    memset(&D, 0, sizeof(D));
    D.cap = cap ? cap : 1;
    D.nbuckets = 1;
    while (D.nbuckets < D.cap)
        D.nbuckets <<= 1;
    D.ring = ez_calloc(D.cap, sizeof(*D.ring));
    D.bucket = ez_malloc(D.nbuckets * sizeof(*D.bucket));
    for (size_t i = 0; i < D.nbuckets; i++)
        D.bucket[i] = NIL;
    D.ttl_ms = ttl_ms;
}

void log_dedup_free(void)
{
    free(D.ring);
    free(D.bucket);
    memset(&D, 0, sizeof(D));
}

size_t log_dedup_count(void)
{
    return D.count;
}

/* Unlinks and drops the oldest entry. */
static void evict_oldest(void)
{
    struct entry *e = &D.ring[D.head];
    uint32_t *link = &D.bucket[bucket_of(e->key)];
    while (*link != NIL && *link != (uint32_t)D.head)
        link = &D.ring[*link].next;
    if (*link != NIL)
        *link = e->next;
    D.head = (D.head + 1) % D.cap;
    D.count--;
}

static void expire(int64_t now_ms)
{
    while (D.count > 0 && now_ms - D.ring[D.head].added_ms > D.ttl_ms)
        evict_oldest();
}

bool log_dedup_find(const char *key, int64_t now_ms, uint64_t *seq)
{
    uint8_t k[LOG_DEDUP_KEY_HEX / 2];
    if (D.ring == NULL || !parse_key(key, k))
        return false;
    expire(now_ms);
    for (uint32_t i = D.bucket[bucket_of(k)]; i != NIL; i = D.ring[i].next) {
        if (memcmp(D.ring[i].key, k, sizeof(k)) == 0) {
            *seq = D.ring[i].seq;
            return true;
        }
    }
    return false;
}

void log_dedup_add(const char *key, uint64_t seq, int64_t now_ms)
{
    uint8_t k[LOG_DEDUP_KEY_HEX / 2];
    if (D.ring == NULL || !parse_key(key, k))
        return;
    expire(now_ms);
    if (D.count == D.cap)
        evict_oldest();
    size_t slot = (D.head + D.count) % D.cap;
    struct entry *e = &D.ring[slot];
    memcpy(e->key, k, sizeof(k));
    e->seq = seq;
    e->added_ms = now_ms;
    size_t b = bucket_of(k);
    e->next = D.bucket[b];
    D.bucket[b] = (uint32_t)slot;
    D.count++;
}
