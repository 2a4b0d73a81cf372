#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

enum kind { COUNTER, HISTOGRAM };

/* Upper bounds (seconds) shared by every histogram: from a cached read to
 * a slow provider call. */
static const double buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,   1,     2.5,  5,     10,   30,  60};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

typedef struct {
    char *labels; /* rendered: k="v",k="v" (escaped), "" without labels */
    double value; /* counter value, or histogram sum */
    uint64_t count;
    uint64_t le[NBUCKETS];
} series;

typedef struct {
    enum kind kind;
    const char *name, *help, *label_names;
    pthread_mutex_t mu;
    series v[LR_METRICS_MAX_SERIES];
    size_t n;
} family;

static family families[LR_M_COUNT] = {
#define XX(id, k, nm, hp, lb)                                                                      \
    [LR_M_##id] = {                                                                                \
        .kind = k, .name = nm, .help = hp, .label_names = lb, .mu = PTHREAD_MUTEX_INITIALIZER},
    LR_METRICS_MAP(XX)
#undef XX
};

static void text_append(lr_metrics_text *t, const char *s, size_t n)
{
    lr_buf_append(&t->buf, &t->len, &t->cap, s, n);
}

void lr_metrics_text_printf(lr_metrics_text *t, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        text_append(t, small, (size_t)n);
        return;
    }
    char *big = lr_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    text_append(t, big, (size_t)n);
    free(big);
}

/* A label value as the text format wants it: \ " and newline escaped. */
static void append_escaped(lr_metrics_text *t, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            text_append(t, "\\\\", 2);
        else if (*p == '"')
            text_append(t, "\\\"", 2);
        else if (*p == '\n')
            text_append(t, "\\n", 2);
        else
            text_append(t, p, 1);
    }
}

/* k="v",k="v" for the family's label names (comma-separated) and values. */
static void render_labels(lr_metrics_text *t, const char *names, const char *const *values)
{
    size_t i = 0;
    for (const char *p = names; *p; i++) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (i)
            text_append(t, ",", 1);
        text_append(t, p, n);
        text_append(t, "=\"", 2);
        append_escaped(t, values[i] ? values[i] : "");
        text_append(t, "\"", 1);
        p += n + (end ? 1 : 0);
    }
}

static size_t label_count(const char *names)
{
    if (!*names)
        return 0;
    size_t n = 1;
    for (const char *p = names; *p; p++)
        n += *p == ',';
    return n;
}

/* The series for these values, created when new; the family's mutex is
 * held. Past the cap every new label set lands in the all-"other" series. */
static series *find(family *f, const char *const *values)
{
    lr_metrics_text key = {0};
    render_labels(&key, f->label_names, values);
    text_append(&key, "", 1);
    for (size_t i = 0; i < f->n; i++) {
        if (!strcmp(f->v[i].labels, key.buf)) {
            free(key.buf);
            return &f->v[i];
        }
    }
    if (f->n == LR_METRICS_MAX_SERIES - 1) {
        free(key.buf);
        const char *other[16];
        size_t k = label_count(f->label_names);
        for (size_t i = 0; i < k && i < 16; i++)
            other[i] = "other";
        key = (lr_metrics_text){0};
        render_labels(&key, f->label_names, other);
        text_append(&key, "", 1);
        for (size_t i = 0; i < f->n; i++) {
            if (!strcmp(f->v[i].labels, key.buf)) {
                free(key.buf);
                return &f->v[i];
            }
        }
    }
    series *s = &f->v[f->n++];
    memset(s, 0, sizeof *s);
    s->labels = key.buf;
    return s;
}

void lr_metrics_add(lr_metric_id m, const char *const *values, double v)
{
    family *f = &families[m];
    pthread_mutex_lock(&f->mu);
    find(f, values)->value += v;
    pthread_mutex_unlock(&f->mu);
}

void lr_metrics_observe(lr_metric_id m, const char *const *values, double v)
{
    family *f = &families[m];
    pthread_mutex_lock(&f->mu);
    series *s = find(f, values);
    s->value += v;
    s->count++;
    for (size_t i = 0; i < NBUCKETS; i++) {
        if (v <= buckets[i])
            s->le[i]++;
    }
    pthread_mutex_unlock(&f->mu);
}

double lr_metrics_value(lr_metric_id m, const char *const *values)
{
    family *f = &families[m];
    lr_metrics_text key = {0};
    render_labels(&key, f->label_names, values);
    text_append(&key, "", 1);
    double v = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n; i++) {
        if (!strcmp(f->v[i].labels, key.buf))
            v = f->v[i].value;
    }
    pthread_mutex_unlock(&f->mu);
    free(key.buf);
    return v;
}

void lr_metrics_text_family(lr_metrics_text *t, const char *name, const char *type,
                            const char *help)
{
    lr_metrics_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A float as the text format reads it; integers without a fraction. */
static void append_value(lr_metrics_text *t, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        lr_metrics_text_printf(t, " %.0f\n", v);
    else
        lr_metrics_text_printf(t, " %.9g\n", v);
}

void lr_metrics_text_sample(lr_metrics_text *t, const char *name, const char *const *keys,
                            const char *const *values, size_t n, double v)
{
    text_append(t, name, strlen(name));
    if (n) {
        text_append(t, "{", 1);
        for (size_t i = 0; i < n; i++) {
            lr_metrics_text_printf(t, "%s%s=\"", i ? "," : "", keys[i]);
            append_escaped(t, values[i] ? values[i] : "");
            text_append(t, "\"", 1);
        }
        text_append(t, "}", 1);
    }
    append_value(t, v);
}

/* name_suffix{labels[,extra]} */
static void series_name(lr_metrics_text *t, const family *f, const char *suffix, const series *s,
                        const char *extra)
{
    lr_metrics_text_printf(t, "%s%s", f->name, suffix);
    bool any = *s->labels || extra;
    if (!any)
        return;
    text_append(t, "{", 1);
    text_append(t, s->labels, strlen(s->labels));
    if (extra)
        lr_metrics_text_printf(t, "%s%s", *s->labels ? "," : "", extra);
    text_append(t, "}", 1);
}

static void render_family(lr_metrics_text *t, family *f)
{
    lr_metrics_text_family(t, f->name, f->kind == COUNTER ? "counter" : "histogram", f->help);
    pthread_mutex_lock(&f->mu);
    if (f->n == 0 && !*f->label_names)
        find(f, NULL); /* a family without labels always shows its one series */
    for (size_t i = 0; i < f->n; i++) {
        const series *s = &f->v[i];
        if (f->kind == COUNTER) {
            series_name(t, f, "", s, NULL);
            append_value(t, s->value);
            continue;
        }
        char le[48];
        for (size_t b = 0; b < NBUCKETS; b++) {
            snprintf(le, sizeof le, "le=\"%g\"", buckets[b]);
            series_name(t, f, "_bucket", s, le);
            append_value(t, (double)s->le[b]);
        }
        series_name(t, f, "_bucket", s, "le=\"+Inf\"");
        append_value(t, (double)s->count);
        series_name(t, f, "_sum", s, NULL);
        append_value(t, s->value);
        series_name(t, f, "_count", s, NULL);
        append_value(t, (double)s->count);
    }
    pthread_mutex_unlock(&f->mu);
}

void lr_metrics_render(lr_metrics_text *t)
{
    for (size_t i = 0; i < LR_M_COUNT; i++)
        render_family(t, &families[i]);
}
