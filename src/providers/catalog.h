/* The model catalog: which models exist, what they cost, which params they
 * take. Built in (catalog.json, the original design's registry) or loaded
 * from the JSON file named by LENSROOM_MODELS, in the same format. Read-only
 * after load: any thread may use it.
 */
#ifndef LR_CATALOG_H
#define LR_CATALOG_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"

typedef struct {
    const char *id;
    const char *title;
    const char *provider;
    const char *capability; /* text | image | edit | video */
    const char *provider_model;
    bool enabled;
    int credit_cost;       /* the base price of one output */
    json_t *price_rules;   /* array of {param, multiply?, add?}; [] when none */
    json_t *params_schema; /* object: name -> {type, default, min, max, options, aliases} */
    json_t *def;           /* the whole definition */
} lr_model;

typedef struct lr_catalog lr_catalog;

/* file NULL: the built-in catalog. On error returns NULL with *err set
 * (malloc'd, one line). */
lr_catalog *lr_catalog_load(const char *file, char **err);
void lr_catalog_free(lr_catalog *c);

/* NULL when unknown. Disabled models are returned; callers check enabled. */
const lr_model *lr_catalog_find(const lr_catalog *c, const char *id);
/* The public array for GET /api/models: enabled models only. New ref. */
json_t *lr_catalog_public(const lr_catalog *c);

/* The price of one output of m with validated params (defaults filled)
 * when outputs are asked for: creditCost, times each matching rule's
 * factor, plus each matching rule's addend, rounded up. A rule matches by
 * the param's value as text ("2K", "8", "true"); the pseudo-param
 * "outputsCount" matches the count. Never below 1. */
int lr_model_unit_price(const lr_model *m, json_t *params, int outputs);

/* The generations.type for a model: photo | edit | video | text. */
const char *lr_model_generation_type(const lr_model *m);

/* Checks params against the schema: unknown names, types, min/max and
 * options; maps aliases (older spellings of an option) to the option they
 * name; fills defaults. On success *out is a new object. On failure
 * returns LR_ERR_INVALID with *field and *msg (malloc'd) naming the problem. */
lr_err lr_model_validate_params(const lr_model *m, json_t *params, json_t **out, char **field,
                                char **msg);

#endif
