/*
 * cli_out.c — tables and JSON for meridianctl's list commands (see
 * cli_out.h). Column widths are measured on the rows themselves, capped
 * so one long label cannot push the table off the screen.
 */
#include "cli/cli_out.h"

#include <stdlib.h>
#include <string.h>

#include "common/mrd_assert.h"

/* Widest a column grows in a table; longer values are cut with "…". */
#define CLI_OUT_COL_WIDTH_MAX 40
#define CLI_OUT_COLS_MAX 16

static const char *cell(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? "-" : PQgetvalue(res, row, col);
}

void cli_out_table(FILE *out, const PGresult *res, const cli_col *cols, int ncols,
                   const char *empty_text)
{
    mrd_assert(ncols > 0 && ncols <= CLI_OUT_COLS_MAX && ncols <= PQnfields(res));
    int rows = PQntuples(res);
    if (rows == 0) {
        fprintf(out, "%s\n", empty_text);
        return;
    }
    int width[CLI_OUT_COLS_MAX];
    for (int c = 0; c < ncols; c++) {
        width[c] = (int)strlen(cols[c].header);
        for (int r = 0; r < rows; r++) {
            int w = (int)strlen(cell(res, r, c));
            if (w > width[c])
                width[c] = w > CLI_OUT_COL_WIDTH_MAX ? CLI_OUT_COL_WIDTH_MAX : w;
        }
    }
    for (int c = 0; c < ncols; c++)
        fprintf(out, "%-*s%s", c + 1 < ncols ? width[c] : 0, cols[c].header,
                c + 1 < ncols ? "  " : "\n");
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < ncols; c++) {
            const char *v = cell(res, r, c);
            int len = (int)strlen(v);
            const char *sep = c + 1 < ncols ? "  " : "\n";
            if (len > CLI_OUT_COL_WIDTH_MAX)
                fprintf(out, "%.*s...%s", CLI_OUT_COL_WIDTH_MAX - 3, v, sep);
            else
                fprintf(out, "%-*s%s", c + 1 < ncols ? width[c] : 0, v, sep);
        }
    }
}

json_t *cli_out_rows_json(const PGresult *res, const cli_col *cols, int ncols)
{
    mrd_assert(ncols > 0 && ncols <= PQnfields(res));
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (int r = 0; r < PQntuples(res); r++) {
        json_t *obj = json_object();
        if (obj == NULL || json_array_append_new(arr, obj) != 0)
            goto fail;
        for (int c = 0; c < ncols; c++) {
            json_t *v;
            if (PQgetisnull(res, r, c))
                v = json_null();
            else if (cols[c].kind == CLI_COL_INT)
                v = json_integer(strtoll(PQgetvalue(res, r, c), NULL, 10));
            else
                v = json_string(PQgetvalue(res, r, c));
            if (v == NULL || json_object_set_new(obj, cols[c].key, v) != 0)
                goto fail;
        }
    }
    return arr;
fail:
    json_decref(arr);
    return NULL;
}

int cli_out_json(json_t *v)
{
    if (v == NULL)
        return -1;
    int rc = json_dumpf(v, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (rc != 0 || fputc('\n', stdout) == EOF)
        return -1;
    return 0;
}
