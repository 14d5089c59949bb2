/*
 * html.h — render a drill report (report.h's JSON) as a self-contained
 * HTML page with a timeline per run, for people without the tool.
 */
#ifndef MERIDIAN_DRILL_HTML_H
#define MERIDIAN_DRILL_HTML_H

#include <stdio.h>

#include <jansson.h>

/* Write the page for report to out. Returns 0, or -1 when report is not
 * an object or writing failed. */
int drill_report_html(FILE *out, const json_t *report);

#endif
