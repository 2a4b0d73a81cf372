/* POST /api/quote: the price of an infer request or of a graph, line by
 * line, at the catalog's price rules, saved as a quote that POST
 * /api/infer and POST /api/runs (body field quoteId) honour for ten
 * minutes. A graph is checked first (lr_graph_check): its problems are 422
 * with nodeErrors, keyed by node id.
 *
 * POST /api/runs runs a graph on the server (lr_run_begin: one charge,
 * then the nodes as generations); GET /api/runs/{id} shows it with its
 * nodes and costs, POST /api/runs/{id}/cancel stops it. Someone else's
 * run answers exactly like a missing one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/events.h"
#include "api/render.h"
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

/* Saves and answers the quote of lines (cached: per line, reused from
 * the cache, or NULL). */
static void answer_quote(lr_app *app, lr_req *req, const char *user, const lr_price_line *lines,
                         const bool *cached, size_t n)
{
    char id[LR_UUID_LEN + 1], expires[32];
    int total = 0;
    lr_err e = lr_quote_save(app->pipeline, user, lines, n, id, expires, &total);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *line = render_line(&lines[i]);
        if (cached && cached[i])
            json_object_set_new(line, "cached", json_true());
        json_array_append_new(arr, line);
    }
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

static void answer_refused(lr_req *req, const lr_run_begin_result *r);

/* What a graph request (quote or run) carries besides the graph. Strings
 * are borrowed from the body; targets is allocated (free it). */
typedef struct {
    json_t *nodes;
    long max;
    const char *quote_id, *from_run;
    const char **targets;
    size_t n_targets;
} graph_body;

/* targets: absent, or an array of 1..LR_GRAPH_MAX_NODES node ids. */
static bool read_targets(json_t *v, graph_body *b)
{
    if (!v || json_is_null(v))
        return true;
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n == 0 || n > LR_GRAPH_MAX_NODES)
        return false;
    b->targets = lr_xcalloc(n, sizeof *b->targets);
    for (size_t i = 0; i < n; i++) {
        b->targets[i] = json_string_value(json_array_get(v, i));
        if (!b->targets[i])
            return false;
    }
    b->n_targets = n;
    return true;
}

/* body's graph and options; false after a 400 or 413. */
static bool read_graph_body(lr_req *req, json_t *body, graph_body *b)
{
    *b = (graph_body){.nodes = json_object_get(json_object_get(body, "graph"), "nodes"),
                      .max = max_credits_of(json_object_get(body, "maxCredits"))};
    json_t *q = json_object_get(body, "quoteId"), *from = json_object_get(body, "fromRunId");
    b->quote_id = json_string_value(q);
    b->from_run = json_string_value(from);
    const char *field = !json_is_array(b->nodes)                             ? "graph.nodes"
                        : b->max == -2                                       ? "maxCredits"
                        : q && !json_is_null(q) && !b->quote_id              ? "quoteId"
                        : from && !json_is_null(from) && !b->from_run        ? "fromRunId"
                        : !read_targets(json_object_get(body, "targets"), b) ? "targets"
                                                                             : NULL;
    size_t n = json_array_size(b->nodes);
    if (!field && n >= 1 && n <= LR_GRAPH_MAX_NODES)
        return true;
    if (field) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s is not valid%s", field,
                 !strcmp(field, "targets") ? ": an array of 1 to 50 node ids" : "");
        lr_api_error(req, LR_CODE_BAD_REQUEST, msg, json_pack("{s:s}", "field", field));
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "A graph has 1 to %d nodes", LR_GRAPH_MAX_NODES);
        lr_api_error(req, n ? LR_CODE_GRAPH_TOO_LARGE : LR_CODE_BAD_REQUEST, msg,
                     json_pack("{s:s, s:i}", "field", "graph.nodes", "limit", LR_GRAPH_MAX_NODES));
    }
    free(b->targets);
    b->targets = NULL;
    return false;
}

/* The graph of body checked, planned (targets, the cache) and priced,
 * then quoted: a node from the cache costs nothing. */
