/* Graph checks: every node on its own (model, params, inputs), then the
 * references between nodes (they exist, their types fit), then the order
 * (Kahn's algorithm; what is left over sits on a cycle). */
#include "pipeline/run.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pipeline/generation.h"
#include "pipeline/internal.h"

bool lr_graph_parse_ref(const char *ref, size_t len, size_t *id_len, int *output)
{
    static const char mid[] = ".outputs[";
    const char *dot = memchr(ref, '.', len);
    if (!dot || dot == ref || (size_t)(ref + len - dot) < sizeof mid + 1 ||
        memcmp(dot, mid, sizeof mid - 1) != 0 || ref[len - 1] != ']')
        return false;
    const char *d = dot + sizeof mid - 1, *end = ref + len - 1;
    if (d == end || end - d > 2)
        return false;
    int v = 0;
    for (; d < end; d++) {
        if (*d < '0' || *d > '9')
            return false;
        v = v * 10 + (*d - '0');
    }
    *id_len = (size_t)(dot - ref);
    *output = v;
    return true;
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
 * reference that cannot parse (the check names the problem). */
static lr_node_input parse_input(json_t *v)
{
    if (!v || json_is_null(v))
        return (lr_node_input){0};
    if (json_is_string(v))
        return (lr_node_input){.present = true, .value = json_string_value(v)};
    const char *ref = json_string_value(json_object_get(v, "$ref"));
    return (lr_node_input){.present = true, .ref = ref ? ref : ""};
}

static void read_node(json_t *j, lr_graph_node *n)
{
    json_t *inputs = json_object_get(j, "inputs"), *given = json_object_get(j, "params");
    *n = (lr_graph_node){
        .id = json_string_value(json_object_get(j, "id")),
        .model_id = json_string_value(json_object_get(j, "modelId")),
        .outputs = outputs_of(json_object_get(j, "outputsCount")),
        .prompt = parse_input(json_object_get(inputs, "prompt")),
        .image_url = parse_input(json_object_get(inputs, "imageUrl")),
    };
    json_t *params = json_is_object(given) ? json_deep_copy(given) : json_incref(given);
    const char *name;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(params, tmp, name, v)
    {
        if (json_is_object(v) && json_object_get(v, "$ref")) {
            if (!n->param_ref) /* the key as given stays while the document does */
                n->param_ref = json_object_iter_key(json_object_iter_at(given, name));
            json_object_del(params, name);
        }
    }
    n->params = params;
}

void lr_graph_read(json_t *nodes, lr_graph *g)
{
    size_t n = json_array_size(nodes);
    lr_graph_node *v = n ? lr_xcalloc(n, sizeof *v) : NULL;
    for (size_t i = 0; i < n; i++)
        read_node(json_array_get(nodes, i), &v[i]);
    *g = (lr_graph){.nodes = v, .n = n};
}

void lr_graph_release(lr_graph *g)
{
    for (size_t i = 0; i < g->n; i++)
        json_decref(g->nodes[i].params);
    free((lr_graph_node *)g->nodes);
    *g = (lr_graph){0};
}

void lr_graph_add_error(lr_graph_check_result *r, const lr_graph_node *node, const char *field,
                        lr_code code, const char *fmt, ...)
{
    lr_node_error *e = &r->errors[r->n_errors++];
    *e = (lr_node_error){.node_id = node->id, .code = code};
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static bool valid_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > LR_NODE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int find_node(const lr_graph *g, const char *id, size_t len)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->nodes[i].id && strlen(g->nodes[i].id) == len && !memcmp(g->nodes[i].id, id, len))
            return (int)i;
    }
    return -1;
}

/* A node alone: id, model, outputs, params, inputs present. */
static void check_node(lr_pipeline *p, const lr_graph *g, size_t i, lr_graph_check_result *r)
{
    const lr_graph_node *node = &g->nodes[i];
    r->lines[i].node_id = node->id;
    if (!valid_id(node->id)) {
        lr_graph_add_error(r, node, "id", LR_CODE_INVALID_GRAPH,
                           "A node id must be 1-64 letters, digits, '_' or '-'");
        return;
    }
    if (find_node(g, node->id, strlen(node->id)) != (int)i)
        lr_graph_add_error(r, node, "id", LR_CODE_INVALID_GRAPH, "Node id %s is used twice",
                           node->id);
    lr_quote_refusal why;
    if (!lr_quote_infer_line(p, node->model_id, node->params, node->outputs, &r->lines[i], &why)) {
        lr_graph_add_error(r, node, why.field[0] ? why.field : "modelId", why.code, "%s",
                           why.message);
        return;
    }
    r->lines[i].node_id = node->id;
    if (node->param_ref)
        lr_graph_add_error(r, node, "params", LR_CODE_TYPE_MISMATCH,
                           "params.%s cannot take a node output: params are literal values",
                           node->param_ref);
    if (!node->prompt.present)
        lr_graph_add_error(r, node, "inputs.prompt", LR_CODE_MISSING_FIELDS,
                           "inputs.prompt is required (text or a reference)");
    if (!strcmp(r->lines[i].model->capability, "edit") && !node->image_url.present)
        lr_graph_add_error(
            r, node, "inputs.imageUrl", LR_CODE_MISSING_INPUT_IMAGE,
            "This model edits an image: give inputs.imageUrl (a URL or a reference)");
}

