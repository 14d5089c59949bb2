/*
 * clock.h — the two clocks every component reads.
 *
 * Monotonic time (CLOCK_MONOTONIC) measures intervals and deadlines; it
 * never jumps. Wall time (CLOCK_REALTIME) is for timestamps that leave
 * the process (logs, etcd history, ledger timestamps). Both as int64
 * counts since their epoch, in the unit the name says.
 */
#ifndef MERIDIAN_COMMON_CLOCK_H
#define MERIDIAN_COMMON_CLOCK_H

#include <stdint.h>

int64_t clock_mono_ns(void);
int64_t clock_mono_us(void);
int64_t clock_mono_ms(void);
int64_t clock_wall_us(void);
int64_t clock_wall_ms(void);

#endif
