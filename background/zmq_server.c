/* The ROUTER socket workers talk to: ping/pong, outbox nudges, job kicks, log batches (to
 * log_sink.c). */
#include "zmq_server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"
#include "log_sink.h"
#include "wire.h"

/* Warnings about dropped messages: at most one per this many ms, with a count of the rest. */
#define ZS_WARN_EVERY_MS 10000

int zmq_server_ipc_path(const char *endpoint, char *out, size_t outlen)
{
    static const char prefix[] = "ipc://";
    struct sockaddr_un sa;

    if (strncmp(endpoint, prefix, sizeof(prefix) - 1) != 0)
        return 0;
    const char *path = endpoint + sizeof(prefix) - 1;
    if (path[0] == '@')
        return 0; /* Linux abstract namespace: no file */
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(sa.sun_path) || len >= outlen)
        return -1;
    memcpy(out, path, len + 1);
    return 1;
}

/*
 * Removes a socket file left by a previous run that died without unbinding.
 * Refuses to touch a file that is not a socket, or a socket that still
 * answers: a second daemon must not steal the first one's endpoint.
 */
static int clear_stale_ipc(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? EZ_OK : EZ_ERR;
    if (!S_ISSOCK(st.st_mode)) {
        log_error("event=zmq_bind_failed path=%s error=\"exists and is not a socket\"", path);
        return EZ_ERR;
    }

    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("event=zmq_bind_failed path=%s error=\"socket: %s\"", path, strerror(errno));
        return EZ_ERR;
    }
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int err = errno;
    close(fd);
    if (rc == 0) {
        log_error("event=zmq_bind_failed path=%s error=\"another process is listening "
                  "(a second ezapi-background?)\"",
                  path);
        return EZ_ERR;
    }
    if (err != ECONNREFUSED) {
        log_error("event=zmq_bind_failed path=%s error=\"cannot probe socket: %s\"", path,
                  strerror(err));
        return EZ_ERR;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        log_error("event=zmq_bind_failed path=%s error=\"cannot remove stale socket: %s\"", path,
                  strerror(errno));
        return EZ_ERR;
    }
    log_info("event=zmq_stale_socket_removed path=%s", path);
    return EZ_OK;
}

static int set_int_opt(void *sock, int opt, int value, const char *name)
{
    if (zmq_setsockopt(sock, opt, &value, sizeof(value)) != 0) {
        log_error("event=zmq_setsockopt_failed option=%s error=\"%s\"", name,
                  zmq_strerror(zmq_errno()));
        return EZ_ERR;
    }
    return EZ_OK;
}

