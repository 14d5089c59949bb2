/*
 * config.h — the configuration file shared by meridiand and meridianctl.
 *
 * Format: one "key = value" per line; '#' starts a comment; blank lines
 * are ignored; values run to the end of the line (trimmed). Keys are
 * [a-z0-9_]+. A repeated key, a line without '=', or an unknown key (the
 * caller passes the keys it knows) is an error naming the file and line.
 * Command-line flags override file values (each program applies its
 * flags after loading).
 */
#ifndef MERIDIAN_CONFIG_H
#define MERIDIAN_CONFIG_H

#include <stddef.h>

typedef struct config config;

/* Load path. known is a NULL-terminated list of accepted keys. Returns
 * the config, or NULL with "path:line: what is wrong" in err. */
config *config_load(const char *path, const char *const *known, char *err,
                    size_t err_size);
/* An empty config (no file). */
config *config_empty(void);
void config_free(config *c);

/* The value of key, or NULL. Owned by c. */
const char *config_get(const config *c, const char *key);
/* Set or replace key (flags override the file). Returns 0 or -1 (OOM). */
int config_set(config *c, const char *key, const char *value);

/* Typed getters: parse the value as an integer in [min, max]. Return 0
 * and write *out (def when absent), or -1 with a message in err. */
int config_get_int(const config *c, const char *key, long def, long min,
                   long max, long *out, char *err, size_t err_size);

#endif
