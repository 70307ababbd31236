/* Append-only spool of checksummed, sequenced frames in rotating segment files (see spool.h). */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include "log.h"

#define SEG_PREFIX "spool-"
#define SEG_SUFFIX ".seg"
#define SEG_DIGITS 20
#define SEG_NAME_LEN (sizeof(SEG_PREFIX) - 1 + SEG_DIGITS + sizeof(SEG_SUFFIX) - 1)

struct spool_seg {
    uint64_t first_seq; /* from the file name */
    uint64_t last_seq;  /* sequence of its last frame; 0 when it has none */
    uint64_t size;      /* bytes, magic included */
};

struct spool {
    char *dir;
    int dirfd;
    uint64_t seg_bytes;
    struct spool_seg *segs; /* sorted by first_seq; the last one is the active segment */
    size_t nsegs, cap;
    int fd;               /* the active segment, or -1 when there is none */
    uint64_t synced_size; /* size of the active segment at the last successful sync */
    bool fd_dirty;        /* the active segment has data not yet fdatasync'ed */
    bool dir_dirty;       /* segments were created since the directory was last fsynced */
    bool fresh;
    bool broken;
    uint64_t next_seq;
    struct spool_stats st;
};

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- little helpers ---- */

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The checksum of a frame: its length and sequence fields, then the payload. */
static uint32_t frame_crc(const unsigned char *hdr, const void *payload, size_t len)
{
    uint32_t crc = spool_crc32c(0, hdr, 4);
    crc = spool_crc32c(crc, hdr + 8, 8);
    return spool_crc32c(crc, payload, len);
}

/* pread of exactly n bytes: 0 ok, -1 error (errno set; EIO-like 0 for a short file). */
static int read_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return EZ_ERR;
        }
        if (r == 0) {
            errno = ENODATA;
            return EZ_ERR;
        }
        got += (size_t)r;
    }
    return EZ_OK;
}

/* pwritev of the whole iovec (two parts at most here). 0 ok, -1 error. */
static int write_full(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return EZ_ERR;
        }
        if (w == 0) {
            errno = EIO;
            return EZ_ERR;
        }
        off += (uint64_t)w;
        size_t left = (size_t)w;
        while (n > 0 && left >= iov[0].iov_len) {
            left -= iov[0].iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov[0].iov_base = (char *)iov[0].iov_base + left;
            iov[0].iov_len -= left;
        }
    }
    return EZ_OK;
}

void spool_segment_name(uint64_t first_seq, char *out, size_t outlen)
{
    snprintf(out, outlen, SEG_PREFIX "%020llu" SEG_SUFFIX, (unsigned long long)first_seq);
}

/* "spool-<20 digits>.seg" -> 0 with *seq; -1 for any other name. */
static int parse_segment_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != SEG_NAME_LEN || strncmp(name, SEG_PREFIX, sizeof(SEG_PREFIX) - 1) != 0 ||
        strcmp(name + SEG_NAME_LEN - (sizeof(SEG_SUFFIX) - 1), SEG_SUFFIX) != 0)
        return EZ_ERR;
    uint64_t v = 0;
    const char *d = name + sizeof(SEG_PREFIX) - 1;
    for (int i = 0; i < SEG_DIGITS; i++) {
        if (d[i] < '0' || d[i] > '9')
            return EZ_ERR;
        uint64_t nv = v * 10 + (uint64_t)(d[i] - '0');
        if (nv / 10 != v)
            return EZ_ERR; /* overflow */
        v = nv;
    }
    *seq = v;
    return EZ_OK;
}

static void seg_path(const struct spool *sp, uint64_t first_seq, char *out, size_t outlen)
{
    char name[64];
    spool_segment_name(first_seq, name, sizeof(name));
    snprintf(out, outlen, "%s/%s", sp->dir, name);
}

/* "<what>: <strerror(e)>" into err (when given). */
static void EZ_PRINTF(4, 5) set_err(char *err, size_t errlen, int e, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s", tmp, strerror(e));
}

/* mkdir -p with mode 0700 for the parts it creates. */
static int make_dirs(const char *dir)
{
    char *p = ez_strdup(dir);
    int rc = EZ_OK;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            rc = EZ_ERR;
        *s = '/';
        if (rc != EZ_OK)
            break;
    }
    if (rc == EZ_OK && mkdir(p, 0700) != 0 && errno != EEXIST)
        rc = EZ_ERR;
    free(p);
    return rc;
}

