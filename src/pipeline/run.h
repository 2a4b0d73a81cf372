/* Graph runs: a workflow's nodes, checked and priced as one, then
 * charged as one and executed on the server.
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
#include "pipeline/ratelimit.h"

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

/* Reads the nodes array of a graph document (as POST /api/runs and
 * /api/quote take it: [{id, modelId, inputs: {prompt, imageUrl}, params,
 * outputsCount}], an input a string or {"$ref": "n1.outputs[0]"}) into g.
 * Strings are borrowed from nodes; params given as references are left
 * out of the node's params and named in param_ref. lr_graph_release frees
 * what the read allocated. */
void lr_graph_read(json_t *nodes, lr_graph *g);
void lr_graph_release(lr_graph *g);

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

/* Adds a problem of node to r (its errors array has room for 8 a node). */
__attribute__((format(printf, 5, 6))) void lr_graph_add_error(lr_graph_check_result *r,
                                                              const lr_graph_node *node,
                                                              const char *field, lr_code code,
                                                              const char *fmt, ...);

/* LR_OK with the result filled (n_errors > 0 when the graph is refused);
 * LR_ERR_TOO_LARGE for more than LR_GRAPH_MAX_NODES nodes or none. */
lr_err lr_graph_check(lr_pipeline *p, const lr_graph *g, lr_graph_check_result *out);
void lr_graph_check_clear(lr_graph_check_result *r);

/* Parses "id.outputs[i]" (length-carrying): the node id's extent and i. */
bool lr_graph_parse_ref(const char *ref, size_t len, size_t *id_len, int *output);

/* ---- executing a run (run_exec.c) ----
 *
 * lr_run_begin checks the graph, prices it (at a quote's prices when
 * named), and in one transaction charges the whole price as one ledger
 * row, writes the run and a pending generation per node; then executes
 * it: a node starts once the nodes it reads have succeeded (independent
 * ones in parallel, within the user's in-flight limit), as a generation of
 * the pipeline that is already paid for, its references replaced by the
 * outputs it reads (URLs into imageUrl, text into the prompt). A node that
 * fails is refunded by its settlement, every node below it that has not
 * started is refunded and failed with upstream_failed, the nodes beside
 * it run on, and the run ends failed naming it. A retry carrying the
 * idempotency key of a run charges nothing and answers that run.
 * Blocking (database calls): request threads and workers only. */
/* ---- the plan of a run (run_cache.c) ----
 *
 * Which nodes a run runs and what it reuses. A node's cache key is the
 * SHA-256 of its model, params (validated, keys sorted), outputsCount,
 * prompt and image URL, where an input read from another node counts as
 * that node's key and the output index: equal keys make equal outputs.
 * A node whose key matches a node of the user's earlier runs (of run
 * from_run only, when given) that succeeded in full is not run: it reuses
 * those outputs and costs nothing. With targets, a run takes only the
 * named nodes and, above each, the nodes it reads up to the first cached
 * one. */
typedef struct {
    size_t n;           /* the graph's nodes */
    bool *included;     /* runs in this run (as itself or from the cache) */
    char (*keys)[65];   /* cache keys, hex */
    lr_run_node *cache; /* generation_id set: the earlier node reused */
} lr_run_plan;

typedef struct {
    const char *user_id;
    const char *const *targets; /* node ids; NULL: every node */
    size_t n_targets;
    const char *from_run; /* NULL: the user's whole cache */
    bool no_cache;        /* run every node included, reusing nothing */
} lr_run_plan_req;

/* LR_OK with *out; LR_ERR_NOT_FOUND when from_run is not the user's run;
 * LR_ERR_INVALID when a target names no node (*bad: that target); a
 * database error as it came. c: the graph checked without errors. */
lr_err lr_run_plan_make(lr_pipeline *p, const lr_run_plan_req *q, const lr_graph *g,
                        const lr_graph_check_result *c, lr_run_plan *out, const char **bad);
void lr_run_plan_clear(lr_run_plan *plan);

typedef struct {
    const char *user_id;
    const lr_graph *graph;
    json_t *graph_json;         /* borrowed: the graph as sent, kept for recovery */
    const char *const *targets; /* node ids; NULL: every node */
    size_t n_targets;
    const char *from_run; /* reuse that run's nodes only; NULL: the user's cache */
    long max_credits;     /* < 0: no cap */
    const char *quote_id, *idempotency_key, *request_hash; /* NULL: none */
    int max_in_flight;                                     /* the user's; <= 0: unlimited */
    lr_ratelimit *limiter;  /* the request-rate limit a run counts against, or NULL */
    const char *request_id; /* for the log, or NULL */
} lr_run_begin_req;

typedef enum {
    LR_RUN_STARTED,  /* charged and running */
    LR_RUN_REPLAYED, /* the idempotency key's run (run_id) */
    LR_RUN_REFUSED,  /* nothing charged: code, message and details */
} lr_run_begin_kind;

typedef struct {
    lr_run_begin_kind kind;
    char run_id[LR_UUID_LEN + 1];
    lr_graph_check_result check; /* invalid_graph: check.errors */
    lr_run_plan plan;
    /* the nodes run, in run order, priced (0 for one from the cache) */
    lr_price_line *lines;
    bool *cached;
    size_t n_lines;
    int total;      /* the price charged */
    char field[64]; /* the request field at fault, or "" */
    lr_code code;
    char message[256];
    int required, balance; /* insufficient_credits (balance also when started) */
    long max_credits;      /* max_credits_exceeded */
    int retry_after_s;
} lr_run_begin_result;

lr_err lr_run_begin(lr_pipeline *p, const lr_run_begin_req *req, lr_run_begin_result *out);
/* lr_run_begin's checks and prices without charging or running anything
 * (POST /api/quote): kind STARTED with the lines, or REFUSED. */
lr_err lr_run_price(lr_pipeline *p, const lr_run_begin_req *req, lr_run_begin_result *out);
void lr_run_begin_result_clear(lr_run_begin_result *r);

/* Cancels user's running run: nodes running are canceled (the provider
 * told to stop), nodes not started are refunded, and the run ends
 * canceled. NOT_FOUND for a missing or someone else's; CONFLICT when the
 * run has already ended. */
lr_err lr_run_cancel(lr_pipeline *p, const char *user, const char *id);

/* Makes p recover and release graph runs (lr_pipeline_attach); before
 * the first lr_pipeline_recover. */
void lr_graph_runs_attach(lr_pipeline *p);

#endif
