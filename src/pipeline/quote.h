/* Price quotes: what a generation or a graph run will cost, line by line,
 * at the catalog's price rules (lr_model_unit_price), saved so that a
 * submit naming the quote within LR_QUOTE_TTL_MS is charged the quoted
 * prices even if the catalog changed in between.
 *
 * A line is one generation to be: a node of a graph (node_id) or the one
 * generation of POST /api/infer (node_id NULL). Lines borrow their
 * strings and params from the caller. Blocking (database calls): request
 * threads and workers only, never the loop thread.
 */
#ifndef LR_QUOTE_H
#define LR_QUOTE_H

#include <jansson.h>
#include <stddef.h>

#include "core/vocab.h"
#include "pipeline/pipeline.h"

#define LR_QUOTE_TTL_MS (10LL * 60 * 1000)

typedef struct {
    const char *node_id; /* NULL: an infer */
    const lr_model *model;
    json_t *params; /* validated (defaults filled) */
    int outputs;
    int unit; /* price of one output */
} lr_price_line;

/* A refusal: the code, a message for the client and the field at fault. */
typedef struct {
    lr_code code;
    char message[256];
    char field[64];
} lr_quote_refusal;

/* The priced line of an infer request: the model (enabled), outputs (0:
 * one) and params checked as POST /api/infer checks them. On success
 * line->params is a new reference (the caller's to release). */
bool lr_quote_infer_line(lr_pipeline *p, const char *model_id, json_t *params, int outputs,
                         lr_price_line *line, lr_quote_refusal *why);

/* Saves lines as user's quote: *id, *expires_at (ISO) and *total. */
lr_err lr_quote_save(lr_pipeline *p, const char *user, const lr_price_line *lines, size_t n,
                     char id[LR_UUID_LEN + 1], char expires_at[32], int *total);

/* Applies user's quote quote_id to lines: when the quote is live and
 * prices exactly these lines (same nodes, models, params and outputs),
 * each line's unit becomes the quoted one and LR_CODE_NONE is returned;
 * else quote_not_found, quote_expired, quote_mismatch, or
 * database_unavailable. */
lr_code lr_quote_honour(lr_pipeline *p, const char *user, const char *quote_id,
                        lr_price_line *lines, size_t n);

#endif
