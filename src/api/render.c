#include "api/render.h"

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
