/* One worker process: EZ_FCGI_THREADS threads accepting on the shared listen socket. */
#ifndef EZ_WORKER_H
#define EZ_WORKER_H

#include "config.h"

/*
 * Runs the process until SIGTERM/SIGINT, then lets in-flight requests finish
 * and returns the exit code. Called in a freshly forked child.
 */
int worker_process_run(int listen_fd, const struct ez_config *cfg);

#endif
