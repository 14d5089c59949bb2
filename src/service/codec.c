/*
 * codec.c — strict JSON <-> ledger structs for the HTTP API.
 *
 * Every byte a client sends reaches the ledger through this file, so it
 * refuses rather than guesses: a body deeper than LIMIT_JSON_DEPTH_MAX is
 * refused by a byte pre-scan before jansson builds anything (the parser
 * recurses, the pre-scan does not); duplicate keys, unknown fields, wrong
 * types, out-of-range integers and unknown flag names are each a
 * codec_error naming the value by JSON pointer. Decoders either return a
 * complete result or fill the error and leave nothing allocated, so a bad
 * request changes nothing.
 *
 * Amounts are exact: jansson keeps JSON integers as int64 (and reports
 * anything larger as an overflow, which we turn into invalid_field with
 * the offending pointer), and a string of decimal digits carries values
 * above 2^53 for clients whose JSON numbers are doubles. Encoders mirror
 * that: integers above 2^53 in magnitude go out as strings.
 *
 * Two hot spots of POST /v1/transfers go around jansson's per-byte work
 * with results equal to jansson's (tests/unit/test_codec_fastpath.c):
 * long plain strings are cut out of a body before jansson parses it, and
 * canonical metadata and the transfer results are written directly.
 *
 * The wire format is docs/API.md.
 */
#include "service/codec.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "common/mrd_assert.h"
#include "common/textbuf.h"

#define CODEC_PROBLEM_TYPE_PREFIX "https://meridian.dev/problems/"

/* Every JSON reader holds integers up to 2^53 exactly (doubles). */
#define CODEC_EXACT_INT_MAX (INT64_C(1) << 53)

/* Size of a JSON pointer buffer (the same as codec_error.pointer). */
#define CODEC_PTR_SIZE sizeof(((codec_error *)0)->pointer)

/* Longest piece of client text (a key, a flag name) quoted in a detail. */
#define CODEC_QUOTE_BYTES_MAX 40
#define CODEC_QUOTE_SIZE (CODEC_QUOTE_BYTES_MAX + 4)

/* ---- Flag names, indexed by bit position. */
static const char *const account_flag_names[] = {
    "linked", "debits_must_not_exceed_credits", "credits_must_not_exceed_debits",
    "history", "closed",
};
static const char *const transfer_flag_names[] = {
    "linked", "pending", "post_pending_transfer", "void_pending_transfer",
};
#define ACCOUNT_FLAG_COUNT (sizeof account_flag_names / sizeof account_flag_names[0])
#define TRANSFER_FLAG_COUNT (sizeof transfer_flag_names / sizeof transfer_flag_names[0])
_Static_assert((1u << ACCOUNT_FLAG_COUNT) - 1u == LEDGER_AF_ALL, "account flag names");
_Static_assert((1u << TRANSFER_FLAG_COUNT) - 1u == LEDGER_TF_ALL, "transfer flag names");

/* Flags a client may set when creating an account: "closed" is a state
 * the service sets, not a creation option. */
#define ACCOUNT_FLAGS_INPUT (LEDGER_AF_ALL & ~(uint32_t)LEDGER_AF_CLOSED)

static const char *const transfer_fields[] = {
    "id", "debit_account_id", "credit_account_id", "pending_id", "amount",
    "ledger", "code", "flags", "timeout_s", "user_data_128", "user_data_64",
    "user_data_32", "metadata", "durability",
};
/* "customer" last: customer keys are checked against all but the last. */
static const char *const account_fields[] = {
    "id", "ledger", "code", "flags", "user_data_128", "user_data_64",
    "user_data_32", "customer",
};
#define ARRAY_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Text helpers. */

/* Cut a trailing incomplete UTF-8 sequence left by a bounded copy, so the
 * text stays encodable as a JSON string. */
static void utf8_trim_partial(char *s)
{
    size_t n = strlen(s);
    size_t cont = 0;
    while (cont < 3 && cont < n && ((unsigned char)s[n - 1 - cont] & 0xC0u) == 0x80u)
        cont++;
    if (cont == n) {
        if (n > 0)
            s[0] = '\0';
        return;
    }
    size_t lead_at = n - 1 - cont;
    unsigned char lead = (unsigned char)s[lead_at];
    size_t need = 1;
    if ((lead & 0xE0u) == 0xC0u)
        need = 2;
    else if ((lead & 0xF0u) == 0xE0u)
        need = 3;
    else if ((lead & 0xF8u) == 0xF0u)
        need = 4;
    if (cont + 1 != need)
        s[lead_at] = '\0';
}

/* Copy at most CODEC_QUOTE_BYTES_MAX bytes of client text s (len bytes,
 * valid UTF-8 as jansson guarantees) into out, with "..." when cut. */
static void quote_text(char out[CODEC_QUOTE_SIZE], const char *s, size_t len)
{
    size_t n = len < CODEC_QUOTE_BYTES_MAX ? len : CODEC_QUOTE_BYTES_MAX;
    memcpy(out, s, n);
    out[n] = '\0';
    utf8_trim_partial(out);
    if (n < len)
        strcat(out, "...");
}

/* Replace bytes outside printable ASCII with '?' (jansson's error text
 * may quote raw input near the error). */
static void ascii_sanitize(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20u || (unsigned char)*s > 0x7Eu)
            *s = '?';
}

/* parent + "/" + key with RFC 6901 escapes (~ -> ~0, / -> ~1), cut to
 * the buffer. */
static void ptr_key(char out[CODEC_PTR_SIZE], const char *parent, const char *key)
{
    size_t n = (size_t)snprintf(out, CODEC_PTR_SIZE, "%s/", parent);
    if (n >= CODEC_PTR_SIZE - 1) {
        utf8_trim_partial(out);
        return;
    }
    for (const char *k = key; *k != '\0'; k++) {
        const char *esc = *k == '~' ? "~0" : *k == '/' ? "~1" : NULL;
        size_t add = esc ? 2 : 1;
        if (n + add >= CODEC_PTR_SIZE)
            break;
        if (esc) {
            memcpy(out + n, esc, 2);
        } else {
            out[n] = *k;
        }
        n += add;
    }
    out[n] = '\0';
    utf8_trim_partial(out);
}

