#include "api/render.h"

#include <string.h>

/* A string, or null for NULL (json_string alone would give no value). */
static json_t *str(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;
    return j ? j : json_null();
}

static json_t *error_of(const lr_generation *g)
{
    if (!g->error_code)
        return json_null();
    return json_pack("{s:o, s:o}", "code", str(g->error_code), "message", str(g->error_message));
}

/* One output's derived media: {posterUrl, previewUrl, thumbnails:
 * {small, medium}, width, height}, null where not made. */
static json_t *preview_of(json_t *o)
{
    json_t *thumbs = json_null();
    if (json_object_get(o, "thumb") || json_object_get(o, "medium"))
        thumbs =
            json_pack("{s:o, s:o}", "small", str(json_string_value(json_object_get(o, "thumb"))),
                      "medium", str(json_string_value(json_object_get(o, "medium"))));
    json_t *j = json_pack(
        "{s:o, s:o, s:o}", "posterUrl", str(json_string_value(json_object_get(o, "poster"))),
        "previewUrl", str(json_string_value(json_object_get(o, "preview"))), "thumbnails", thumbs);
    json_t *w = json_object_get(o, "width"), *h = json_object_get(o, "height");
    json_object_set_new(j, "width", json_is_integer(w) ? json_copy(w) : json_null());
    json_object_set_new(j, "height", json_is_integer(h) ? json_copy(h) : json_null());
    return j;
}

/* previewStatus, the first output's posterUrl, previewUrl and thumbnails,
 * every output's in previews, and previewError when the job failed. */
static void add_previews(json_t *j, const lr_generation *g)
{
    json_t *outputs = json_object_get(g->preview, "outputs");
    json_t *all = json_array();
    for (size_t i = 0; i < json_array_size(outputs); i++)
        json_array_append_new(all, preview_of(json_array_get(outputs, i)));
    json_t *first = json_array_get(all, 0);
    json_object_set_new(j, "previewStatus", str(g->preview_status ? g->preview_status : "none"));
    json_object_set_new(j, "posterUrl",
                        first ? json_copy(json_object_get(first, "posterUrl")) : json_null());
    json_object_set_new(j, "previewUrl",
                        first ? json_copy(json_object_get(first, "previewUrl")) : json_null());
    json_object_set_new(j, "thumbnails",
                        first ? json_deep_copy(json_object_get(first, "thumbnails")) : json_null());
    json_object_set_new(j, "previews", all);
    json_object_set_new(j, "previewError",
                        str(json_string_value(json_object_get(g->preview, "error"))));
}

json_t *lr_render_generation(const lr_generation *g)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", str(g->id));
    json_object_set_new(j, "type", str(g->type));
    json_object_set_new(j, "modelId", str(g->model));
    json_object_set_new(j, "prompt", str(g->prompt));
    json_object_set_new(j, "status", str(g->status));
    json_object_set_new(j, "stage", str(g->stage));
    json_object_set_new(j, "url", str(g->result_urls.n ? g->result_urls.v[0] : NULL));
    json_object_set_new(j, "resultUrls", lr_strv_json(&g->result_urls));
    json_object_set_new(j, "creditsUsed", json_integer(g->credits_used));
    json_object_set_new(j, "outputsCount", json_integer(g->outputs_count));
    json_object_set_new(j, "succeededCount", json_integer(g->succeeded_count));
    json_object_set_new(j, "failedCount", json_integer(g->failed_count));
    json_object_set_new(j, "provider", str(g->provider));
    json_object_set_new(j, "taskIds", lr_strv_json(&g->task_ids));
    json_object_set_new(j, "params", g->params ? json_deep_copy(g->params) : json_object());
    json_object_set_new(j, "error", error_of(g));
    json_object_set_new(j, "durationMs",
                        g->has_duration ? json_integer(g->duration_ms) : json_null());
    json_object_set_new(j, "createdAt", str(g->created_at));
    json_object_set_new(j, "updatedAt", str(g->updated_at));
    json_object_set_new(j, "finishedAt", str(g->finished_at));
    json_object_set_new(j, "text", str(g->text));
    add_previews(j, g);
    return j;
}

