/*
 * etcd_codec.h — JSON encoding and decoding for etcd 3.4's v3 gateway.
 *
 * Pure functions, no I/O, so that every request shape and every answer
 * etcd can give (including the awkward ones: default-valued fields left
 * out, 64-bit numbers as strings, a keepalive answer without a TTL
 * meaning the lease is gone) is unit-tested without a server
 * (tests/unit/test_etcd_codec.c). etcd.c does the HTTP around them.
 *
 * Request builders return a malloc'd compact JSON text with sorted keys
 * (deterministic, so tests compare strings), or NULL when out of memory.
 * Arguments are assumed validated by the caller (etcd.c): sizes within
 * src/common/limits.h. Parsers take the answer body and its length and
 * return ETCD_OK, ETCD_E_NOT_FOUND where documented, ETCD_E_LIMIT when a
 * bound is exceeded, or ETCD_E_PROTOCOL with the reason written to err;
 * on failure every output is zeroed and nothing is left allocated.
 */
#ifndef MERIDIAN_ETCD_CODEC_H
#define MERIDIAN_ETCD_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd/etcd.h"

/* --- Primitives. */

/* Base64 (RFC 4648, padded: libsodium's ORIGINAL variant) of len bytes,
 * as a new NUL-terminated string in *out. ETCD_OK, or ETCD_E_LIMIT when
 * len > LIMIT_ETCD_RESPONSE_BYTES_MAX, ETCD_E_PROTOCOL when out of memory. */
int etcd_codec_b64_encode(const void *data, size_t len, char **out);
/* Decode padded base64 into a new buffer *out of *len bytes, with a NUL
 * byte after the last one. ETCD_E_PROTOCOL when malformed. */
int etcd_codec_b64_decode(const char *b64, char **out, size_t *len);
/* A 64-bit integer as etcd's gateway writes it: a JSON string of decimal
 * digits with an optional '-', or (tolerated) a JSON integer. NULL (the
 * field was omitted, i.e. default) reads as 0. ETCD_E_PROTOCOL on
 * anything else, including overflow. */
int etcd_codec_int64(const json_t *v, int64_t *out);
/* Parse decimal text (optional '-', then 1..19 digits) with overflow
 * checks. Returns 0 or -1. */
int etcd_codec_parse_decimal(const char *s, int64_t *out);
/* range_end for "every key starting with prefix": the prefix with its
 * last byte below 0xff incremented and the bytes after it dropped
 * (etcd's GetPrefixRangeEnd). An empty prefix or one made only of 0xff
 * bytes gives "\0" (to the end of the key space). New buffer in *out,
 * *len bytes. Returns 0 or -1 (out of memory). */
int etcd_codec_prefix_end(const char *prefix, char **out, size_t *len);

/* --- Requests. */

/* POST /v3/kv/range: one key, or (prefix) every key starting with it;
 * limit 0 = no limit. */
char *etcd_codec_range_request(const char *key, bool prefix, int64_t limit);
/* POST /v3/kv/put. lease_id 0 = none. */
char *etcd_codec_put_request(const char *key, const void *value, size_t value_len,
                             int64_t lease_id);
/* POST /v3/kv/deleterange. */
char *etcd_codec_delete_request(const char *key, bool prefix);
/* POST /v3/kv/txn. */
char *etcd_codec_txn_request(const etcd_txn *txn);
/* POST /v3/lease/grant. */
char *etcd_codec_lease_grant_request(int64_t ttl_s);
/* POST /v3/lease/keepalive, /v3/lease/revoke: {"ID":"…"}; with_keys adds
 * "keys":true (for /v3/lease/timetolive). */
char *etcd_codec_lease_id_request(int64_t lease_id, bool with_keys);
/* POST /v3/watch create_request. start_revision 0 = from now on. Asks for
 * progress notifications (so the watcher learns the store revision even
 * when its keys are quiet). */
char *etcd_codec_watch_request(const char *key, bool prefix, int64_t start_revision);

/* --- Answers. */

/* Error answer (non-200): {"error":…,"message":…,"code":N} or, inside a
 * stream, {"error":{"grpc_code":N,"message":…}}. Writes the gRPC code
 * (-1 if unknown) and the message (or a placeholder). Never fails. */
void etcd_codec_parse_error(const char *body, size_t len, int *grpc_code, char *msg,
                            size_t msg_size);
/* One kv object of an answer into *out (copies; release with
 * etcd_kv_release). */
int etcd_codec_parse_kv(const json_t *obj, etcd_kv *out, char *err, size_t err_size);
/* /v3/kv/range answer: up to max pairs into a new array *kvs (NULL when
 * none). ETCD_E_LIMIT when the answer holds more than max pairs or says
 * "more". */
int etcd_codec_parse_range_response(const char *body, size_t len, size_t max,
                                    etcd_kv **kvs, size_t *count, char *err,
                                    size_t err_size);
/* /v3/kv/put and /v3/kv/deleterange answers: the header revision, and
 * for a delete the number of keys deleted (deleted may be NULL). */
int etcd_codec_parse_write_response(const char *body, size_t len, int64_t *revision,
                                    int64_t *deleted, char *err, size_t err_size);
/* /v3/kv/txn answer: the branch taken, the revision and the kvs read by
 * the branch's GET operations (at most LIMIT_ETCD_PREFIX_KEYS_MAX). */
int etcd_codec_parse_txn_response(const char *body, size_t len, etcd_txn_result *out,
                                  char *err, size_t err_size);
/* /v3/lease/grant answer. */
int etcd_codec_parse_lease_grant_response(const char *body, size_t len, int64_t *lease_id,
                                          int64_t *ttl_s, char *err, size_t err_size);
/* /v3/lease/keepalive answer ({"result":{…}}). ETCD_E_NOT_FOUND when the
 * TTL is absent or not positive: the lease expired or was revoked. */
int etcd_codec_parse_keepalive_response(const char *body, size_t len, int64_t *ttl_s,
                                        char *err, size_t err_size);
/* /v3/lease/timetolive answer. ETCD_E_NOT_FOUND when TTL is -1 (or
 * absent): the lease does not exist. */
int etcd_codec_parse_timetolive_response(const char *body, size_t len, int64_t *ttl_s,
                                         char *err, size_t err_size);

/* One message of a watch stream. */
typedef struct etcd_watch_msg {
    bool created;             /* the watch was set up */
    bool canceled;            /* the server ended the watch */
    bool error;               /* the stream carried an error object */
    int64_t header_revision;  /* store revision when the message was sent */
    int64_t compact_revision; /* >0 when canceled because history was compacted */
    etcd_event *events;       /* in revision order; NULL when none */
    size_t event_count;
    char reason[160];         /* cancel or error reason, "" otherwise */
} etcd_watch_msg;

/* Parse one watch-stream message ({"result":{…}} or {"error":{…}}). At
 * most LIMIT_ETCD_PREFIX_KEYS_MAX events. Release with
 * etcd_watch_msg_release. */
int etcd_codec_parse_watch_message(const char *body, size_t len, etcd_watch_msg *out,
                                   char *err, size_t err_size);
void etcd_watch_msg_release(etcd_watch_msg *m);

#endif