static void ptr_index(char out[CODEC_PTR_SIZE], const char *parent, size_t index)
{
    /* Cut like ptr_key when the parent already fills the buffer. */
    int w = snprintf(out, CODEC_PTR_SIZE, "%s/%zu", parent, index);
    if (w < 0 || (size_t)w >= CODEC_PTR_SIZE)
        utf8_trim_partial(out);
}

/* "/transfers/3/amount" -> "transfers[3].amount" (the form people read in
 * a detail); "" -> "body". */
static void ptr_to_path(const char *ptr, char *out, size_t size)
{
    if (ptr[0] == '\0') {
        snprintf(out, size, "body");
        return;
    }
    size_t n = 0;
    out[0] = '\0';
    const char *seg = ptr;
    while (*seg == '/' && n + 1 < size) {
        seg++;
        size_t len = strcspn(seg, "/");
        bool numeric = len > 0 && strspn(seg, "0123456789") >= len;
        const char *open = numeric ? "[" : (n > 0 ? "." : "");
        const char *close = numeric ? "]" : "";
        for (const char *c = open; *c != '\0' && n + 1 < size; c++)
            out[n++] = *c;
        for (size_t i = 0; i < len && n + 1 < size; i++) {
            char c = seg[i];
            if (c == '~' && i + 1 < len && (seg[i + 1] == '0' || seg[i + 1] == '1')) {
                c = seg[i + 1] == '0' ? '~' : '/';
                i++;
            }
            out[n++] = c;
        }
        for (const char *c = close; *c != '\0' && n + 1 < size; c++)
            out[n++] = *c;
        seg += len;
    }
    out[n] = '\0';
    utf8_trim_partial(out);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a fractional number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* ---- Errors. */

int codec_fail(codec_error *e, int status, const char *code, const char *pointer,
               const char *fmt, ...)
{
    mrd_assert(e != NULL);
    mrd_assert(code != NULL);
    mrd_assert(fmt != NULL);
    e->status = status;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
    utf8_trim_partial(e->detail);
    snprintf(e->pointer, sizeof e->pointer, "%s", pointer ? pointer : "");
    utf8_trim_partial(e->pointer);
    return -1;
}

/* codec_fail with the detail prefixed by the readable path of ptr:
 * "transfers[3].amount: must be ...". */
__attribute__((format(printf, 5, 6))) static int
field_fail(codec_error *e, int status, const char *code, const char *ptr,
           const char *fmt, ...)
{
    char msg[sizeof e->detail];
    char path[CODEC_PTR_SIZE + 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_trim_partial(msg);
    ptr_to_path(ptr, path, sizeof path);
    return codec_fail(e, status, code, ptr, "%s: %s", path, msg);
}

static int oom_fail(codec_error *e)
{
    return codec_fail(e, 500, "internal", "", "out of memory while decoding the request");
}

char *codec_problem_body(const codec_error *e)
{
    mrd_assert(e != NULL);
    const char *code = e->code ? e->code : "internal";
    char type[128];
    char title[64];
    snprintf(type, sizeof type, CODEC_PROBLEM_TYPE_PREFIX "%s", code);
    /* "invalid_field" -> "Invalid field" (RFC 9457 title: short, human). */
    snprintf(title, sizeof title, "%s", code);
    for (char *c = title; *c != '\0'; c++)
        if (*c == '_')
            *c = ' ';
    if (title[0] >= 'a' && title[0] <= 'z')
        title[0] = (char)(title[0] - 'a' + 'A');

    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_t *detail = json_string(e->detail);
    if (detail == NULL) /* not UTF-8: never leak bytes we cannot encode */
        detail = json_string("(detail not representable)");
    int rc = 0;
    rc |= json_object_set_new(o, "type", json_string(type));
    rc |= json_object_set_new(o, "title", json_string(title));
    rc |= json_object_set_new(o, "status", json_integer(e->status));
    rc |= json_object_set_new(o, "code", json_string(code));
    rc |= json_object_set_new(o, "detail", detail);
    if (e->pointer[0] != '\0') {
        json_t *p = json_string(e->pointer);
        rc |= json_object_set_new(o, "pointer", p ? p : json_string(""));
    }
    char *s = rc == 0 ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* ---- Parsing the body. */

/* ---- Long plain strings: parsed around, not through, jansson.
 *
 * jansson lexes a string byte by byte (a callback and a one-byte append
 * per character, then a second pass to decode), which made a 5 KB
 * metadata note cost more CPU than everything else in a request. A
 * string value of at least CODEC_PLAIN_MIN_BYTES whose bytes are all
 * printable ASCII other than '\\' (so no escapes: its text IS its value,
 * valid UTF-8 by construction) is cut out of a copy of the body and
 * replaced by a short placeholder; jansson parses that skeleton, and the
 * placeholders are then swapped for the original text. Tokens, keys,
 * numbers and nesting are untouched, so the skeleton parses exactly when
 * the body does. Whenever the skeleton does not parse, or anything is
 * not as expected, the whole body is parsed the ordinary way instead:
 * errors (codes, lines, columns, texts) are always jansson's own for the
 * original body. */

/* Shortest string value worth cutting out (placeholders cost a copy). */
#define CODEC_PLAIN_MIN_BYTES 128

/* One string value cut out: the ordinal-th string value (not key) of
 * the body in document order, its text at body[start, start + len). */
typedef struct plain_string {
    size_t ordinal;
    size_t start;
    size_t len;
} plain_string;

typedef struct plain_list {
    plain_string *items; /* malloc'd; NULL when none */
    size_t count;
    size_t cap;
    bool failed; /* out of memory: use the ordinary parse */
} plain_list;

static void plain_add(plain_list *l, size_t ordinal, size_t start, size_t len)
{
    if (l->failed)
        return;
    if (l->count == l->cap) {
        size_t cap = l->cap > 0 ? l->cap * 2 : 8;
        plain_string *p = realloc(l->items, cap * sizeof *p);
        if (p == NULL) {
            l->failed = true;
            return;
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->count++] = (plain_string){.ordinal = ordinal, .start = start, .len = len};
}

/* A byte that stands for itself inside a JSON string: printable ASCII
 * other than '"' and '\\'. */
static inline bool plain_byte(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 0x20u && u <= 0x7Eu && u != '"' && u != '\\';
}

/* Word-at-a-time byte tests (each exact as "does any byte ..."). */
#define SWAR_ONES UINT64_C(0x0101010101010101)
#define SWAR_HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t swar_has_zero(uint64_t v)
{
    return (v - SWAR_ONES) & ~v & SWAR_HIGHS;
}

/* Any byte below n (n <= 128). */
static inline uint64_t swar_has_less(uint64_t v, unsigned n)
{
    return (v - SWAR_ONES * n) & ~v & SWAR_HIGHS;
}

/* Length of the prefix of s[0, n) with no byte below 0x20, '"' or '\\'
 * and, when ascii_only, none above 0x7E: the bytes a JSON string holds
 * as they are. 8 bytes per step, then byte by byte. */
static size_t unescaped_prefix(const char *s, size_t n, bool ascii_only)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, sizeof v);
        uint64_t bad = swar_has_less(v, 0x20u) | swar_has_zero(v ^ (SWAR_ONES * '"')) |
                       swar_has_zero(v ^ (SWAR_ONES * '\\'));
        if (ascii_only)
            bad |= (v & SWAR_HIGHS) | swar_has_zero(v ^ (SWAR_ONES * 0x7Fu));
        if (bad != 0)
            break;
    }
    for (; i < n; i++) {
        unsigned char u = (unsigned char)s[i];
        if (u < 0x20u || u == '"' || u == '\\' || (ascii_only && u > 0x7Eu))
            break;
    }
    return i;
}

/* True when the string whose closing quote is at body[i] is an object
 * key: the next byte that is not JSON whitespace is ':'. */
static bool followed_by_colon(const char *body, size_t len, size_t i)
{
    for (size_t j = i + 1; j < len; j++) {
        char c = body[j];
        if (c == ':')
            return true;
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return false;
    }
    return false;
}

/* Deepest nesting of objects/arrays in body, stopping as soon as it
 * exceeds LIMIT_JSON_DEPTH_MAX (then *at is the offending byte offset).
 * Brackets inside strings (escapes honoured) do not count. Returns
 * true when too deep. Malformed input is left to the parser. When plain
 * is not NULL, it also collects the long plain string values (above). */
static bool depth_exceeds(const char *body, size_t len, size_t *at, plain_list *plain)
{
    size_t depth = 0;
    bool in_string = false;
    bool escaped = false;
    bool simple = false;       /* current string: printable ASCII, no '\\' */
    size_t str_start = 0;      /* current string: offset of its first byte */
    size_t value_ordinal = 0;  /* string values (not keys) seen so far */
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (in_string) {
            if (!escaped && plain_byte(c)) {
                /* The common case, skipped in a tight loop. */
                i += unescaped_prefix(body + i + 1, len - i - 1, true);
                continue;
            }
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
                simple = false;
            } else if (c == '"') {
                in_string = false;
                if (plain != NULL && !followed_by_colon(body, len, i)) {
                    size_t n = i - str_start;
                    if (simple && n >= CODEC_PLAIN_MIN_BYTES)
                        plain_add(plain, value_ordinal, str_start, n);
                    value_ordinal++;
                }
            } else if ((unsigned char)c < 0x20u || (unsigned char)c > 0x7Eu) {
                simple = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
            simple = true;
            str_start = i + 1;
        } else if (c == '[' || c == '{') {
            depth++;
            if (depth > LIMIT_JSON_DEPTH_MAX) {
                *at = i;
                return true;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return false;
}

/* Placeholder text of the k-th cut string: its index in decimal. */
static int placeholder_text(char out[24], size_t k)
{
    return snprintf(out, 24, "%zu", k);
}

typedef struct plain_fill {
    const char *body;
    const plain_list *list;
    size_t next;    /* index in list of the next string to put back */
    size_t ordinal; /* string values visited so far */
    bool failed;
} plain_fill;

/* Visit the string values of v in document order (objects keep their
 * keys in insertion order) and put the cut strings back. Depth is
 * bounded by the pre-scan; the explicit bound keeps the recursion
 * honest. */
static void plain_put_back(json_t *v, plain_fill *f, int depth)
{
    if (f->failed || depth > LIMIT_JSON_DEPTH_MAX + 1) {
        f->failed = true;
        return;
    }
    if (json_is_string(v)) {
        if (f->next < f->list->count && f->list->items[f->next].ordinal == f->ordinal) {
            const plain_string *ps = &f->list->items[f->next];
            char expect[24];
            int n = placeholder_text(expect, f->next);
            if (n < 0 || json_string_length(v) != (size_t)n ||
                memcmp(json_string_value(v), expect, (size_t)n) != 0 ||
                json_string_setn_nocheck(v, f->body + ps->start, ps->len) != 0) {
                f->failed = true;
                return;
            }
            f->next++;
        }
        f->ordinal++;
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n && !f->failed; i++)
            plain_put_back(json_array_get(v, i), f, depth + 1);
    } else if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val) {
            (void)key;
            plain_put_back(val, f, depth + 1);
            if (f->failed)
                return;
        }
    }
}

