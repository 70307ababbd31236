/*
 * bench-responder: the "minimal FastCGI handler" anchor of `make bench`.
 *
 *   bench-responder ADDRESS [BODY_BYTES]
 *
 * ADDRESS is what FCGX_OpenSocket takes (":9100", "127.0.0.1:9100" or a unix
 * socket path). Four threads each loop on FCGX_Accept_r and answer every
 * request with 200 and a fixed JSON body of BODY_BYTES bytes (default 81, the
 * size of GET /api/status/test's answer), with the same kind of headers the
 * worker sends. No routing, no parsing, no database: what is left is the cost
 * of nginx + FastCGI + libfcgi, the floor under every EZ-API endpoint.
 *
 * Stops on SIGTERM/SIGINT: the default action, the process exits at once, which
 * is all a benchmark anchor needs. (libfcgi catches SIGTERM itself and only
 * sets a shutdown flag that a thread blocked in accept() never sees, so the
 * defaults are put back after FCGX_Init.)
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTHREADS 4
#define DEFAULT_BODY 81
#define MAX_BODY 65536

static char body[MAX_BODY + 1];
static char headers[256];
static size_t body_len;
static int headers_len;
static int listen_fd;

/* {"status":"ok","service":"bench","pad":"xxx..."} padded to exactly n bytes. */
static void make_body(size_t n)
{
    static const char head[] = "{\"status\":\"ok\",\"service\":\"bench\",\"pad\":\"";
    static const char tail[] = "\"}";
    size_t min = sizeof(head) - 1 + sizeof(tail) - 1;
    if (n < min) {
        memset(body, ' ', n); /* too small for JSON: still the right size */
        body_len = n;
        return;
    }
    memcpy(body, head, sizeof(head) - 1);
    memset(body + sizeof(head) - 1, 'x', n - min);
    memcpy(body + n - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    body_len = n;
}

static void *serve(void *arg)
{
    (void)arg;
    FCGX_Request req;
    if (FCGX_InitRequest(&req, listen_fd, 0) != 0) {
        fprintf(stderr, "bench-responder: FCGX_InitRequest failed\n");
        return NULL;
    }
    while (FCGX_Accept_r(&req) >= 0) {
        FCGX_PutStr(headers, headers_len, req.out);
        FCGX_PutStr(body, (int)body_len, req.out);
        FCGX_Finish_r(&req);
    }
    FCGX_Free(&req, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: bench-responder ADDRESS [BODY_BYTES]\n");
        return 2;
    }
    long n = DEFAULT_BODY;
    if (argc == 3) {
        char *end = NULL;
        n = strtol(argv[2], &end, 10);
        if (end == argv[2] || *end != '\0' || n < 0 || n > MAX_BODY) {
            fprintf(stderr, "bench-responder: BODY_BYTES must be 0..%d\n", MAX_BODY);
            return 2;
        }
    }
    make_body((size_t)n);
    headers_len = snprintf(headers, sizeof(headers),
                           "Status: 200 OK\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                           "X-Content-Type-Options: nosniff\r\n\r\n",
                           body_len);

    if (FCGX_Init() != 0) {
        fprintf(stderr, "bench-responder: FCGX_Init failed\n");
        return 1;
    }
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL); /* also when started in the background by a shell */
    listen_fd = FCGX_OpenSocket(argv[1], 1024);
    if (listen_fd < 0) {
        fprintf(stderr, "bench-responder: cannot listen on %s\n", argv[1]);
        return 1;
    }
    pthread_t tids[NTHREADS];
    int started = 0;
    for (int i = 0; i < NTHREADS; i++) {
        if (pthread_create(&tids[i], NULL, serve, NULL) != 0) {
            fprintf(stderr, "bench-responder: pthread_create failed\n");
            break;
        }
        started++;
    }
    fprintf(stderr, "bench-responder: listening on %s, %d threads, %zu-byte body\n", argv[1],
            started, body_len);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return started == NTHREADS ? 0 : 1;
}
