/*
 * test_config.c — the "key = value" configuration file.
 *
 * Files are written to a temporary directory and loaded for real:
 * values, comments, trimming and overrides must come out exactly, and
 * every kind of mistake must be refused with "path:line:" and a hint.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"

static const char *const known[] = {"listen_port", "database_url", "api_key_pepper",
                                    "log_level", "commit_wait_us", NULL};

static char dir[] = "/tmp/test_config.XXXXXX";
static char path[sizeof dir + 32];

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/meridian.conf", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return rmdir(dir);
}

static void write_file(const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static config *load_text(const char *text, char *err, size_t err_size)
{
    write_file(text, strlen(text));
    return config_load(path, known, err, err_size);
}

/* Load must fail with an error starting "path:line:" and containing
 * want. */
static void expect_error(const char *text, int line, const char *want)
{
    char err[512];
    config *c = load_text(text, err, sizeof err);
    if (c != NULL) {
        config_free(c);
        fail_msg("accepted: %s", text);
    }
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, want) == NULL)
        fail_msg("error \"%s\", want prefix \"%s\" and \"%s\"", err, prefix, want);
    assert_non_null(strstr(err, "Hint"));
}

static void test_load_values(void **state)
{
    (void)state;
    char err[256] = "";
    config *c = load_text("# Meridian\n"
                          "\n"
                          "   listen_port = 8080   \n"
                          "\t# indented comment\n"
                          "database_url=host=127.0.0.1 dbname=meridian password=a#b\r\n"
                          "log_level =\n"
                          "api_key_pepper = 00ff",
                          err, sizeof err);
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(config_get(c, "listen_port"), "8080");
    assert_string_equal(config_get(c, "database_url"),
                        "host=127.0.0.1 dbname=meridian password=a#b");
    assert_string_equal(config_get(c, "log_level"), "");
    assert_string_equal(config_get(c, "api_key_pepper"), "00ff"); /* no final newline */
    assert_null(config_get(c, "commit_wait_us"));

    long v = 0;
    assert_int_equal(config_get_int(c, "listen_port", 1, 1, 65535, &v, err, sizeof err), 0);
    assert_int_equal(v, 8080);
    assert_int_equal(config_get_int(c, "commit_wait_us", 500, 0, 100000, &v, err, sizeof err),
                     0);
    assert_int_equal(v, 500);

    /* Flags override file values; new keys can be added. */
    assert_int_equal(config_set(c, "listen_port", "9090"), 0);
    assert_string_equal(config_get(c, "listen_port"), "9090");
    assert_int_equal(config_set(c, "commit_wait_us", "250"), 0);
    assert_int_equal(config_get_int(c, "commit_wait_us", 500, 0, 100000, &v, err, sizeof err),
                     0);
    assert_int_equal(v, 250);
    config_free(c);
}

static void test_get_int_errors(void **state)
{
    (void)state;
    config *c = config_empty();
    assert_non_null(c);
    char err[256];
    long v = 77;
    const char *bad[] = {"abc", "12abc", "", " 12", "1.5", "65536", "0", "-1",
                         "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(config_set(c, "listen_port", bad[i]), 0);
        err[0] = '\0';
        if (config_get_int(c, "listen_port", 1, 1, 65535, &v, err, sizeof err) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(v, 77);
        assert_non_null(strstr(err, "listen_port"));
        assert_non_null(strstr(err, "between 1 and 65535"));
    }
    assert_int_equal(config_set(c, "listen_port", "-5"), 0);
    assert_int_equal(config_get_int(c, "listen_port", 1, -10, 10, &v, err, sizeof err), 0);
    assert_int_equal(v, -5);
    config_free(c);
}

static void test_load_errors(void **state)
{
    (void)state;
    expect_error("listen_port = 1\nlisten_port = 2\n", 2, "repeated (first set on line 1)");
    expect_error("# c\nlisten_port 8080\n", 2, "expected \"key = value\"");
    expect_error("listen_port = 1\nlisten_prot = 2\n", 2, "unknown key \"listen_prot\"");
    expect_error("listen_prot = 2\n", 1, "known keys are: listen_port, database_url");
    expect_error("Listen_Port = 1\n", 1, "invalid key");
    expect_error("= 1\n", 1, "invalid key");
    expect_error("listen-port = 1\n", 1, "invalid key");

    /* A line over 4 KiB. */
    size_t n = 5000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    strcpy(text, "log_level = info\ndatabase_url = ");
    size_t used = strlen(text);
    memset(text + used, 'x', n);
    strcpy(text + used + n, "\n");
    expect_error(text, 2, "longer than 4096 bytes");
    free(text);

    /* A NUL byte. */
    write_file("log_level = in\0fo\n", 18);
    char err[256];
    assert_null(config_load(path, known, err, sizeof err));
    assert_non_null(strstr(err, ":1: line contains a NUL byte"));

    /* A missing file. */
    char missing[sizeof path + 8];
    snprintf(missing, sizeof missing, "%s.nope", path);
    assert_null(config_load(missing, known, err, sizeof err));
    assert_non_null(strstr(err, "could not open"));
    assert_non_null(strstr(err, "No such file"));
}

static void test_key_bound(void **state)
{
    (void)state;
    /* Accept-any (known == NULL): at most 256 keys. */
    char *text = malloc(300 * 16);
    assert_non_null(text);
    size_t used = 0;
    for (int i = 0; i < 256; i++)
        used += (size_t)sprintf(text + used, "k%d = %d\n", i, i);
    write_file(text, used);
    char err[256];
    config *c = config_load(path, NULL, err, sizeof err);
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(config_get(c, "k255"), "255");
    assert_int_equal(config_set(c, "k256", "x"), -1); /* full */
    assert_int_equal(config_set(c, "k0", "y"), 0);     /* replacing is fine */
    assert_string_equal(config_get(c, "k0"), "y");
    config_free(c);

    used += (size_t)sprintf(text + used, "k256 = 256\n");
    write_file(text, used);
    assert_null(config_load(path, NULL, err, sizeof err));
    assert_non_null(strstr(err, ":257: more than 256 keys"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_values),
        cmocka_unit_test(test_get_int_errors),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_key_bound),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
