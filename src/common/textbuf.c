/*
 * textbuf.c — the growable text buffer of textbuf.h: doubling growth
 * from 256 bytes, overflow of the size checked.
 */
#include "common/textbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void textbuf_reserve(textbuf *b, size_t more)
{
    if (b->failed || (b->cap > b->len && more < b->cap - b->len))
        return;
    if (more > SIZE_MAX / 4 - b->len) {
        b->failed = true;
        return;
    }
    size_t cap = b->cap > 0 ? b->cap : 256;
    while (cap - b->len <= more)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = true;
        return;
    }
    b->data = p;
    b->cap = cap;
}

void textbuf_put(textbuf *b, const char *s, size_t n)
{
    textbuf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void textbuf_add(textbuf *b, const char *s)
{
    textbuf_put(b, s, strlen(s));
}