static int cmp_seg(const void *a, const void *b)
{
    const struct spool_seg *x = a, *y = b;
    return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

static void segs_push(struct spool *sp, uint64_t first_seq)
{
    if (sp->nsegs == sp->cap) {
        sp->cap = sp->cap ? sp->cap * 2 : 8;
        sp->segs = ez_realloc(sp->segs, sp->cap * sizeof(*sp->segs));
    }
    sp->segs[sp->nsegs++] = (struct spool_seg){.first_seq = first_seq, .last_seq = 0, .size = 0};
}

/* ---- open: scan and repair ---- */

/*
 * Cuts a segment at off after a torn or corrupt frame. The reason and the
 * position go to the log: data was lost here, or (the usual case) an append
 * that was never acknowledged was cut short by a crash.
 */
static int truncate_tail(struct spool *sp, int fd, const char *path, uint64_t off, uint64_t size,
                         const char *reason)
{
    log_warn("event=spool_tail_truncated file=%s offset=%llu dropped_bytes=%llu reason=\"%s\"",
             path, (unsigned long long)off, (unsigned long long)(size - off), reason);
    sp->st.truncated += size - off;
    if (ftruncate(fd, (off_t)off) != 0 || fdatasync(fd) != 0) {
        log_error("event=spool_truncate_failed file=%s error=\"%s\"", path, strerror(errno));
        return EZ_ERR;
    }
    return EZ_OK;
}

/* Validates one segment, cutting a bad tail; *prev is the last sequence seen before it. */
static int scan_segment(struct spool *sp, struct spool_seg *s, uint64_t *prev, char *err,
                        size_t errlen)
{
    char path[4096];
    unsigned char magic[SPOOL_MAGIC_LEN];
    unsigned char hdr[SPOOL_FRAME_HEADER];
    unsigned char *buf = NULL;
    size_t bufcap = 0;
    int rc = EZ_ERR;
    struct stat st;

    seg_path(sp, s->first_seq, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        set_err(err, errlen, errno, "cannot open %s", path);
        log_error("event=spool_open_failed file=%s error=\"%s\"", path, strerror(errno));
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < SPOOL_MAGIC_LEN) {
        /* Created, then the crash came before its magic was on disk. */
        log_warn("event=spool_tail_truncated file=%s offset=0 dropped_bytes=%llu "
                 "reason=\"torn segment header\"",
                 path, (unsigned long long)size);
        sp->st.truncated += size;
        if (ftruncate(fd, 0) != 0 ||
            pwrite(fd, SPOOL_MAGIC, SPOOL_MAGIC_LEN, 0) != SPOOL_MAGIC_LEN || fdatasync(fd) != 0) {
            set_err(err, errlen, errno, "cannot repair %s", path);
            log_error("event=spool_repair_failed file=%s error=\"%s\"", path, strerror(errno));
            goto out;
        }
        s->size = SPOOL_MAGIC_LEN;
        rc = EZ_OK;
        goto out;
    }
    if (read_full(fd, magic, SPOOL_MAGIC_LEN, 0) != EZ_OK) {
        set_err(err, errlen, errno, "cannot read %s", path);
        goto out;
    }
    if (memcmp(magic, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0) {
        /* Not ours: never truncate or delete a file we do not understand. */
        if (err && errlen)
            snprintf(err, errlen, "%s is not a spool segment (bad magic)", path);
        log_error("event=spool_open_failed file=%s error=\"not a spool segment\"", path);
        goto out;
    }

    uint64_t off = SPOOL_MAGIC_LEN;
    while (off < size) {
        const char *reason = NULL;
        uint32_t len = 0;
        uint64_t seq = 0;
        if (size - off < SPOOL_FRAME_HEADER) {
            reason = "short frame header";
        } else if (read_full(fd, hdr, sizeof(hdr), off) != EZ_OK) {
            set_err(err, errlen, errno, "cannot read %s", path);
            goto out;
        } else {
            len = get_u32(hdr);
            seq = get_u64(hdr + 8);
            if (len > SPOOL_MAX_PAYLOAD || len > size - off - SPOOL_FRAME_HEADER)
                reason = "short frame";
        }
        if (reason == NULL) {
            if (len > bufcap) {
                bufcap = len;
                free(buf);
                buf = ez_malloc(bufcap);
            }
            if (read_full(fd, buf, len, off + SPOOL_FRAME_HEADER) != EZ_OK) {
                set_err(err, errlen, errno, "cannot read %s", path);
                goto out;
            }
            if (frame_crc(hdr, buf, len) != get_u32(hdr + 4))
                reason = "checksum mismatch";
            else if (seq <= *prev || seq < s->first_seq)
                reason = "sequence out of order";
        }
        if (reason) {
            if (truncate_tail(sp, fd, path, off, size, reason) != EZ_OK) {
                set_err(err, errlen, errno, "cannot truncate %s", path);
                goto out;
            }
            size = off;
            break;
        }
        *prev = seq;
        s->last_seq = seq;
        off += SPOOL_FRAME_HEADER + len;
    }
    s->size = size;
    rc = EZ_OK;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

int spool_open(const char *dir, uint64_t seg_bytes, struct spool **out, char *err, size_t errlen)
{
    struct spool *sp = ez_calloc(1, sizeof(*sp));
    DIR *d = NULL;
    sp->dir = ez_strdup(dir);
    sp->dirfd = -1;
    sp->fd = -1;
    sp->seg_bytes = seg_bytes ? seg_bytes : SPOOL_SEGMENT_BYTES;
    sp->next_seq = 1;
    *out = NULL;

    if (dir[0] == '\0' || make_dirs(dir) != EZ_OK) {
        set_err(err, errlen, errno, "cannot create spool directory %s", dir);
        log_error("event=spool_open_failed dir=%s error=\"%s\"", dir, strerror(errno));
        goto fail;
    }
    sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    d = opendir(dir);
    if (sp->dirfd < 0 || d == NULL) {
        set_err(err, errlen, errno, "cannot open spool directory %s", dir);
        log_error("event=spool_open_failed dir=%s error=\"%s\"", dir, strerror(errno));
        goto fail;
    }
    /* Refuse early when we could not write: better at start-up than at the first append. */
    if (access(dir, W_OK | X_OK) != 0) {
        set_err(err, errlen, errno, "spool directory %s is not writable", dir);
        log_error("event=spool_open_failed dir=%s error=\"%s\"", dir, strerror(errno));
        goto fail;
    }
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        uint64_t first;
        if (parse_segment_name(e->d_name, &first) == EZ_OK)
            segs_push(sp, first);
    }
    closedir(d);
    d = NULL;
    if (sp->nsegs > 1)
        qsort(sp->segs, sp->nsegs, sizeof(*sp->segs), cmp_seg);

    uint64_t prev = 0;
    for (size_t i = 0; i < sp->nsegs; i++)
        if (scan_segment(sp, &sp->segs[i], &prev, err, errlen) != EZ_OK)
            goto fail;
    sp->fresh = sp->nsegs == 0;
    if (sp->nsegs > 0) {
        struct spool_seg *a = &sp->segs[sp->nsegs - 1];
        sp->next_seq = prev + 1 > a->first_seq ? prev + 1 : a->first_seq;
        if (sp->next_seq == 0)
            sp->next_seq = 1;
        char path[4096];
        seg_path(sp, a->first_seq, path, sizeof(path));
        sp->fd = open(path, O_RDWR | O_CLOEXEC);
        if (sp->fd < 0) {
            set_err(err, errlen, errno, "cannot open %s", path);
            log_error("event=spool_open_failed file=%s error=\"%s\"", path, strerror(errno));
            goto fail;
        }
        sp->synced_size = a->size;
    }
    *out = sp;
    return EZ_OK;
fail:
    if (d)
        closedir(d);
    spool_close(sp);
    return EZ_ERR;
}

void spool_close(struct spool *sp)
{
    if (sp == NULL)
        return;
    if (sp->fd >= 0)
        close(sp->fd);
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    free(sp->segs);
    free(sp->dir);
    free(sp);
}

bool spool_was_fresh(const struct spool *sp)
{
    return sp->fresh;
}

uint64_t spool_next_seq(const struct spool *sp)
{
    return sp->next_seq;
}

void spool_advance_seq(struct spool *sp, uint64_t next)
{
    if (next > sp->next_seq)
        sp->next_seq = next;
}

bool spool_is_broken(const struct spool *sp)
{
    return sp->broken;
}

bool spool_needs_sync(const struct spool *sp)
{
    return sp->fd_dirty || sp->dir_dirty;
}

/* ---- replay ---- */

int spool_replay(struct spool *sp, uint64_t after_seq, spool_record_fn fn, void *arg)
{
    unsigned char hdr[SPOOL_FRAME_HEADER];
    unsigned char *buf = NULL;
    size_t bufcap = 0;
    int rc = EZ_OK;

    for (size_t i = 0; i < sp->nsegs && rc == EZ_OK; i++) {
        struct spool_seg *s = &sp->segs[i];
        if (s->last_seq == 0 || s->last_seq <= after_seq)
            continue;
        char path[4096];
        seg_path(sp, s->first_seq, path, sizeof(path));
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            log_error("event=spool_replay_failed file=%s error=\"%s\"", path, strerror(errno));
            rc = EZ_ERR;
            break;
        }
        uint64_t off = SPOOL_MAGIC_LEN;
        while (off + SPOOL_FRAME_HEADER <= s->size) {
            if (read_full(fd, hdr, sizeof(hdr), off) != EZ_OK) {
                log_error("event=spool_replay_failed file=%s error=\"%s\"", path, strerror(errno));
                rc = EZ_ERR;
                break;
            }
            uint32_t len = get_u32(hdr);
            uint64_t seq = get_u64(hdr + 8);
            if (len > s->size - off - SPOOL_FRAME_HEADER) {
                log_error("event=spool_replay_failed file=%s error=\"frame past the end\"", path);
                rc = EZ_ERR;
                break;
            }
            if (seq > after_seq) {
                if (len > bufcap) {
                    bufcap = len;
                    free(buf);
                    buf = ez_malloc(bufcap);
                }
                if (read_full(fd, buf, len, off + SPOOL_FRAME_HEADER) != EZ_OK) {
                    log_error("event=spool_replay_failed file=%s error=\"%s\"", path,
                              strerror(errno));
                    rc = EZ_ERR;
                    break;
                }
                if (fn(seq, buf, len, arg) != EZ_OK) {
                    rc = EZ_ERR;
                    break;
                }
            }
            off += SPOOL_FRAME_HEADER + len;
        }
        close(fd);
    }
    free(buf);
    return rc;
}

/* ---- append, sync, rotation ---- */

/* Creates the segment named first_seq and makes it the active one (not yet synced). */
static int create_segment(struct spool *sp, uint64_t first_seq)
{
    char path[4096];
    seg_path(sp, first_seq, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("event=spool_segment_create_failed file=%s error=\"%s\"", path, strerror(errno));
        return EZ_ERR;
    }
    if (pwrite(fd, SPOOL_MAGIC, SPOOL_MAGIC_LEN, 0) != SPOOL_MAGIC_LEN) {
        log_error("event=spool_segment_create_failed file=%s error=\"%s\"", path,
                  strerror(errno ? errno : EIO));
        close(fd);
        unlink(path);
        return EZ_ERR;
    }
    if (sp->fd >= 0)
        close(sp->fd);
    sp->fd = fd;
    segs_push(sp, first_seq);
    sp->segs[sp->nsegs - 1].size = SPOOL_MAGIC_LEN;
    sp->synced_size = 0;
    sp->fd_dirty = true;
    sp->dir_dirty = true;
    log_info("event=spool_segment_created file=%s", path);
    return EZ_OK;
}

/* After a failed fsync: cut back what was not synced (best effort) and refuse further appends. */
static void sync_failed(struct spool *sp, const char *what, int e)
{
    log_error("event=spool_sync_failed what=%s error=\"%s\" msg=\"the spool refuses appends "
              "until ezapi-background restarts\"",
              what, strerror(e));
    sp->broken = true;
    if (sp->fd >= 0 && sp->nsegs > 0 && sp->synced_size >= SPOOL_MAGIC_LEN) {
        if (ftruncate(sp->fd, (off_t)sp->synced_size) == 0)
            sp->segs[sp->nsegs - 1].size = sp->synced_size;
    }
}

static int sync_active(struct spool *sp)
{
    if (sp->fd >= 0 && sp->fd_dirty) {
        sp->st.fsyncs++;
        if (fdatasync(sp->fd) != 0) {
            sync_failed(sp, "segment", errno);
            return EZ_ERR;
        }
        sp->fd_dirty = false;
        sp->synced_size = sp->segs[sp->nsegs - 1].size;
    }
    if (sp->dir_dirty) {
        sp->st.fsyncs++;
        if (fsync(sp->dirfd) != 0) {
            sync_failed(sp, "directory", errno);
            return EZ_ERR;
        }
        sp->dir_dirty = false;
    }
    return EZ_OK;
}

int spool_sync(struct spool *sp)
{
    if (sp->broken)
        return EZ_ERR;
    return sync_active(sp);
}

int spool_begin(struct spool *sp)
{
    if (sp->broken)
        return EZ_ERR;
    if (sp->fd >= 0)
        return EZ_OK;
    if (create_segment(sp, sp->next_seq) != EZ_OK)
        return EZ_ERR;
    return sync_active(sp);
}

int spool_append(struct spool *sp, const void *payload, size_t len, uint64_t *seq)
{
    if (sp->broken)
        return EZ_ERR;
    if (len > SPOOL_MAX_PAYLOAD) {
        log_error("event=spool_append_failed error=\"record of %zu bytes is too large\"", len);
        return EZ_ERR;
    }
    if (sp->fd < 0) {
        if (create_segment(sp, sp->next_seq) != EZ_OK)
            return EZ_ERR;
    } else {
        struct spool_seg *a = &sp->segs[sp->nsegs - 1];
        if (a->size >= sp->seg_bytes && a->last_seq != 0) {
            /* Rotate: the full segment must be on disk before frames go elsewhere. */
            if (sync_active(sp) != EZ_OK)
                return EZ_ERR;
            if (create_segment(sp, sp->next_seq) != EZ_OK)
                return EZ_ERR;
        }
    }

    struct spool_seg *a = &sp->segs[sp->nsegs - 1];
    unsigned char hdr[SPOOL_FRAME_HEADER];
    uint64_t s = sp->next_seq;
    put_u32(hdr, (uint32_t)len);
    put_u64(hdr + 8, s);
    put_u32(hdr + 4, frame_crc(hdr, payload, len));
    struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof(hdr)},
                           {.iov_base = (void *)payload, .iov_len = len}};
    if (write_full(sp->fd, iov, len ? 2 : 1, a->size) != EZ_OK) {
        int e = errno;
        log_error("event=spool_append_failed error=\"%s\"", strerror(e));
        /* Leave no partial frame behind: the next append must start on a boundary. */
        if (ftruncate(sp->fd, (off_t)a->size) != 0) {
            log_error("event=spool_truncate_failed error=\"%s\"", strerror(errno));
            sp->broken = true;
        }
        return EZ_ERR;
    }
    a->size += SPOOL_FRAME_HEADER + len;
    a->last_seq = s;
    sp->next_seq = s + 1;
    sp->fd_dirty = true;
    *seq = s;
    return EZ_OK;
}

