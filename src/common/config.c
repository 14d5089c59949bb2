/*
 * config.c — the "key = value" configuration file of meridiand and
 * meridianctl.
 *
 * Deliberately small and strict: a typo in a key or a repeated key is an
 * error naming the file and line, never a silently ignored setting (an
 * operator who sets "commit_wait_us" twice should learn which one is
 * meant). Everything is bounded: at most CONFIG_KEYS_MAX keys, lines of
 * at most CONFIG_LINE_BYTES_MAX bytes and CONFIG_LINES_MAX lines.
 *
 * Comments are whole lines whose first non-blank character is '#': a
 * value runs to the end of its line, so secrets and connection strings
 * may contain '#'.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mrd_assert.h"

/* Bounds of a configuration file (kept here: only this module uses them). */
#define CONFIG_KEYS_MAX 256
#define CONFIG_LINE_BYTES_MAX 4096
#define CONFIG_LINES_MAX 100000
#define CONFIG_KEY_BYTES_MAX 64

typedef struct config_item {
    char *key;
    char *value;
    int line; /* where it was set in the file; 0 when set by config_set */
} config_item;

struct config {
    size_t count;
    config_item items[CONFIG_KEYS_MAX];
};

config *config_empty(void)
{
    return calloc(1, sizeof(config));
}

void config_free(config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->count; i++) {
        free(c->items[i].key);
        free(c->items[i].value);
    }
    free(c);
}

static config_item *find(const config *c, const char *key)
{
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->items[i].key, key) == 0)
            return (config_item *)&c->items[i];
    return NULL;
}

const char *config_get(const config *c, const char *key)
{
    mrd_assert(c != NULL && key != NULL);
    const config_item *it = find(c, key);
    return it ? it->value : NULL;
}

/* Add or replace; line is recorded for repeated-key messages. */
static int set_at(config *c, const char *key, const char *value, int line)
{
    char *v = strdup(value);
    if (v == NULL)
        return -1;
    config_item *it = find(c, key);
    if (it != NULL) {
        free(it->value);
        it->value = v;
        it->line = line;
        return 0;
    }
    if (c->count >= CONFIG_KEYS_MAX) {
        free(v);
        return -1;
    }
    char *k = strdup(key);
    if (k == NULL) {
        free(v);
        return -1;
    }
    c->items[c->count++] = (config_item){.key = k, .value = v, .line = line};
    return 0;
}

int config_set(config *c, const char *key, const char *value)
{
    mrd_assert(c != NULL && key != NULL && value != NULL);
    return set_at(c, key, value, 0);
}

static bool key_valid(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > CONFIG_KEY_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_'))
            return false;
    return true;
}

static bool key_known(const char *const *known, const char *k)
{
    if (known == NULL)
        return true;
    for (size_t i = 0; i < CONFIG_KEYS_MAX && known[i] != NULL; i++)
        if (strcmp(known[i], k) == 0)
            return true;
    return false;
}

/* "a, b, c" of the known keys, cut to size. */
static void known_list(const char *const *known, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; known != NULL && i < CONFIG_KEYS_MAX && known[i] != NULL; i++) {
        int w = snprintf(out + n, size - n, "%s%s", i ? ", " : "", known[i]);
        if (w < 0 || (size_t)w >= size - n) {
            out[n] = '\0';
            snprintf(out + n, size - n, ", ...");
            return;
        }
        n += (size_t)w;
    }
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Read one line (without '\n') into buf. Returns 1 for a line, 0 at end
 * of file, -1 when the line is too long, -2 when it holds a NUL byte,
 * -3 on a read error. */
static int read_line(FILE *f, char buf[CONFIG_LINE_BYTES_MAX + 1])
{
    size_t n = 0;
    int ch;
    bool any = false;
    bool has_nul = false;
    while ((ch = getc(f)) != EOF) {
        any = true;
        if (ch == '\n')
            break;
        if (ch == '\0')
            has_nul = true;
        if (n >= CONFIG_LINE_BYTES_MAX)
            return -1;
        buf[n++] = (char)ch;
    }
    if (ferror(f))
        return -3;
    buf[n] = '\0';
    if (has_nul)
        return -2;
    return any ? 1 : 0;
}

