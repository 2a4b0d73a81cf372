/* Operations endpoints: GET /readyz (may this process take traffic?) and
 * GET /metrics (Prometheus text), and the pipeline observer that counts
 * settled generations before the SSE hub hears of them.
 *
 * /healthz stays the liveness check (the process answers); /readyz is 200
 * only when the database answers, its schema is this binary's, storage
 * answers and the process is not draining. /metrics needs the Bearer
 * token LENSROOM_METRICS_TOKEN, or is served on LENSROOM_METRICS_PORT
 * only (then with the token too when one is set); with neither it is off,
 * since it tells ledger totals.
 */
#include <string.h>

#include "api/api.h"
#include "api/events.h"
#include "core/metrics.h"
#include "core/util.h"

void lr_api_observe(void *ctx, const char *generation_id, lr_gen_status status, lr_gen_stage stage)
{
    lr_app *app = ctx;
    if (stage == LR_STAGE_NONE)
        lr_metrics_add(LR_M_GENERATIONS_FINISHED, (const char *const[]){lr_gen_status_name(status)},
                       1);
    lr_events_observe(app->events, generation_id, status, stage);
}

static json_t *check(bool ok, const char *why)
{
    json_t *c = json_pack("{s:b}", "ok", ok);
    if (!ok && why)
        json_object_set_new(c, "error", json_string(why));
    return c;
}

void lr_api_ready(lr_app *app, lr_req *req)
{
    const char *why = NULL;
    bool db_ok = app->db->ops->ping(app->db) == LR_OK;
    bool schema_ok = db_ok && lr_admin_ready(app->admin, &why) == LR_OK;
    lr_err se = app->store->ops->ping(app->store);
    bool draining = atomic_load(&app->draining);
    bool ready = db_ok && schema_ok && se == LR_OK && !draining;
    json_t *checks =
        json_pack("{s:o, s:o, s:o, s:o}", "database", check(db_ok, "the database does not answer"),
                  "migrations", check(schema_ok, db_ok ? why : "not checked: no database"),
                  "storage", check(se == LR_OK, lr_strerror(se)), "draining",
                  check(!draining, "shutting down: finishing in-flight generations"));
    json_t *b = json_pack("{s:s, s:b, s:o}", "status", ready ? "ready" : "not_ready", "success",
                          ready, "checks", checks);
    if (!ready) {
        lr_req_set_header(req, "Retry-After", "1");
        json_object_set_new(b, "code", json_string(lr_code_name(LR_CODE_NOT_READY)));
        json_object_set_new(b, "error", json_string("Not ready: see checks"));
    }
    lr_req_reply_json(req, ready ? 200 : 503, b);
}

