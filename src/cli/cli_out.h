/*
 * cli_out.h — printing query results for people (aligned columns) or
 * for programs (--json: an array of objects, one per row).
 */
#ifndef MERIDIAN_CLI_OUT_H
#define MERIDIAN_CLI_OUT_H

#include <stdio.h>

#include <jansson.h>
#include <libpq-fe.h>

/* How a column is printed. A NULL value is "-" in tables, null in JSON. */
typedef enum { CLI_COL_TEXT, CLI_COL_INT } cli_col_kind;

typedef struct cli_col {
    const char *header; /* table header, upper case: "PREFIX" */
    const char *key;    /* JSON key: "prefix" */
    cli_col_kind kind;
} cli_col;

/* Print res (ncols columns described by cols, in result order) as an
 * aligned table on out; empty_text (e.g. "no API keys") when no rows. */
void cli_out_table(FILE *out, const PGresult *res, const cli_col *cols, int ncols,
                   const char *empty_text);

/* res as a JSON array of objects. Returns a new reference, or NULL (OOM). */
json_t *cli_out_rows_json(const PGresult *res, const cli_col *cols, int ncols);

/* Print a JSON value on stdout followed by a newline; takes the
 * reference. Returns 0, or -1 when v is NULL or cannot be written. */
int cli_out_json(json_t *v);

#endif
