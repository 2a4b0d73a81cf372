#include "core/vocab.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
#define XX(name, s) s,
    LR_GEN_STATUS_MAP(XX)
#undef XX
};

static const char *const stage_names[] = {NULL,
#define XX(name, s) s,
                                          LR_GEN_STAGE_MAP(XX)
#undef XX
};

static const struct {
    const char *name;
    int status;
    const char *message;
} codes[] = {{NULL, 500, "Internal error"},
#define XX(name, s, status, msg) {s, status, msg},
             LR_ERROR_MAP(XX)
#undef XX
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The index of s in names[from..n), or -1. */
static int find(const char *const *names, size_t from, size_t n, const char *s)
{
    for (size_t i = from; s && i < n; i++) {
        if (!strcmp(names[i], s))
            return (int)i;
    }
    return -1;
}

const char *lr_gen_status_name(lr_gen_status s)
{
    return (unsigned)s < COUNT(status_names) ? status_names[s] : NULL;
}

bool lr_gen_status_parse(const char *s, lr_gen_status *out)
{
    int i = find(status_names, 0, COUNT(status_names), s);
    if (i >= 0)
        *out = (lr_gen_status)i;
    return i >= 0;
}

bool lr_gen_status_unfinished(lr_gen_status s)
{
    return s == LR_GEN_PENDING || s == LR_GEN_PROCESSING;
}

const char *lr_gen_stage_name(lr_gen_stage s)
{
    return (unsigned)s < COUNT(stage_names) ? stage_names[s] : NULL;
}

bool lr_gen_stage_parse(const char *s, lr_gen_stage *out)
{
    int i = find(stage_names, 1, COUNT(stage_names), s);
    if (i >= 0)
        *out = (lr_gen_stage)i;
    return i >= 0;
}

const char *lr_code_name(lr_code c)
{
    return (unsigned)c < COUNT(codes) ? codes[c].name : NULL;
}

bool lr_code_parse(const char *s, lr_code *out)
{
    for (size_t i = 1; s && i < COUNT(codes); i++) {
        if (!strcmp(codes[i].name, s)) {
            *out = (lr_code)i;
            return true;
        }
    }
    return false;
}

int lr_code_http_status(lr_code c)
{
    return (unsigned)c < COUNT(codes) ? codes[c].status : 500;
}

const char *lr_code_message(lr_code c)
{
    return (unsigned)c < COUNT(codes) ? codes[c].message : codes[0].message;
}

void lr_code_vformat(char *buf, size_t size, lr_code c, const char *fmt, va_list ap)
{
    if (fmt)
        vsnprintf(buf, size, fmt, ap);
    else
        snprintf(buf, size, "%s", lr_code_message(c));
}

json_t *lr_error_body(const char *code, const char *msg, json_t *extra)
{
    json_t *o = json_pack("{s:b, s:s, s:s}", "success", 0, "error", msg, "code", code);
    if (extra) {
        json_object_update(o, extra);
        json_decref(extra);
    }
    return o;
}
