/* One-line log records to stderr: time, level, process, request id, message. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int ez_log_min_level = EZ_LOG_INFO;

static const char *process_name = "ezapi";
static _Thread_local char request_id[136];

void ez_log_set_process(const char *name)
{
    process_name = name;
}

void ez_log_set_request_id(const char *rid)
{
    if (rid == NULL) {
        request_id[0] = '\0';
        return;
    }
    snprintf(request_id, sizeof(request_id), "%s", rid);
}

void ez_log_write(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    char ts[40];
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);

    int off = snprintf(line, sizeof(line), "%s level=%s proc=%s pid=%d ", ts,
                       names[level < 0 || level > 3 ? 3 : level], process_name, (int)getpid());
    if (request_id[0] && off > 0 && (size_t)off < sizeof(line))
        off += snprintf(line + off, sizeof(line) - (size_t)off, "rid=%s ", request_id);
    if (off > 0 && (size_t)off < sizeof(line)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line + off, sizeof(line) - (size_t)off, fmt, ap);
        va_end(ap);
    }
    /* Newlines inside a message would split the record: fold them. */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    /* One write() per line keeps lines whole between processes sharing the file. */
    size_t len = strnlen(line, sizeof(line) - 2);
    line[len] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len + 1);
    (void)w;
}