int zmq_server_open(struct bg_ctx *ctx)
{
    const char *ep = ctx->cfg->zmq_endpoint;
    char path[sizeof(ctx->ipc_path)];

    int ipc = zmq_server_ipc_path(ep, path, sizeof(path));
    if (ipc < 0) {
        log_error("event=zmq_bind_failed endpoint=%s error=\"bad ipc path (empty or too long)\"",
                  ep);
        return EZ_ERR;
    }
    if (ipc == 1 && clear_stale_ipc(path) != EZ_OK)
        return EZ_ERR;

    ctx->zmq_ctx = zmq_ctx_new();
    if (ctx->zmq_ctx == NULL) {
        log_error("event=zmq_ctx_failed error=\"%s\"", zmq_strerror(zmq_errno()));
        return EZ_ERR;
    }
    ctx->router = zmq_socket(ctx->zmq_ctx, ZMQ_ROUTER);
    if (ctx->router == NULL) {
        log_error("event=zmq_socket_failed error=\"%s\"", zmq_strerror(zmq_errno()));
        goto fail;
    }
    /*
     * The largest message a worker may forward is a log batch of 8x the body
     * limit; anything bigger is a broken or hostile peer and is disconnected.
     */
    int64_t maxmsg = ctx->cfg->max_body_bytes * 8 + 1024 * 1024;
    if (zmq_setsockopt(ctx->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) {
        log_error("event=zmq_setsockopt_failed option=ZMQ_MAXMSGSIZE error=\"%s\"",
                  zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* ROUTER_MANDATORY: a reply to a vanished or full peer fails (EHOSTUNREACH/EAGAIN) instead
     * of disappearing silently, so it can be logged. */
    if (set_int_opt(ctx->router, ZMQ_RCVHWM, ZS_HWM, "ZMQ_RCVHWM") != EZ_OK ||
        set_int_opt(ctx->router, ZMQ_SNDHWM, ZS_HWM, "ZMQ_SNDHWM") != EZ_OK ||
        set_int_opt(ctx->router, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY") != EZ_OK)
        goto fail;
    if (zmq_bind(ctx->router, ep) != 0) {
        log_error("event=zmq_bind_failed endpoint=%s error=\"%s\"", ep, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (ipc == 1)
        snprintf(ctx->ipc_path, sizeof(ctx->ipc_path), "%s", path);
    if (zmq_bind(ctx->router, ZS_SELF_ENDPOINT) != 0) {
        log_error("event=zmq_bind_failed endpoint=%s error=\"%s\"", ZS_SELF_ENDPOINT,
                  zmq_strerror(zmq_errno()));
        goto fail;
    }
    log_info("event=zmq_listening endpoint=%s", ep);
    return EZ_OK;
fail:
    zmq_server_close(ctx);
    return EZ_ERR;
}

void zmq_server_close(struct bg_ctx *ctx)
{
    if (ctx->router) {
        int linger = 0;
        zmq_setsockopt(ctx->router, ZMQ_LINGER, &linger, sizeof(linger));
        zmq_close(ctx->router);
        ctx->router = NULL;
    }
    if (ctx->zmq_ctx) {
        zmq_ctx_term(ctx->zmq_ctx);
        ctx->zmq_ctx = NULL;
    }
    /* libzmq leaves the socket file behind; the next start would have to probe it. */
    if (ctx->ipc_path[0]) {
        if (unlink(ctx->ipc_path) != 0 && errno != ENOENT)
            log_warn("event=zmq_unlink_failed path=%s error=\"%s\"", ctx->ipc_path,
                     strerror(errno));
        ctx->ipc_path[0] = '\0';
    }
}

/* A frame's first bytes made printable for a log line (frames are arbitrary bytes). */
static void printable(const zmq_msg_t *m, char *out, size_t outlen)
{
    const unsigned char *d = zmq_msg_data((zmq_msg_t *)m);
    size_t n = zmq_msg_size((zmq_msg_t *)m);
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < outlen; i++)
        out[o++] = (d[i] >= 0x21 && d[i] < 0x7f && d[i] != '"') ? (char)d[i] : '?';
    out[o] = '\0';
}

/* Why a message was not served; each reason has its own warning rate limit. */
enum drop_reason {
    DROP_MALFORMED = 0,
    DROP_TOO_MANY_FRAMES,
    DROP_LOGS_DISABLED,
    DROP_UNKNOWN_TYPE
};
static const char *const drop_names[] = {"malformed", "too_many_frames", "log_pipeline_not_enabled",
                                         "unknown_type"};
_Static_assert(EZ_ARRAY_LEN(drop_names) == EZ_ARRAY_LEN(((struct bg_ctx *)0)->zs_warn_ms),
               "one rate-limit slot per drop reason");

/* Warning about a message that was dropped or refused: at most one per reason per 10 s. */
static void warn_dropped(struct bg_ctx *ctx, enum drop_reason why, const char *type)
{
    int64_t now = jobs_now_ms();
    if (ctx->zs_warn_ms[why] && now - ctx->zs_warn_ms[why] < ZS_WARN_EVERY_MS) {
        ctx->zs_suppressed[why]++;
        log_debug("event=zmq_message_dropped reason=%s type=\"%s\"", drop_names[why], type);
        return;
    }
    log_warn("event=zmq_message_dropped reason=%s type=\"%s\" suppressed_since_last=%u",
             drop_names[why], type, ctx->zs_suppressed[why]);
    ctx->zs_warn_ms[why] = now;
    ctx->zs_suppressed[why] = 0;
}

static bool frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/*
 * Sends one reply: the envelope frames (identity, and the empty delimiter of
 * a REQ peer), the type, then the payload parts. Never blocks: a peer that
 * is gone or whose queue is full loses the reply (logged at debug).
 */
static void reply(struct bg_ctx *ctx, zmq_msg_t *env, int nenv, const char *type,
                  const void *const *parts, const size_t *lens, int nparts)
{
    for (int i = 0; i < nenv; i++) {
        if (zmq_send(ctx->router, zmq_msg_data(&env[i]), zmq_msg_size(&env[i]),
                     ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            /* Only the first (routing) frame can fail; nothing was queued yet. */
            log_debug("event=zmq_reply_dropped type=%s error=\"%s\"", type,
                      zmq_strerror(zmq_errno()));
            return;
        }
    }
    int flags = ZMQ_DONTWAIT | (nparts > 0 ? ZMQ_SNDMORE : 0);
    if (zmq_send(ctx->router, type, strlen(type), flags) < 0)
        goto fail;
    for (int i = 0; i < nparts; i++) {
        flags = ZMQ_DONTWAIT | (i + 1 < nparts ? ZMQ_SNDMORE : 0);
        if (zmq_send(ctx->router, parts[i], lens[i], flags) < 0)
            goto fail;
    }
    return;
fail:
    log_warn("event=zmq_reply_failed type=%s error=\"%s\"", type, zmq_strerror(zmq_errno()));
}

/* Dispatches one received message: frames[0] is the peer's identity. */
static void handle(struct bg_ctx *ctx, zmq_msg_t *frames, int n, bool truncated)
{
    char type[40];

    if (n < 2) {
        warn_dropped(ctx, DROP_MALFORMED, "");
        return;
    }
    /* A REQ peer puts an empty delimiter after the identity: keep it in the reply envelope. */
    int nenv = (n >= 3 && zmq_msg_size(&frames[1]) == 0) ? 2 : 1;
    zmq_msg_t *t = &frames[nenv];
    int first = nenv + 1; /* first payload frame */
    int npay = n - first;

    if (truncated) {
        printable(t, type, sizeof(type));
        warn_dropped(ctx, DROP_TOO_MANY_FRAMES, type);
        return;
    }

    if (frame_is(t, WIRE_PING)) {
        const void *parts[ZS_MAX_FRAMES];
        size_t lens[ZS_MAX_FRAMES];
        int np = 0;
        for (int i = first; i < n; i++, np++) {
            parts[np] = zmq_msg_data(&frames[i]);
            lens[np] = zmq_msg_size(&frames[i]);
        }
        if (np == 0) { /* always answer [pong][payload], even to a bare ping */
            parts[0] = "";
            lens[0] = 0;
            np = 1;
        }
        reply(ctx, frames, nenv, WIRE_PONG, parts, lens, np);
    } else if (frame_is(t, WIRE_NUDGE)) {
        jobs_kick("outbox");
    } else if (frame_is(t, WIRE_KICK)) {
        /* [kick][job name]: jobs_kick ignores names it does not know. */
        char job[WIRE_JOB_NAME_MAX + 1];
        size_t len = npay >= 1 ? zmq_msg_size(&frames[first]) : 0;
        if (len == 0 || len > WIRE_JOB_NAME_MAX ||
            memchr(zmq_msg_data(&frames[first]), '\0', len) != NULL) {
            warn_dropped(ctx, DROP_MALFORMED, WIRE_KICK);
            return;
        }
        memcpy(job, zmq_msg_data(&frames[first]), len);
        job[len] = '\0';
        jobs_kick(job);
    } else if (frame_is(t, WIRE_LOGS)) {
        /* [logs][seq][records]: the log sink spools the batch and acks or nacks it with seq. */
        const void *envp[2];
        size_t envl[2];
        for (int i = 0; i < nenv; i++) {
            envp[i] = zmq_msg_data(&frames[i]);
            envl[i] = zmq_msg_size(&frames[i]);
        }
        log_sink_receive(ctx, envp, envl, nenv, npay >= 1 ? zmq_msg_data(&frames[first]) : NULL,
                         npay >= 1 ? zmq_msg_size(&frames[first]) : 0,
                         npay >= 2 ? zmq_msg_data(&frames[first + 1]) : NULL,
                         npay >= 2 ? zmq_msg_size(&frames[first + 1]) : 0);
    } else {
        printable(t, type, sizeof(type));
        warn_dropped(ctx, DROP_UNKNOWN_TYPE, type);
    }
}

int zmq_server_drain(struct bg_ctx *ctx)
{
    zmq_msg_t frames[ZS_MAX_FRAMES];
    int handled = 0;

    if (ctx->router == NULL)
        return 0;
    while (handled < ZS_DRAIN_MAX) {
        int n = 0;
        bool truncated = false;
        bool more = true;

        while (more) {
            zmq_msg_t scratch;
            zmq_msg_t *m = n < ZS_MAX_FRAMES ? &frames[n] : &scratch;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, ctx->router, ZMQ_DONTWAIT) < 0) {
                int err = zmq_errno();
                zmq_msg_close(m);
                /* Parts of a message arrive together: only the first can be missing. */
                if (n > 0)
                    log_warn("event=zmq_recv_failed error=\"%s\"", zmq_strerror(err));
                else if (err != EAGAIN && err != EINTR)
                    log_warn("event=zmq_recv_failed error=\"%s\"", zmq_strerror(err));
                for (int i = 0; i < n && i < ZS_MAX_FRAMES; i++)
                    zmq_msg_close(&frames[i]);
                return handled;
            }
            more = zmq_msg_more(m);
            if (m == &scratch) {
                zmq_msg_close(m);
                truncated = true;
            } else {
                n++;
            }
        }
        handle(ctx, frames, n, truncated);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
        handled++;
    }
    return handled;
}
