/*
 * api.h — the routes of docs/API.md: routing, authentication, handlers.
 *
 * api_handle is the http_handler_fn given to the transport. It matches
 * the path against the fixed route table (404 not_found, 405
 * method_not_allowed with Allow), authenticates /v1 requests (401,
 * 403), checks POST framing (411, 415), then runs the route's handler:
 * writes go to the batcher, reads to the read pool, and answers are
 * encoded by the codec. Every error is application/problem+json.
 */
#ifndef MERIDIAN_API_H
#define MERIDIAN_API_H

#include "service/auth.h"
#include "service/batcher.h"
#include "service/http.h"
#include "service/reads.h"

typedef struct api_config {
    batcher *batcher;   /* borrowed */
    reads *reads;       /* borrowed */
    auth *auth;         /* borrowed */
    int schema_version; /* what /readyz requires (migrations_latest()) */
    struct route_source *route; /* borrowed; NULL: /readyz checks no leader */
} api_config;

typedef struct api api;

/* Returns NULL on allocation failure. The borrowed parts must outlive
 * the api and every request in flight. */
api *api_create(const api_config *cfg);
void api_free(api *a);

/* The http_handler_fn: arg is the api. */
void api_handle(void *arg, const http_request *req, http_response *resp);

#endif
