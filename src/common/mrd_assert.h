/*
 * mrd_assert.h — assertions that are always compiled in.
 *
 * Like Redis' serverAssert and HAProxy's BUG_ON: a broken invariant is a
 * programmer error, reported with expression, file and line, then abort.
 * Operating errors (bad input, a lost connection) are returned, never
 * asserted.
 */
#ifndef MERIDIAN_ASSERT_H
#define MERIDIAN_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define mrd_assert(expr)                                                       \
    do {                                                                       \
        if (!(expr)) {                                                         \
            fprintf(stderr, "assertion failed: %s (%s:%d, %s)\n", #expr,       \
                    __FILE__, __LINE__, __func__);                             \
            abort();                                                           \
        }                                                                      \
    } while (0)

#endif
