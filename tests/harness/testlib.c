/*
 * testlib.c — the integration tests' toolbox (see testlib.h).
 *
 * Runs the real binaries as an operator would (fork/exec with bounded
 * output and time), speaks HTTP with one keep-alive libcurl handle per
 * thread, and reads PostgreSQL directly with libpq so tests can check
 * what the service really wrote, not only what it answered.
 */
#include "testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>

#include <setjmp.h>
#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* Process environment                                                */
/* ------------------------------------------------------------------ */

static __thread CURL *tl_curl;

void tl_init(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK) {
        fprintf(stderr, "testlib: curl_global_init failed\n");
        exit(1);
    }
    /* A daemon that dies while we write to its socket must not kill us. */
    signal(SIGPIPE, SIG_IGN);
}

void tl_shutdown(void)
{
    tl_http_thread_end();
    curl_global_cleanup();
}

const char *tl_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr,
                "testlib: environment variable %s is not set\n"
                "hint: run integration tests through ctest (tests/harness/run-itest.sh "
                "sets MERIDIAN_TEST_DSN, MERIDIAN_TEST_PGDIR, MERIDIAN_BIN_DIR, "
                "MERIDIAN_SOURCE_DIR).\n",
                name);
        exit(1);
    }
    return v;
}

int tl_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int64_t tl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tl_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void tl_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* Commands                                                           */
/* ------------------------------------------------------------------ */

/* Exit code of a waitpid status: code, or 128+signal. */
static int tl_status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Wait for pid until deadline_ms (monotonic). Returns the status code,
 * or -2 after killing it with SIGKILL when the deadline passed. */
static int tl_wait_deadline(pid_t pid, int64_t deadline_ms)
{
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return tl_status_code(status);
        if (r < 0 && errno != EINTR)
            return -1;
        if (tl_now_ms() >= deadline_ms)
            break;
        tl_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return -2;
}

int tl_run(const char *const argv[], char **out)
{
    int pfd[2] = {-1, -1};
    char *buf = NULL;
    size_t len = 0;
    if (out != NULL) {
        *out = NULL;
        if (pipe2(pfd, O_CLOEXEC) != 0) {
            perror("testlib: pipe2");
            return -1;
        }
        buf = malloc(TL_RUN_STDOUT_BYTES_MAX + 1);
        if (buf == NULL)
            goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("testlib: fork");
        goto fail;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        if (out != NULL)
            dup2(pfd[1], 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int64_t deadline_ms = tl_now_ms() + TL_RUN_TIMEOUT_MS;
    if (out != NULL) {
        close(pfd[1]);
        pfd[1] = -1;
        for (;;) {
            int64_t left_ms = deadline_ms - tl_now_ms();
            if (left_ms <= 0)
                break;
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            int pr = poll(&p, 1, (int)(left_ms > 1000 ? 1000 : left_ms));
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr <= 0)
                continue;
            char chunk[4096];
            ssize_t n = read(pfd[0], chunk, sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            size_t take = (size_t)n;
            if (take > TL_RUN_STDOUT_BYTES_MAX - len)
                take = TL_RUN_STDOUT_BYTES_MAX - len; /* bounded: discard the rest */
            memcpy(buf + len, chunk, take);
            len += take;
        }
        close(pfd[0]);
        pfd[0] = -1;
        buf[len] = '\0';
    }
    int code = tl_wait_deadline(pid, deadline_ms);
    if (code == -2)
        fprintf(stderr, "testlib: %s ran longer than %d ms and was killed\n", argv[0],
                TL_RUN_TIMEOUT_MS);
    if (out != NULL)
        *out = buf;
    return code == -2 ? 128 + SIGKILL : code;

fail:
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    free(buf);
    return -1;
}

/* ------------------------------------------------------------------ */
/* meridiand                                                          */
/* ------------------------------------------------------------------ */

void tl_meridiand_dump_log(const tl_daemon *d, size_t max_bytes)
{
    FILE *f = fopen(d->log_path, "r");
    if (f == NULL) {
        fprintf(stderr, "testlib: no log at %s\n", d->log_path);
        return;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > (long)max_bytes)
            fseek(f, size - (long)max_bytes, SEEK_SET);
        else
            fseek(f, 0, SEEK_SET);
    }
    fprintf(stderr, "---- tail of %s ----\n", d->log_path);
    char chunk[4096];
    size_t n;
    size_t total = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && total < max_bytes) {
        fwrite(chunk, 1, n, stderr);
        total += n;
    }
    fprintf(stderr, "---- end of log ----\n");
    fclose(f);
}

