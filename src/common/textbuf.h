/*
 * textbuf.h — a growable text buffer for writing JSON and other text in
 * runs, without a library's per-character callbacks (the canonical
 * metadata and the transfer results in service/codec.c, GET /v1/balances
 * in service/api.c).
 *
 * A failed allocation sets `failed` and makes every later call a no-op,
 * so a writer checks once at the end. The text is always NUL-terminated
 * (data[len] == '\0') once anything was written.
 */
#ifndef MERIDIAN_TEXTBUF_H
#define MERIDIAN_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct textbuf {
    char *data; /* malloc'd; the caller frees it (or takes it) */
    size_t len; /* bytes written, without the terminating NUL */
    size_t cap;
    bool failed; /* out of memory: nothing more is written */
} textbuf;

/* Make room for `more` bytes (and the NUL) past len. */
void textbuf_reserve(textbuf *b, size_t more);

/* Append n bytes of s. */
void textbuf_put(textbuf *b, const char *s, size_t n);

/* Append the NUL-terminated string s. */
void textbuf_add(textbuf *b, const char *s);

#endif