/* Bearer LENSROOM_METRICS_TOKEN, compared in constant time. */
static bool metrics_token_ok(const lr_config *cfg, lr_req *req)
{
    const char *h = lr_req_header(req, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    return lr_ct_equal(h + 7, strlen(h + 7), cfg->metrics_token, strlen(cfg->metrics_token));
}

static void append_db_totals(lr_app *app, lr_metrics_text *t)
{
    lr_admin_totals tot;
    if (lr_admin_totals_read(app->admin, &tot) != LR_OK)
        return; /* a scrape while the database is down still shows the process */
    static const char *const gen_keys[] = {"model", "status"}, *const type_key[] = {"type"};
    lr_metrics_text_family(t, "lensroom_generations", "gauge",
                           "Generations in the database, by model and status (all processes).");
    for (size_t i = 0; i < tot.ngens; i++)
        lr_metrics_text_sample(t, "lensroom_generations", gen_keys,
                               (const char *const[]){tot.gens[i].model, tot.gens[i].status}, 2,
                               (double)tot.gens[i].n);
    lr_metrics_text_family(t, "lensroom_ledger_rows", "gauge",
                           "Ledger rows in the database, by type.");
    for (size_t i = 0; i < tot.nledger; i++)
        lr_metrics_text_sample(t, "lensroom_ledger_rows", type_key,
                               (const char *const[]){tot.ledger[i].type}, 1,
                               (double)tot.ledger[i].rows);
    lr_metrics_text_family(t, "lensroom_ledger_credits", "gauge",
                           "Sum of ledger amounts (credits) in the database, by type.");
    for (size_t i = 0; i < tot.nledger; i++)
        lr_metrics_text_sample(t, "lensroom_ledger_credits", type_key,
                               (const char *const[]){tot.ledger[i].type}, 1,
                               (double)tot.ledger[i].amount);
    lr_metrics_text_family(t, "lensroom_balances_credits", "gauge",
                           "Sum of every user's balance (credits).");
    lr_metrics_text_sample(t, "lensroom_balances_credits", NULL, NULL, 0,
                           (double)tot.balance_total);
    lr_admin_totals_clear(&tot);
}

static void append_gauge(lr_metrics_text *t, const char *name, const char *help, double v)
{
    lr_metrics_text_family(t, name, "gauge", help);
    lr_metrics_text_sample(t, name, NULL, NULL, 0, v);
}

/* The scheduled backups, when there are: what /healthz says of them, as
 * gauges an alert can watch (e.g. time() - last_timestamp > 2 intervals,
 * or last_ok == 0). */
static void append_backup(lr_app *app, lr_metrics_text *t)
{
    if (!app->backup)
        return;
    lr_backup_status st;
    lr_backup_sched_status(app->backup, &st);
    append_gauge(t, "lensroom_backups_made", "Scheduled backups made since this process started.",
                 (double)st.made);
    append_gauge(t, "lensroom_backup_archives_kept",
                 "Archives in the backup folder after the last rotation.", (double)st.kept);
    if (!st.ran)
        return;
    append_gauge(t, "lensroom_backup_last_ok", "1 when the last scheduled backup succeeded.",
                 st.ok ? 1 : 0);
    append_gauge(t, "lensroom_backup_last_timestamp_seconds",
                 "When the last scheduled backup finished (Unix time).", (double)st.at_ms / 1e3);
    append_gauge(t, "lensroom_backup_last_duration_seconds",
                 "How long the last scheduled backup took.", (double)st.duration_ms / 1e3);
    append_gauge(t, "lensroom_backup_last_bytes", "Size of the last scheduled backup's archive.",
                 st.ok ? (double)st.bytes : 0);
}

/* The scrape, once the caller may have it. */
static void metrics_reply(lr_app *app, lr_req *req)
{
    const lr_config *cfg = app->cfg;
    if (cfg->metrics_token && !metrics_token_ok(cfg, req)) {
        lr_req_set_header(req, "WWW-Authenticate", "Bearer");
        lr_api_error(req, LR_CODE_UNAUTHORIZED,
                     "Unauthorized: Bearer LENSROOM_METRICS_TOKEN is required", NULL);
        return;
    }
    lr_metrics_text t = {0};
    lr_metrics_render(&t);
    append_gauge(&t, "lensroom_generations_in_flight",
                 "Generations this process is running (the pipeline's queue).",
                 (double)lr_pipeline_in_flight(app->pipeline));
    int queued, running;
    lr_workers_depth(app->workers, &queued, &running);
    append_gauge(&t, "lensroom_worker_queue_depth",
                 "Jobs waiting for a worker thread (storing outputs, removals, slow settlements).",
                 (double)queued);
    append_gauge(&t, "lensroom_workers_busy", "Worker threads running a job now.", (double)running);
    append_gauge(&t, "lensroom_db_connections_in_use",
                 "Database operations in progress, each holding a pooled connection.",
                 (double)lr_db_metered_in_use(app->db));
    append_gauge(&t, "lensroom_db_pool_connections", "Size of the database connection pool.",
                 (double)(cfg->http_threads + cfg->workers + 1));
    append_gauge(&t, "lensroom_uptime_seconds", "Seconds since this process started.",
                 (double)(lr_monotonic_ms() - app->started_ms) / 1000.0);
    append_db_totals(app, &t);
    append_backup(app, &t);
    lr_req_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", t.buf, t.len);
}

void lr_api_metrics(lr_app *app, lr_req *req)
{
    const lr_config *cfg = app->cfg;
    if (cfg->metrics_port) {
        lr_api_error(req, LR_CODE_NOT_FOUND,
                     "Not found: metrics are served on LENSROOM_METRICS_PORT", NULL);
    } else if (!cfg->metrics_token) {
        lr_req_reply_error(req, 403, lr_code_name(LR_CODE_METRICS_DISABLED),
                           "Metrics are off: set LENSROOM_METRICS_TOKEN or LENSROOM_METRICS_PORT",
                           NULL);
    } else {
        metrics_reply(app, req);
    }
}

/* The route table of LENSROOM_METRICS_PORT: metrics and probes only. */
void lr_api_metrics_route(lr_req *req, void *ctx)
{
    lr_app *app = ctx;
    const char *path = lr_req_path(req);
    lr_req_set_route(req, path);
    if (strcmp(lr_req_method(req), "GET") != 0)
        lr_api_error(req, LR_CODE_METHOD_NOT_ALLOWED, "Method not allowed", NULL);
    else if (!strcmp(path, "/metrics"))
        metrics_reply(app, req);
    else if (!strcmp(path, "/readyz"))
        lr_api_ready(app, req);
    else if (!strcmp(path, "/healthz"))
        lr_api_health(app, req);
    else {
        lr_req_set_route(req, "unmatched");
        lr_api_error(req, LR_CODE_NOT_FOUND, "Not found", NULL);
    }
}
