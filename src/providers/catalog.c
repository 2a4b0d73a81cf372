#include "providers/catalog.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

extern const char lr_catalog_builtin[];

struct lr_catalog {
    json_t *root;
    lr_model *models;
    size_t n;
};

__attribute__((format(printf, 2, 3))) static int fail(char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && vasprintf(err, fmt, ap) < 0)
        *err = NULL;
    va_end(ap);
    return -1;
}

static const char *const param_types[] = {"number", "string", "boolean"};

static int check_schema(const char *id, json_t *schema, char **err)
{
    const char *name;
    json_t *spec;
    if (!json_is_object(schema))
        return fail(err, "model %s: paramsSchema must be an object", id);
    json_object_foreach(schema, name, spec)
    {
        json_t *t = json_object_get(spec, "type");
        int ok = 0;
        for (size_t i = 0; json_is_string(t) && i < 3; i++)
            ok |= !strcmp(json_string_value(t), param_types[i]);
        if (!ok)
            return fail(err, "model %s: param %s needs type number, string or boolean", id, name);
        json_t *opt = json_object_get(spec, "options");
        if (opt && !json_is_array(opt))
            return fail(err, "model %s: param %s: options must be an array", id, name);
        json_t *al = json_object_get(spec, "aliases");
        if (al && !json_is_object(al))
            return fail(err, "model %s: param %s: aliases must be an object", id, name);
    }
    return 0;
}

/* priceRules: an array of {param, multiply: {value: factor > 0},
 * add: {value: whole credits}}, param naming one of the model's params or
 * "outputsCount". */
static int check_rules(const char *id, json_t *schema, json_t *rules, char **err)
{
    if (!json_is_array(rules))
        return fail(err, "model %s: priceRules must be an array", id);
    size_t i;
    json_t *r;
    json_array_foreach(rules, i, r)
    {
        const char *param = json_string_value(json_object_get(r, "param"));
        if (!param || (strcmp(param, "outputsCount") && !json_object_get(schema, param)))
            return fail(err, "model %s: priceRules[%zu].param must name a param or outputsCount",
                        id, i);
        json_t *mul = json_object_get(r, "multiply"), *add = json_object_get(r, "add");
        if ((mul && !json_is_object(mul)) || (add && !json_is_object(add)) || (!mul && !add))
            return fail(err, "model %s: priceRules[%zu] needs multiply and/or add objects", id, i);
        const char *k;
        json_t *v;
        json_object_foreach(mul, k, v)
        {
            if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1000)
                return fail(err, "model %s: priceRules[%zu].multiply.%s must be a number above 0",
                            id, i, k);
        }
        json_object_foreach(add, k, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < -100000 ||
                json_integer_value(v) > 100000)
                return fail(err, "model %s: priceRules[%zu].add.%s must be a whole number", id, i,
                            k);
        }
    }
    return 0;
}

static int parse_models(lr_catalog *c, char **err)
{
    if (!json_is_array(c->root))
        return fail(err, "catalog must be a JSON array of models");
    c->n = json_array_size(c->root);
    c->models = lr_xcalloc(c->n ? c->n : 1, sizeof *c->models);
    for (size_t i = 0; i < c->n; i++) {
        json_t *d = json_array_get(c->root, i);
        lr_model *m = &c->models[i];
        json_t *id = json_object_get(d, "id"), *cost = json_object_get(d, "creditCost");
        json_t *cap = json_object_get(d, "capability");
        if (!json_is_string(id) || !json_string_length(id))
            return fail(err, "catalog entry %zu has no id", i);
        m->id = json_string_value(id);
        if (!json_is_integer(cost) || json_integer_value(cost) < 1 ||
            json_integer_value(cost) > 100000)
            return fail(err, "model %s: creditCost must be a whole number from 1 to 100000", m->id);
        m->credit_cost = (int)json_integer_value(cost);
        m->capability = json_is_string(cap) ? json_string_value(cap) : "";
        if (strcmp(m->capability, "text") && strcmp(m->capability, "image") &&
            strcmp(m->capability, "edit") && strcmp(m->capability, "video"))
            return fail(err, "model %s: capability must be text, image, edit or video", m->id);
        json_t *en = json_object_get(d, "enabled");
        m->enabled = en ? json_is_true(en) : true;
        json_t *t = json_object_get(d, "title");
        m->title = json_is_string(t) ? json_string_value(t) : m->id;
        t = json_object_get(d, "provider");
        m->provider = json_is_string(t) ? json_string_value(t) : "kie";
        t = json_object_get(d, "providerModel");
        m->provider_model = json_is_string(t) ? json_string_value(t) : m->id;
        m->params_schema = json_object_get(d, "paramsSchema");
        if (!m->params_schema) {
            m->params_schema = json_object();
            json_object_set_new(d, "paramsSchema", m->params_schema);
        }
        if (check_schema(m->id, m->params_schema, err) != 0)
            return -1;
        m->price_rules = json_object_get(d, "priceRules");
        if (!m->price_rules) {
            m->price_rules = json_array();
            json_object_set_new(d, "priceRules", m->price_rules);
        }
        if (check_rules(m->id, m->params_schema, m->price_rules, err) != 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(c->models[j].id, m->id))
                return fail(err, "model %s is listed twice", m->id);
        }
        m->def = d;
    }
    return 0;
}

lr_catalog *lr_catalog_load(const char *file, char **err)
{
    lr_catalog *c = lr_xcalloc(1, sizeof *c);
    json_error_t je;
    c->root = file ? json_load_file(file, 0, &je) : json_loads(lr_catalog_builtin, 0, &je);
    if (!c->root) {
        char pos[64];
        snprintf(pos, sizeof pos, "line %d", je.line);
        fail(err, "catalog is not valid JSON (%s): %s", pos, je.text);
        lr_catalog_free(c);
        return NULL;
    }
    if (parse_models(c, err) != 0) {
        lr_catalog_free(c);
        return NULL;
    }
    return c;
}