/* Parse body with the strings of list cut out. Returns the same tree
 * json_loadb would, or NULL when the caller must parse the ordinary way
 * (the skeleton did not parse, or out of memory). */
static json_t *parse_skeleton(const char *body, size_t len, const plain_list *list,
                              size_t flags)
{
    /* Each placeholder is no longer than the text it replaces (at least
     * CODEC_PLAIN_MIN_BYTES > 24), so the skeleton fits in len bytes. */
    char *sk = malloc(len);
    if (sk == NULL)
        return NULL;
    size_t sk_len = 0;
    size_t from = 0;
    for (size_t k = 0; k < list->count; k++) {
        const plain_string *ps = &list->items[k];
        memcpy(sk + sk_len, body + from, ps->start - from);
        sk_len += ps->start - from;
        char ph[24];
        int n = placeholder_text(ph, k);
        mrd_assert(n > 0 && (size_t)n < ps->len);
        memcpy(sk + sk_len, ph, (size_t)n);
        sk_len += (size_t)n;
        from = ps->start + ps->len;
    }
    memcpy(sk + sk_len, body + from, len - from);
    sk_len += len - from;
    json_t *root = json_loadb(sk, sk_len, flags, NULL);
    free(sk);
    if (root == NULL)
        return NULL;
    plain_fill f = {.body = body, .list = list};
    plain_put_back(root, &f, 0);
    if (f.failed || f.next != list->count) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Find a real whose magnitude is at least 2^63 (an integer jansson could
 * not hold, re-read as a double) and write its pointer. Depth is bounded
 * by the pre-scan; the explicit bound keeps the recursion honest. */
static bool find_huge_number(json_t *v, const char *ptr, char out[CODEC_PTR_SIZE],
                             int depth)
{
    if (depth > LIMIT_JSON_DEPTH_MAX + 1)
        return false;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= 9223372036854775808.0 || d <= -9223372036854775808.0) {
            snprintf(out, CODEC_PTR_SIZE, "%s", ptr);
            return true;
        }
        return false;
    }
    char child[CODEC_PTR_SIZE];
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            ptr_index(child, ptr, i);
            if (find_huge_number(json_array_get(v, i), child, out, depth + 1))
                return true;
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val) {
            ptr_key(child, ptr, key);
            if (find_huge_number(val, child, out, depth + 1))
                return true;
        }
    }
    return false;
}