json_t *lr_render_generations(const lr_generation_list *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(arr, lr_render_generation(&l->v[i]));
    return arr;
}

json_t *lr_render_ledger_row(const lr_ledger_row *t)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", str(t->id));
    json_object_set_new(j, "amount", json_integer(t->amount));
    json_object_set_new(j, "type", str(t->type));
    json_object_set_new(j, "description", str(t->description));
    json_object_set_new(j, "metadata", t->metadata ? json_deep_copy(t->metadata) : json_object());
    json_object_set_new(j, "generationId", str(t->generation_id));
    json_object_set_new(j, "createdAt", str(t->created_at));
    return j;
}

json_t *lr_render_ledger(const lr_ledger_list *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(arr, lr_render_ledger_row(&l->v[i]));
    return arr;
}

static json_t *render_error(const char *code, const char *message)
{
    return code ? json_pack("{s:s, s:s?}", "code", code, "message", message) : json_null();
}

/* The graph node with id node_id of graph (nodes as sent), or NULL. */
static json_t *graph_node(json_t *graph, const char *node_id)
{
    json_t *nodes = json_object_get(graph, "nodes"), *n;
    size_t i;
    json_array_foreach(nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        if (id && node_id && !strcmp(id, node_id))
            return n;
    }
    return NULL;
}

json_t *lr_render_run_node(json_t *graph, const lr_run_node *n)
{
    json_t *g = graph_node(graph, n->node_id);
    json_t *urls = lr_strv_json(&n->result_urls);
    json_t *o = json_pack(
        "{s:s, s:s, s:s?, s:s, s:s?, s:i, s:o, s:s?, s:o, s:b, s:{s:i, s:i, s:i}, s:o, s:s?, "
        "s:s?}",
        "id", n->node_id, "generationId", n->generation_id, "modelId",
        json_string_value(json_object_get(g, "modelId")), "status", n->status, "stage", n->stage,
        "outputsCount", n->outputs_count, "urls", urls, "text", n->text, "outputs",
        json_deep_copy(urls), "cached", n->cached_from != NULL, "cost", "quoted", n->run_cost,
        "charged", n->run_cost - n->refunded, "refunded", n->refunded, "error",
        render_error(n->error_code, n->error_message), "createdAt", n->created_at, "finishedAt",
        n->finished_at);
    if (n->text)
        json_array_append_new(json_object_get(o, "outputs"), json_string(n->text));
    json_object_set_new(o, "inputs",
                        json_pack("{s:s?, s:s?}", "prompt", n->prompt, "imageUrl", n->image_url));
    return o;
}

json_t *lr_render_run(const lr_run *r, const lr_run_node_list *nodes)
{
    json_t *arr = json_array(), *gn;
    size_t i;
    int refunded = 0;
    json_array_foreach(json_object_get(r->graph, "nodes"), i, gn)
    {
        const char *id = json_string_value(json_object_get(gn, "id"));
        for (size_t k = 0; id && k < nodes->n; k++) {
            if (nodes->v[k].node_id && !strcmp(nodes->v[k].node_id, id)) {
                json_array_append_new(arr, lr_render_run_node(r->graph, &nodes->v[k]));
                refunded += nodes->v[k].refunded;
            }
        }
    }
    json_t *err = r->error_code ? json_pack("{s:s?, s:s, s:s?}", "nodeId", r->error_node, "code",
                                            r->error_code, "message", r->error_message)
                                : json_null();
    return json_pack("{s:b, s:s, s:s, s:o, s:{s:i, s:i, s:i}, s:o, s:s?, s:s?}", "success", 1,
                     "runId", r->id, "status", r->status, "error", err, "costs", "quoted",
                     r->quoted, "charged", r->quoted - refunded, "refunded", refunded, "nodes", arr,
                     "createdAt", r->created_at, "finishedAt", r->finished_at);
}
