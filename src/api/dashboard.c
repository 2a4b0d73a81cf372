/* The admin dashboard at /admin: its static files (web/admin/, compiled
 * into the binary by lr_embed), the one-time sign-in link that opens an
 * admin session, and the analytics charts as SVG drawn here.
 *
 * Every page and file is for admins only (the same check as the admin
 * API: 401 without a session, 403 for a user who is not an admin); the
 * pages run only their own script and style (a strict
 * Content-Security-Policy), and fetch everything else from /api/admin.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "auth/jwt.h"
#include "cli/admin.h"
#include "core/log.h"
#include "core/util.h"

extern const char lr_web_admin_index[];
extern const char lr_web_admin_css[];
extern const char lr_web_admin_js[];

static const struct {
    const char *path;
    const char *body;
    const char *type;
} files[] = {
    {"/admin", lr_web_admin_index, "text/html; charset=utf-8"},
    {"/admin/admin.css", lr_web_admin_css, "text/css; charset=utf-8"},
    {"/admin/admin.js", lr_web_admin_js, "text/javascript; charset=utf-8"},
};

/* Session length of a sign-in link's session. */
#define LINK_SESSION_S (12 * 3600)

/* The scheme://host[:port] of url, into out ("" when url is NULL). */
static void origin_of(const char *url, char *out, size_t size)
{
    out[0] = '\0';
    if (!url)
        return;
    const char *host = strstr(url, "://");
    if (!host)
        return;
    size_t n = (size_t)(host + 3 - url) + strcspn(host + 3, "/?#");
    if (n < size && !strpbrk(url, " ;'\"")) {
        memcpy(out, url, n);
        out[n] = '\0';
    }
}

/* Only this server's files run; images and videos may come from the
 * storage's public URL (or any https host: provider URLs of old rows). */
static void set_page_headers(lr_app *app, lr_req *req)
{
    char a[256], b[256], csp[2048];
    origin_of(app->cfg->public_url, a, sizeof a);
    origin_of(app->cfg->s3_public_url, b, sizeof b);
    snprintf(csp, sizeof csp,
             "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
             "img-src 'self' https: %s %s; media-src 'self' https: %s %s; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'",
             a, b, a, b);
    /* (nosniff and no-store come with every answer of the server) */
    lr_req_set_header(req, "Content-Security-Policy", csp);
    lr_req_set_header(req, "Referrer-Policy", "no-referrer");
    lr_req_set_header(req, "X-Frame-Options", "DENY");
}

void lr_api_dashboard(lr_app *app, lr_req *req)
{
    const char *path = lr_req_path(req);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (strcmp(path, files[i].path) != 0)
            continue;
        char actor[LR_UUID_LEN + 16];
        if (!lr_api_admin(app, req, actor))
            return;
        set_page_headers(app, req);
        size_t n = strlen(files[i].body);
        lr_req_reply_text(req, 200, files[i].type, lr_xstrndup(files[i].body, n), n);
        return;
    }
    lr_api_error(req, LR_CODE_NOT_FOUND, "Not found", NULL);
}

/* GET /admin/login?token=: spends a link of `lensroom admin-link`, sets
 * the session cookie and sends the browser on to /admin. */
void lr_api_dashboard_login(lr_app *app, lr_req *req)
{
    const lr_config *cfg = app->cfg;
    const char *token = lr_req_query(req, "token");
    char user[LR_UUID_LEN + 1];
    lr_req_set_header(req, "Referrer-Policy", "no-referrer");
    lr_err e = token ? lr_admin_link_use(app->admin, token, user) : LR_ERR_NOT_FOUND;
    if (e == LR_ERR_NOT_FOUND) {
        lr_api_error(req, LR_CODE_INVALID_TOKEN,
                     "This sign-in link is unknown, expired or already used: run lensroom "
                     "admin-link again",
                     NULL);
        return;
    }
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    char *jwt = lr_jwt_sign_admin(cfg->jwt_secret, cfg->jwt_secret_len, user, cfg->jwt_issuer,
                                  (int64_t)time(NULL), LINK_SESSION_S);
    if (!jwt) {
        lr_api_error(req, LR_CODE_INTERNAL_ERROR, NULL, NULL);
        return;
    }
    bool https = cfg->public_url && !strncmp(cfg->public_url, "https://", 8);
    char *cookie;
    if (asprintf(&cookie, "lr_session=%s; Path=/; HttpOnly; SameSite=Lax; Max-Age=%d%s", jwt,
                 LINK_SESSION_S, https ? "; Secure" : "") < 0)
        abort();
    lr_req_set_header(req, "Set-Cookie", cookie);
    lr_req_set_header(req, "Location", "/admin");
    lr_admin_audit(app->admin, &(lr_admin_action){.actor = user,
                                                  .action = "admin.sign_in_link",
                                                  .subject = user,
                                                  .request_id = lr_req_id(req)});
    lr_log(LR_LOG_INFO, lr_req_id(req), "admin signed in with a one-time link");
    free(cookie);
    free(jwt);
    lr_req_reply_empty(req, 303);
}