json_t *codec_parse_body(const char *body, size_t len, codec_error *e)
{
    mrd_assert(e != NULL);
    mrd_assert(body != NULL || len == 0);
    if (len == 0) {
        codec_fail(e, 400, "malformed_json", "",
                   "the body is empty; send a JSON object");
        return NULL;
    }
    size_t at = 0;
    plain_list plain = {0};
    if (depth_exceeds(body, len, &at, &plain)) {
        free(plain.items);
        codec_fail(e, 400, "too_deep", "",
                   "JSON nesting deeper than %d levels (at byte %zu)",
                   LIMIT_JSON_DEPTH_MAX, at);
        return NULL;
    }
    const size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY;
    json_t *root = NULL;
    if (plain.count > 0 && !plain.failed)
        root = parse_skeleton(body, len, &plain, flags);
    free(plain.items);
    json_error_t err;
    if (root == NULL)
        root = json_loadb(body, len, flags, &err);
    if (root == NULL) {
        enum json_error_code code = json_error_code(&err);
        ascii_sanitize(err.text);
        if (code == json_error_duplicate_key) {
            codec_fail(e, 400, "duplicate_key", "",
                       "an object repeats a key (line %d, column %d)", err.line,
                       err.column);
        } else if (code == json_error_numeric_overflow) {
            /* Valid JSON but not an int64: re-read with integers as
             * doubles only to name the value. */
            char ptr[CODEC_PTR_SIZE] = "";
            json_t *again = json_loadb(body, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL,
                                       NULL);
            if (again != NULL) {
                find_huge_number(again, "", ptr, 0);
                json_decref(again);
            }
            field_fail(e, 400, "invalid_field", ptr,
                       "integer out of range (line %d, column %d): integers must be "
                       "between -9223372036854775808 and 9223372036854775807",
                       err.line, err.column);
        } else if (code == json_error_out_of_memory) {
            codec_fail(e, 500, "internal", "", "out of memory while parsing the body");
        } else {
            codec_fail(e, 400, "malformed_json", "", "%s (line %d, column %d)", err.text,
                       err.line, err.column);
        }
        return NULL;
    }
    if (!json_is_object(root)) {
        field_fail(e, 400, "invalid_field", "", "must be a JSON object, not %s",
                   type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ---- Canonical JSON: what json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS)
 * writes, byte for byte (metadata is stored and compared as this text),
 * without jansson's per-character callbacks: a string is copied in runs
 * between the bytes that need an escape ('"', '\\', below 0x20: the
 * short forms \b \f \n \r \t, else \u00XX with capital hex), UTF-8 goes
 * out as it is, object keys are sorted by bytes (shorter first on a
 * tie), integers are %lld. Reals, rare in metadata, are written by
 * jansson itself so their digits stay jansson's. */

static void canon_string(textbuf *b, const char *s, size_t n)
{
    textbuf_reserve(b, n + 2);
    textbuf_put(b, "\"", 1);
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20u && c != '"' && c != '\\') {
            i += unescaped_prefix(s + i + 1, n - i - 1, false);
            continue;
        }
        textbuf_put(b, s + run, i - run);
        char esc[8];
        size_t k = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            snprintf(esc, sizeof esc, "\\u%04X", (unsigned)c);
            k = 6;
            break;
        }
        textbuf_put(b, esc, k);
        run = i + 1;
    }
    textbuf_put(b, s + run, n - run);
    textbuf_put(b, "\"", 1);
}

typedef struct canon_key {
    const char *key;
    size_t len;
    json_t *value;
} canon_key;

static int canon_key_cmp(const void *a, const void *b)
{
    const canon_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->key, y->key, n);
    if (r != 0)
        return r;
    return (x->len > y->len) - (x->len < y->len);
}

/* Keys kept on the stack before sorting; larger objects allocate. */
#define CANON_KEYS_ON_STACK 16

static void canon_value(textbuf *b, json_t *v, int depth)
{
    if (b->failed)
        return;
    if (depth > LIMIT_JSON_DEPTH_MAX + 1) { /* parsed bodies never are */
        b->failed = true;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_NULL: textbuf_put(b, "null", 4); return;
    case JSON_TRUE: textbuf_put(b, "true", 4); return;
    case JSON_FALSE: textbuf_put(b, "false", 5); return;
    case JSON_INTEGER: {
        char num[32];
        int n = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        if (n < 0 || (size_t)n >= sizeof num) {
            b->failed = true;
            return;
        }
        textbuf_put(b, num, (size_t)n);
        return;
    }
    case JSON_REAL: {
        char *num = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (num == NULL) {
            b->failed = true;
            return;
        }
        textbuf_put(b, num, strlen(num));
        free(num);
        return;
    }
    case JSON_STRING:
        canon_string(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        textbuf_put(b, "[", 1);
        for (size_t i = 0; i < n && !b->failed; i++) {
            if (i > 0)
                textbuf_put(b, ",", 1);
            canon_value(b, json_array_get(v, i), depth + 1);
        }
        textbuf_put(b, "]", 1);
        return;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        canon_key on_stack[CANON_KEYS_ON_STACK];
        canon_key *keys = on_stack;
        if (n > CANON_KEYS_ON_STACK) {
            keys = malloc(n * sizeof *keys);
            if (keys == NULL) {
                b->failed = true;
                return;
            }
        }
        size_t i = 0;
        for (void *it = json_object_iter(v); it != NULL && i < n;
             it = json_object_iter_next(v, it), i++) {
            keys[i].key = json_object_iter_key(it);
            keys[i].len = json_object_iter_key_len(it);
            keys[i].value = json_object_iter_value(it);
        }
        mrd_assert(i == n);
        if (n > 1)
            qsort(keys, n, sizeof *keys, canon_key_cmp);
        textbuf_put(b, "{", 1);
        for (i = 0; i < n && !b->failed; i++) {
            if (i > 0)
                textbuf_put(b, ",", 1);
            canon_string(b, keys[i].key, keys[i].len);
            textbuf_put(b, ":", 1);
            canon_value(b, keys[i].value, depth + 1);
        }
        textbuf_put(b, "}", 1);
        if (keys != on_stack)
            free(keys);
        return;
    }
    }
    b->failed = true;
}