config *config_load(const char *path, const char *const *known, char *err,
                    size_t err_size)
{
    mrd_assert(path != NULL && err != NULL && err_size > 0);
    err[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size,
                 "%s: could not open the configuration file: %s. Hint: check the path "
                 "given with --config and that this user may read it.",
                 path, strerror(errno));
        return NULL;
    }
    config *c = config_empty();
    char *line = malloc(CONFIG_LINE_BYTES_MAX + 1);
    if (c == NULL || line == NULL) {
        snprintf(err, err_size, "%s: out of memory while reading the configuration", path);
        goto fail;
    }
    for (int lineno = 1;; lineno++) {
        if (lineno > CONFIG_LINES_MAX) {
            snprintf(err, err_size,
                     "%s:%d: more than %d lines. Hint: is this really a Meridian "
                     "configuration file?",
                     path, lineno, CONFIG_LINES_MAX);
            goto fail;
        }
        int rc = read_line(f, line);
        if (rc == 0)
            break;
        if (rc == -1) {
            snprintf(err, err_size,
                     "%s:%d: line longer than %d bytes. Hint: values must fit on one "
                     "line.",
                     path, lineno, CONFIG_LINE_BYTES_MAX);
            goto fail;
        }
        if (rc == -2) {
            snprintf(err, err_size,
                     "%s:%d: line contains a NUL byte. Hint: the file must be text.",
                     path, lineno);
            goto fail;
        }
        if (rc == -3) {
            snprintf(err, err_size, "%s:%d: read error: %s", path, lineno, strerror(errno));
            goto fail;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, err_size,
                     "%s:%d: expected \"key = value\", found \"%.60s\". Hint: comments "
                     "start with '#' at the beginning of a line.",
                     path, lineno, s);
            goto fail;
        }
        *eq = '\0';
        char *key = trim(s);
        char *value = trim(eq + 1);
        if (!key_valid(key)) {
            snprintf(err, err_size,
                     "%s:%d: invalid key \"%.64s\". Hint: keys are 1 to %d characters "
                     "of a-z, 0-9 and '_'.",
                     path, lineno, key, CONFIG_KEY_BYTES_MAX);
            goto fail;
        }
        if (!key_known(known, key)) {
            char list[512];
            known_list(known, list, sizeof list);
            snprintf(err, err_size, "%s:%d: unknown key \"%s\". Hint: known keys are: %s.",
                     path, lineno, key, list);
            goto fail;
        }
        const config_item *prev = find(c, key);
        if (prev != NULL) {
            snprintf(err, err_size,
                     "%s:%d: key \"%s\" repeated (first set on line %d). Hint: keep "
                     "one of the two lines.",
                     path, lineno, key, prev->line);
            goto fail;
        }
        if (c->count >= CONFIG_KEYS_MAX) {
            snprintf(err, err_size, "%s:%d: more than %d keys. Hint: remove settings that "
                     "repeat their defaults.",
                     path, lineno, CONFIG_KEYS_MAX);
            goto fail;
        }
        if (set_at(c, key, value, lineno) != 0) {
            snprintf(err, err_size, "%s:%d: out of memory", path, lineno);
            goto fail;
        }
    }
    free(line);
    fclose(f);
    return c;
fail:
    free(line);
    config_free(c);
    fclose(f);
    return NULL;
}

int config_get_int(const config *c, const char *key, long def, long min, long max,
                   long *out, char *err, size_t err_size)
{
    mrd_assert(c != NULL && key != NULL && out != NULL);
    mrd_assert(min <= max);
    const char *v = config_get(c, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    errno = 0;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    bool ok = errno == 0 && end != v && *end == '\0' && !isspace((unsigned char)v[0]) &&
              n >= min && n <= max;
    if (!ok) {
        if (err != NULL && err_size > 0)
            snprintf(err, err_size,
                     "%s: \"%.64s\" is not an integer between %ld and %ld. Hint: "
                     "write a plain decimal number without units.",
                     key, v, min, max);
        return -1;
    }
    *out = n;
    return 0;
}
