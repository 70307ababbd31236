/*
 * Batch keys the log sink has spooled recently (docs/log-pipeline.md,
 * "Retries"): a batch whose key is known was spooled before, so a second
 * POST of the same body (a data plane retrying after a lost 202, or after a
 * 503 for a batch the background had spooled just before it died) is
 * acknowledged without being stored twice. The key is the first 16 bytes of
 * the SHA-256 of the request body, as 32 hex digits.
 *
 * Bounded: at most LOG_DEDUP_CAP keys, each for at most LOG_DEDUP_TTL_MS;
 * the oldest go first. Loop thread only.
 */
#ifndef EZ_LOG_DEDUP_H
#define EZ_LOG_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "logrec.h"

#define LOG_DEDUP_KEY_HEX LOGREC_BATCH_KEY_HEX
#define LOG_DEDUP_CAP 131072
#define LOG_DEDUP_TTL_MS (10 * 60 * 1000)

/* Sets up an empty table for cap keys kept ttl_ms (the tests use small ones). */
void log_dedup_init(size_t cap, int64_t ttl_ms);
void log_dedup_free(void);
/* True when key (LOG_DEDUP_KEY_HEX hex digits) is known and younger than the TTL; *seq its batch.
 */
bool log_dedup_find(const char *key, int64_t now_ms, uint64_t *seq);
/* Remembers key for the batch seq (evicting the oldest key when full). Ignored if not hex. */
void log_dedup_add(const char *key, uint64_t seq, int64_t now_ms);
/* Keys held (for the metrics). */
size_t log_dedup_count(void);

#endif