char *codec_canonical_json(json_t *v, size_t *len)
{
    mrd_assert(v != NULL && len != NULL);
    textbuf b = {0};
    canon_value(&b, v, 0);
    if (b.failed || b.data == NULL) {
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

/* ---- Field decoders. Each returns 0 (decoded), 1 (absent and not
 * required) or -1 with e filled. */

static int check_known_fields(json_t *obj, const char *parent,
                              const char *const *known, size_t known_count,
                              codec_error *e)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        (void)val;
        bool ok = false;
        for (size_t i = 0; i < known_count && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok) {
            char ptr[CODEC_PTR_SIZE];
            char q[CODEC_QUOTE_SIZE];
            ptr_key(ptr, parent, key);
            quote_text(q, key, strlen(key));
            return field_fail(e, 400, "unknown_field", ptr, "unknown field \"%s\"", q);
        }
    }
    return 0;
}

static int missing(codec_error *e, const char *ptr)
{
    return field_fail(e, 400, "missing_field", ptr, "required field is missing");
}

static int get_id(json_t *obj, const char *parent, const char *key, bool required,
                  id128 *out, codec_error *e)
{
    char ptr[CODEC_PTR_SIZE];
    ptr_key(ptr, parent, key);
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return required ? missing(e, ptr) : 1;
    if (!json_is_string(v) || id128_parse(json_string_value(v), out) != 0)
        return field_fail(e, 400, "invalid_field", ptr,
                          "must be an id: a UUID string (32 hex digits, dashes optional)");
    return 0;
}

/* Integers: JSON integers; digit strings too when allow_string. */
static int get_int(json_t *obj, const char *parent, const char *key, bool required,
                   bool allow_string, int64_t min, int64_t max, int64_t *out,
                   codec_error *e)
{
    char ptr[CODEC_PTR_SIZE];
    ptr_key(ptr, parent, key);
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return required ? missing(e, ptr) : 1;
    if (!allow_string && !json_is_integer(v))
        return field_fail(e, 400, "invalid_field", ptr,
                          "must be a JSON integer between %" PRId64 " and %" PRId64
                          ", not %s", min, max, type_name(v));
    return codec_decode_int64(v, min, max, ptr, out, e);
}

/* Decimal digits, no sign unless allow_minus, no leading zeros, no
 * spaces; overflow refused. Returns 0 or -1. */
static int parse_decimal(const char *s, size_t len, bool allow_minus, int64_t *out)
{
    size_t i = 0;
    bool negative = false;
    if (len > 0 && allow_minus && s[0] == '-') {
        negative = true;
        i = 1;
    }
    if (i >= len)
        return -1;
    if (s[i] == '0' && len - i > 1)
        return -1;
    int64_t acc = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        int digit = s[i] - '0';
        if (__builtin_mul_overflow(acc, 10, &acc))
            return -1;
        if (negative ? __builtin_sub_overflow(acc, digit, &acc)
                     : __builtin_add_overflow(acc, digit, &acc))
            return -1;
    }
    if (negative && acc == 0)
        return -1; /* "-0" */
    *out = acc;
    return 0;
}

int codec_decode_int64(json_t *v, int64_t min, int64_t max, const char *pointer,
                       int64_t *out, codec_error *e)
{
    mrd_assert(min <= max);
    mrd_assert(out != NULL && e != NULL);
    int64_t val = 0;
    if (json_is_integer(v)) {
        val = (int64_t)json_integer_value(v);
    } else if (json_is_string(v)) {
        if (parse_decimal(json_string_value(v), json_string_length(v), min < 0, &val) != 0)
            goto bad;
    } else {
        goto bad;
    }
    if (val < min || val > max)
        goto bad;
    *out = val;
    return 0;
bad:
    return field_fail(e, 400, "invalid_field", pointer ? pointer : "",
                      "must be an integer between %" PRId64 " and %" PRId64, min, max);
}

/* An array of distinct flag names (names[bit]); only bits in
 * input_mask may be set. */
static int get_flags(json_t *obj, const char *parent, const char *const *names,
                     size_t name_count, uint32_t input_mask, uint32_t *out,
                     codec_error *e)
{
    char ptr[CODEC_PTR_SIZE];
    ptr_key(ptr, parent, "flags");
    *out = 0;
    json_t *arr = json_object_get(obj, "flags");
    if (arr == NULL)
        return 1;
    if (!json_is_array(arr))
        return field_fail(e, 400, "invalid_field", ptr,
                          "must be an array of flag names, not %s", type_name(arr));
    uint32_t flags = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        char elem[CODEC_PTR_SIZE];
        ptr_index(elem, ptr, i);
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v))
            return field_fail(e, 400, "invalid_field", elem,
                              "must be a flag name (a string), not %s", type_name(v));
        const char *name = json_string_value(v);
        size_t bit = name_count;
        for (size_t b = 0; b < name_count; b++)
            if (strcmp(name, names[b]) == 0)
                bit = b;
        char q[CODEC_QUOTE_SIZE];
        quote_text(q, name, json_string_length(v));
        if (bit == name_count || !(input_mask & (1u << bit)))
            return field_fail(e, 400, "invalid_field", elem,
                              bit == name_count ? "unknown flag \"%s\""
                                                : "flag \"%s\" cannot be set by a request",
                              q);
        if (flags & (1u << bit))
            return field_fail(e, 400, "invalid_field", elem,
                              "flag \"%s\" appears more than once", q);
        flags |= 1u << bit;
    }
    *out = flags;
    return 0;
}