int tl_meridiand_start(const char *config_path, int port, const char *log_dir,
                       tl_daemon *d)
{
    static int starts; /* distinguishes the logs of restarts on one port */
    memset(d, 0, sizeof *d);
    const char *bin_dir = tl_env("MERIDIAN_BIN_DIR");
    char bin[PATH_MAX];
    char listen[64];
    snprintf(bin, sizeof bin, "%s/meridiand", bin_dir);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    d->port = port;
    snprintf(d->base_url, sizeof d->base_url, "http://127.0.0.1:%d", port);
    snprintf(d->log_path, sizeof d->log_path, "%s/meridiand-%d-%d.log", log_dir, port,
             __atomic_add_fetch(&starts, 1, __ATOMIC_RELAXED));
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "testlib: %s is not executable: %s\n", bin, strerror(errno));
        return -1;
    }
    int logfd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "testlib: cannot create %s: %s\n", d->log_path, strerror(errno));
        return -1;
    }
    const char *argv[] = {bin, "--config", config_path, "--listen", listen, NULL};
    pid_t pid = fork();
    if (pid < 0) {
        perror("testlib: fork");
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(logfd);
    d->pid = pid;

    char url[TL_URL_SIZE + 16];
    snprintf(url, sizeof url, "%s/readyz", d->base_url);
    int64_t deadline_ms = tl_now_ms() + TL_READY_TIMEOUT_MS;
    long last_status = 0;
    while (tl_now_ms() < deadline_ms) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "testlib: meridiand on port %d exited early (code %d)\n", port,
                    tl_status_code(status));
            d->pid = 0;
            tl_meridiand_dump_log(d, 8192);
            return -1;
        }
        tl_resp r;
        tl_req req = {.method = "GET", .url = url, .timeout_ms = 2000};
        tl_http_req(&req, &r);
        last_status = r.status;
        tl_resp_release(&r);
        if (last_status == 200)
            return 0;
        tl_sleep_ms(100);
    }
    fprintf(stderr, "testlib: meridiand on port %d not ready after %d ms (last /readyz: %ld)\n",
            port, TL_READY_TIMEOUT_MS, last_status);
    tl_meridiand_kill(d);
    tl_meridiand_dump_log(d, 8192);
    return -1;
}

int tl_meridiand_stop(tl_daemon *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int code = tl_wait_deadline(d->pid, tl_now_ms() + TL_STOP_TIMEOUT_MS);
    if (code == -2)
        fprintf(stderr, "testlib: meridiand on port %d ignored SIGTERM for %d ms: SIGKILLed\n",
                d->port, TL_STOP_TIMEOUT_MS);
    d->pid = 0;
    if (code != 0)
        tl_meridiand_dump_log(d, 8192);
    return code;
}

int tl_meridiand_kill(tl_daemon *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGKILL);
    int status = 0;
    while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR) {
    }
    d->pid = 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                               */
/* ------------------------------------------------------------------ */

typedef struct tl_buf {
    char *data;
    size_t len;
    size_t cap;
    bool too_big;
} tl_buf;

static size_t tl_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    tl_buf *b = arg;
    size_t n = size * nmemb;
    if (n > TL_HTTP_BODY_BYTES_MAX - b->len) {
        b->too_big = true;
        return 0; /* aborts the transfer: bounded */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            return 0;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

typedef struct tl_upload {
    const char *data;
    size_t len;
    size_t off;
} tl_upload;

static size_t tl_read_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    tl_upload *u = arg;
    size_t n = size * nmemb;
    if (n > u->len - u->off)
        n = u->len - u->off;
    memcpy(ptr, u->data + u->off, n);
    u->off += n;
    return n;
}

static CURL *tl_handle(void)
{
    if (tl_curl == NULL)
        tl_curl = curl_easy_init();
    else
        curl_easy_reset(tl_curl); /* keeps the connection cache */
    return tl_curl;
}