void lr_catalog_free(lr_catalog *c)
{
    if (!c)
        return;
    json_decref(c->root);
    free(c->models);
    free(c);
}

const lr_model *lr_catalog_find(const lr_catalog *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++) {
        if (!strcmp(c->models[i].id, id))
            return &c->models[i];
    }
    return NULL;
}

json_t *lr_catalog_public(const lr_catalog *c)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < c->n; i++) {
        const lr_model *m = &c->models[i];
        if (!m->enabled)
            continue;
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:O, s:O}", "id",
                                             m->id, "title", m->title, "provider", m->provider,
                                             "capability", m->capability, "enabled", 1,
                                             "creditCost", m->credit_cost, "paramsSchema",
                                             m->params_schema, "priceRules", m->price_rules));
    }
    return arr;
}

/* A param value as the rules' keys spell it. */
static void value_text(json_t *v, char out[64])
{
    if (json_is_string(v))
        snprintf(out, 64, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, 64, "%lld", (long long)json_integer_value(v));
    else if (json_is_number(v))
        snprintf(out, 64, "%g", json_number_value(v));
    else if (json_is_boolean(v))
        snprintf(out, 64, "%s", json_is_true(v) ? "true" : "false");
    else
        out[0] = '\0';
}

int lr_model_unit_price(const lr_model *m, json_t *params, int outputs)
{
    double price = m->credit_cost, added = 0;
    size_t i;
    json_t *r;
    json_array_foreach(m->price_rules, i, r)
    {
        const char *param = json_string_value(json_object_get(r, "param"));
        char key[64];
        if (!strcmp(param, "outputsCount"))
            snprintf(key, sizeof key, "%d", outputs);
        else
            value_text(json_object_get(params, param), key);
        json_t *f = json_object_get(json_object_get(r, "multiply"), key);
        json_t *a = json_object_get(json_object_get(r, "add"), key);
        if (f)
            price *= json_number_value(f);
        if (a)
            added += (double)json_integer_value(a);
    }
    double unit = ceil(price - 1e-9) + added;
    return unit < 1 ? 1 : (int)unit;
}

const char *lr_model_generation_type(const lr_model *m)
{
    if (!strcmp(m->capability, "image"))
        return "photo";
    return m->capability; /* edit, video, text */
}

__attribute__((format(printf, 4, 5))) static lr_err bad(char **field, char **msg, const char *name,
                                                        const char *fmt, ...)
{
    *field = lr_xstrdup(name);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(msg, fmt, ap) < 0)
        *msg = NULL;
    va_end(ap);
    return LR_ERR_INVALID;
}

static lr_err check_value(const char *name, json_t *spec, json_t *v, char **field, char **msg)
{
    const char *type = json_string_value(json_object_get(spec, "type"));
    if (!strcmp(type, "number")) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return bad(field, msg, name, "params.%s must be a number", name);
        double x = json_number_value(v);
        json_t *mn = json_object_get(spec, "min"), *mx = json_object_get(spec, "max");
        char lim[64];
        if (json_is_number(mn) && x < json_number_value(mn)) {
            snprintf(lim, sizeof lim, "%g", json_number_value(mn));
            return bad(field, msg, name, "params.%s must be at least %s", name, lim);
        }
        if (json_is_number(mx) && x > json_number_value(mx)) {
            snprintf(lim, sizeof lim, "%g", json_number_value(mx));
            return bad(field, msg, name, "params.%s must be at most %s", name, lim);
        }
    } else if (!strcmp(type, "string")) {
        if (!json_is_string(v))
            return bad(field, msg, name, "params.%s must be a string", name);
    } else if (!json_is_boolean(v)) {
        return bad(field, msg, name, "params.%s must be true or false", name);
    }
    json_t *opts = json_object_get(spec, "options");
    if (json_array_size(opts)) {
        size_t i;
        json_t *o;
        json_array_foreach(opts, i, o)
        {
            if (json_equal(o, v))
                return LR_OK;
        }
        char *list = json_dumps(opts, JSON_COMPACT);
        int r =
            bad(field, msg, name, "params.%s must be one of %s", name, list ? list : "the options");
        free(list);
        return r;
    }
    return LR_OK;
}

lr_err lr_model_validate_params(const lr_model *m, json_t *params, json_t **out, char **field,
                                char **msg)
{
    *field = *msg = NULL;
    if (params && !json_is_null(params) && !json_is_object(params))
        return bad(field, msg, "params", "params must be an object");
    const char *name;
    json_t *v;
    if (json_is_object(params)) {
        json_object_foreach(params, name, v)
        {
            if (!json_object_get(m->params_schema, name))
                return bad(field, msg, name, "params.%s is not a parameter of this model", name);
        }
    }
    json_t *res = json_object();
    json_t *spec;
    json_object_foreach(m->params_schema, name, spec)
    {
        v = json_is_object(params) ? json_object_get(params, name) : NULL;
        if (!v || json_is_null(v)) {
            json_t *def = json_object_get(spec, "default");
            if (def)
                json_object_set(res, name, def);
            continue;
        }
        /* An alias is an older spelling of an option (the original front
         * end's "portrait"): stored and sent under today's name. */
        json_t *canon = json_is_string(v) ? json_object_get(json_object_get(spec, "aliases"),
                                                            json_string_value(v))
                                          : NULL;
        if (canon)
            v = canon;
        if (check_value(name, spec, v, field, msg) != 0) {
            json_decref(res);
            return LR_ERR_INVALID;
        }
        json_object_set(res, name, v);
    }
    *out = res;
    return LR_OK;
}