/* The batch array root[name]: root must be an object with only that
 * key, holding 1..LIMIT_BATCH_EVENTS_MAX elements. */
static int get_batch(json_t *root, const char *name, json_t **arr_out, codec_error *e)
{
    if (!json_is_object(root))
        return field_fail(e, 400, "invalid_field", "", "must be a JSON object");
    if (check_known_fields(root, "", &name, 1, e) != 0)
        return -1;
    char ptr[CODEC_PTR_SIZE];
    ptr_key(ptr, "", name);
    json_t *arr = json_object_get(root, name);
    if (arr == NULL)
        return missing(e, ptr);
    if (!json_is_array(arr))
        return field_fail(e, 400, "invalid_field", ptr, "must be an array, not %s",
                          type_name(arr));
    size_t n = json_array_size(arr);
    if (n == 0)
        return field_fail(e, 400, "invalid_field", ptr,
                          "must hold at least one element (1 to %d)",
                          LIMIT_BATCH_EVENTS_MAX);
    if (n > LIMIT_BATCH_EVENTS_MAX)
        return field_fail(e, 413, "batch_too_large", ptr,
                          "holds %zu elements; at most %d are allowed per request, "
                          "split it into several requests",
                          n, LIMIT_BATCH_EVENTS_MAX);
    *arr_out = arr;
    return 0;
}

/* ---- Transfers. */

static int decode_transfer(json_t *v, const char *ptr, int64_t customer_id,
                           ledger_transfer *t, codec_error *e)
{
    if (!json_is_object(v))
        return field_fail(e, 400, "invalid_field", ptr, "must be a JSON object, not %s",
                          type_name(v));
    if (check_known_fields(v, ptr, transfer_fields, ARRAY_COUNT(transfer_fields), e) != 0)
        return -1;
    int64_t n = 0;
    if (get_id(v, ptr, "id", true, &t->id, e) < 0)
        return -1;
    if (get_flags(v, ptr, transfer_flag_names, TRANSFER_FLAG_COUNT, LEDGER_TF_ALL,
                  &t->flags, e) < 0)
        return -1;
    /* Post and void take accounts, ledger, code and amount from the
     * pending transfer; everything else must say them. */
    bool required = !(t->flags & (LEDGER_TF_POST_PENDING | LEDGER_TF_VOID_PENDING));
    if (get_id(v, ptr, "debit_account_id", required, &t->debit_account_id, e) < 0)
        return -1;
    if (get_id(v, ptr, "credit_account_id", required, &t->credit_account_id, e) < 0)
        return -1;
    int rc = get_int(v, ptr, "amount", required, true, 0, INT64_MAX, &n, e);
    if (rc < 0)
        return -1;
    t->amount = rc == 0 ? n : 0;
    rc = get_int(v, ptr, "ledger", required, false, 0, INT32_MAX, &n, e);
    if (rc < 0)
        return -1;
    t->ledger = rc == 0 ? (int32_t)n : 0;
    rc = get_int(v, ptr, "code", required, false, 0, INT32_MAX, &n, e);
    if (rc < 0)
        return -1;
    t->code = rc == 0 ? (int32_t)n : 0;
    if (get_id(v, ptr, "pending_id", false, &t->pending_id, e) < 0)
        return -1;
    rc = get_int(v, ptr, "timeout_s", false, false, 0, UINT32_MAX, &n, e);
    if (rc < 0)
        return -1;
    t->timeout_s = rc == 0 ? (uint32_t)n : 0;
    if (get_id(v, ptr, "user_data_128", false, &t->user_data_128, e) < 0)
        return -1;
    rc = get_int(v, ptr, "user_data_64", false, true, INT64_MIN, INT64_MAX, &n, e);
    if (rc < 0)
        return -1;
    t->user_data_64 = rc == 0 ? n : 0;
    rc = get_int(v, ptr, "user_data_32", false, false, INT32_MIN, INT32_MAX, &n, e);
    if (rc < 0)
        return -1;
    t->user_data_32 = rc == 0 ? (int32_t)n : 0;

    json_t *meta = json_object_get(v, "metadata");
    if (meta != NULL) {
        char mptr[CODEC_PTR_SIZE];
        ptr_key(mptr, ptr, "metadata");
        if (!json_is_object(meta))
            return field_fail(e, 400, "invalid_field", mptr,
                              "must be a JSON object, not %s", type_name(meta));
        size_t len = 0;
        char *text = codec_canonical_json(meta, &len);
        if (text == NULL)
            return oom_fail(e);
        if (len > LIMIT_METADATA_BYTES_MAX) {
            free(text);
            return field_fail(e, 413, "metadata_too_large", mptr,
                              "is %zu bytes as canonical JSON; at most %d are allowed",
                              len, LIMIT_METADATA_BYTES_MAX);
        }
        t->metadata = text; /* owned by the array: codec_transfers_free */
        t->metadata_len = len;
    }
    json_t *dur = json_object_get(v, "durability");
    if (dur != NULL) {
        char dptr[CODEC_PTR_SIZE];
        ptr_key(dptr, ptr, "durability");
        const char *d = json_string_value(dur);
        if (d == NULL || (strcmp(d, "regional") != 0 && strcmp(d, "global") != 0)) {
            /* metadata (if any) is freed with the array by the caller */
            return field_fail(e, 400, "invalid_field", dptr,
                              "must be \"regional\" (the default) or \"global\"");
        }
        t->durability_global = strcmp(d, "global") == 0;
    }
    t->customer_id = customer_id;
    return 0;
}

int codec_decode_transfers(json_t *root, int64_t customer_id, ledger_transfer **out,
                           size_t *count, codec_error *e)
{
    mrd_assert(out != NULL && count != NULL && e != NULL);
    *out = NULL;
    *count = 0;
    json_t *arr = NULL;
    if (get_batch(root, "transfers", &arr, e) != 0)
        return -1;
    size_t n = json_array_size(arr);
    ledger_transfer *t = calloc(n, sizeof *t);
    if (t == NULL)
        return oom_fail(e);
    for (size_t i = 0; i < n; i++) {
        char ptr[CODEC_PTR_SIZE];
        ptr_index(ptr, "/transfers", i);
        if (decode_transfer(json_array_get(arr, i), ptr, customer_id, &t[i], e) != 0)
            goto fail;
    }
    *out = t;
    *count = n;
    return 0;
fail:
    codec_transfers_free(t, n);
    return -1;
}

