/* GET /api/models: the enabled catalog, in the original's array shape. */
#include "api/api.h"

void lr_api_models(lr_app *app, lr_req *req)
{
    lr_req_reply_json(req, 200, lr_catalog_public(app->catalog));
}
