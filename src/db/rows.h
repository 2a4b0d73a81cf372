/* Rows into records, shared by the backends.
 *
 * Each backend SELECTs the columns of a record in the order of the enums
 * below and hands them over as text (NULL for SQL NULL): SQLite's and
 * libpq's text forms of integers and JSON agree, so one decoder serves
 * both and a record reads the same whichever database it came from. The
 * column text is copied; the caller keeps ownership of it.
 */
#ifndef LR_DB_ROWS_H
#define LR_DB_ROWS_H

#include <stddef.h>

#include "db/db.h"

enum {
    GC_ID,
    GC_USER_ID,
    GC_TYPE,
    GC_MODEL,
    GC_PROMPT,
    GC_STATUS,
    GC_STAGE,
    GC_RESULT_URLS, /* JSON array of strings */
    GC_CREDITS_USED,
    GC_OUTPUTS_COUNT,
    GC_SUCCEEDED_COUNT,
    GC_FAILED_COUNT,
    GC_PROVIDER,
    GC_TASK_IDS, /* JSON array of strings and nulls */
    GC_PARAMS,   /* JSON object */
    GC_ERROR_CODE,
    GC_ERROR_MESSAGE,
    GC_DURATION_MS,
    GC_CREATED_AT,
    GC_UPDATED_AT,
    GC_FINISHED_AT,
    GC_TEXT, /* metadata.text when it is a string */
    GC_PREVIEW_STATUS,
    GC_POSTER_PATH,
    GC_PREVIEW_PATH,
    GC_PREVIEW, /* metadata.preview as JSON, NULL when absent */
    GC_COUNT
};

enum {
    LC_ID,
    LC_AMOUNT,
    LC_TYPE,
    LC_DESCRIPTION,
    LC_METADATA,
    LC_GENERATION_ID,
    LC_CREATED_AT,
    LC_COUNT
};

enum { PC_ID, PC_KEYS, PC_COUNT };

enum { VC_KIND, VC_SUBJECT, VC_DETAIL, VC_COUNT };

enum {
    RC_ID,
    RC_USER_ID,
    RC_STATUS,
    RC_GRAPH,
    RC_QUOTED,
    RC_ERROR_NODE,
    RC_ERROR_CODE,
    RC_ERROR_MESSAGE,
    RC_CREATED_AT,
    RC_UPDATED_AT,
    RC_FINISHED_AT,
    RC_COUNT
};

enum {
    NC_GENERATION_ID,
    NC_NODE_ID,
    NC_STATUS,
    NC_STAGE,
    NC_RUN_COST,
    NC_CREDITS_USED,
    NC_REFUNDED,
    NC_OUTPUTS_COUNT,
    NC_RESULT_URLS,
    NC_TASK_IDS,
    NC_TEXT,
    NC_PROMPT,
    NC_IMAGE_URL,
    NC_ERROR_CODE,
    NC_ERROR_MESSAGE,
    NC_CREATED_AT,
    NC_FINISHED_AT,
    NC_CACHED_FROM,
    NC_COUNT
};

/* Appends the record of one row (col: its columns) to the list out, an
 * lr_generation_list, lr_ledger_list, lr_purge_list or lr_violation_list. */
typedef void (*lr_db_row_fn)(const char *const *col, void *out);
void lr_db_add_generation(const char *const *col, void *out);
void lr_db_add_ledger_row(const char *const *col, void *out);
void lr_db_add_purge(const char *const *col, void *out);
void lr_db_add_violation(const char *const *col, void *out);
/* Appends the first column (a string) to out, an lr_strv. */
void lr_db_add_string(const char *const *col, void *out);
/* A run (into an lr_run, which must be zeroed: the first row wins) and
 * a run's node (into an lr_run_node_list). */
void lr_db_set_run(const char *const *col, void *out);
void lr_db_add_run_node(const char *const *col, void *out);
/* A stored JSON array of strings (and nulls) into a; anything else gives
 * an empty array. */
void lr_db_strv_parse(const char *json, lr_strv *a);
/* The inverse: a as a JSON array (NULL entries as null), malloc'd. */
char *lr_db_strv_dump(const lr_strv *a);

/* v (n elements of size bytes) with room for one more, zeroed at v[n];
 * grows by doubling. */
