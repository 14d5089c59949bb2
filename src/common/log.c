/*
 * log.c — structured log lines on stderr (logfmt or JSON lines).
 *
 * Every process of Meridian logs through here. A line is built whole in
 * a fixed 4 KiB buffer on the caller's stack and written with one
 * write(2), so lines from concurrent threads never interleave and
 * logging never allocates (it must work when memory is what ran out). A
 * message that does not fit is cut at a character boundary and marked
 * "...[truncated]" rather than split over several lines.
 *
 *   ts=2026-11-28T07:00:00.123Z level=info comp=batcher msg="commit done"
 *   {"ts":"2026-11-28T07:00:00.123Z","level":"info","comp":"batcher","msg":"commit done"}
 *
 * The level and format are set once at start-up by log_init, before any
 * thread starts; they are read without locks afterwards.
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_BYTES_MAX 4096
#define LOG_TRUNCATED_MARK "...[truncated]"
/* Room kept for the mark, the closing quote/brace and the newline. */
#define LOG_TAIL_RESERVE_BYTES (sizeof LOG_TRUNCATED_MARK + 4)

/* The one piece of state: what to log and how (set by log_init). */
static struct {
    log_level level;
    bool json;
} log_state = {LOG_INFO, false};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(log_level level, bool json)
{
    if (level < LOG_DEBUG || level > LOG_ERROR)
        level = LOG_INFO;
    log_state.level = level;
    log_state.json = json;
}

int log_level_parse(const char *s, log_level *out)
{
    if (s == NULL || out == NULL)
        return -1;
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

/* A bounded line under construction. */
typedef struct line_buf {
    char buf[LOG_LINE_BYTES_MAX];
    size_t len;
    size_t limit; /* where message text must stop (tail reserved) */
    bool truncated;
} line_buf;

static void put_raw(line_buf *b, const char *s, size_t n)
{
    if (n > sizeof b->buf - b->len)
        n = sizeof b->buf - b->len;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void put_str(line_buf *b, const char *s)
{
    put_raw(b, s, strlen(s));
}

/* Length of a valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    size_t need;
    if (s[0] < 0x80u)
        return 1;
    if (s[0] >= 0xC2u && s[0] <= 0xDFu)
        need = 2;
    else if (s[0] >= 0xE0u && s[0] <= 0xEFu)
        need = 3;
    else if (s[0] >= 0xF0u && s[0] <= 0xF4u)
        need = 4;
    else
        return 0;
    if (need > n)
        return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xC0u) != 0x80u)
            return 0;
    return need;
}

/* Append text escaped for a double-quoted logfmt value or a JSON string:
 * quote and backslash escaped, control characters as \n \t \r or \u00XX
 * (JSON) / \xXX (logfmt), invalid UTF-8 bytes replaced. Stops at
 * b->limit and marks the line truncated. */
static void put_escaped(line_buf *b, const char *text, bool json)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    size_t i = 0;
    while (i < n) {
        char esc[8];
        const char *out = esc;
        size_t out_len;
        size_t seq = utf8_seq_len(s + i, n - i);
        if (seq == 0) {
            if (json)
                snprintf(esc, sizeof esc, "\\ufffd");
            else
                snprintf(esc, sizeof esc, "\\x%02x", s[i]);
            out_len = strlen(esc);
            seq = 1;
        } else if (seq > 1) {
            out = (const char *)s + i;
            out_len = seq;
        } else if (s[i] == '"' || s[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)s[i];
            out_len = 2;
        } else if (s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
            esc[0] = '\\';
            esc[1] = s[i] == '\n' ? 'n' : s[i] == '\t' ? 't' : 'r';
            out_len = 2;
        } else if (s[i] < 0x20u || s[i] == 0x7Fu) {
            snprintf(esc, sizeof esc, json ? "\\u%04x" : "\\x%02x", s[i]);
            out_len = strlen(esc);
        } else {
            out = (const char *)s + i;
            out_len = 1;
        }
        if (b->len + out_len > b->limit) {
            b->truncated = true;
            return;
        }
        put_raw(b, out, out_len);
        i += seq;
    }
}

/* Component names are identifiers chosen by the code; anything else is
 * replaced so a logfmt token never needs quoting. */
static void put_token(line_buf *b, const char *s)
{
    if (s == NULL || *s == '\0')
        s = "-";
    for (size_t i = 0; i < 64 && s[i] != '\0'; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
        char out = ok ? c : '_';
        put_raw(b, &out, 1);
    }
}

static void format_ts(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

void log_msg(log_level level, const char *comp, const char *fmt, ...)
{
    if (level < log_state.level || fmt == NULL)
        return;
    if (level < LOG_DEBUG || level > LOG_ERROR)
        level = LOG_ERROR;
    int saved_errno = errno; /* callers log, then read errno */

    char msg[LOG_LINE_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    int want = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (want < 0)
        snprintf(msg, sizeof msg, "(unformattable log message)");

    char ts[32];
    format_ts(ts);

    line_buf b;
    b.len = 0;
    b.limit = sizeof b.buf - LOG_TAIL_RESERVE_BYTES;
    b.truncated = want >= (int)sizeof msg;
    bool json = log_state.json;
    if (json) {
        put_str(&b, "{\"ts\":\"");
        put_str(&b, ts);
        put_str(&b, "\",\"level\":\"");
        put_str(&b, level_names[level]);
        put_str(&b, "\",\"comp\":\"");
        put_token(&b, comp);
        put_str(&b, "\",\"msg\":\"");
    } else {
        put_str(&b, "ts=");
        put_str(&b, ts);
        put_str(&b, " level=");
        put_str(&b, level_names[level]);
        put_str(&b, " comp=");
        put_token(&b, comp);
        put_str(&b, " msg=\"");
    }
    put_escaped(&b, msg, json);
    if (b.truncated)
        put_str(&b, LOG_TRUNCATED_MARK);
    put_str(&b, json ? "\"}\n" : "\"\n");

    /* One write per line; retry only what an interrupt or a short write
     * left, so a line is never silently lost. */
    size_t off = 0;
    for (int tries = 0; off < b.len && tries < 8; tries++) {
        ssize_t w = write(STDERR_FILENO, b.buf + off, b.len - off);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EINTR)
            break;
    }
    errno = saved_errno;
}
