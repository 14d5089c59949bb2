/*
 * log.h — structured logs on stderr, one line per event.
 *
 * logfmt by default (ts=... level=info comp=batcher msg="..."), JSON
 * lines with log_init(level, true). Thread-safe: each line is written
 * with a single write(2). Messages follow PostgreSQL's style: a short
 * primary line; detail and hint as extra fields where useful.
 */
#ifndef MERIDIAN_LOG_H
#define MERIDIAN_LOG_H

#include <stdbool.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_init(log_level level, bool json);
/* Parse "debug", "info", "warn", "error". Returns 0 or -1. */
int log_level_parse(const char *s, log_level *out);
void log_msg(log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) log_msg(LOG_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_ERROR, comp, __VA_ARGS__)

#endif
