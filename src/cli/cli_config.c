/*
 * cli_config.c — loading and writing the configuration file for
 * meridianctl (see cli_config.h).
 *
 * A new file is written to a temporary name in the same directory with
 * mode 0600 from the start (the pepper is a secret: it must never exist
 * world-readable, even briefly) and then linked or renamed into place,
 * so a crash never leaves a half-written config and `--force` replaces
 * the old file atomically.
 */
#include "cli/cli_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/mrd_assert.h"

const char *const cli_config_keys[] = {
    "listen",          "dsn",
    "workers",         "commit_wait_us",
    "commit_events_max", "read_pool_size",
    "max_connections", "api_key_pepper",
    "log_level",       "log_format",
    "expire_interval_ms", "cell",
    "etcd",            "failover_wait_ms", "region", "global_standby_names", "global_wait_ms",
    NULL,
};

/* Longest file config init writes (the text below plus dsn and listen). */
#define CLI_CONFIG_TEXT_BYTES_MAX 8192
#define CLI_CONFIG_VALUE_BYTES_MAX 2048

static int fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

config *cli_config_load(const char *path, char *err, size_t err_size)
{
    if (path == NULL) {
        config *c = config_empty();
        if (c == NULL)
            fail(err, err_size, "out of memory");
        return c;
    }
    return config_load(path, cli_config_keys, err, err_size);
}

int cli_config_pepper(const config *c, uint8_t pepper[APIKEY_PEPPER_SIZE],
                      char *err, size_t err_size)
{
    const char *hex = config_get(c, "api_key_pepper");
    if (hex == NULL || hex[0] == '\0')
        return fail(err, err_size, "no api_key_pepper in the configuration");
    if (apikey_pepper_parse(hex, pepper) != 0)
        return fail(err, err_size, "api_key_pepper must be 64 hex digits (32 bytes)");
    return 0;
}

int cli_config_check_listen(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen || colon[1] == '\0')
        return -1;
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
        return -1;
    for (const char *p = listen; p < colon; p++)
        if (*p == ' ' || *p == '\t' || *p == '#' || *p == '\n')
            return -1;
    return 0;
}

/* A value must stay on its line. */
static int check_value(const char *what, const char *v, char *err, size_t err_size)
{
    if (strlen(v) > CLI_CONFIG_VALUE_BYTES_MAX)
        return fail(err, err_size, "%s is longer than %d bytes", what,
                    CLI_CONFIG_VALUE_BYTES_MAX);
    if (strpbrk(v, "\n\r") != NULL)
        return fail(err, err_size, "%s must not contain a line break", what);
    return 0;
}

static int render(char *buf, size_t size, const char *dsn, const char *listen,
                  const char *pepper_hex)
{
    char dsn_line[CLI_CONFIG_VALUE_BYTES_MAX + 64];
    if (dsn)
        snprintf(dsn_line, sizeof dsn_line, "dsn = %s", dsn);
    else
        snprintf(dsn_line, sizeof dsn_line,
                 "# dsn = host=127.0.0.1 port=5432 user=meridian dbname=meridian");
    int n = snprintf(
        buf, size,
        "# Meridian configuration, read by meridiand and meridianctl.\n"
        "# Written by `meridianctl config init`. Format: key = value; a line\n"
        "# starting with '#' is a comment. Command-line flags override values.\n"
        "\n"
        "# HTTP address of meridiand (HOST:PORT; keep it on 127.0.0.1 behind\n"
        "# the load balancer).\n"
        "listen = %s\n"
        "\n"
        "# libpq connection string of the cell's PostgreSQL primary.\n"
        "%s\n"
        "\n"
        "# Secret key of the API-key hashes (64 hex digits). Keep this file\n"
        "# mode 0600. Changing it invalidates every API key issued so far.\n"
        "api_key_pepper = %s\n"
        "\n"
        "# Tuning: meridiand's defaults are shown (docs/OPERATIONS.md). Comments\n"
        "# must be whole lines: a value runs to the end of its line.\n"
        "#\n"
        "# Connections that run group commits:\n"
        "# workers = 4\n"
        "# Longest wait, in microseconds, to fill a group commit:\n"
        "# commit_wait_us = 500\n"
        "# Events per group commit (at most 8190):\n"
        "# commit_events_max = 8190\n"
        "# Connections that serve reads:\n"
        "# read_pool_size = 8\n"
        "# Concurrent HTTP connections (at most 512):\n"
        "# max_connections = 256\n"
        "# Period of the sweep that expires timed-out pending transfers:\n"
        "# expire_interval_ms = 1000\n"
        "\n"
        "# Logs on stderr: log_level debug|info|warn|error, log_format logfmt|json.\n"
        "# log_level = info\n"
        "# log_format = logfmt\n"
        "\n"
        "# The cell this process serves (multi-cell deployments).\n"
        "# cell = default\n",
        listen, dsn_line, pepper_hex);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

static int write_all(int fd, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

int cli_config_write_new(const char *path, const char *dsn, const char *listen,
                         bool force, char *err, size_t err_size)
{
    mrd_assert(path != NULL);
    int rc = -1;
    int fd = -1;
    char *text = NULL;
    char tmp[4096];
    bool tmp_made = false;

    if (listen == NULL)
        listen = CLI_CONFIG_LISTEN_DEFAULT;
    if (check_value("the DSN", dsn ? dsn : "", err, err_size) != 0 ||
        check_value("the listen address", listen, err, err_size) != 0)
        return -1;
    if (!force && access(path, F_OK) == 0)
        return CLI_CONFIG_EXISTS;
    if (sodium_init() < 0)
        return fail(err, err_size, "libsodium could not be initialised");

    uint8_t pepper[APIKEY_PEPPER_SIZE];
    char pepper_hex[2 * APIKEY_PEPPER_SIZE + 1];
    randombytes_buf(pepper, sizeof pepper);
    sodium_bin2hex(pepper_hex, sizeof pepper_hex, pepper, sizeof pepper);
    sodium_memzero(pepper, sizeof pepper);

    text = malloc(CLI_CONFIG_TEXT_BYTES_MAX);
    if (text == NULL) {
        fail(err, err_size, "out of memory");
        goto out;
    }
    int len = render(text, CLI_CONFIG_TEXT_BYTES_MAX, dsn, listen, pepper_hex);
    if (len < 0) {
        fail(err, err_size, "the configuration text is too long");
        goto out;
    }

    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fail(err, err_size, "path too long: %s", path);
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fail(err, err_size, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    tmp_made = true;
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, (size_t)len) != 0 ||
        fsync(fd) != 0) {
        fail(err, err_size, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        fail(err, err_size, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (force) {
        if (rename(tmp, path) != 0) {
            fail(err, err_size, "cannot replace %s: %s", path, strerror(errno));
            goto out;
        }
        tmp_made = false;
    } else {
        /* link() fails if path appeared meanwhile: never overwrite. */
        if (link(tmp, path) != 0) {
            if (errno == EEXIST) {
                rc = CLI_CONFIG_EXISTS;
                goto out;
            }
            fail(err, err_size, "cannot create %s: %s", path, strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlink(tmp);
    if (text) {
        sodium_memzero(text, CLI_CONFIG_TEXT_BYTES_MAX);
        free(text);
    }
    sodium_memzero(pepper_hex, sizeof pepper_hex);
    return rc;
}
