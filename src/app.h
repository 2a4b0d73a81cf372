/* The running server's parts, wired once in main and read-only after:
 * HTTP handlers receive this as their context. */
#ifndef LR_APP_H
#define LR_APP_H

#include <stdatomic.h>
#include <stdint.h>

#include "auth/jwks.h"
#include "backup/backup.h"
#include "billing/billing.h"
#include "core/config.h"
#include "db/admin.h"
#include "db/db.h"
#include "loop/loop.h"
#include "media/jobs.h"
#include "media/render.h"
#include "net/net.h"
#include "pipeline/pipeline.h"
#include "pipeline/ratelimit.h"
#include "providers/catalog.h"
#include "providers/provider.h"
#include "storage/storage.h"

typedef struct {
    const lr_config *cfg;
    lr_db *db;
    lr_store *store;
    const lr_catalog *catalog;
    lr_provider *provider;
    lr_loop *loop;
    lr_workers *workers;
    lr_pipeline *pipeline;
    lr_ratelimit *ratelimit;
    struct lr_events *events;
    const lr_net_policy *net;
    lr_jwks *jwks;             /* NULL: HS256 tokens only */
    lr_backup_sched *backup;   /* NULL: no scheduled backups */
    lr_billing *billing;       /* Stripe: packs, checkout, its webhook */
    lr_hooks *hooks;           /* outgoing webhooks */
    lr_billing_db *billing_db; /* their tables */
    int64_t started_ms;
    lr_admin *admin;       /* operator reads: readiness, /metrics totals, analytics */
    lr_previews *previews; /* NULL: LENSROOM_PREVIEWS off */
    lr_render *render;     /* resized images; NULL unless the storage is local */
    /* Set once SIGTERM arrived (the one field written after start):
     * /readyz answers 503 from then on. */
    atomic_bool draining;
} lr_app;

#endif
