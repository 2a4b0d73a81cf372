/* GET /healthz (and /api/health): what this process runs on, and whether
 * its database answers. The mock provider is called out loudly; the last
 * scheduled backup is reported when backups are scheduled. */
#include <string.h>

#include "api/api.h"
#include "core/util.h"

/* {"intervalS","running","made","kept","nextAt","last":{…}|null}. */
static json_t *backup_json(lr_backup_sched *sched)
{
    lr_backup_status st;
    lr_backup_sched_status(sched, &st);
    char next[32], at[32];
    lr_time_iso(st.next_at_ms, next);
    json_t *last = json_null();
    if (st.ran) {
        lr_time_iso(st.at_ms, at);
        last = json_pack("{s:s, s:b, s:I}", "at", at, "ok", st.ok, "durationMs",
                         (json_int_t)st.duration_ms);
        if (st.ok)
            json_object_update_new(last, json_pack("{s:s, s:I}", "archive", st.archive, "bytes",
                                                   (json_int_t)st.bytes));
        else
            json_object_set_new(last, "error", json_string(st.error));
    }
    return json_pack("{s:i, s:b, s:I, s:i, s:s, s:o}", "intervalS", st.interval_s, "running",
                     st.running, "made", (json_int_t)st.made, "kept", st.kept, "nextAt", next,
                     "last", last);
}

void lr_api_health(lr_app *app, lr_req *req)
{
    bool db_ok = app->db->ops->ping(app->db) == LR_OK;
    json_t *b = json_pack("{s:s, s:b, s:{s:s, s:b}, s:{s:s, s:s}, s:{s:s, s:b}, s:i, s:I}",
                          "status", db_ok ? "ok" : "degraded", "success", db_ok, "database",
                          "backend", app->db->backend, "ok", db_ok, "storage", "backend",
                          app->store->backend, "bucket", app->store->bucket, "provider", "name",
                          app->provider->name, "mock", !strcmp(app->provider->name, "mock"),
                          "inFlight", lr_pipeline_in_flight(app->pipeline), "uptimeMs",
                          (json_int_t)(lr_monotonic_ms() - app->started_ms));
    if (!strcmp(app->provider->name, "mock"))
        json_object_set_new(b, "warning",
                            json_string("MOCK PROVIDER: generations are synthetic images, "
                                        "not real AI output"));
    if (app->backup)
        json_object_set_new(b, "backup", backup_json(app->backup));
    if (!db_ok)
        lr_req_set_header(req, "Retry-After", "1");
    lr_req_reply_json(req, db_ok ? 200 : 503, b);
}
