/* The background's ZeroMQ ROUTER socket: workers' pings, nudges and log batches (common/wire.h). */
#ifndef EZ_ZMQ_SERVER_H
#define EZ_ZMQ_SERVER_H

#include <stddef.h>
#include "util.h"

struct bg_ctx;

/* Receive/send high-water marks (messages) of the ROUTER socket. */
#define ZS_HWM 10000
/* Most messages handled per wake-up, so that a flood cannot starve the jobs. */
#define ZS_DRAIN_MAX 4096
/* Most frames kept from one message; extra frames are read and discarded. */
#define ZS_MAX_FRAMES 8
/*
 * A second endpoint of the same ROUTER, inside the process: a helper thread
 * (the model registry's fetch) connects a DEALER here to kick its job when
 * its work is ready, whatever the public endpoint looks like.
 */
#define ZS_SELF_ENDPOINT "inproc://ezapi-background-self"

/*
 * Creates the ZeroMQ context and binds a ROUTER socket at
 * ctx->cfg->zmq_endpoint. For ipc:// endpoints, a socket file that nobody
 * listens on any more is removed first; one that is still served (another
 * ezapi-background) or that is not a socket is an error. 0 ok, -1 (logged).
 */
int zmq_server_open(struct bg_ctx *ctx) EZ_MUSTCHECK;
/* Closes the socket (linger 0) and terminates the context. Safe when not open. */
void zmq_server_close(struct bg_ctx *ctx);
/*
 * Handles the messages waiting on the socket without blocking: at most
 * ZS_DRAIN_MAX, then returns so the loop can run due jobs (it polls again at
 * once). Returns the number of messages handled.
 */
int zmq_server_drain(struct bg_ctx *ctx);

/*
 * The file path of an ipc:// endpoint, into out. Returns 1 when endpoint is
 * ipc:// with a filesystem path, 0 when it is not ipc:// or names an abstract
 * socket (ipc://@name), -1 when the path is empty or longer than a unix
 * socket path may be. Pure; exposed for the tests.
 */
int zmq_server_ipc_path(const char *endpoint, char *out, size_t outlen);

#endif
