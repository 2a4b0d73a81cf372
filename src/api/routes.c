/* The route table: which handler answers which method and path. A path
 * that matches a route but not its method is 405 with Allow listing the
 * methods that path takes; no match is 404. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"

typedef enum {
    EXACT,     /* path == prefix */
    ID_SUFFIX, /* prefix + {id} + suffix, the id without '/' */
    REST,      /* prefix + anything (the handler gets the rest) */
} match_kind;

typedef struct {
    const char *method; /* NULL: any */
    match_kind match;
    const char *prefix;
    const char *suffix; /* ID_SUFFIX only: "" for a bare {id} */
    void (*plain)(lr_app *app, lr_req *req);
    void (*with_arg)(lr_app *app, lr_req *req, const char *arg);
} route;

static const route routes[] = {
    {"POST", EXACT, "/api/infer", NULL, lr_api_infer, NULL},
    {"GET", EXACT, "/api/models", NULL, lr_api_models, NULL},
    {"POST", EXACT, "/api/quote", NULL, lr_api_quote, NULL},
    {"POST", EXACT, "/api/runs", NULL, lr_api_runs_create, NULL},
    {"POST", ID_SUFFIX, "/api/runs/", "/cancel", NULL, lr_api_run_cancel},
    {"GET", ID_SUFFIX, "/api/runs/", "/events", NULL, lr_api_run_events},
    {"GET", ID_SUFFIX, "/api/runs/", "", NULL, lr_api_run_get},
    {"GET", EXACT, "/api/generations", NULL, lr_api_generations_list, NULL},
    {"POST", ID_SUFFIX, "/api/generations/", "/cancel", NULL, lr_api_generation_cancel},
    {"GET", ID_SUFFIX, "/api/generations/", "/events", NULL, lr_api_generation_events},
    {"GET", ID_SUFFIX, "/api/generations/", "", NULL, lr_api_generation_get},
    {"DELETE", ID_SUFFIX, "/api/generations/", "", NULL, lr_api_generation_delete},
    {"POST", EXACT, "/api/webhooks/kie", NULL, lr_api_webhook_kie, NULL},
    {"GET", EXACT, "/api/credits/balance", NULL, lr_api_credits_balance, NULL},
    {"GET", EXACT, "/api/credits/transactions", NULL, lr_api_credits_transactions, NULL},
    {"POST", EXACT, "/api/admin/credits", NULL, lr_api_admin_credits, NULL},
    {"GET", EXACT, "/api/billing/packs", NULL, lr_api_billing_packs, NULL},
    {"POST", EXACT, "/api/billing/checkout", NULL, lr_api_billing_checkout, NULL},
    {"POST", EXACT, "/api/webhooks/stripe", NULL, lr_api_webhook_stripe, NULL},
    {"GET", EXACT, "/api/webhooks/secret", NULL, lr_api_webhook_secret, NULL},
    {"GET", EXACT, "/api/admin/webhooks", NULL, lr_api_admin_webhooks_list, NULL},
    {"POST", EXACT, "/api/admin/webhooks", NULL, lr_api_admin_webhooks_add, NULL},
    {"POST", ID_SUFFIX, "/api/admin/webhooks/deliveries/", "/replay", NULL,
     lr_api_admin_webhook_replay},
    {"GET", ID_SUFFIX, "/api/admin/webhooks/", "/deliveries", NULL,
     lr_api_admin_webhook_deliveries},
    {"POST", ID_SUFFIX, "/api/admin/webhooks/", "/rotate-secret", NULL,
     lr_api_admin_webhook_rotate},
    {"DELETE", ID_SUFFIX, "/api/admin/webhooks/", "", NULL, lr_api_admin_webhook_remove},
    {NULL, EXACT, "/healthz", NULL, lr_api_health, NULL},
    {NULL, EXACT, "/api/health", NULL, lr_api_health, NULL},
    {"GET", REST, "/storage/v1/object/public/", NULL, NULL, lr_api_public_file},
    {"HEAD", REST, "/storage/v1/object/public/", NULL, NULL, lr_api_public_file},
    {"GET", REST, "/storage/v1/render/image/public/", NULL, NULL, lr_api_render_image},
    {"HEAD", REST, "/storage/v1/render/image/public/", NULL, NULL, lr_api_render_image},
    /* operations: readiness, metrics, the admin dashboard and its API */
    {"GET", EXACT, "/readyz", NULL, lr_api_ready, NULL},
    {"GET", EXACT, "/metrics", NULL, lr_api_metrics, NULL},
    {"GET", EXACT, "/api/admin/analytics", NULL, lr_api_admin_analytics, NULL},
    {"GET", EXACT, "/api/admin/analytics/chart.svg", NULL, lr_api_admin_chart, NULL},
    {"GET", EXACT, "/api/admin/session", NULL, lr_api_admin_session, NULL},
    {"GET", EXACT, "/api/admin/users", NULL, lr_api_admin_users, NULL},
    {"GET", ID_SUFFIX, "/api/admin/users/", "/ledger", NULL, lr_api_admin_user_ledger},
    {"POST", ID_SUFFIX, "/api/admin/users/", "/credits", NULL, lr_api_admin_user_credits},
    {"GET", ID_SUFFIX, "/api/admin/users/", "", NULL, lr_api_admin_user},
    {"GET", EXACT, "/api/admin/generations", NULL, lr_api_admin_generations, NULL},
    {"GET", ID_SUFFIX, "/api/admin/generations/", "", NULL, lr_api_admin_generation},
    {"GET", EXACT, "/admin/login", NULL, lr_api_dashboard_login, NULL},
    {"GET", EXACT, "/admin", NULL, lr_api_dashboard, NULL},
    {"GET", EXACT, "/admin/admin.css", NULL, lr_api_dashboard, NULL},
    {"GET", EXACT, "/admin/admin.js", NULL, lr_api_dashboard, NULL},
};