/* Whether an output of capability `from` fits input `field`. */
static bool fits(const char *from, bool image_input)
{
    if (image_input)
        return !strcmp(from, "image") || !strcmp(from, "edit");
    return !strcmp(from, "text");
}

/* One input's reference: resolved into reads/output, or an error. */
static void check_ref(const lr_graph *g, size_t i, const lr_node_input *in, int slot,
                      lr_graph_check_result *r)
{
    const lr_graph_node *node = &g->nodes[i];
    const char *field = slot ? "inputs.imageUrl" : "inputs.prompt";
    if (!in->ref)
        return;
    size_t id_len;
    int output;
    int src = lr_graph_parse_ref(in->ref, strlen(in->ref), &id_len, &output)
                  ? find_node(g, in->ref, id_len)
                  : -2;
    if (src == -2) {
        lr_graph_add_error(r, node, field, LR_CODE_DANGLING_REFERENCE,
                           "%s: a reference is {\"$ref\": \"<node>.outputs[<i>]\"}", field);
        return;
    }
    if (src < 0 || !r->lines[src].model) {
        lr_graph_add_error(r, node, field, LR_CODE_DANGLING_REFERENCE, "%s refers to %.*s, %s",
                           field, (int)(id_len > 64 ? 64 : id_len), in->ref,
                           src < 0 ? "which is not a node of this graph" : "which has errors");
        return;
    }
    if (output >= r->lines[src].outputs) {
        lr_graph_add_error(r, node, field, LR_CODE_DANGLING_REFERENCE,
                           "%s refers to output %d of %s, which makes %d", field, output,
                           g->nodes[src].id, r->lines[src].outputs);
        return;
    }
    const char *cap = r->lines[src].model->capability;
    if (!fits(cap, slot == 1)) {
        lr_graph_add_error(r, node, field, LR_CODE_TYPE_MISMATCH, "%s takes %s, but %s makes %s",
                           field, slot ? "an image" : "text", g->nodes[src].id,
                           !strcmp(cap, "text")    ? "text"
                           : !strcmp(cap, "video") ? "a video"
                                                   : "an image");
        return;
    }
    r->reads[i][slot] = src;
    r->output[i][slot] = output;
}

/* Kahn's algorithm over the resolved references; nodes never freed sit
 * on (or behind) a cycle. */
static void order_nodes(const lr_graph *g, lr_graph_check_result *r)
{
    size_t n = g->n, done = 0;
    bool *placed = lr_xcalloc(n, sizeof *placed);
    for (bool progress = true; progress && done < n;) {
        progress = false;
        for (size_t i = 0; i < n; i++) {
            int a = r->reads[i][0], b = r->reads[i][1];
            if (placed[i] || (a >= 0 && !placed[a]) || (b >= 0 && !placed[b]))
                continue;
            placed[i] = true;
            r->order[done++] = i;
            progress = true;
        }
    }
    for (size_t i = 0; i < n && done < n; i++) {
        if (!placed[i])
            lr_graph_add_error(r, &g->nodes[i], "inputs", LR_CODE_GRAPH_CYCLE,
                               "Node %s depends on itself through its inputs", g->nodes[i].id);
    }
    free(placed);
}

lr_err lr_graph_check(lr_pipeline *p, const lr_graph *g, lr_graph_check_result *out)
{
    *out = (lr_graph_check_result){0};
    if (g->n == 0 || g->n > LR_GRAPH_MAX_NODES)
        return LR_ERR_TOO_LARGE;
    size_t n = g->n;
    out->n = n;
    out->lines = lr_xcalloc(n, sizeof *out->lines);
    out->order = lr_xcalloc(n, sizeof *out->order);
    out->reads = lr_xcalloc(n, sizeof *out->reads);
    out->output = lr_xcalloc(n, sizeof *out->output);
    out->errors = lr_xcalloc(n * 8, sizeof *out->errors); /* at most 7 per node */
    for (size_t i = 0; i < n; i++) {
        out->reads[i][0] = out->reads[i][1] = -1;
        check_node(p, g, i, out);
    }
    for (size_t i = 0; i < n; i++) {
        if (!out->lines[i].model)
            continue;
        check_ref(g, i, &g->nodes[i].prompt, 0, out);
        check_ref(g, i, &g->nodes[i].image_url, 1, out);
    }
    order_nodes(g, out);
    for (size_t i = 0; i < n; i++)
        out->total += out->lines[i].model ? out->lines[i].unit * out->lines[i].outputs : 0;
    return LR_OK;
}

void lr_graph_check_clear(lr_graph_check_result *r)
{
    for (size_t i = 0; r->lines && i < r->n; i++)
        json_decref(r->lines[i].params);
    free(r->lines);
    free(r->order);
    free(r->reads);
    free(r->output);
    free(r->errors);
    *r = (lr_graph_check_result){0};
}
