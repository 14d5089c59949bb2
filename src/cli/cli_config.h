/*
 * cli_config.h — meridianctl's side of the configuration file.
 *
 * meridianctl reads the same file as meridiand (common/config.h) so an
 * operator points both at one file; it therefore accepts every key
 * meridiand knows, even those it does not use itself. It also writes
 * new files (`meridianctl config init`) with a fresh api_key_pepper.
 */
#ifndef MERIDIAN_CLI_CONFIG_H
#define MERIDIAN_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/apikey.h"
#include "common/config.h"

/* Every key of the file (meridiand's set), NULL-terminated. */
extern const char *const cli_config_keys[];

/* Default listen address written by config init. */
#define CLI_CONFIG_LISTEN_DEFAULT "127.0.0.1:8080"

/* Load path (NULL: an empty config). Returns the config (config_free
 * it), or NULL with "path:line: what is wrong" in err. */
config *cli_config_load(const char *path, char *err, size_t err_size);

/* The api_key_pepper of c. Returns 0, or -1 with the reason in err when
 * it is missing or not 64 hex digits. */
int cli_config_pepper(const config *c, uint8_t pepper[APIKEY_PEPPER_SIZE],
                      char *err, size_t err_size);

/* Check "HOST:PORT" (port 1..65535, host not empty). Returns 0 or -1. */
int cli_config_check_listen(const char *listen);

#define CLI_CONFIG_EXISTS (-2)

/* Write a new commented config file at path, mode 0600, with a freshly
 * generated api_key_pepper, the given dsn (NULL: a commented example)
 * and listen address (NULL: CLI_CONFIG_LISTEN_DEFAULT). An existing
 * file is kept unless force (then it is replaced atomically). Returns
 * 0, CLI_CONFIG_EXISTS, or -1 with the reason in err. */
int cli_config_write_new(const char *path, const char *dsn, const char *listen,
                         bool force, char *err, size_t err_size);

#endif
