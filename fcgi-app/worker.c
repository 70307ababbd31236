/* Worker process: thread pool, request loop, and a shutdown that drains in-flight requests. */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <zmq.h>
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "wctx.h"
#include "wire.h"

struct thread_slot {
    pthread_t tid;
    int listen_fd;
    const struct ez_config *cfg;
    void *zmq_ctx;
    atomic_int done; /* set by the thread as it exits; read by the draining main thread */
};

/* Set by the main thread, read by every request thread: atomic, not volatile (a data race). */
static atomic_int stopping;

/* SIGUSR1 only interrupts a thread blocked in accept(); the flag is what it reads. */
static void on_wake(int sig)
{
    (void)sig;
}

void *wctx_zmq(struct wctx *w)
{
    if (w->zmq_sock)
        return w->zmq_sock;
    void *s = zmq_socket(w->zmq_ctx, ZMQ_DEALER);
    if (s == NULL) {
        log_error("event=zmq_socket_failed error=\"%s\"", zmq_strerror(zmq_errno()));
        return NULL;
    }
    int linger = 0, hwm = 10000, immediate = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    /* Queue nothing while the background is away: callers see EAGAIN and decide. */
    zmq_setsockopt(s, ZMQ_IMMEDIATE, &immediate, sizeof(immediate));
    if (zmq_connect(s, w->cfg->zmq_endpoint) != 0) {
        log_error("event=zmq_connect_failed endpoint=%s error=\"%s\"", w->cfg->zmq_endpoint,
                  zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    w->zmq_sock = s;
    return s;
}

void wctx_nudge_background(struct wctx *w)
{
    void *s = wctx_zmq(w);
    if (s == NULL)
        return;
    /*
     * Best effort: the background's interval timer is the fallback when this
     * is lost. With ZMQ_IMMEDIATE a send fails while the connection is still
     * being set up (right after start, or after the background restarted), so
     * wait briefly for it to become writable and try once more.
     */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (zmq_send(s, WIRE_NUDGE, strlen(WIRE_NUDGE), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
            if (zmq_send(s, "", 0, ZMQ_DONTWAIT) < 0)
                log_debug("event=nudge_part_lost error=\"%s\"", zmq_strerror(zmq_errno()));
            return;
        }
        zmq_pollitem_t item = {.socket = s, .fd = 0, .events = ZMQ_POLLOUT, .revents = 0};
        if (attempt == 0 && zmq_poll(&item, 1, 50) <= 0)
            break;
    }
    log_debug("event=nudge_not_sent error=\"%s\"", zmq_strerror(zmq_errno()));
}

static void handle_one(FCGX_Request *fr, struct wctx *w)
{
    struct req r;
    if (req_init(&r, fr, w) != EZ_OK) {
        if (!r.responded)
            reply_error(&r, 400, "invalid_argument", NULL, "malformed request path or query");
    } else {
        router_dispatch(&r);
    }
    int64_t dur = ez_mono_us() - r.start_us;
    metrics_observe(r.route_index, r.status, dur);
    log_debug("event=request method=%s path=%s status=%d us=%lld", r.method, r.path ? r.path : "-",
              r.status, (long long)dur);
    req_finish(&r);
}

static void *thread_main(void *arg)
{
    struct thread_slot *slot = arg;
    struct wctx w;
    memset(&w, 0, sizeof(w));
    w.cfg = slot->cfg;
    w.zmq_ctx = slot->zmq_ctx;
    db_init(&w.db, slot->cfg->pg_dsn);
    db_init(&w.log_db, config_log_dsn(slot->cfg));
    rds_init(&w.redis, slot->cfg->redis_addr, slot->cfg->redis_password, slot->cfg->redis_db);

    /* Connect to the background now, so the first nudge does not race the handshake. */
    (void)wctx_zmq(&w);

    FCGX_Request fr;
    FCGX_InitRequest(&fr, slot->listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
    while (!atomic_load(&stopping)) {
        if (FCGX_Accept_r(&fr) < 0) {
            if (atomic_load(&stopping))
                break;
            if (errno == EINTR)
                continue;
            log_error("event=accept_failed error=\"%s\"", strerror(errno));
            break;
        }
        handle_one(&fr, &w);
        FCGX_Finish_r(&fr);
    }
    FCGX_Free(&fr, 0);
    db_close(&w.db);
    db_close(&w.log_db);
    rds_close(&w.redis);
    if (w.zmq_sock)
        zmq_close(w.zmq_sock);
    atomic_store(&slot->done, 1);
    return NULL;
}

/* Waits for the termination signal with every thread's signals routed here. */
static void wait_for_stop(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    log_info("event=worker_stopping signal=%d", sig);
}

/*
 * Tells every thread to stop and keeps poking the ones still blocked in
 * accept() (a signal can land just before the call) until they are all out;
 * a thread busy with a request finishes it first. Gives up after 25 s.
 */
static void drain_threads(struct thread_slot *slots, int n)
{
    atomic_store(&stopping, 1);
    FCGX_ShutdownPending();
    int64_t deadline = ez_mono_us() + 25 * 1000000LL;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) {
            if (!atomic_load(&slots[i].done)) {
                alive++;
                pthread_kill(slots[i].tid, SIGUSR1);
            }
        }
        if (alive == 0 || ez_mono_us() > deadline)
            break;
        usleep(20 * 1000);
    }
}

int worker_process_run(int listen_fd, const struct ez_config *cfg)
{
    /* Die with the supervisor rather than linger as an orphan holding the socket. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        return 1;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_wake; /* no SA_RESTART: accept() must return EINTR */
    sigaction(SIGUSR1, &sa, NULL);

    void *zctx = zmq_ctx_new();
    int n = cfg->fcgi_threads;
    struct thread_slot *slots = ez_calloc((size_t)n, sizeof(*slots));
    int started = 0;
    for (int i = 0; i < n; i++) {
        slots[i].listen_fd = listen_fd;
        slots[i].cfg = cfg;
        slots[i].zmq_ctx = zctx;
        if (pthread_create(&slots[i].tid, NULL, thread_main, &slots[i]) != 0) {
            log_error("event=thread_create_failed index=%d", i);
            atomic_store(&slots[i].done, 1);
            break;
        }
        started++;
    }
    log_info("event=worker_started threads=%d", started);
    if (started > 0)
        wait_for_stop();
    drain_threads(slots, started);
    int rc = 0;
    for (int i = 0; i < started; i++) {
        if (atomic_load(&slots[i].done))
            pthread_join(slots[i].tid, NULL);
        else
            rc = 1; /* stuck in a request past the deadline: exit anyway */
    }
    free(slots);
    if (rc == 0)
        zmq_ctx_term(zctx);
    log_info("event=worker_stopped");
    return rc;
}
