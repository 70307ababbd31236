/*
 * Append-only spool: the log pipeline's durable queue (docs/log-pipeline.md).
 *
 * A spool is a directory of segment files named "spool-<first seq, 20
 * digits>.seg". A segment starts with the 8-byte magic SPOOL_MAGIC, then
 * holds frames:
 *
 *     [u32 length][u32 crc32c][u64 sequence][payload: length bytes]
 *
 * little-endian; the CRC-32C covers the length, the sequence and the
 * payload. Sequences strictly increase across the whole spool. A segment's
 * name is the sequence the spool was at when it was created, so an empty
 * segment still remembers where numbering continues.
 *
 * Pure file logic, no threads: one owner (the background's log sink) calls
 * everything. Appends are buffered by the kernel until spool_sync; the
 * owner acknowledges records only after spool_sync succeeded (group commit).
 */
#ifndef EZ_SPOOL_H
#define EZ_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define SPOOL_MAGIC "EZSPOOL1"
#define SPOOL_MAGIC_LEN 8
#define SPOOL_FRAME_HEADER 16
/* Default rotation size: a new segment starts once the active one has grown past this. */
#define SPOOL_SEGMENT_BYTES (64ULL * 1024 * 1024)
/* The largest payload of one frame; a longer length in a header means a torn or corrupt frame. */
#define SPOOL_MAX_PAYLOAD (1024U * 1024 * 1024)
/*
 * An active segment whose records are all released is replaced by a fresh
 * one once it is this large, so that a restart re-reads little already-written data.
 */
#define SPOOL_RECYCLE_BYTES (1024 * 1024)

struct spool;

struct spool_stats {
    uint64_t bytes;     /* on disk, segment headers included */
    uint64_t segments;  /* files */
    uint64_t fsyncs;    /* fdatasync/fsync calls made by spool_sync and rotation */
    uint64_t truncated; /* bytes cut off torn or corrupt tails at open */
    uint64_t removed;   /* segments deleted by spool_release */
};

/* CRC-32C (Castagnoli), table-driven. Start with crc = 0; chain calls to cover several buffers. */
uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

/*
 * Opens (creating it, mode 0700, when missing) the spool in dir and checks
 * every segment: a frame that is cut short, fails its checksum or breaks
 * the sequence order ends its segment. That tail is logged
 * (event=spool_tail_truncated) and truncated, and reading continues with
 * the next segment. seg_bytes is the rotation size (0 = SPOOL_SEGMENT_BYTES).
 * On error (directory unusable, a file with a segment's name that is not
 * one, I/O error) logs it, writes a short reason into err and returns -1.
 * The caller owns *out (spool_close).
 */
int spool_open(const char *dir, uint64_t seg_bytes, struct spool **out, char *err,
               size_t errlen) EZ_MUSTCHECK;
void spool_close(struct spool *sp);

/* True when the directory held no segment at open: the spool cannot know its sequence yet. */
bool spool_was_fresh(const struct spool *sp);

/*
 * Calls fn for every record with sequence > after_seq, in order. payload is
 * valid during the call only. fn returns 0 to go on, -1 to stop (spool_replay
 * then returns -1). Returns -1 on an I/O error too (logged).
 */
typedef int (*spool_record_fn)(uint64_t seq, const void *payload, size_t len, void *arg);
int spool_replay(struct spool *sp, uint64_t after_seq, spool_record_fn fn, void *arg) EZ_MUSTCHECK;

/* The sequence the next append gets. */
uint64_t spool_next_seq(const struct spool *sp);
/* Makes the next sequence at least next (never lowers it). */
void spool_advance_seq(struct spool *sp, uint64_t next);
/*
 * Makes sure an active segment exists (creating one named after the next
 * sequence, durably: file and directory fsynced), so that the spool
 * remembers its sequence across restarts. 0 ok, -1 (logged).
 */
int spool_begin(struct spool *sp) EZ_MUSTCHECK;

/*
 * Appends one frame with the next sequence (returned in *seq). Rotates to a
 * new segment first when the active one is past the rotation size (the old
 * one is fsynced before). Not durable until spool_sync. On a failed or short
 * write the segment is cut back to where it was and -1 is returned (logged).
 */
int spool_append(struct spool *sp, const void *payload, size_t len, uint64_t *seq) EZ_MUSTCHECK;
/*
 * Makes every append so far durable: fdatasync of the active segment, fsync
 * of the directory when segments were created. 0 ok, -1 (logged): the
 * appends since the previous successful sync are then cut off again (best
 * effort) and the spool refuses further appends (a failed fsync leaves the
 * page cache in an unknown state; only a restart re-reads the truth).
 */
int spool_sync(struct spool *sp) EZ_MUSTCHECK;
/* True once spool_sync failed: appends are refused until the spool is reopened. */
bool spool_is_broken(const struct spool *sp);
/* True when appends were made since the last successful spool_sync. */
bool spool_needs_sync(const struct spool *sp);

/*
 * Records up to upto_seq are safely elsewhere: deletes the segments that
 * hold nothing newer, and recycles the active segment when it is entirely
 * released and past SPOOL_RECYCLE_BYTES. Returns the number of segments
 * deleted, or -1 on an error (logged; the spool stays usable).
 */
int spool_release(struct spool *sp, uint64_t upto_seq);

void spool_get_stats(const struct spool *sp, struct spool_stats *out);

/* Writes the file name of the segment starting at first_seq ("spool-000...1.seg") into out. */
void spool_segment_name(uint64_t first_seq, char *out, size_t outlen);

#endif
