/* Quotes: price lines in, a saved promise out; and the check that a
 * submit is the request its quote priced. */
#include "pipeline/quote.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pipeline/generation.h"
#include "pipeline/internal.h"

__attribute__((format(printf, 4, 5))) static bool refuse(lr_quote_refusal *why, lr_code code,
                                                         const char *field, const char *fmt, ...)
{
    why->code = code;
    snprintf(why->field, sizeof why->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->message, sizeof why->message, fmt, ap);
    va_end(ap);
    return false;
}

bool lr_quote_infer_line(lr_pipeline *p, const char *model_id, json_t *params, int outputs,
                         lr_price_line *line, lr_quote_refusal *why)
{
    *line = (lr_price_line){0};
    if (!model_id || !*model_id)
        return refuse(why, LR_CODE_MISSING_FIELDS, "modelId", "Missing required field: modelId");
    const lr_model *m = lr_catalog_find(p->catalog, model_id);
    if (!m || !m->enabled)
        return refuse(why, LR_CODE_MODEL_NOT_FOUND, NULL, "Model not found: %.100s", model_id);
    if (outputs == 0)
        outputs = 1;
    if (outputs < 1 || outputs > LR_MAX_OUTPUTS)
        return refuse(why, LR_CODE_INVALID_PARAMETER, "outputsCount",
                      "outputsCount must be a whole number from 1 to 4");
    char *field = NULL, *msg = NULL;
    json_t *valid = NULL;
    if (lr_model_validate_params(m, params, &valid, &field, &msg) != 0) {
        refuse(why, LR_CODE_INVALID_PARAMETER, field ? field : "params", "%s",
               msg ? msg : "Invalid params");
        free(field);
        free(msg);
        return false;
    }
    *line = (lr_price_line){.model = m,
                            .params = valid,
                            .outputs = outputs,
                            .unit = lr_model_unit_price(m, valid, outputs)};
    return true;
}

/* A line as the quote keeps it (db/ sees an opaque array). */
static json_t *line_json(const lr_price_line *l)
{
    json_t *params = l->params ? json_incref(l->params) : json_object();
    return json_pack("{s:s?, s:s, s:o, s:i, s:i}", "node", l->node_id, "model", l->model->id,
                     "params", params, "outputs", l->outputs, "unit", l->unit);
}

lr_err lr_quote_save(lr_pipeline *p, const char *user, const lr_price_line *lines, size_t n,
                     char id[LR_UUID_LEN + 1], char expires_at[32], int *total)
{
    json_t *arr = json_array();
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, line_json(&lines[i]));
        sum += lines[i].unit * lines[i].outputs;
    }
    char created[32];
    int64_t now = lr_now_ms();
    lr_uuid_v4(id);
    lr_time_iso(now, created);
    lr_time_iso(now + LR_QUOTE_TTL_MS, expires_at);
    lr_quote_req q = {.id = id,
                      .user_id = user,
                      .lines = arr,
                      .total = sum,
                      .created_at = created,
                      .expires_at = expires_at};
    lr_err e = p->db->ops->save_quote(p->db, &q);
    json_decref(arr);
    *total = sum;
    return e;
}

/* Whether saved line s prices l (same node, model, outputs and params). */
static bool same_line(json_t *s, const lr_price_line *l)
{
    const char *node = json_string_value(json_object_get(s, "node"));
    if ((node == NULL) != (l->node_id == NULL) || (node && strcmp(node, l->node_id)))
        return false;
    const char *model = json_string_value(json_object_get(s, "model"));
    json_t *params = json_object_get(s, "params");
    json_t *mine = l->params ? json_incref(l->params) : json_object();
    bool same = model && !strcmp(model, l->model->id) &&
                json_integer_value(json_object_get(s, "outputs")) == l->outputs &&
                json_equal(params, mine);
    json_decref(mine);
    return same;
}

lr_code lr_quote_honour(lr_pipeline *p, const char *user, const char *quote_id,
                        lr_price_line *lines, size_t n)
{
    if (!lr_uuid_valid(quote_id, strlen(quote_id)))
        return LR_CODE_QUOTE_NOT_FOUND;
    lr_quote q;
    lr_err e = p->db->ops->get_quote(p->db, user, quote_id, &q);
    if (e == LR_ERR_NOT_FOUND)
        return LR_CODE_QUOTE_NOT_FOUND;
    if (e != LR_OK) {
        lr_warn("quote %s could not be read: %s", quote_id, lr_strerror(e));
        return LR_CODE_DATABASE_UNAVAILABLE;
    }
    lr_code code = LR_CODE_NONE;
    if (q.expired)
        code = LR_CODE_QUOTE_EXPIRED;
    else if (json_array_size(q.lines) != n)
        code = LR_CODE_QUOTE_MISMATCH;
    for (size_t i = 0; code == LR_CODE_NONE && i < n; i++) {
        if (!same_line(json_array_get(q.lines, i), &lines[i]))
            code = LR_CODE_QUOTE_MISMATCH;
    }
    for (size_t i = 0; code == LR_CODE_NONE && i < n; i++) {
        json_t *unit = json_object_get(json_array_get(q.lines, i), "unit");
        lines[i].unit = (int)json_integer_value(unit);
    }
    lr_quote_clear(&q);
    return code;
}