/* ---- charts ----------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} svg;

static void put(svg *s, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        lr_buf_append(&s->buf, &s->len, &s->cap, tmp,
                      (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Text safe inside an SVG element or attribute (model ids are short). */
static void put_text(svg *s, const char *t)
{
    for (; *t; t++) {
        switch (*t) {
        case '<': put(s, "&lt;"); break;
        case '>': put(s, "&gt;"); break;
        case '&': put(s, "&amp;"); break;
        case '"': put(s, "&quot;"); break;
        default: lr_buf_append(&s->buf, &s->len, &s->cap, t, 1);
        }
    }
}

/* A bar chart: one group per label, `nseries` values in each, side by
 * side (stacked: on top of each other). Every bar carries data-label,
 * data-series and data-value, and a <title>, so the numbers are readable
 * by people and by tests. */
typedef struct {
    const char *title;
    size_t nlabels, nseries;
    const char *const *labels; /* YYYY-MM-DD */
    const char *const *series;
    const int64_t *values; /* [label * nseries + series] */
    bool stacked;
} chart;

static const char *const palette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                      "#b07aa1", "#76b7b2", "#edc948", "#9c755f"};

static void draw_bars(svg *s, const chart *c, double x0, double w, double plot_h, double top,
                      int64_t max)
{
    for (size_t i = 0; i < c->nlabels; i++) {
        double gx = x0 + w * (double)i, acc = 0;
        double bw = c->stacked ? w * 0.7 : w * 0.8 / (double)c->nseries;
        for (size_t k = 0; k < c->nseries; k++) {
            int64_t v = c->values[i * c->nseries + k];
            double h = max > 0 ? plot_h * (double)(v < 0 ? -v : v) / (double)max : 0;
            double x = c->stacked ? gx + w * 0.15 : gx + w * 0.1 + bw * (double)k;
            double y = top + plot_h - h - (c->stacked ? acc : 0);
            acc += c->stacked ? h : 0;
            put(s,
                "<rect class=\"s%zu\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "data-label=\"%s\" data-series=\"",
                k % 8, x, y, bw, h, c->labels[i]);
            put_text(s, c->series[k]);
            put(s, "\" data-value=\"%lld\"><title>%s ", (long long)v, c->labels[i]);
            put_text(s, c->series[k]);
            put(s, ": %lld</title></rect>", (long long)v);
        }
        if (c->nlabels <= 16 || i % (c->nlabels / 8 + 1) == 0)
            put(s, "<text class=\"ax\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.5s</text>",
                gx + w / 2, top + plot_h + 14, c->labels[i] + 5);
    }
}

static char *draw_chart(const chart *c, size_t *len)
{
    const double W = 720, H = 280, left = 48, right = 12, top = 40, bottom = 24;
    double plot_w = W - left - right, plot_h = H - top - bottom;
    int64_t max = 0;
    for (size_t i = 0; i < c->nlabels; i++) {
        int64_t sum = 0;
        for (size_t k = 0; k < c->nseries; k++) {
            int64_t v = c->values[i * c->nseries + k];
            v = v < 0 ? -v : v;
            sum = c->stacked ? sum + v : (v > sum ? v : sum);
        }
        max = sum > max ? sum : max;
    }
    max = (max + 3) / 4 * 4; /* whole numbers on the four grid lines */
    svg s = {0};
    put(&s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
        "aria-label=\"",
        W, H);
    put_text(&s, c->title);
    put(&s, "\"><style>text{font:11px system-ui,sans-serif;fill:#333}.ax{fill:#666}"
            "line{stroke:#ccc}");
    for (size_t k = 0; k < 8; k++)
        put(&s, ".s%zu{fill:%s}", k, palette[k]);
    put(&s, "@media (prefers-color-scheme:dark){text{fill:#ddd}.ax{fill:#aaa}line{stroke:#555}}"
            "</style><title>");
    put_text(&s, c->title);
    put(&s, "</title>");
    for (size_t k = 0; k < c->nseries; k++) {
        put(&s,
            "<rect class=\"s%zu\" x=\"%.0f\" y=\"8\" width=\"10\" height=\"10\"/>"
            "<text x=\"%.0f\" y=\"17\">",
            k % 8, left + 110.0 * (double)k, left + 110.0 * (double)k + 14);
        put_text(&s, c->series[k]);
        put(&s, "</text>");
    }
    for (int g = 0; g <= 4; g++) {
        double y = top + plot_h - plot_h * g / 4.0;
        put(&s,
            "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\"/>"
            "<text class=\"ax\" x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%lld</text>",
            left, W - right, y, y, left - 4, y + 4, (long long)(max * g / 4));
    }
    if (c->nlabels == 0)
        put(&s, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">No data in this range</text>",
            W / 2, H / 2);
    else
        draw_bars(&s, c, left, plot_w / (double)c->nlabels, plot_h, top, max);
    put(&s, "</svg>\n");
    *len = s.len;
    return s.buf;
}