void codec_transfers_free(ledger_transfer *t, size_t count)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free((char *)t[i].metadata);
    free(t);
}

/* ---- Accounts. */

static bool customer_name_valid(const char *s, size_t len)
{
    if (len < 1 || len > LIMIT_CUSTOMER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int decode_account(json_t *v, const char *ptr, int64_t customer_id, int admin,
                          ledger_account *a, const char **name, codec_error *e)
{
    if (!json_is_object(v))
        return field_fail(e, 400, "invalid_field", ptr, "must be a JSON object, not %s",
                          type_name(v));
    char cptr[CODEC_PTR_SIZE];
    ptr_key(cptr, ptr, "customer");
    json_t *customer = json_object_get(v, "customer");
    if (!admin && customer != NULL)
        return field_fail(e, 400, "unknown_field", cptr,
                          "unknown field \"customer\": only admin keys choose the "
                          "customer; a customer key owns what it creates");
    if (check_known_fields(v, ptr, account_fields, ARRAY_COUNT(account_fields), e) != 0)
        return -1;
    int64_t n = 0;
    if (get_id(v, ptr, "id", true, &a->id, e) < 0)
        return -1;
    if (get_int(v, ptr, "ledger", true, false, 0, INT32_MAX, &n, e) < 0)
        return -1;
    a->ledger = (int32_t)n;
    if (get_int(v, ptr, "code", true, false, 0, INT32_MAX, &n, e) < 0)
        return -1;
    a->code = (int32_t)n;
    if (get_flags(v, ptr, account_flag_names, ACCOUNT_FLAG_COUNT, ACCOUNT_FLAGS_INPUT,
                  &a->flags, e) < 0)
        return -1;
    if (get_id(v, ptr, "user_data_128", false, &a->user_data_128, e) < 0)
        return -1;
    int rc = get_int(v, ptr, "user_data_64", false, true, INT64_MIN, INT64_MAX, &n, e);
    if (rc < 0)
        return -1;
    a->user_data_64 = rc == 0 ? n : 0;
    rc = get_int(v, ptr, "user_data_32", false, false, INT32_MIN, INT32_MAX, &n, e);
    if (rc < 0)
        return -1;
    a->user_data_32 = rc == 0 ? (int32_t)n : 0;
    if (admin) {
        if (customer == NULL && customer_id == 0)
            return missing(e, cptr);
        if (customer != NULL) {
            if (!json_is_string(customer) ||
                !customer_name_valid(json_string_value(customer),
                                     json_string_length(customer)))
                return field_fail(e, 400, "invalid_field", cptr,
                                  "must be a customer name: 1 to %d characters of "
                                  "a-z, 0-9, '_' and '-'",
                                  LIMIT_CUSTOMER_NAME_MAX);
            *name = json_string_value(customer);
        }
    }
    a->customer_id = customer_id;
    return 0;
}

int codec_decode_accounts(json_t *root, int64_t customer_id, int admin,
                          ledger_account **out, const char ***names, size_t *count,
                          codec_error *e)
{
    mrd_assert(out != NULL && count != NULL && e != NULL);
    *out = NULL;
    *count = 0;
    if (names != NULL)
        *names = NULL;
    json_t *arr = NULL;
    if (get_batch(root, "accounts", &arr, e) != 0)
        return -1;
    size_t n = json_array_size(arr);
    ledger_account *a = calloc(n, sizeof *a);
    const char **nm = calloc(n, sizeof *nm);
    if (a == NULL || nm == NULL) {
        oom_fail(e);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char ptr[CODEC_PTR_SIZE];
        ptr_index(ptr, "/accounts", i);
        if (decode_account(json_array_get(arr, i), ptr, customer_id, admin, &a[i], &nm[i],
                           e) != 0)
            goto fail;
    }
    *out = a;
    *count = n;
    if (names != NULL)
        *names = nm;
    else
        free(nm);
    return 0;
fail:
    free(a);
    free(nm);
    return -1;
}

int codec_decode_ids(json_t *root, id128 **out, size_t *count, codec_error *e)
{
    mrd_assert(out != NULL && count != NULL && e != NULL);
    *out = NULL;
    *count = 0;
    json_t *arr = NULL;
    if (get_batch(root, "ids", &arr, e) != 0)
        return -1;
    size_t n = json_array_size(arr);
    id128 *ids = calloc(n, sizeof *ids);
    if (ids == NULL)
        return oom_fail(e);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || id128_parse(json_string_value(v), &ids[i]) != 0) {
            char ptr[CODEC_PTR_SIZE];
            ptr_index(ptr, "/ids", i);
            free(ids);
            return field_fail(e, 400, "invalid_field", ptr,
                              "must be an id: a UUID string (32 hex digits, dashes "
                              "optional)");
        }
    }
    *out = ids;
    *count = n;
    return 0;
}

/* ---- Encoders. */