void tl_http_thread_end(void)
{
    if (tl_curl != NULL) {
        curl_easy_cleanup(tl_curl);
        tl_curl = NULL;
    }
}

int tl_http_req(const tl_req *req, tl_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    tl_buf b = {0};
    struct curl_slist *headers = NULL;
    char line[256];
    tl_upload up = {.data = req->body, .len = req->body ? req->body_len : 0};
    CURL *c = tl_handle();
    if (c == NULL) {
        resp->curl_code = CURLE_FAILED_INIT;
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                     req->timeout_ms > 0 ? req->timeout_ms : (long)TL_HTTP_TIMEOUT_MS_DEFAULT);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tl_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);

    if (req->authorization != NULL) {
        snprintf(line, sizeof line, "Authorization: %s", req->authorization);
        headers = curl_slist_append(headers, line);
    } else if (req->api_key != NULL) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", req->api_key);
        headers = curl_slist_append(headers, line);
    }
    if (req->body != NULL) {
        if (req->content_type == NULL)
            headers = curl_slist_append(headers, "Content-Type: application/json");
        else if (req->content_type[0] == '\0')
            headers = curl_slist_append(headers, "Content-Type:"); /* none at all */
        else {
            snprintf(line, sizeof line, "Content-Type: %s", req->content_type);
            headers = curl_slist_append(headers, line);
        }
        if (req->chunked) {
            headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_READFUNCTION, tl_read_cb);
            curl_easy_setopt(c, CURLOPT_READDATA, &up);
        } else {
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    } else if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(req->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        headers = curl_slist_append(headers, "Content-Type: application/json");
    } else if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    }
    if (headers != NULL)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);

    CURLcode rc = curl_easy_perform(c);
    resp->curl_code = (int)rc;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
        char *ct = NULL;
        if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct != NULL)
            snprintf(resp->content_type, sizeof resp->content_type, "%s", ct);
    } else if (b.too_big) {
        fprintf(stderr, "testlib: response from %s over %u bytes\n", req->url,
                TL_HTTP_BODY_BYTES_MAX);
    }
out:
    curl_slist_free_all(headers);
    if (b.data == NULL) {
        b.data = calloc(1, 1);
        b.len = 0;
    }
    resp->body = b.data;
    resp->body_len = b.len;
    if (resp->body != NULL && resp->body_len > 0)
        resp->json = json_loadb(resp->body, resp->body_len, 0, NULL);
    return resp->curl_code == 0 ? 0 : -1;
}

int tl_http(const char *method, const char *url, const char *api_key, const char *body,
            tl_resp *resp)
{
    tl_req req = {.method = method,
                  .url = url,
                  .api_key = api_key,
                  .body = body,
                  .body_len = body ? strlen(body) : 0};
    return tl_http_req(&req, resp);
}

int tl_post(const tl_daemon *d, const char *path, const char *api_key, json_t *json,
            tl_resp *resp)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", d->base_url, path);
    char *body = json ? tl_dump(json) : NULL;
    int rc = tl_http("POST", url, api_key, body, resp);
    free(body);
    return rc;
}

int tl_get(const tl_daemon *d, const char *api_key, tl_resp *resp, const char *path_fmt, ...)
{
    char path[1024];
    va_list ap;
    va_start(ap, path_fmt);
    vsnprintf(path, sizeof path, path_fmt, ap);
    va_end(ap);
    char url[1024 + TL_URL_SIZE];
    snprintf(url, sizeof url, "%s%s", d->base_url, path);
    return tl_http("GET", url, api_key, NULL, resp);
}

void tl_resp_release(tl_resp *resp)
{
    free(resp->body);
    resp->body = NULL;
    if (resp->json != NULL)
        json_decref(resp->json);
    resp->json = NULL;
}

/* ------------------------------------------------------------------ */
/* Test world                                                         */
/* ------------------------------------------------------------------ */