/* Whether path matches r; *arg is then the {id} (copied into buf) or the
 * rest of the path. */
static bool matches(const route *r, const char *path, const char **arg, char *buf, size_t size)
{
    size_t lp = strlen(r->prefix);
    if (r->match == EXACT)
        return strcmp(path, r->prefix) == 0;
    if (strncmp(path, r->prefix, lp) != 0)
        return false;
    const char *rest = path + lp;
    size_t n = strlen(rest);
    *arg = rest;
    if (r->match == REST)
        return true;
    size_t k = strlen(r->suffix);
    if (n <= k || n - k >= size || strcmp(rest + n - k, r->suffix) != 0)
        return false;
    memcpy(buf, rest, n - k);
    buf[n - k] = '\0';
    *arg = buf;
    return strchr(buf, '/') == NULL;
}

void lr_api_route(lr_req *req, void *ctx)
{
    lr_app *app = ctx;
    const char *path = lr_req_path(req), *method = lr_req_method(req);
    const char *arg = NULL;
    char id[64], allow[64] = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const route *r = &routes[i];
        if (!matches(r, path, &arg, id, sizeof id))
            continue;
        if (!r->method || !strcmp(r->method, method)) {
            char pattern[96];
            snprintf(pattern, sizeof pattern, "%s%s%s", r->prefix,
                     r->match == ID_SUFFIX ? "{id}"
                     : r->match == REST    ? "*"
                                           : "",
                     r->match == ID_SUFFIX ? r->suffix : "");
            lr_req_set_route(req, pattern);
            if (r->plain)
                r->plain(app, req);
            else
                r->with_arg(app, req, arg);
            return;
        }
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof allow - used, "%s%s", used ? ", " : "", r->method);
    }
    if (*allow) {
        lr_req_set_header(req, "Allow", allow);
        lr_api_error(req, LR_CODE_METHOD_NOT_ALLOWED, "Method not allowed", NULL);
        return;
    }
    lr_api_error(req, LR_CODE_NOT_FOUND, "Not found", NULL);
}
