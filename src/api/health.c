/* GET /healthz (and /api/health): what this process runs on, and whether
 * its database answers. The mock provider is called out loudly. */
#include <string.h>

#include "api/api.h"
#include "core/util.h"

void lr_api_health(lr_app *app, lr_req *req)
{
    bool db_ok = app->db->ops->ping(app->db) == LR_OK;
    json_t *b = json_pack(
        "{s:s, s:b, s:{s:s, s:b}, s:{s:s, s:s}, s:{s:s, s:b}, s:i, s:I}", "status",
        db_ok ? "ok" : "degraded", "success", db_ok, "database", "backend", app->db->backend, "ok",
        db_ok, "storage", "backend", app->store->backend, "bucket", app->store->bucket,
        "provider", "name", app->provider->name, "mock", !strcmp(app->provider->name, "mock"),
        "inFlight", lr_pipeline_in_flight(app->pipeline), "uptimeMs",
        (json_int_t)(lr_monotonic_ms() - app->started_ms));
    if (!strcmp(app->provider->name, "mock"))
        json_object_set_new(b, "warning",
                            json_string("MOCK PROVIDER: generations are synthetic images, "
                                        "not real AI output"));
    if (!db_ok)
        lr_req_set_header(req, "Retry-After", "1");
    lr_req_reply_json(req, db_ok ? 200 : 503, b);
}
