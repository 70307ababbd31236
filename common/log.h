/* Level-gated logging: one line per event, key=value, never a secret. */
#ifndef EZ_LOG_H
#define EZ_LOG_H

#include "util.h"

enum ez_log_level { EZ_LOG_DEBUG = 0, EZ_LOG_INFO, EZ_LOG_WARN, EZ_LOG_ERROR };

extern int ez_log_min_level;

/* Name of this process in every line ("fcgi", "background"). Static string. */
void ez_log_set_process(const char *name);
/* Request id for the calling thread's lines; NULL clears. The string is copied. */
void ez_log_set_request_id(const char *rid);
void ez_log_write(int level, const char *fmt, ...) EZ_PRINTF(2, 3);

/* The macros skip formatting entirely when the level is off. */
#define EZ_LOG_AT(lvl, ...)                                                                        \
    do {                                                                                           \
        if ((lvl) >= ez_log_min_level)                                                             \
            ez_log_write((lvl), __VA_ARGS__);                                                      \
    } while (0)
#define log_debug(...) EZ_LOG_AT(EZ_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) EZ_LOG_AT(EZ_LOG_INFO, __VA_ARGS__)
#define log_warn(...) EZ_LOG_AT(EZ_LOG_WARN, __VA_ARGS__)
#define log_error(...) EZ_LOG_AT(EZ_LOG_ERROR, __VA_ARGS__)

#endif