/* ---- release ---- */

static int remove_segment(struct spool *sp, size_t i)
{
    char path[4096];
    seg_path(sp, sp->segs[i].first_seq, path, sizeof(path));
    if (unlink(path) != 0 && errno != ENOENT) {
        log_error("event=spool_segment_remove_failed file=%s error=\"%s\"", path, strerror(errno));
        return EZ_ERR;
    }
    log_info("event=spool_segment_removed file=%s", path);
    memmove(&sp->segs[i], &sp->segs[i + 1], (sp->nsegs - i - 1) * sizeof(*sp->segs));
    sp->nsegs--;
    sp->st.removed++;
    return EZ_OK;
}

int spool_release(struct spool *sp, uint64_t upto_seq)
{
    int removed = 0;
    /* Every frame of segment 0 is below segment 1's first sequence. */
    while (sp->nsegs > 1 && sp->segs[1].first_seq <= upto_seq + 1) {
        if (remove_segment(sp, 0) != EZ_OK)
            return EZ_ERR;
        removed++;
    }
    if (sp->broken || sp->nsegs != 1 || sp->fd < 0)
        return removed;
    struct spool_seg *a = &sp->segs[0];
    if (a->size < SPOOL_RECYCLE_BYTES || a->last_seq == 0 || a->last_seq > upto_seq ||
        sp->fd_dirty || a->first_seq == sp->next_seq)
        return removed;
    /* Recycle: the new (empty) segment must be durable before the old one goes. */
    if (create_segment(sp, sp->next_seq) != EZ_OK)
        return EZ_ERR;
    if (sync_active(sp) != EZ_OK)
        return EZ_ERR;
    if (remove_segment(sp, 0) != EZ_OK)
        return EZ_ERR;
    return removed + 1;
}

void spool_get_stats(const struct spool *sp, struct spool_stats *out)
{
    *out = sp->st;
    out->bytes = 0;
    for (size_t i = 0; i < sp->nsegs; i++)
        out->bytes += sp->segs[i].size;
    out->segments = sp->nsegs;
}
