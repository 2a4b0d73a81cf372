/* `lensroom webhooks` (webhooks.h). A secret is printed once, when made. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/hooks.h"
#include "cli/webhooks.h"
#include "core/util.h"
#include "net/net.h"

const char lr_cli_webhooks_usage[] =
    "usage: lensroom webhooks add URL --events TYPE[,TYPE...]\n"
    "       lensroom webhooks list\n"
    "       lensroom webhooks remove ID\n"
    "       lensroom webhooks rotate-secret ID\n"
    "Endpoints receive Standard Webhooks deliveries (webhook-id, webhook-timestamp,\n"
    "webhook-signature) signed with their own whsec_ secret, printed by add and\n"
    "rotate-secret only; after rotate-secret the old secret also signs each delivery\n"
    "(a second v1 signature) for LENSROOM_WEBHOOK_ROTATE_GRACE (24h), so receivers\n"
    "can switch without a gap. TYPE: generation.succeeded, generation.failed,\n"
    "generation.canceled, generation.started, credits.low, credits.purchased.\n"
    "URLs must be https and public (LENSROOM_FETCH_ALLOW lists exceptions).\n";

static void print_endpoint(const lr_endpoint *e)
{
    char at[32];
    lr_time_iso(e->created_at, at);
    printf("%s  %s  %s  %s\n", e->id, e->url, e->events, at);
    if (e->secret)
        printf("secret: %s\n", e->secret);
}

static int add(int argc, char **argv, const lr_config *cfg, lr_billing_db *db)
{
    const char *url = argc > 1 ? argv[1] : NULL, *events = NULL;
    for (int i = 2; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--events"))
            events = argv[i + 1];
    }
    if (!url || !events) {
        fputs(lr_cli_webhooks_usage, stderr);
        return 2;
    }
    char *err = NULL;
    lr_net_policy *policy = lr_net_policy_new(cfg->fetch_allow, &err);
    const char *why = NULL;
    bool ok = policy && lr_net_url_allowed(policy, url, &why);
    lr_net_policy_free(policy);
    if (!ok) {
        fprintf(stderr, "webhooks: %s is refused: %s\n", url,
                why   ? why
                : err ? err
                      : "invalid LENSROOM_FETCH_ALLOW");
        free(err);
        return 1;
    }
    if (!lr_hooks_events_valid(events)) {
        fprintf(stderr, "webhooks: --events must list known types (see --help)\n");
        return 2;
    }
    lr_endpoint e;
    if (lr_billing_endpoint_add(db, url, events, &e) != LR_OK) {
        fprintf(stderr, "webhooks: could not add the endpoint\n");
        return 1;
    }
    print_endpoint(&e);
    lr_endpoint_clear(&e);
    return 0;
}

static int list(lr_billing_db *db)
{
    lr_endpoint_list l;
    if (lr_billing_endpoint_list(db, &l) != LR_OK) {
        fprintf(stderr, "webhooks: could not list the endpoints\n");
        return 1;
    }
    for (size_t i = 0; i < l.n; i++)
        print_endpoint(&l.v[i]);
    if (l.n == 0)
        puts("no webhook endpoints");
    lr_endpoint_list_clear(&l);
    return 0;
}

static int by_id(const char *sub, const char *id, const lr_config *cfg, lr_billing_db *db)
{
    lr_endpoint e = {0};
    int64_t grace =
        cfg->webhook_rotate_grace_s ? lr_now_ms() + (int64_t)cfg->webhook_rotate_grace_s * 1000 : 0;
    lr_err r = !strcmp(sub, "remove") ? lr_billing_endpoint_remove(db, id)
                                      : lr_billing_endpoint_rotate(db, id, grace, &e);
    if (r == LR_ERR_NOT_FOUND) {
        fprintf(stderr, "webhooks: no endpoint %s\n", id);
        return 1;
    }
    if (r != LR_OK) {
        fprintf(stderr, "webhooks: %s failed\n", sub);
        return 1;
    }
    if (e.id)
        print_endpoint(&e);
    else
        printf("removed %s\n", id);
    lr_endpoint_clear(&e);
    return 0;
}

int lr_cli_webhooks(int argc, char **argv, const lr_config *cfg, lr_billing_db *db)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "add"))
        return add(argc - 1, argv + 1, cfg, db);
    if (!strcmp(sub, "list"))
        return list(db);
    if ((!strcmp(sub, "remove") || !strcmp(sub, "rotate-secret")) && argc > 2)
        return by_id(sub, argv[2], cfg, db);
    fputs(lr_cli_webhooks_usage, stderr);
    return 2;
}