void *lr_db_grow(void *v, size_t n, size_t size);
/* Moves the first generation of l into out and clears l; NOT_FOUND when l
 * is empty. e: the read's result, passed through when not LR_OK. */
lr_err lr_db_first_generation(lr_err e, lr_generation_list *l, lr_generation *out);
/* The same for a list of run nodes (find_cached). */
lr_err lr_db_first_run_node(lr_err e, lr_run_node_list *l, lr_run_node *out);
/* The end of a read of one run (lr_db_set_run into out): NOT_FOUND when
 * no row came; out is cleared whenever the answer is not LR_OK. */
lr_err lr_db_found_run(lr_err e, lr_run *out);

/* A generation's columns in the order above (GC_*), for each dialect;
 * PostgreSQL's times as the server writes them (ISO-8601 UTC). */
#define LR_PG_GEN_COLUMNS                                                                          \
    "g.id, g.user_id, g.type, g.model, g.prompt, g.status, g.stage, "                              \
    "coalesce(g.result_urls, '[]'::jsonb), g.credits_used, g.outputs_count, g.succeeded_count, "   \
    "g.failed_count, g.provider, g.provider_task_ids, g.params, g.error_code, g.error_message, "   \
    "g.duration_ms, lensroom.iso(g.created_at), lensroom.iso(g.updated_at), "                      \
    "lensroom.iso(g.finished_at), "                                                                \
    "CASE WHEN jsonb_typeof(g.metadata -> 'text') = 'string' THEN g.metadata ->> 'text' END, "     \
    "g.preview_status, g.poster_path, g.preview_path, g.metadata -> 'preview'"
#define LR_SQLITE_GEN_COLUMNS                                                                      \
    "id, user_id, type, model, prompt, status, stage, result_urls, credits_used, outputs_count, "  \
    "succeeded_count, failed_count, provider, provider_task_ids, params, error_code, "             \
    "error_message, duration_ms, created_at, updated_at, finished_at, "                            \
    "CASE WHEN json_type(metadata, '$.text') = 'text' THEN json_extract(metadata, '$.text') END, " \
    "preview_status, poster_path, preview_path, json_extract(metadata, '$.preview')"

/* A run's columns (RC_*) and its nodes' (NC_*, generations g), per dialect. */
#define LR_PG_RUN_COLUMNS                                                                          \
    "r.id, r.user_id, r.status, r.graph, r.quoted, r.error_node, r.error_code, r.error_message, "  \
    "lensroom.iso(r.created_at), lensroom.iso(r.updated_at), lensroom.iso(r.finished_at)"
#define LR_SQLITE_RUN_COLUMNS                                                                      \
    "id, user_id, status, graph, quoted, error_node, error_code, error_message, created_at, "      \
    "updated_at, finished_at"
#define LR_PG_NODE_COLUMNS                                                                         \
    "g.id, g.node_id, g.status, g.stage, g.run_cost, g.credits_used, "                             \
    "(SELECT coalesce(sum(t.amount), 0) FROM public.credit_transactions t "                        \
    "WHERE t.generation_id = g.id AND t.type = 'refund'), g.outputs_count, "                       \
    "coalesce(g.result_urls, '[]'::jsonb), g.provider_task_ids, "                                  \
    "CASE WHEN jsonb_typeof(g.metadata -> 'text') = 'string' THEN g.metadata ->> 'text' END, "     \
    "g.prompt, g.metadata ->> 'image_url', g.error_code, g.error_message, "                        \
    "lensroom.iso(g.created_at), "                                                                 \
    "lensroom.iso(g.finished_at), g.metadata ->> 'cached_from'"
#define LR_SQLITE_NODE_COLUMNS                                                                     \
    "g.id, g.node_id, g.status, g.stage, g.run_cost, g.credits_used, "                             \
    "(SELECT coalesce(sum(t.amount), 0) FROM credit_transactions t "                               \
    "WHERE t.generation_id = g.id AND t.type = 'refund'), g.outputs_count, g.result_urls, "        \
    "g.provider_task_ids, "                                                                        \
    "CASE WHEN json_type(g.metadata, '$.text') = 'text' THEN json_extract(g.metadata, '$.text') "  \
    "END, g.prompt, json_extract(g.metadata, '$.image_url'), g.error_code, g.error_message, "      \
    "g.created_at, g.finished_at, json_extract(g.metadata, '$.cached_from')"

#endif