static void quote_graph(lr_app *app, lr_req *req, const char *user, json_t *body)
{
    graph_body b;
    if (!read_graph_body(req, body, &b))
        return;
    lr_graph g;
    lr_graph_read(b.nodes, &g);
    lr_run_begin_req q = {.user_id = user,
                          .graph = &g,
                          .targets = b.targets,
                          .n_targets = b.n_targets,
                          .from_run = b.from_run,
                          .max_credits = b.max,
                          .request_id = lr_req_id(req)};
    lr_run_begin_result r;
    lr_run_price(app->pipeline, &q, &r);
    if (r.kind == LR_RUN_REFUSED)
        answer_refused(req, &r);
    else
        answer_quote(app, req, user, r.lines, r.cached, r.n_lines);
    lr_run_begin_result_clear(&r);
    lr_graph_release(&g);
    free(b.targets);
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
        answer_quote(app, req, user, &line, NULL, 1);
        json_decref(line.params);
    } else {
        refuse(req, &why);
    }
    json_decref(body);
}

/* ---- runs ---- */

/* user's run id as the API shows it; NOT_FOUND for a missing or
 * someone else's. */
static lr_err load_run(lr_app *app, const char *user, const char *id, json_t **out)
{
    *out = NULL;
    if (!lr_uuid_valid(id, strlen(id)))
        return LR_ERR_NOT_FOUND;
    lr_run r;
    lr_err e = app->db->ops->get_run(app->db, user, id, &r);
    if (e != LR_OK)
        return e;
    lr_run_node_list nodes;
    e = app->db->ops->list_run_nodes(app->db, r.id, &nodes);
    if (e == LR_OK)
        *out = lr_render_run(&r, &nodes);
    lr_run_node_list_clear(&nodes);
    lr_run_clear(&r);
    return e;
}

static void answer_run(lr_app *app, lr_req *req, const char *user, const char *id, int status,
                       int balance)
{
    json_t *body;
    lr_err e = load_run(app, user, id, &body);
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_RUN_NOT_FOUND, NULL, NULL);
        return;
    }
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    if (balance >= 0)
        json_object_set_new(body, "balance", json_integer(balance));
    char location[96];
    snprintf(location, sizeof location, "/api/runs/%s", id);
    lr_req_set_header(req, "Location", location);
    lr_req_reply_json(req, status, body);
}

static void answer_refused(lr_req *req, const lr_run_begin_result *r)
{
    json_t *extra = NULL;
    switch (r->code) {
    case LR_CODE_INVALID_GRAPH: answer_node_errors(req, &r->check); return;
    case LR_CODE_GRAPH_TOO_LARGE:
        extra = json_pack("{s:s, s:i}", "field", "graph.nodes", "limit", LR_GRAPH_MAX_NODES);
        break;
    case LR_CODE_INSUFFICIENT_CREDITS:
        extra = json_pack("{s:i, s:i}", "required", r->required, "balance", r->balance);
        break;
    case LR_CODE_MAX_CREDITS_EXCEEDED:
        extra = json_pack("{s:i, s:i}", "required", r->required, "maxCredits", (int)r->max_credits);
        break;
    case LR_CODE_IDEMPOTENCY_KEY_REUSED: extra = json_pack("{s:s}", "runId", r->run_id); break;
    default:
        if (r->field[0])
            extra = json_pack("{s:s}", "field", r->field);
        break;
    }
    if (r->retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after_s);
        lr_req_set_header(req, "Retry-After", ra);
    }
    lr_api_error(req, r->code, r->message, extra);
}

