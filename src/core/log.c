/* JSON-lines logger. Lines are built whole and written with a single
 * fputs under the stdio lock, so concurrent threads never interleave. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

static lr_log_level g_level = LR_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lr_log_set_level(lr_log_level level)
{
    g_level = level;
}

bool lr_log_enabled(lr_log_level level)
{
    return level >= g_level;
}

lr_err lr_log_level_parse(const char *s, lr_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (lr_log_level)i;
            return LR_OK;
        }
    }
    return LR_ERR_INVALID;
}

void lr_log_fields(lr_log_level level, const char *rid, const char *msg, json_t *fields)
{
    if (level < g_level) {
        json_decref(fields);
        return;
    }
    char ts[32];
    lr_time_iso(lr_now_ms(), ts);
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_names[level]));
    if (rid)
        json_object_set_new(o, "request_id", json_string(rid));
    json_object_set_new(o, "msg", json_string(msg));
    if (fields)
        json_object_update(o, fields);
    json_decref(fields);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (line) {
        flockfile(stderr);
        fputs(line, stderr);
        fputc('\n', stderr);
        funlockfile(stderr);
        free(line);
    }
}

void lr_log(lr_log_level level, const char *rid, const char *fmt, ...)
{
    if (level < g_level)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lr_log_fields(level, rid, buf, NULL);
}
