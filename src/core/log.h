/* Structured logging: one JSON object per line on stderr.
 *
 * Every line carries ts, level and msg; request-scoped lines add the
 * request id so an operator can follow one request through the server.
 * Thread-safe (one fputs per line). Never pass secrets here: nothing
 * filters them.
 */
#ifndef LR_LOG_H
#define LR_LOG_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"

typedef enum { LR_LOG_DEBUG = 0, LR_LOG_INFO, LR_LOG_WARN, LR_LOG_ERROR } lr_log_level;

void lr_log_set_level(lr_log_level level);
lr_err lr_log_level_parse(const char *s, lr_log_level *out);
bool lr_log_enabled(lr_log_level level);

/* msg is a printf format; rid may be NULL. */
void lr_log(lr_log_level level, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs msg with the given extra fields (the object is consumed). */
void lr_log_fields(lr_log_level level, const char *rid, const char *msg, json_t *fields);

#define lr_debug(...) lr_log(LR_LOG_DEBUG, NULL, __VA_ARGS__)
#define lr_info(...) lr_log(LR_LOG_INFO, NULL, __VA_ARGS__)
#define lr_warn(...) lr_log(LR_LOG_WARN, NULL, __VA_ARGS__)
#define lr_error(...) lr_log(LR_LOG_ERROR, NULL, __VA_ARGS__)

#endif