void lr_api_runs_create(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1], key[204], hash[65];
    bool has_key = false;
    if (!lr_api_user(app, req, false, user) || !lr_api_idempotency_key(req, key, &has_key))
        return;
    json_t *body = lr_api_json_body(req);
    graph_body b;
    if (!body || !read_graph_body(req, body, &b)) {
        json_decref(body);
        return;
    }
    if (has_key)
        lr_api_body_sha256(req, hash);
    lr_graph g;
    lr_graph_read(b.nodes, &g);
    lr_run_begin_req q = {.user_id = user,
                          .graph = &g,
                          .graph_json = json_object_get(body, "graph"),
                          .targets = b.targets,
                          .n_targets = b.n_targets,
                          .from_run = b.from_run,
                          .max_credits = b.max,
                          .quote_id = b.quote_id,
                          .idempotency_key = has_key ? key : NULL,
                          .request_hash = has_key ? hash : NULL,
                          .max_in_flight = app->cfg->user_max_in_flight,
                          .limiter = app->ratelimit,
                          .request_id = lr_req_id(req)};
    lr_run_begin_result r;
    lr_run_begin(app->pipeline, &q, &r);
    if (r.kind == LR_RUN_REFUSED)
        answer_refused(req, &r);
    else
        answer_run(app, req, user, r.run_id, r.kind == LR_RUN_STARTED ? 202 : 200,
                   r.kind == LR_RUN_STARTED ? r.balance : -1);
    lr_run_begin_result_clear(&r);
    lr_graph_release(&g);
    free(b.targets);
    json_decref(body);
}

void lr_api_run_get(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    if (lr_api_user(app, req, false, user))
        answer_run(app, req, user, id, 200, -1);
}

void lr_api_run_cancel(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    lr_err e =
        lr_uuid_valid(id, strlen(id)) ? lr_run_cancel(app->pipeline, user, id) : LR_ERR_NOT_FOUND;
    if (e == LR_ERR_NOT_FOUND)
        lr_api_error(req, LR_CODE_RUN_NOT_FOUND, NULL, NULL);
    else if (e == LR_ERR_CONFLICT)
        lr_api_error(req, LR_CODE_RUN_FINISHED, "The run has already ended; nothing was canceled",
                     json_pack("{s:s}", "runId", id));
    else if (e != LR_OK)
        lr_api_db_error(req, e);
    else
        answer_run(app, req, user, id, 200, -1);
}

/* The nodes' indexes in graph order, each after the nodes it reads (the
 * graph as the run keeps it; in graph order when it no longer checks). */
static size_t *event_order(lr_app *app, json_t *graph, size_t n)
{
    size_t *order = lr_xcalloc(n ? n : 1, sizeof *order);
    lr_graph g;
    lr_graph_read(json_object_get(graph, "nodes"), &g);
    lr_graph_check_result c;
    lr_graph_check(app->pipeline, &g, &c);
    bool ok = c.n == n && c.n_errors == 0;
    for (size_t i = 0; i < n; i++)
        order[i] = ok ? c.order[i] : i;
    lr_graph_check_clear(&c);
    lr_graph_release(&g);
    return order;
}

/* Server-Sent Events for one of the caller's runs: every node's progress
 * in an order where a node's events follow those of the nodes it reads. */
void lr_api_run_events(lr_app *app, lr_req *req, const char *id)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, false, user))
        return;
    lr_run r = {0};
    lr_run_node_list nodes = {0};
    lr_err e = lr_uuid_valid(id, strlen(id)) ? app->db->ops->get_run(app->db, user, id, &r)
                                             : LR_ERR_NOT_FOUND;
    if (e == LR_OK)
        e = app->db->ops->list_run_nodes(app->db, id, &nodes);
    const char *last = lr_req_header(req, "Last-Event-ID");
    if (!last)
        last = lr_req_query(req, "lastEventId");
    int *levels = lr_xcalloc(nodes.n ? nodes.n : 1, sizeof *levels);
    bool ended = false;
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_RUN_NOT_FOUND, NULL, NULL);
    } else if (e != LR_OK) {
        lr_api_db_error(req, e);
    } else if (last && !lr_events_run_cursor(last, nodes.n, levels, &ended)) {
        lr_api_error(req, LR_CODE_INVALID_LAST_EVENT_ID,
                     "Last-Event-ID must be an event id from this run's stream", NULL);
    } else if (ended) {
        lr_req_reply_empty(req, 204); /* the client has seen the end: EventSource stops */
    } else {
        size_t *order =
            event_order(app, r.graph, json_array_size(json_object_get(r.graph, "nodes")));
        lr_events_open_run(app->events, req, user, &r, &nodes, order, last ? levels : NULL);
        free(order);
    }
    free(levels);
    lr_run_node_list_clear(&nodes);
    lr_run_clear(&r);
}
