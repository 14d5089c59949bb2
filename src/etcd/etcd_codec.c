/*
 * etcd_codec.c — JSON for etcd 3.4's v3 gateway, without any I/O.
 *
 * The gateway is grpc-gateway over etcd's protobuf API, so its JSON
 * follows proto3's JSON mapping: bytes fields (keys, values, range ends)
 * are base64, int64 fields are decimal strings, and fields holding their
 * default value (0, false, "", empty lists) are simply absent. Every
 * parser here therefore treats a missing field as its default and never
 * as an error, and every 64-bit number is parsed from text with overflow
 * checks. Requests are written the same way (int64 as strings) so lease
 * ids above 2^53 survive.
 *
 * Base64 is libsodium's, ORIGINAL (padded, '+' '/') variant, which is
 * what Go's encoding/json produces for []byte.
 */
#include "etcd/etcd_codec.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "common/mrd_assert.h"

const char *etcd_strerror(int rc) {
    switch (rc) {
    case ETCD_OK: return "ok";
    case ETCD_E_UNAVAILABLE: return "unavailable";
    case ETCD_E_NOT_FOUND: return "not found";
    case ETCD_E_FAILED: return "comparison failed";
    case ETCD_E_PROTOCOL: return "protocol error";
    case ETCD_E_INVALID: return "invalid argument";
    case ETCD_E_LIMIT: return "limit exceeded";
    default: return "unknown error";
    }
}

void etcd_kv_release(etcd_kv *kv) {
    if (kv == NULL) return;
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

void etcd_kvs_free(etcd_kv *kvs, size_t count) {
    if (kvs == NULL) return;
    for (size_t i = 0; i < count; i++) etcd_kv_release(&kvs[i]);
    free(kvs);
}

void etcd_txn_result_release(etcd_txn_result *r) {
    if (r == NULL) return;
    etcd_kvs_free(r->kvs, r->kv_count);
    memset(r, 0, sizeof *r);
}

void etcd_watch_msg_release(etcd_watch_msg *m) {
    if (m == NULL) return;
    if (m->events != NULL) {
        for (size_t i = 0; i < m->event_count; i++) etcd_kv_release(&m->events[i].kv);
        free(m->events);
    }
    memset(m, 0, sizeof *m);
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_size,
                                                      const char *fmt, ...) {
    if (err != NULL && err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return ETCD_E_PROTOCOL;
}

/* --- Primitives. */

int etcd_codec_b64_encode(const void *data, size_t len, char **out) {
    mrd_assert(out != NULL && (data != NULL || len == 0));
    *out = NULL;
    if (len > LIMIT_ETCD_RESPONSE_BYTES_MAX) return ETCD_E_LIMIT;
    size_t b64_size = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(b64_size);
    if (s == NULL) return ETCD_E_PROTOCOL;
    /* libsodium wants a non-NULL source even for zero bytes. */
    sodium_bin2base64(s, b64_size, len ? data : (const void *)"", len,
                      sodium_base64_VARIANT_ORIGINAL);
    *out = s;
    return ETCD_OK;
}

int etcd_codec_b64_decode(const char *b64, char **out, size_t *len) {
    mrd_assert(b64 != NULL && out != NULL && len != NULL);
    *out = NULL;
    *len = 0;
    size_t b64_len = strlen(b64);
    if (b64_len > LIMIT_ETCD_RESPONSE_BYTES_MAX) return ETCD_E_LIMIT;
    size_t cap = b64_len / 4 * 3 + 3;
    char *bin = malloc(cap + 1);
    if (bin == NULL) return ETCD_E_PROTOCOL;
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_base642bin((unsigned char *)bin, cap, b64, b64_len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + b64_len) {
        free(bin);
        return ETCD_E_PROTOCOL;
    }
    bin[bin_len] = '\0';
    *out = bin;
    *len = bin_len;
    return ETCD_OK;
}

int etcd_codec_parse_decimal(const char *s, int64_t *out) {
    mrd_assert(s != NULL && out != NULL);
    bool negative = false;
    size_t i = 0;
    if (s[0] == '-') {
        negative = true;
        i = 1;
    }
    if (s[i] == '\0') return -1;
    int64_t v = 0;
    size_t digits = 0;
    for (; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9' || ++digits > 19) return -1;
        int d = s[i] - '0';
        /* Accumulate negatively so INT64_MIN is representable. */
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, d, &v)) return -1;
    }
    if (!negative) {
        if (v == INT64_MIN) return -1;
        v = -v;
    }
    *out = v;
    return 0;
}

