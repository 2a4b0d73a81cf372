/* Graph runs, the part before anything is charged: a workflow's nodes,
 * checked and priced as one.
 *
 * A graph is a list of nodes, each one generation to be: a model, its
 * params and outputsCount, and its inputs (the prompt and, for edit
 * models, the image), each either a value or a reference to an output of
 * an earlier node ("n1.outputs[0]"). lr_graph_check finds every problem a
 * client must fix before a run can be charged, per node: an unknown
 * model, bad params or outputsCount, a missing input, a reference to a
 * node that does not exist or to an output it does not make, a reference
 * whose type does not fit (an image into a prompt, a node output into a
 * param), a cycle. lr_graph_price gives each node its price line, in an
 * order where every node comes after the nodes it reads.
 *
 * The graph's strings and json values are borrowed from the caller (the
 * edge parses them). Any thread; no database or provider calls.
 */
#ifndef LR_RUN_H
#define LR_RUN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/vocab.h"
#include "pipeline/pipeline.h"
#include "pipeline/quote.h"

#define LR_GRAPH_MAX_NODES 50
#define LR_NODE_ID_MAX 64

/* An input: a literal value, or a reference to output `output` of node
 * `ref` (index into the graph's nodes once resolved). */
typedef struct {
    bool present;
    const char *value; /* literal (NULL when a reference) */
    const char *ref;   /* the reference as written ("n1.outputs[0]"), or NULL */
} lr_node_input;

typedef struct {
    const char *id;
    const char *model_id;
    json_t *params; /* as the client sent it; NULL: defaults */
    int outputs;    /* 0: one; outside 1..LR_MAX_OUTPUTS: refused */
    lr_node_input prompt, image_url;
    const char *param_ref; /* the first param given as a reference, or NULL */
} lr_graph_node;

typedef struct {
    const lr_graph_node *nodes;
    size_t n;
} lr_graph;

/* One problem of one node. */
typedef struct {
    const char *node_id; /* borrowed from the graph */
    char field[64];
    lr_code code;
    char message[200];
} lr_node_error;

/* The graph checked: its nodes' price lines in run order (lines[i] is
 * nodes[order[i]]), what each node reads (source node index per input, -1
 * for a literal), or the problems found. */
typedef struct {
    lr_price_line *lines; /* n, params are references the check owns */
    size_t *order;
    int (*reads)[2];  /* [node][0]: prompt's source, [1]: image's */
    int (*output)[2]; /* the output index each reference reads */
    lr_node_error *errors;
    size_t n, n_errors;
    int total;
} lr_graph_check_result;

/* LR_OK with the result filled (n_errors > 0 when the graph is refused);
 * LR_ERR_TOO_LARGE for more than LR_GRAPH_MAX_NODES nodes or none. */
lr_err lr_graph_check(lr_pipeline *p, const lr_graph *g, lr_graph_check_result *out);
void lr_graph_check_clear(lr_graph_check_result *r);

/* Parses "id.outputs[i]" (length-carrying): the node id's extent and i. */
bool lr_graph_parse_ref(const char *ref, size_t len, size_t *id_len, int *output);

#endif
