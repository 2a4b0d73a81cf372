/* Process-wide metrics in the Prometheus text format (version 0.0.4).
 *
 * The families are fixed, one row each in LR_METRICS_MAP: a name, a kind
 * (counter or histogram), the help text and the label names. A series (one
 * set of label values) is created on its first use; a family holds at most
 * LR_METRICS_MAX_SERIES of them, later label sets are counted under the
 * values "other" so a client sending odd paths or methods cannot grow the
 * registry without bound. Every function is thread-safe and never blocks
 * on I/O: the HTTP server, the event loop and workers call them on every
 * request, provider call and settled generation.
 *
 * Values that live in the database (generations by model and status,
 * ledger totals) are not kept here: the /metrics handler reads them at
 * scrape time and appends them with lr_metrics_text_* to the same text.
 */
#ifndef LR_METRICS_H
#define LR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define LR_METRICS_MAX_SERIES 256

/* XX(ID, KIND, name, help, "label,label") */
#define LR_METRICS_MAP(XX)                                                                         \
    XX(HTTP_REQUESTS, COUNTER, "lensroom_http_requests_total",                                     \
       "HTTP requests answered, by route pattern, method and status.", "route,method,status")      \
    XX(HTTP_DURATION, HISTOGRAM, "lensroom_http_request_duration_seconds",                         \
       "Time from a request's first byte to its answer (suspended time included), by route.",      \
       "route")                                                                                    \
    XX(PROVIDER_CALLS, COUNTER, "lensroom_provider_calls_total",                                   \
       "Calls to provider APIs, by host and outcome (ok, http_4xx, http_5xx, network).",           \
       "host,outcome")                                                                             \
    XX(PROVIDER_DURATION, HISTOGRAM, "lensroom_provider_call_duration_seconds",                    \
       "Duration of provider API calls, by host.", "host")                                         \
    XX(GENERATIONS_FINISHED, COUNTER, "lensroom_generations_finished_total",                       \
       "Generations this process settled, by final status.", "status")                             \
    XX(STORAGE_BYTES, COUNTER, "lensroom_storage_written_bytes_total",                             \
       "Bytes of generation outputs and inputs committed to object storage.", "")                  \
    XX(DB_CALLS, COUNTER, "lensroom_db_calls_total",                                               \
       "Database operations, by operation and outcome (ok, error).", "op,outcome")                 \
    XX(DB_DURATION, HISTOGRAM, "lensroom_db_call_duration_seconds",                                \
       "Duration of database operations (waiting for a pooled connection included), by "           \
       "operation.",                                                                               \
       "op")                                                                                       \
    XX(PREVIEW_JOBS, COUNTER, "lensroom_preview_jobs_total",                                       \
       "Preview jobs (posters, previews, thumbnails) this process ended, by status (ready, "       \
       "failed).",                                                                                 \
       "status")                                                                                   \
    XX(PREVIEW_DURATION, HISTOGRAM, "lensroom_preview_job_duration_seconds",                       \
       "Duration of preview jobs, all outputs of a generation.", "")

typedef enum {
#define XX(id, kind, name, help, labels) LR_M_##id,
    LR_METRICS_MAP(XX)
#undef XX
        LR_M_COUNT
} lr_metric_id;

/* Adds v to a counter; values has one string per label of the family
 * (borrowed, any bytes: escaped on output). */
void lr_metrics_add(lr_metric_id m, const char *const *values, double v);
/* Records one observation (seconds, for the durations) in a histogram. */
void lr_metrics_observe(lr_metric_id m, const char *const *values, double v);
/* The value of one counter series (0 when it does not exist); for tests
 * and for gauges derived from counters. */
double lr_metrics_value(lr_metric_id m, const char *const *values);

/* A growing text buffer; the caller frees buf. */
typedef struct {
    char *buf;
    size_t len, cap;
} lr_metrics_text;

/* Appends every family of the registry. */
void lr_metrics_render(lr_metrics_text *t);
/* Appends "# HELP" and "# TYPE" lines (type: counter, gauge, histogram). */
void lr_metrics_text_family(lr_metrics_text *t, const char *name, const char *type,
                            const char *help);
/* Appends one sample: name{k="v",...} value. keys and values have n
 * entries (n may be 0); values are escaped. */
void lr_metrics_text_sample(lr_metrics_text *t, const char *name, const char *const *keys,
                            const char *const *values, size_t n, double v);
void lr_metrics_text_printf(lr_metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
