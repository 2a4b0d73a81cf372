/* POST /api/quote: the price of an infer request or of a graph, line by
 * line, at the catalog's price rules, saved as a quote that POST
 * /api/infer (body field quoteId) honours for ten minutes. A graph is
 * checked first (lr_graph_check): its problems are 422 with nodeErrors,
 * keyed by node id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/util.h"
#include "pipeline/generation.h"
#include "pipeline/quote.h"
#include "pipeline/run.h"

static json_t *render_line(const lr_price_line *l)
{
    json_t *o =
        json_pack("{s:s, s:i, s:i, s:i, s:O}", "modelId", l->model->id, "outputsCount", l->outputs,
                  "unitPrice", l->unit, "credits", l->unit * l->outputs, "params", l->params);
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
                      json_pack("{s:b, s:s, s:i, s:s, s:o}", "success", 1, "quoteId", id, "total",
                                total, "expiresAt", expires, "lines", arr));
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

/* An input as written: a string, or {"$ref": "..."}; anything else is a
 * reference that cannot parse (the domain names the problem). */
static lr_node_input parse_input(json_t *v)
{
    if (!v || json_is_null(v))
        return (lr_node_input){0};
    if (json_is_string(v))
        return (lr_node_input){.present = true, .value = json_string_value(v)};
    const char *ref = json_string_value(json_object_get(v, "$ref"));
    return (lr_node_input){.present = true, .ref = ref ? ref : ""};
}

/* A node's fields (borrowed from j) into n; params given as references
 * are left out of *params (a new object) and named in param_ref. */
static void parse_node(json_t *j, lr_graph_node *n, json_t **params)
{
    json_t *inputs = json_object_get(j, "inputs"), *given = json_object_get(j, "params");
    *n = (lr_graph_node){
        .id = json_string_value(json_object_get(j, "id")),
        .model_id = json_string_value(json_object_get(j, "modelId")),
        .outputs = outputs_of(json_object_get(j, "outputsCount")),
        .prompt = parse_input(json_object_get(inputs, "prompt")),
        .image_url = parse_input(json_object_get(inputs, "imageUrl")),
    };
    *params = json_is_object(given) ? json_deep_copy(given) : json_incref(given);
    const char *name;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(*params, tmp, name, v)
    {
        if (json_is_object(v) && json_object_get(v, "$ref")) {
            if (!n->param_ref) /* the key as given stays while the body does */
                n->param_ref = json_object_iter_key(json_object_iter_at(given, name));
            json_object_del(*params, name);
        }
    }
    n->params = *params;
}

/* 422 with nodeErrors: {nodeId: [{field, code, message}]}. */
static void answer_node_errors(lr_req *req, const lr_graph_check_result *r)
{
    json_t *by_node = json_object();
    for (size_t i = 0; i < r->n_errors; i++) {
        const lr_node_error *e = &r->errors[i];
        const char *key = e->node_id && *e->node_id ? e->node_id : "";
        json_t *list = json_object_get(by_node, key);
        if (!list) {
            list = json_array();
            json_object_set_new(by_node, key, list);
        }
        json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "field", e->field, "code",
                                              lr_code_name(e->code), "message", e->message));
    }
    lr_api_error(req, LR_CODE_INVALID_GRAPH, NULL, json_pack("{s:o}", "nodeErrors", by_node));
}

/* maxCredits: absent (no cap), or a whole number >= 0; -2 when malformed. */
static long max_credits_of(json_t *v)
{
    if (!v || json_is_null(v))
        return -1;
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (long)json_integer_value(v) : -2;
}

/* The graph of body (nodes array) checked and priced, then quoted. */
static void quote_graph(lr_app *app, lr_req *req, const char *user, json_t *body)
{
    json_t *nodes = json_object_get(json_object_get(body, "graph"), "nodes");
    long max = max_credits_of(json_object_get(body, "maxCredits"));
    if (!json_is_array(nodes) || max == -2) {
        lr_api_error(req, LR_CODE_BAD_REQUEST,
                     max == -2 ? "maxCredits must be a whole number of credits"
                               : "graph.nodes must be an array of nodes",
                     json_pack("{s:s}", "field", max == -2 ? "maxCredits" : "graph.nodes"));
        return;
    }
    size_t n = json_array_size(nodes);
    if (n == 0 || n > LR_GRAPH_MAX_NODES) {
        char msg[96];
        snprintf(msg, sizeof msg, "A graph has 1 to %d nodes", LR_GRAPH_MAX_NODES);
        lr_api_error(req, n ? LR_CODE_GRAPH_TOO_LARGE : LR_CODE_BAD_REQUEST, msg,
                     json_pack("{s:s, s:i}", "field", "graph.nodes", "limit", LR_GRAPH_MAX_NODES));
        return;
    }
    lr_graph_node *gn = lr_xcalloc(n, sizeof *gn);
    json_t **params = lr_xcalloc(n, sizeof *params);
    for (size_t i = 0; i < n; i++)
        parse_node(json_array_get(nodes, i), &gn[i], &params[i]);
    lr_graph g = {.nodes = gn, .n = n};
    lr_graph_check_result r;
    lr_graph_check(app->pipeline, &g, &r);
    if (r.n_errors) {
        answer_node_errors(req, &r);
    } else if (max >= 0 && r.total > max) {
        lr_api_error(req, LR_CODE_MAX_CREDITS_EXCEEDED, NULL,
                     json_pack("{s:i, s:i}", "required", r.total, "maxCredits", (int)max));
    } else {
        lr_price_line *ordered = lr_xcalloc(n, sizeof *ordered);
        for (size_t i = 0; i < n; i++)
            ordered[i] = r.lines[r.order[i]];
        answer_quote(app, req, user, ordered, n);
        free(ordered);
    }
    lr_graph_check_clear(&r);
    for (size_t i = 0; i < n; i++)
        json_decref(params[i]);
    free(params);
    free(gn);
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
    if (json_object_get(body, "graph")) {
        quote_graph(app, req, user, body);
    } else if (lr_quote_infer_line(
                   app->pipeline, json_string_value(json_object_get(body, "modelId")),
                   json_object_get(body, "params"),
                   outputs_of(json_object_get(body, "outputsCount")), &line, &why)) {
        answer_quote(app, req, user, &line, 1);
        json_decref(line.params);
    } else {
        refuse(req, &why);
    }
    json_decref(body);
}