static json_t *flags_array(uint32_t flags, const char *const *names, size_t count)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (size_t b = 0; b < count; b++) {
        if ((flags & (1u << b)) && json_array_append_new(arr, json_string(names[b])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

json_t *codec_account_flags(uint32_t flags)
{
    return flags_array(flags, account_flag_names, ACCOUNT_FLAG_COUNT);
}

json_t *codec_transfer_flags(uint32_t flags)
{
    return flags_array(flags, transfer_flag_names, TRANSFER_FLAG_COUNT);
}

json_t *codec_amount(int64_t v)
{
    if (v > CODEC_EXACT_INT_MAX || v < -CODEC_EXACT_INT_MAX) {
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRId64, v);
        return json_string(buf);
    }
    return json_integer((json_int_t)v);
}

json_t *codec_id(const id128 *id)
{
    mrd_assert(id != NULL);
    char buf[ID128_TEXT_SIZE];
    id128_format(id, buf);
    return json_string(buf);
}

/* Set o[key] = v (stealing v); returns nonzero when v is NULL (OOM). */
static int put(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new(o, key, v) != 0;
}

json_t *codec_encode_account(const ledger_account *a, const char *customer_name)
{
    mrd_assert(a != NULL);
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = 0;
    bad |= put(o, "id", codec_id(&a->id));
    if (customer_name != NULL)
        bad |= put(o, "customer", json_string(customer_name));
    bad |= put(o, "ledger", json_integer(a->ledger));
    bad |= put(o, "code", json_integer(a->code));
    bad |= put(o, "flags", codec_account_flags(a->flags));
    bad |= put(o, "debits_pending", codec_amount(a->debits_pending));
    bad |= put(o, "debits_posted", codec_amount(a->debits_posted));
    bad |= put(o, "credits_pending", codec_amount(a->credits_pending));
    bad |= put(o, "credits_posted", codec_amount(a->credits_posted));
    bad |= put(o, "user_data_128", codec_id(&a->user_data_128));
    bad |= put(o, "user_data_64", codec_amount(a->user_data_64));
    bad |= put(o, "user_data_32", json_integer(a->user_data_32));
    bad |= put(o, "timestamp_us", json_integer((json_int_t)a->timestamp_us));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *codec_encode_transfer(const ledger_transfer *t, const ledger_pending_state *st)
{
    mrd_assert(t != NULL);
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = 0;
    bad |= put(o, "id", codec_id(&t->id));
    bad |= put(o, "debit_account_id", codec_id(&t->debit_account_id));
    bad |= put(o, "credit_account_id", codec_id(&t->credit_account_id));
    if (!id128_is_zero(&t->pending_id))
        bad |= put(o, "pending_id", codec_id(&t->pending_id));
    bad |= put(o, "amount", codec_amount(t->amount));
    bad |= put(o, "ledger", json_integer(t->ledger));
    bad |= put(o, "code", json_integer(t->code));
    bad |= put(o, "flags", codec_transfer_flags(t->flags));
    bad |= put(o, "timeout_s", json_integer((json_int_t)t->timeout_s));
    bad |= put(o, "user_data_128", codec_id(&t->user_data_128));
    bad |= put(o, "user_data_64", codec_amount(t->user_data_64));
    bad |= put(o, "user_data_32", json_integer(t->user_data_32));
    if (t->metadata != NULL) {
        /* Stored canonical text: parse it back so clients get the object.
         * Text that does not parse (never written by this codec) goes out
         * as a string rather than failing the whole read. */
        json_t *m = json_loadb(t->metadata, t->metadata_len, JSON_DECODE_ANY, NULL);
        if (m == NULL)
            m = json_stringn(t->metadata, t->metadata_len);
        if (m != NULL)
            bad |= put(o, "metadata", m);
    }
    bad |= put(o, "timestamp_us", json_integer((json_int_t)t->timestamp_us));
    if (st != NULL) {
        bad |= put(o, "pending_status", json_string(codec_pending_status_name(st->status)));
        bad |= put(o, "amount_posted", codec_amount(st->amount_posted));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* {"index":i,"id":"…","result":"name"[,"timestamp_us":…]} */
static json_t *result_entry(size_t index, const id128 *id, const char *name, bool ok,
                            int64_t timestamp_us)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = 0;
    bad |= put(o, "index", json_integer((json_int_t)index));
    bad |= put(o, "id", codec_id(id));
    bad |= put(o, "result", json_string(name ? name : "internal"));
    if (ok)
        bad |= put(o, "timestamp_us", json_integer((json_int_t)timestamp_us));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Wrap entries in {"results": [...]}; takes the array. */
static json_t *results_object(json_t *arr)
{
    json_t *o = json_object();
    if (o == NULL || json_object_set_new(o, "results", arr) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *codec_encode_transfer_results(const ledger_transfer *events,
                                      const ledger_transfer_result *results,
                                      size_t count)
{
    mrd_assert(count == 0 || (events != NULL && results != NULL));
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        bool ok = results[i] == LEDGER_TRANSFER_OK;
        json_t *r = result_entry(i, &events[i].id, ledger_transfer_result_name(results[i]),
                                 ok, events[i].timestamp_us);
        if (json_array_append_new(arr, r) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return results_object(arr);
}

char *codec_transfer_results_text(const ledger_transfer *events,
                                  const ledger_transfer_result *results, size_t count)
{
    mrd_assert(count == 0 || (events != NULL && results != NULL));
    textbuf b = {0};
    textbuf_reserve(&b, 32 + count * 120);
    textbuf_put(&b, "{\"results\":[", 12);
    for (size_t i = 0; i < count && !b.failed; i++) {
        char head[96];
        char id[ID128_TEXT_SIZE];
        id128_format(&events[i].id, id);
        int n = snprintf(head, sizeof head, "%s{\"index\":%" JSON_INTEGER_FORMAT ",\"id\":",
                         i > 0 ? "," : "", (json_int_t)i);
        mrd_assert(n > 0 && (size_t)n < sizeof head);
        textbuf_put(&b, head, (size_t)n);
        canon_string(&b, id, strlen(id));
        const char *name = ledger_transfer_result_name(results[i]);
        if (name == NULL)
            name = "internal";
        textbuf_put(&b, ",\"result\":", 10);
        canon_string(&b, name, strlen(name));
        if (results[i] == LEDGER_TRANSFER_OK) {
            n = snprintf(head, sizeof head, ",\"timestamp_us\":%" JSON_INTEGER_FORMAT,
                         (json_int_t)events[i].timestamp_us);
            mrd_assert(n > 0 && (size_t)n < sizeof head);
            textbuf_put(&b, head, (size_t)n);
        }
        textbuf_put(&b, "}", 1);
    }
    textbuf_put(&b, "]}", 2);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

json_t *codec_encode_account_results(const ledger_account *events,
                                     const ledger_account_result *results,
                                     size_t count)
{
    mrd_assert(count == 0 || (events != NULL && results != NULL));
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        bool ok = results[i] == LEDGER_ACCOUNT_OK;
        json_t *r = result_entry(i, &events[i].id, ledger_account_result_name(results[i]),
                                 ok, events[i].timestamp_us);
        if (json_array_append_new(arr, r) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return results_object(arr);
}

const char *codec_pending_status_name(ledger_pending_status s)
{
    switch (s) {
    case LEDGER_PENDING_PENDING: return "pending";
    case LEDGER_PENDING_POSTED: return "posted";
    case LEDGER_PENDING_VOIDED: return "voided";
    case LEDGER_PENDING_EXPIRED: return "expired";
    }
    return "unknown";
}