int tl_create_key(const tl_world *w, const char *customer, char key[TL_KEY_TEXT_SIZE],
                  int64_t *id)
{
    char ctl[PATH_MAX];
    snprintf(ctl, sizeof ctl, "%s/meridianctl", w->bin_dir);
    const char *argv_customer[] = {ctl,          "--config", w->config_path, "apikey", "create",
                                   "--customer", customer,   "--json",       NULL};
    const char *argv_admin[] = {ctl,     "--config", w->config_path, "apikey",
                                "create", "--admin", "--json",       NULL};
    char *out = NULL;
    int rc = tl_run(customer ? argv_customer : argv_admin, &out);
    if (rc != 0) {
        fprintf(stderr, "testlib: meridianctl apikey create %s%s exited %d; stdout: %s\n",
                customer ? "--customer " : "--admin", customer ? customer : "", rc,
                out ? out : "");
        free(out);
        return -1;
    }
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    const char *k = j ? tl_field_str(j, "key") : NULL;
    const char *scope = j ? tl_field_str(j, "scope") : NULL;
    int result = -1;
    if (k == NULL || strncmp(k, "mk_", 3) != 0 || strlen(k) >= TL_KEY_TEXT_SIZE) {
        fprintf(stderr, "testlib: apikey create printed no usable \"key\": %s\n", out);
    } else if (scope == NULL || strcmp(scope, customer ? "customer" : "admin") != 0) {
        fprintf(stderr, "testlib: apikey create printed scope %s, want %s: %s\n",
                scope ? scope : "(none)", customer ? "customer" : "admin", out);
    } else if (id != NULL && tl_field_i64(j, "id", id) != 0) {
        fprintf(stderr, "testlib: apikey create printed no \"id\": %s\n", out);
    } else {
        snprintf(key, TL_KEY_TEXT_SIZE, "%s", k);
        result = 0;
    }
    json_decref(j);
    free(out);
    return result;
}

int tl_setup_db_and_keys(tl_world *w)
{
    memset(w, 0, sizeof *w);
    w->dsn = tl_env("MERIDIAN_TEST_DSN");
    w->bin_dir = tl_env("MERIDIAN_BIN_DIR");
    snprintf(w->tmp_dir, sizeof w->tmp_dir, "/tmp/meridian-itest-XXXXXX");
    if (mkdtemp(w->tmp_dir) == NULL) {
        perror("testlib: mkdtemp");
        w->tmp_dir[0] = '\0';
        return -1;
    }
    snprintf(w->config_path, sizeof w->config_path, "%s/meridian.conf", w->tmp_dir);
    char ctl[PATH_MAX];
    snprintf(ctl, sizeof ctl, "%s/meridianctl", w->bin_dir);

    const char *migrate[] = {ctl, "--dsn", w->dsn, "db", "migrate", NULL};
    int rc = tl_run(migrate, NULL);
    if (rc != 0) {
        fprintf(stderr, "testlib: meridianctl db migrate exited %d\n", rc);
        goto fail;
    }
    /* Migrating twice is a no-op (the operator's retry). */
    rc = tl_run(migrate, NULL);
    if (rc != 0) {
        fprintf(stderr, "testlib: second meridianctl db migrate exited %d\n", rc);
        goto fail;
    }
    w->port = tl_free_port();
    if (w->port <= 0)
        goto fail;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", w->port);
    const char *init[] = {ctl,      "--config", w->config_path, "config",  "init",
                          "--out",  w->config_path, "--dsn",    w->dsn,    "--listen",
                          listen,   NULL};
    rc = tl_run(init, NULL);
    if (rc != 0) {
        fprintf(stderr, "testlib: meridianctl config init exited %d\n", rc);
        goto fail;
    }
    if (access(w->config_path, R_OK) != 0) {
        fprintf(stderr, "testlib: config init wrote no %s\n", w->config_path);
        goto fail;
    }
    if (tl_create_key(w, "acme", w->key_acme, NULL) != 0 ||
        tl_create_key(w, "globex", w->key_globex, NULL) != 0 ||
        tl_create_key(w, NULL, w->key_admin, NULL) != 0)
        goto fail;
    return 0;
fail:
    tl_world_release(w, true);
    return -1;
}

