/* The credit pack file: [{"id", "credits", "price", "currency",
 * "stripePriceId", "name"?}, ...]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/billing.h"
#include "core/util.h"

static bool pack_from_json(json_t *o, lr_pack *p, char **err, size_t i)
{
    json_t *id = json_object_get(o, "id"), *credits = json_object_get(o, "credits");
    json_t *price = json_object_get(o, "price"), *cur = json_object_get(o, "currency");
    json_t *sp = json_object_get(o, "stripePriceId"), *name = json_object_get(o, "name");
    const char *what = NULL;
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > 64)
        what = "id must be a string of 1-64 characters";
    else if (!json_is_integer(credits) || json_integer_value(credits) < 1 ||
             json_integer_value(credits) > 100000000)
        what = "credits must be a whole number from 1 to 1e8";
    else if (!json_is_integer(price) || json_integer_value(price) < 0)
        what = "price must be a whole number of the currency's smallest unit";
    else if (!json_is_string(cur) || json_string_length(cur) != 3)
        what = "currency must be a three-letter ISO code";
    else if (!json_is_string(sp) || strncmp(json_string_value(sp), "price_", 6) != 0)
        what = "stripePriceId must be a Stripe price id (price_...)";
    else if (name && !json_is_string(name))
        what = "name must be a string";
    if (what) {
        if (asprintf(err, "pack %zu: %s", i, what) < 0)
            *err = NULL;
        return false;
    }
    *p = (lr_pack){.id = lr_xstrdup(json_string_value(id)),
                   .credits = (int)json_integer_value(credits),
                   .price = json_integer_value(price),
                   .currency = lr_xstrdup(json_string_value(cur)),
                   .stripe_price_id = lr_xstrdup(json_string_value(sp)),
                   .name = lr_xstrdup(name ? json_string_value(name) : json_string_value(id))};
    for (char *c = p->currency; *c; c++)
        *c = (char)((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
    return true;
}

lr_err lr_packs_load(const char *path, lr_packs *out, char **err)
{
    memset(out, 0, sizeof *out);
    *err = NULL;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!json_is_array(root) || json_array_size(root) == 0) {
        if (asprintf(err, "%s: %s", path, root ? "must be a non-empty JSON array" : je.text) < 0)
            *err = NULL;
        json_decref(root);
        return LR_ERR_INVALID;
    }
    out->v = lr_xcalloc(json_array_size(root), sizeof *out->v);
    size_t i;
    json_t *o;
    json_array_foreach(root, i, o)
    {
        bool ok = pack_from_json(o, &out->v[i], err, i);
        if (ok && lr_packs_find(out, out->v[i].id)) { /* out->n: the packs before */
            ok = false;
            if (asprintf(err, "pack %zu: id %s is used twice", i, out->v[i].id) < 0)
                *err = NULL;
        }
        out->n = i + 1;
        if (!ok) {
            lr_packs_free(out);
            json_decref(root);
            return LR_ERR_INVALID;
        }
    }
    json_decref(root);
    return LR_OK;
}

void lr_packs_free(lr_packs *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].id);
        free(p->v[i].currency);
        free(p->v[i].stripe_price_id);
        free(p->v[i].name);
    }
    free(p->v);
    memset(p, 0, sizeof *p);
}

const lr_pack *lr_packs_find(const lr_packs *p, const char *id)
{
    for (size_t i = 0; p && id && i < p->n; i++) {
        if (p->v[i].id && !strcmp(p->v[i].id, id))
            return &p->v[i];
    }
    return NULL;
}
