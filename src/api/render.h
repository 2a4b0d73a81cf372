/* The API's JSON for the records the database returns: the one place that
 * knows the wire's field names (camelCase) and shapes, whichever backend
 * the record came from. Every function returns a new reference that
 * shares nothing with the record, so either may go first.
 */
#ifndef LR_API_RENDER_H
#define LR_API_RENDER_H

#include <jansson.h>

#include "db/db.h"

/* {id, type, modelId, prompt, status, stage, url, resultUrls, creditsUsed,
 *  outputsCount, succeededCount, failedCount, provider, taskIds, params,
 *  error: {code, message} | null, durationMs, createdAt, updatedAt,
 *  finishedAt, text, previewStatus, posterUrl, previewUrl, thumbnails:
 *  {small, medium}, previews: [{posterUrl, previewUrl, thumbnails, width,
 *  height}] one per output, previewError}. The owner's id is not part of it: a user only ever
 * sees their own generations. */
json_t *lr_render_generation(const lr_generation *g);
json_t *lr_render_generations(const lr_generation_list *l);
/* {id, amount, type, description, metadata, generationId, createdAt}. */
json_t *lr_render_ledger_row(const lr_ledger_row *t);
json_t *lr_render_ledger(const lr_ledger_list *l);

/* A run's node: {id, generationId, modelId (from graph, the run's
 * document), status, stage, outputsCount, urls, text, outputs (urls, or
 * the text), cached, cost: {quoted, charged, refunded}, error, inputs:
 * {prompt, imageUrl}, createdAt, finishedAt}. */
json_t *lr_render_run_node(json_t *graph, const lr_run_node *n);
/* {success, runId, status, error: {nodeId, code, message} | null, costs:
 * {quoted, charged, refunded}, nodes: [...] in the graph's order,
 * createdAt, finishedAt}. */
json_t *lr_render_run(const lr_run *r, const lr_run_node_list *nodes);

#endif