int etcd_codec_int64(const json_t *v, int64_t *out) {
    mrd_assert(out != NULL);
    *out = 0;
    if (v == NULL) return ETCD_OK;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return ETCD_OK;
    }
    if (json_is_string(v) && etcd_codec_parse_decimal(json_string_value(v), out) == 0)
        return ETCD_OK;
    *out = 0;
    return ETCD_E_PROTOCOL;
}

int etcd_codec_prefix_end(const char *prefix, char **out, size_t *len) {
    mrd_assert(prefix != NULL && out != NULL && len != NULL);
    size_t n = strlen(prefix);
    char *end = malloc(n + 1);
    if (end == NULL) return -1;
    memcpy(end, prefix, n + 1);
    for (size_t i = n; i > 0; i--) {
        if ((unsigned char)end[i - 1] < 0xff) {
            end[i - 1] = (char)((unsigned char)end[i - 1] + 1);
            end[i] = '\0';
            *out = end;
            *len = i;
            return 0;
        }
    }
    end[0] = '\0'; /* no upper bound: "\0" means "to the end" */
    *out = end;
    *len = 1;
    return 0;
}

/* --- Requests. */

static json_t *b64_json(const void *data, size_t len) {
    char *s = NULL;
    if (etcd_codec_b64_encode(data, len, &s) != ETCD_OK) return NULL;
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *i64_json(int64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return json_string(buf);
}

/* json_object_set_new steals v even on failure; a NULL v (a failed
 * constructor) makes it fail, so one check per field covers both. */
static bool set(json_t *o, const char *k, json_t *v) {
    return o != NULL && json_object_set_new(o, k, v) == 0;
}

static char *dump_free(json_t *o, bool ok) {
    char *s = ok ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return s;
}

/* {"key":…} plus "range_end" when prefix. */
static json_t *key_object(const char *key, bool prefix) {
    json_t *o = json_object();
    /* etcd refuses an empty key; "\0" is the lowest key there is, so an
     * empty prefix (the whole key space) starts there. */
    bool ok = (prefix && key[0] == '\0') ? set(o, "key", b64_json("", 1))
                                         : set(o, "key", b64_json(key, strlen(key)));
    if (ok && prefix) {
        char *end = NULL;
        size_t end_len = 0;
        ok = etcd_codec_prefix_end(key, &end, &end_len) == 0 &&
             set(o, "range_end", b64_json(end, end_len));
        free(end);
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *put_object(const char *key, const void *value, size_t value_len,
                          int64_t lease_id) {
    json_t *o = key_object(key, false);
    bool ok = set(o, "value", b64_json(value, value_len));
    if (ok && lease_id != 0) ok = set(o, "lease", i64_json(lease_id));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *etcd_codec_range_request(const char *key, bool prefix, int64_t limit) {
    json_t *o = key_object(key, prefix);
    bool ok = o != NULL;
    if (ok && limit > 0) ok = set(o, "limit", i64_json(limit));
    return dump_free(o, ok);
}

char *etcd_codec_put_request(const char *key, const void *value, size_t value_len,
                             int64_t lease_id) {
    json_t *o = put_object(key, value, value_len, lease_id);
    return dump_free(o, o != NULL);
}

char *etcd_codec_delete_request(const char *key, bool prefix) {
    json_t *o = key_object(key, prefix);
    return dump_free(o, o != NULL);
}

static const char *cmp_target_name(etcd_cmp_target t) {
    switch (t) {
    case ETCD_CMP_VERSION: return "VERSION";
    case ETCD_CMP_CREATE: return "CREATE";
    case ETCD_CMP_MOD: return "MOD";
    case ETCD_CMP_VALUE: return "VALUE";
    case ETCD_CMP_LEASE: return "LEASE";
    }
    mrd_assert(!"unknown compare target");
    return NULL;
}

static const char *cmp_result_name(etcd_cmp_result r) {
    switch (r) {
    case ETCD_CMP_EQUAL: return "EQUAL";
    case ETCD_CMP_GREATER: return "GREATER";
    case ETCD_CMP_LESS: return "LESS";
    case ETCD_CMP_NOT_EQUAL: return "NOT_EQUAL";
    }
    mrd_assert(!"unknown compare result");
    return NULL;
}

static json_t *compare_object(const etcd_compare *c) {
    json_t *o = key_object(c->key, false);
    bool ok = set(o, "target", json_string(cmp_target_name(c->target))) &&
              set(o, "result", json_string(cmp_result_name(c->result)));
    if (ok) {
        switch (c->target) {
        case ETCD_CMP_VERSION: ok = set(o, "version", i64_json(c->number)); break;
        case ETCD_CMP_CREATE: ok = set(o, "create_revision", i64_json(c->number)); break;
        case ETCD_CMP_MOD: ok = set(o, "mod_revision", i64_json(c->number)); break;
        case ETCD_CMP_LEASE: ok = set(o, "lease", i64_json(c->number)); break;
        case ETCD_CMP_VALUE: ok = set(o, "value", b64_json(c->value, c->value_len)); break;
        }
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *op_object(const etcd_op *op) {
    json_t *o = json_object();
    bool ok = false;
    switch (op->kind) {
    case ETCD_OP_PUT:
        ok = set(o, "request_put", put_object(op->key, op->value, op->value_len, op->lease_id));
        break;
    case ETCD_OP_GET: ok = set(o, "request_range", key_object(op->key, op->prefix)); break;
    case ETCD_OP_DELETE:
        ok = set(o, "request_delete_range", key_object(op->key, op->prefix));
        break;
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static bool op_list(json_t *parent, const char *name, const etcd_op *ops, size_t count) {
    if (count == 0) return true; /* omitted, like etcd does */
    json_t *a = json_array();
    if (!set(parent, name, a)) return false;
    for (size_t i = 0; i < count; i++)
        if (json_array_append_new(a, op_object(&ops[i])) != 0) return false;
    return true;
}

char *etcd_codec_txn_request(const etcd_txn *txn) {
    mrd_assert(txn != NULL);
    json_t *o = json_object();
    bool ok = o != NULL;
    if (ok && txn->compare_count > 0) {
        json_t *a = json_array();
        ok = set(o, "compare", a);
        for (size_t i = 0; ok && i < txn->compare_count; i++)
            ok = json_array_append_new(a, compare_object(&txn->compares[i])) == 0;
    }
    ok = ok && op_list(o, "success", txn->success, txn->success_count) &&
         op_list(o, "failure", txn->failure, txn->failure_count);
    return dump_free(o, ok);
}

char *etcd_codec_lease_grant_request(int64_t ttl_s) {
    json_t *o = json_object();
    return dump_free(o, set(o, "TTL", json_integer((json_int_t)ttl_s)));
}

char *etcd_codec_lease_id_request(int64_t lease_id, bool with_keys) {
    json_t *o = json_object();
    bool ok = set(o, "ID", i64_json(lease_id));
    if (ok && with_keys) ok = set(o, "keys", json_true());
    return dump_free(o, ok);
}

char *etcd_codec_watch_request(const char *key, bool prefix, int64_t start_revision) {
    json_t *create = key_object(key, prefix);
    bool ok = create != NULL && set(create, "progress_notify", json_true());
    if (ok && start_revision > 0) ok = set(create, "start_revision", i64_json(start_revision));
    json_t *o = json_object();
    if (ok) {
        ok = set(o, "create_request", create);
    } else {
        json_decref(create);
    }
    return dump_free(o, ok);
}

/* --- Answers. */

static json_t *load_object(const char *body, size_t len, char *err, size_t err_size) {
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (root == NULL) {
        fail(err, err_size, "invalid JSON from etcd: %s (line %d)", jerr.text, jerr.line);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(err, err_size, "etcd answer is not a JSON object");
        return NULL;
    }
    return root;
}

/* An optional int64 member: absent = 0. */
static int get_i64(const json_t *obj, const char *name, int64_t *out, char *err,
                   size_t err_size) {
    if (etcd_codec_int64(json_object_get(obj, name), out) != ETCD_OK)
        return fail(err, err_size, "etcd answer: field \"%s\" is not a 64-bit integer", name);
    return ETCD_OK;
}

static int header_revision(const json_t *root, int64_t *revision, char *err,
                           size_t err_size) {
    const json_t *h = json_object_get(root, "header");
    if (h != NULL && !json_is_object(h)) return fail(err, err_size, "etcd answer: bad header");
    return get_i64(h, "revision", revision, err, err_size);
}

/* A bool member: absent = false. */
static int get_bool(const json_t *obj, const char *name, bool *out, char *err,
                    size_t err_size) {
    const json_t *v = json_object_get(obj, name);
    *out = false;
    if (v == NULL) return ETCD_OK;
    if (!json_is_boolean(v))
        return fail(err, err_size, "etcd answer: field \"%s\" is not a boolean", name);
    *out = json_is_true(v);
    return ETCD_OK;
}

/* Copy a string member into buf (absent = ""). */
static void get_text(const json_t *obj, const char *name, char *buf, size_t size) {
    const json_t *v = json_object_get(obj, name);
    if (size == 0) return;
    snprintf(buf, size, "%s", json_is_string(v) ? json_string_value(v) : "");
}

void etcd_codec_parse_error(const char *body, size_t len, int *grpc_code, char *msg,
                            size_t msg_size) {
    mrd_assert(grpc_code != NULL);
    *grpc_code = -1;
    if (msg != NULL && msg_size > 0) msg[0] = '\0';
    json_t *root = json_loadb(body, len, 0, NULL);
    const json_t *e = json_is_object(root) ? json_object_get(root, "error") : NULL;
    const json_t *from = json_is_object(e) ? e : root;
    if (json_is_object(from)) {
        const json_t *code = json_object_get(from, "code");
        if (code == NULL) code = json_object_get(from, "grpc_code");
        if (json_is_integer(code)) *grpc_code = (int)json_integer_value(code);
        get_text(from, "message", msg, msg_size);
        if (msg != NULL && msg_size > 0 && msg[0] == '\0') get_text(from, "error", msg, msg_size);
    }
    if (msg != NULL && msg_size > 0 && msg[0] == '\0') {
        /* Not etcd's JSON (a proxy's page?): quote the start, printable only. */
        size_t n = 0;
        for (size_t i = 0; i < len && n + 1 < msg_size && n < 80; i++)
            msg[n++] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : '.';
        msg[n] = '\0';
        if (n == 0) snprintf(msg, msg_size, "(empty answer)");
    }
    json_decref(root);
}

int etcd_codec_parse_kv(const json_t *obj, etcd_kv *out, char *err, size_t err_size) {
    mrd_assert(out != NULL);
    memset(out, 0, sizeof *out);
    if (!json_is_object(obj)) return fail(err, err_size, "etcd answer: kv is not an object");
    const json_t *key = json_object_get(obj, "key");
    const json_t *value = json_object_get(obj, "value");
    size_t key_len = 0;
    int rc;
    if (!json_is_string(key) || (value != NULL && !json_is_string(value))) {
        rc = fail(err, err_size, "etcd answer: kv without a string key/value");
        goto fail;
    }
    if (etcd_codec_b64_decode(json_string_value(key), &out->key, &key_len) != ETCD_OK ||
        strlen(out->key) != key_len) {
        rc = fail(err, err_size, "etcd answer: key is not base64 text");
        goto fail;
    }
    if (value != NULL) {
        if (etcd_codec_b64_decode(json_string_value(value), &out->value, &out->value_len) !=
            ETCD_OK) {
            rc = fail(err, err_size, "etcd answer: value is not base64");
            goto fail;
        }
    } else {
        out->value = calloc(1, 1); /* the default: an empty value */
        if (out->value == NULL) {
            rc = fail(err, err_size, "out of memory");
            goto fail;
        }
    }
    if ((rc = get_i64(obj, "create_revision", &out->create_revision, err, err_size)) ||
        (rc = get_i64(obj, "mod_revision", &out->mod_revision, err, err_size)) ||
        (rc = get_i64(obj, "version", &out->version, err, err_size)) ||
        (rc = get_i64(obj, "lease", &out->lease, err, err_size)))
        goto fail;
    return ETCD_OK;
fail:
    etcd_kv_release(out);
    return rc;
}

/* Append the kvs array of a range answer to (*kvs, *count), at most max in
 * total. */
static int append_kvs(const json_t *range, size_t max, etcd_kv **kvs, size_t *count,
                      char *err, size_t err_size) {
    const json_t *arr = json_object_get(range, "kvs");
    bool more = false;
    int rc = get_bool(range, "more", &more, err, err_size);
    if (rc != ETCD_OK) return rc;
    if (arr == NULL) return more ? ETCD_E_LIMIT : ETCD_OK;
    if (!json_is_array(arr)) return fail(err, err_size, "etcd answer: kvs is not an array");
    size_t n = json_array_size(arr);
    if (more || n > max || *count > max - n) {
        if (err != NULL && err_size > 0)
            snprintf(err, err_size, "etcd answer holds more than %zu keys", max);
        return ETCD_E_LIMIT;
    }
    if (n == 0) return ETCD_OK;
    etcd_kv *grown = realloc(*kvs, (*count + n) * sizeof *grown);
    if (grown == NULL) return fail(err, err_size, "out of memory");
    *kvs = grown;
    for (size_t i = 0; i < n; i++) {
        rc = etcd_codec_parse_kv(json_array_get(arr, i), &grown[*count], err, err_size);
        if (rc != ETCD_OK) return rc;
        (*count)++;
    }
    return ETCD_OK;
}

int etcd_codec_parse_range_response(const char *body, size_t len, size_t max,
                                    etcd_kv **kvs, size_t *count, char *err,
                                    size_t err_size) {
    mrd_assert(kvs != NULL && count != NULL);
    *kvs = NULL;
    *count = 0;
    json_t *root = load_object(body, len, err, err_size);
    if (root == NULL) return ETCD_E_PROTOCOL;
    int rc = append_kvs(root, max, kvs, count, err, err_size);
    json_decref(root);
    if (rc != ETCD_OK) {
        etcd_kvs_free(*kvs, *count);
        *kvs = NULL;
        *count = 0;
    }
    return rc;
}

int etcd_codec_parse_write_response(const char *body, size_t len, int64_t *revision,
                                    int64_t *deleted, char *err, size_t err_size) {
    int64_t rev = 0, del = 0;
    json_t *root = load_object(body, len, err, err_size);
    if (root == NULL) return ETCD_E_PROTOCOL;
    int rc = header_revision(root, &rev, err, err_size);
    if (rc == ETCD_OK) rc = get_i64(root, "deleted", &del, err, err_size);
    json_decref(root);
    if (rc != ETCD_OK) rev = del = 0;
    if (revision != NULL) *revision = rev;
    if (deleted != NULL) *deleted = del;
    return rc;
}

int etcd_codec_parse_txn_response(const char *body, size_t len, etcd_txn_result *out,
                                  char *err, size_t err_size) {
    mrd_assert(out != NULL);
    memset(out, 0, sizeof *out);
    json_t *root = load_object(body, len, err, err_size);
    if (root == NULL) return ETCD_E_PROTOCOL;
    int rc = get_bool(root, "succeeded", &out->succeeded, err, err_size);
    if (rc == ETCD_OK) rc = header_revision(root, &out->revision, err, err_size);
    const json_t *responses = json_object_get(root, "responses");
    if (rc == ETCD_OK && responses != NULL && !json_is_array(responses))
        rc = fail(err, err_size, "etcd answer: responses is not an array");
    for (size_t i = 0; rc == ETCD_OK && i < json_array_size(responses); i++) {
        const json_t *range = json_object_get(json_array_get(responses, i), "response_range");
        if (range != NULL)
            rc = append_kvs(range, LIMIT_ETCD_PREFIX_KEYS_MAX, &out->kvs, &out->kv_count, err,
                            err_size);
    }
    json_decref(root);
    if (rc != ETCD_OK) etcd_txn_result_release(out);
    return rc;
}

/* A streamed answer wraps its message in "result" (or "error"). */
static int stream_result(json_t *root, const json_t **result, char *err, size_t err_size) {
    const json_t *e = json_object_get(root, "error");
    if (e != NULL) {
        char msg[160] = "";
        if (json_is_object(e)) get_text(e, "message", msg, sizeof msg);
        if (json_is_string(e)) snprintf(msg, sizeof msg, "%s", json_string_value(e));
        return fail(err, err_size, "etcd error: %s", msg[0] ? msg : "(no message)");
    }
    const json_t *r = json_object_get(root, "result");
    *result = r != NULL ? r : root;
    if (!json_is_object(*result)) return fail(err, err_size, "etcd answer: bad result");
    return ETCD_OK;
}

int etcd_codec_parse_lease_grant_response(const char *body, size_t len, int64_t *lease_id,
                                          int64_t *ttl_s, char *err, size_t err_size) {
    mrd_assert(lease_id != NULL);
    int64_t id = 0, ttl = 0;
    const json_t *r = NULL;
    json_t *root = load_object(body, len, err, err_size);
    if (root == NULL) return ETCD_E_PROTOCOL;
    int rc = stream_result(root, &r, err, err_size);
    if (rc == ETCD_OK) rc = get_i64(r, "ID", &id, err, err_size);
    if (rc == ETCD_OK) rc = get_i64(r, "TTL", &ttl, err, err_size);
    if (rc == ETCD_OK && (id == 0 || ttl <= 0)) {
        char msg[160] = "";
        get_text(r, "error", msg, sizeof msg);
        rc = fail(err, err_size, "lease grant answered without a lease%s%s",
                  msg[0] ? ": " : "", msg);
    }
    json_decref(root);
    *lease_id = rc == ETCD_OK ? id : 0;
    if (ttl_s != NULL) *ttl_s = rc == ETCD_OK ? ttl : 0;
    return rc;
}

static int parse_ttl(const char *body, size_t len, int64_t *ttl_s, const char *what,
                     char *err, size_t err_size) {
    int64_t ttl = 0;
    const json_t *r = NULL;
    json_t *root = load_object(body, len, err, err_size);
    if (root == NULL) return ETCD_E_PROTOCOL;
    int rc = stream_result(root, &r, err, err_size);
    if (rc == ETCD_OK) rc = get_i64(r, "TTL", &ttl, err, err_size);
    if (rc == ETCD_OK && ttl <= 0) {
        if (err != NULL && err_size > 0)
            snprintf(err, err_size, "%s: lease expired or revoked (TTL %" PRId64 ")", what, ttl);
        rc = ETCD_E_NOT_FOUND;
    }
    json_decref(root);
    if (ttl_s != NULL) *ttl_s = rc == ETCD_OK ? ttl : 0;
    return rc;
}

int etcd_codec_parse_keepalive_response(const char *body, size_t len, int64_t *ttl_s,
                                        char *err, size_t err_size) {
    return parse_ttl(body, len, ttl_s, "lease keepalive", err, err_size);
}

int etcd_codec_parse_timetolive_response(const char *body, size_t len, int64_t *ttl_s,
                                         char *err, size_t err_size) {
    return parse_ttl(body, len, ttl_s, "lease timetolive", err, err_size);
}

static int parse_event(const json_t *obj, etcd_event *ev, char *err, size_t err_size) {
    memset(ev, 0, sizeof *ev);
    if (!json_is_object(obj)) return fail(err, err_size, "watch event is not an object");
    const json_t *type = json_object_get(obj, "type");
    if (type == NULL || (json_is_string(type) && strcmp(json_string_value(type), "PUT") == 0)) {
        ev->type = ETCD_EVENT_PUT; /* PUT = 0 is the default, hence usually absent */
    } else if (json_is_string(type) && strcmp(json_string_value(type), "DELETE") == 0) {
        ev->type = ETCD_EVENT_DELETE;
    } else {
        return fail(err, err_size, "watch event of unknown type");
    }
    int rc = etcd_codec_parse_kv(json_object_get(obj, "kv"), &ev->kv, err, err_size);
    if (rc != ETCD_OK) return rc;
    ev->revision = ev->kv.mod_revision;
    if (ev->revision <= 0) {
        etcd_kv_release(&ev->kv);
        return fail(err, err_size, "watch event without a mod_revision");
    }
    return ETCD_OK;
}

int etcd_codec_parse_watch_message(const char *body, size_t len, etcd_watch_msg *out,
                                   char *err, size_t err_size) {
    mrd_assert(out != NULL);
    memset(out, 0, sizeof *out);
    json_t *root = load_object(body, len, err, err_size);
    if (root == NULL) return ETCD_E_PROTOCOL;
    int rc = ETCD_OK;
    const json_t *e = json_object_get(root, "error");
    if (e != NULL) {
        out->error = true;
        if (json_is_object(e)) get_text(e, "message", out->reason, sizeof out->reason);
        if (json_is_string(e)) snprintf(out->reason, sizeof out->reason, "%s", json_string_value(e));
        goto out;
    }
    const json_t *r = json_object_get(root, "result");
    if (!json_is_object(r)) {
        rc = fail(err, err_size, "watch message without a result");
        goto out;
    }
    if ((rc = header_revision(r, &out->header_revision, err, err_size)) ||
        (rc = get_bool(r, "created", &out->created, err, err_size)) ||
        (rc = get_bool(r, "canceled", &out->canceled, err, err_size)) ||
        (rc = get_i64(r, "compact_revision", &out->compact_revision, err, err_size)))
        goto out;
    get_text(r, "cancel_reason", out->reason, sizeof out->reason);
    const json_t *events = json_object_get(r, "events");
    if (events == NULL) goto out;
    if (!json_is_array(events)) {
        rc = fail(err, err_size, "watch events is not an array");
        goto out;
    }
    size_t n = json_array_size(events);
    if (n > LIMIT_ETCD_PREFIX_KEYS_MAX) {
        rc = ETCD_E_LIMIT;
        if (err != NULL && err_size > 0)
            snprintf(err, err_size, "watch message holds %zu events (max %d)", n,
                     LIMIT_ETCD_PREFIX_KEYS_MAX);
        goto out;
    }
    if (n == 0) goto out;
    out->events = calloc(n, sizeof *out->events);
    if (out->events == NULL) {
        rc = fail(err, err_size, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        rc = parse_event(json_array_get(events, i), &out->events[i], err, err_size);
        if (rc != ETCD_OK) goto out;
        out->event_count++;
    }
out:
    json_decref(root);
    if (rc != ETCD_OK) etcd_watch_msg_release(out);
    return rc;
}
