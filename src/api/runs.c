/* POST /api/quote: the price of an infer request, line by line, at the
 * catalog's price rules, saved as a quote that POST /api/infer (body
 * field quoteId) honours for ten minutes. */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "pipeline/generation.h"
#include "pipeline/quote.h"

static json_t *render_line(const lr_price_line *l)
{
    json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:O}", "modelId", l->model->id, "outputsCount",
                          l->outputs, "unitPrice", l->unit, "credits", l->unit * l->outputs,
                          "params", l->params);
    if (l->node_id)
        json_object_set_new(o, "nodeId", json_string(l->node_id));
    return o;
}

static void answer_quote(lr_app *app, lr_req *req, const char *user, const lr_price_line *lines,
                         size_t n)
{
    char id[LR_UUID_LEN + 1], expires[32];
    int total = 0;
    lr_err e = lr_quote_save(app->pipeline, user, lines, n, id, expires, &total);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, render_line(&lines[i]));
    lr_req_reply_json(req, 200,
                      json_pack("{s:b, s:s, s:i, s:s, s:o}", "success", 1, "quoteId", id,
                                "total", total, "expiresAt", expires, "lines", arr));
}

static void refuse(lr_req *req, const lr_quote_refusal *why)
{
    lr_api_error(req, why->code, why->message,
                 why->field[0] ? json_pack("{s:s}", "field", why->field) : NULL);
}

/* outputsCount as infer reads it: absent 0 (one), out of range -1. */
static int outputs_of(json_t *v)
{
    if (!v || json_is_null(v))
        return 0;
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
    return n >= 1 && n <= LR_MAX_OUTPUTS ? (int)n : -1;
}

void lr_api_quote(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, true, user))
        return;
    json_t *body = lr_api_json_body(req);
    if (!body)
        return;
    lr_price_line line;
    lr_quote_refusal why;
    if (lr_quote_infer_line(app->pipeline,
                            json_string_value(json_object_get(body, "modelId")),
                            json_object_get(body, "params"),
                            outputs_of(json_object_get(body, "outputsCount")), &line, &why)) {
        answer_quote(app, req, user, &line, 1);
        json_decref(line.params);
    } else {
        refuse(req, &why);
    }
    json_decref(body);
}