static const char *const credit_series[] = {"spent", "bought", "refunded", "granted"};

static char *credits_chart(const lr_analytics *x, size_t *len)
{
    const char **labels = lr_xcalloc(x->ndays + 1, sizeof *labels);
    int64_t *v = lr_xcalloc(x->ndays * 4 + 1, sizeof *v);
    for (size_t i = 0; i < x->ndays; i++) {
        labels[i] = x->days[i].day;
        v[i * 4] = x->days[i].spent;
        v[i * 4 + 1] = x->days[i].bought;
        v[i * 4 + 2] = x->days[i].refunded;
        v[i * 4 + 3] = x->days[i].granted;
    }
    char *out = draw_chart(&(chart){.title = "Credits per day",
                                    .nlabels = x->ndays,
                                    .nseries = 4,
                                    .labels = labels,
                                    .series = credit_series,
                                    .values = v},
                           len);
    free(labels);
    free(v);
    return out;
}

/* Generations per day, stacked by model (models in the order of
 * x->models, busiest first). */
static char *generations_chart(const lr_analytics *x, size_t *len)
{
    size_t nd = 0, nm = x->nmodels;
    const char **labels = lr_xcalloc(x->nmodel_days + 1, sizeof *labels);
    const char **series = lr_xcalloc(nm + 1, sizeof *series);
    int64_t *v = lr_xcalloc(x->nmodel_days * nm + 1, sizeof *v);
    for (size_t k = 0; k < nm; k++)
        series[k] = x->models[k].model;
    for (size_t i = 0; i < x->nmodel_days; i++) {
        const lr_analytics_model_day *d = &x->model_days[i];
        if (nd == 0 || strcmp(labels[nd - 1], d->day) != 0)
            labels[nd++] = d->day;
        for (size_t k = 0; k < nm; k++) {
            if (!strcmp(series[k], d->model))
                v[(nd - 1) * nm + k] += d->n;
        }
    }
    char *out = draw_chart(&(chart){.title = "Generations per day, by model",
                                    .nlabels = nd,
                                    .nseries = nm,
                                    .labels = labels,
                                    .series = series,
                                    .values = v,
                                    .stacked = true},
                           len);
    free(labels);
    free(series);
    free(v);
    return out;
}

/* GET /api/admin/analytics/chart.svg?kind=credits|generations&since=&until= */
void lr_api_admin_chart(lr_app *app, lr_req *req)
{
    char actor[LR_UUID_LEN + 16], since[32], until[32];
    if (!lr_api_admin(app, req, actor) || !lr_api_admin_range(req, since, until))
        return;
    const char *kind = lr_req_query(req, "kind");
    bool credits = kind && !strcmp(kind, "credits");
    if (!credits && !(kind && !strcmp(kind, "generations"))) {
        lr_api_bad_query(req, "kind", "kind must be credits or generations");
        return;
    }
    lr_analytics x;
    lr_err e = lr_admin_analytics(app->admin, since, until, 10, &x);
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        return;
    }
    size_t len;
    char *body = credits ? credits_chart(&x, &len) : generations_chart(&x, &len);
    lr_analytics_clear(&x);
    lr_req_set_header(req, "Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'");
    lr_req_reply_text(req, 200, "image/svg+xml", body, len);
}