static int tl_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tl_world_release(tl_world *w, bool keep_logs)
{
    if (w->tmp_dir[0] == '\0')
        return;
    if (keep_logs)
        fprintf(stderr, "testlib: kept %s (logs, config)\n", w->tmp_dir);
    else
        nftw(w->tmp_dir, tl_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    w->tmp_dir[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* PostgreSQL                                                         */
/* ------------------------------------------------------------------ */

PGconn *tl_pg_connect(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "testlib: cannot connect to %s: %s\n", dsn,
                c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    return c;
}

int tl_pg_text(PGconn *conn, const char *sql, char *buf, size_t size)
{
    PGresult *r = PQexec(conn, sql);
    int rc = -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "testlib: query failed: %s\n  %s\n", PQresultErrorMessage(r), sql);
    } else if (PQntuples(r) != 1 || PQnfields(r) != 1) {
        fprintf(stderr, "testlib: query gave %d rows x %d columns, want 1 x 1:\n  %s\n",
                PQntuples(r), PQnfields(r), sql);
    } else {
        snprintf(buf, size, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

int tl_pg_i64(PGconn *conn, const char *sql, int64_t *out)
{
    char buf[64];
    if (tl_pg_text(conn, sql, buf, sizeof buf) != 0)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0') {
        fprintf(stderr, "testlib: query value \"%s\" is not an integer:\n  %s\n", buf, sql);
        return -1;
    }
    *out = v;
    return 0;
}

int tl_db_fingerprint(PGconn *conn, char out[TL_FINGERPRINT_SIZE])
{
    static const char sql[] =
        "SELECT 'accounts=' || (SELECT count(*) FROM accounts)"
        " || ' transfers=' || (SELECT count(*) FROM transfers)"
        " || ' pending=' || (SELECT count(*) FROM pending_transfers)"
        " || ' history=' || (SELECT count(*) FROM account_balances)"
        " || ' balances=' || (SELECT coalesce(md5(string_agg(id::text || ':' ||"
        "     debits_pending || ':' || debits_posted || ':' || credits_pending || ':' ||"
        "     credits_posted || ':' || flags, ',' ORDER BY id)), '-') FROM accounts)"
        " || ' states=' || (SELECT coalesce(md5(string_agg(id::text || ':' || status ||"
        "     ':' || amount_posted, ',' ORDER BY id)), '-') FROM pending_transfers)";
    return tl_pg_text(conn, sql, out, TL_FINGERPRINT_SIZE);
}

/* ------------------------------------------------------------------ */
/* Ids and JSON                                                       */
/* ------------------------------------------------------------------ */

void tl_uuid_random(char out[TL_UUID_TEXT_SIZE])
{
    uint8_t b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("testlib: getrandom");
            abort();
        }
        got += (size_t)n;
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, TL_UUID_TEXT_SIZE,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

int tl_json_i64(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    const char *p = s[0] == '-' ? s + 1 : s;
    if (*p == '\0')
        return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    errno = 0;
    char *end = NULL;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

int tl_field_i64(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (v == NULL)
        return -1;
    return tl_json_i64(v, out);
}

const char *tl_field_str(const json_t *obj, const char *key)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

json_t *tl_flags(const char *csv)
{
    json_t *a = json_array();
    if (csv == NULL || a == NULL)
        return a;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", csv);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        json_array_append_new(a, json_string(tok));
    return a;
}

json_t *tl_account(const char *id, int ledger, int code, const char *flags_csv)
{
    return json_pack("{s:s,s:i,s:i,s:o}", "id", id, "ledger", ledger, "code", code, "flags",
                     tl_flags(flags_csv));
}

json_t *tl_transfer(const char *id, const char *debit, const char *credit, int64_t amount,
                    int ledger, const char *flags_csv)
{
    return json_pack("{s:s,s:s,s:s,s:I,s:i,s:i,s:o}", "id", id, "debit_account_id", debit,
                     "credit_account_id", credit, "amount", (json_int_t)amount, "ledger",
                     ledger, "code", 1, "flags", tl_flags(flags_csv));
}

json_t *tl_batch(const char *key, ...)
{
    json_t *arr = json_array();
    va_list ap;
    va_start(ap, key);
    for (json_t *item = va_arg(ap, json_t *); item != NULL; item = va_arg(ap, json_t *))
        json_array_append_new(arr, item);
    va_end(ap);
    return json_pack("{s:o}", key, arr);
}

char *tl_dump(json_t *json)
{
    char *s = json_dumps(json, JSON_COMPACT);
    json_decref(json);
    return s;
}

const char *tl_result(const tl_resp *r, size_t i)
{
    const json_t *results = json_object_get(r->json, "results");
    return tl_field_str(json_array_get(results, i), "result");
}

size_t tl_results_count(const tl_resp *r)
{
    const json_t *results = json_object_get(r->json, "results");
    return json_is_array(results) ? json_array_size(results) : 0;
}

/* ------------------------------------------------------------------ */
/* Assertions                                                         */
/* ------------------------------------------------------------------ */

/* Print the response (bounded) as context for a failed expectation. */
static void tl_print_resp(const tl_resp *r)
{
    print_error("  response: HTTP %ld (curl %d), Content-Type \"%s\", body (%zu bytes): %.2000s\n",
                r->status, r->curl_code, r->content_type, r->body_len,
                r->body ? r->body : "");
}

void tl_expect_status_at(const tl_resp *r, long status, const char *file, int line)
{
    if (r->status == status)
        return;
    print_error("%s:%d: want HTTP %ld, got %ld\n", file, line, status, r->status);
    tl_print_resp(r);
    _fail(file, line);
}

void tl_expect_problem_at(const tl_resp *r, long status, const char *code, const char *file,
                          int line)
{
    const char *why = NULL;
    int64_t body_status = 0;
    const char *body_code = tl_field_str(r->json, "code");
    if (r->status != status)
        why = "HTTP status differs";
    else if (strncmp(r->content_type, "application/problem+json", 24) != 0)
        why = "Content-Type is not application/problem+json";
    else if (!json_is_object(r->json))
        why = "body is not a JSON object";
    else if (body_code == NULL || strcmp(body_code, code) != 0)
        why = "problem code differs";
    else if (tl_field_i64(r->json, "status", &body_status) != 0 || body_status != status)
        why = "problem \"status\" member differs from the HTTP status";
    else if (tl_field_str(r->json, "title") == NULL || tl_field_str(r->json, "type") == NULL)
        why = "problem has no \"type\" or \"title\"";
    if (why == NULL)
        return;
    print_error("%s:%d: want problem %ld %s: %s\n", file, line, status, code, why);
    tl_print_resp(r);
    _fail(file, line);
}

void tl_expect_results_at(const tl_resp *r, size_t count, const char *file, int line, ...)
{
    char why[256] = "";
    const json_t *results = json_object_get(r->json, "results");
    va_list ap;
    va_start(ap, line);
    if (r->status != 200)
        snprintf(why, sizeof why, "HTTP %ld, want 200", r->status);
    else if (!json_is_array(results) || json_array_size(results) != count)
        snprintf(why, sizeof why, "want %zu results, got %zu", count,
                 json_is_array(results) ? json_array_size(results) : 0);
    for (size_t i = 0; why[0] == '\0' && i < count; i++) {
        const char *want = va_arg(ap, const char *);
        const json_t *e = json_array_get(results, i);
        const char *got = tl_field_str(e, "result");
        int64_t index = -1;
        if (tl_field_i64(e, "index", &index) != 0 || index != (int64_t)i)
            snprintf(why, sizeof why, "results[%zu].index is not %zu", i, i);
        else if (got == NULL || strcmp(got, want) != 0)
            snprintf(why, sizeof why, "results[%zu].result is %s, want %s", i,
                     got ? got : "(none)", want);
    }
    va_end(ap);
    if (why[0] == '\0')
        return;
    print_error("%s:%d: %s\n", file, line, why);
    tl_print_resp(r);
    _fail(file, line);
}

void tl_expect_i64_at(const json_t *obj, const char *key, int64_t want, const char *file,
                      int line)
{
    int64_t got = 0;
    if (tl_field_i64(obj, key, &got) == 0 && got == want)
        return;
    char *dump = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    print_error("%s:%d: want %s = %lld, got %s in %.1500s\n", file, line, key,
                (long long)want,
                tl_field_i64(obj, key, &got) == 0 ? "another value" : "no integer", 
                dump ? dump : "(null)");
    free(dump);
    _fail(file, line);
}
