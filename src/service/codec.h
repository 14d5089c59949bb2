/*
 * codec.h — JSON bodies of the HTTP API to and from ledger structs.
 *
 * Everything a client sends passes through here first. Parsing is strict
 * (jansson with JSON_REJECT_DUPLICATES, a nesting-depth pre-scan, no
 * unknown fields, exact int64 amounts as numbers or decimal strings), and
 * every refusal is a codec_error naming the field by JSON pointer, so a
 * bad request changes nothing and tells the client exactly what to fix.
 * The wire format is docs/API.md.
 */
#ifndef MERIDIAN_CODEC_H
#define MERIDIAN_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ledger/ledger.h"

/* A request-level error, rendered as application/problem+json. */
typedef struct codec_error {
    int status;       /* HTTP status: 400, 413, ... */
    const char *code; /* stable machine-readable code: "invalid_field", ... */
    char detail[256]; /* one sentence for humans */
    char pointer[96]; /* JSON pointer of the offending value, or "" */
} codec_error;

/* Fill e (printf-style detail). Returns -1 so callers can
 * `return codec_fail(...)`. */
int codec_fail(codec_error *e, int status, const char *code, const char *pointer,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The problem+json body for e. Returns a malloc'd string, or NULL (OOM). */
char *codec_problem_body(const codec_error *e);

/* Parse a request body: valid UTF-8 JSON, an object at the top, no
 * duplicate keys, depth <= LIMIT_JSON_DEPTH_MAX. Returns a new
 * reference, or NULL with e filled (malformed_json, duplicate_key,
 * too_deep, invalid_field). */
json_t *codec_parse_body(const char *body, size_t len, codec_error *e);

/* v as canonical JSON text: byte for byte what
 * json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) writes (compact, object
 * keys sorted by bytes), for trees with valid UTF-8 strings such as
 * codec_parse_body builds, nested at most LIMIT_JSON_DEPTH_MAX deep.
 * Returns a malloc'd NUL-terminated string (free()) and its length in
 * *len, or NULL (out of memory, or a tree deeper than the limit). */
char *codec_canonical_json(json_t *v, size_t *len);

/* {"transfers":[...]} -> a malloc'd array of count transfers with
 * customer_id set to customer_id. Metadata is canonicalised into
 * malloc'd strings owned by the array: release with codec_transfers_free.
 * Returns 0, or -1 with e filled (nothing allocated remains). */
int codec_decode_transfers(json_t *root, int64_t customer_id,
                           ledger_transfer **out, size_t *count, codec_error *e);
void codec_transfers_free(ledger_transfer *t, size_t count);

/* {"accounts":[...]} -> a malloc'd array (free()) of count accounts with
 * customer_id set to customer_id. When admin is true each account may
 * (must, when customer_id is 0) carry "customer": names[i] then points
 * into root (valid while root lives), else NULL. names is malloc'd
 * (free()). A customer key sending "customer" gets 400 unknown_field. */
int codec_decode_accounts(json_t *root, int64_t customer_id, int admin,
                          ledger_account **out, const char ***names,
                          size_t *count, codec_error *e);

/* {"ids":[...]} -> malloc'd array (free()) of 1..LIMIT_BATCH_EVENTS_MAX ids. */
int codec_decode_ids(json_t *root, id128 **out, size_t *count, codec_error *e);

/* Decode a decimal amount/int64 from a JSON integer or a digit string in
 * [min, max]. Returns 0 or -1 with e filled (pointer given). */
int codec_decode_int64(json_t *v, int64_t min, int64_t max, const char *pointer,
                       int64_t *out, codec_error *e);

/* Flags <-> arrays of names. */
json_t *codec_account_flags(uint32_t flags);
json_t *codec_transfer_flags(uint32_t flags);

/* Encoders. Return new references (NULL only on OOM). Amounts above 2^53
 * are strings; ids are dashed UUID strings. */
json_t *codec_amount(int64_t v);
json_t *codec_id(const id128 *id);
json_t *codec_encode_account(const ledger_account *a, const char *customer_name);
/* st may be NULL (not a pending transfer). */
json_t *codec_encode_transfer(const ledger_transfer *t, const ledger_pending_state *st);
json_t *codec_encode_transfer_results(const ledger_transfer *events,
                                      const ledger_transfer_result *results,
                                      size_t count);
/* The text of json_dumps(codec_encode_transfer_results(...),
 * JSON_COMPACT), byte for byte, written directly (the answer to every
 * POST /v1/transfers). Returns a malloc'd string (free()), or NULL (OOM). */
char *codec_transfer_results_text(const ledger_transfer *events,
                                  const ledger_transfer_result *results, size_t count);
json_t *codec_encode_account_results(const ledger_account *events,
                                     const ledger_account_result *results,
                                     size_t count);

const char *codec_pending_status_name(ledger_pending_status s);

#endif
