/* The operator's commands: `lensroom generations list|show`, `lensroom
 * credits take`, `lensroom users top`, `lensroom analytics`; and the
 * analytics JSON that GET /api/admin/analytics answers with too, so the
 * command line and the dashboard show the same numbers.
 */
#ifndef LR_CLI_ADMIN_H
#define LR_CLI_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "db/admin.h"

extern const char lr_cli_generations_usage[];
extern const char lr_cli_users_usage[];
extern const char lr_cli_analytics_usage[];
extern const char lr_cli_take_usage[];
extern const char lr_cli_admin_link_usage[];

/* argv[0] is the command's name. Return the exit code: 0 done, 1 failed,
 * 2 bad usage. */
int lr_cli_generations(int argc, char **argv);
int lr_cli_users(int argc, char **argv);
int lr_cli_analytics(int argc, char **argv);
/* argv[0] is "take": USER AMOUNT --reason TEXT [--key KEY]. */
int lr_cli_credits_take(int argc, char **argv);

/* `lensroom admin-link [--user ID] [--ttl S]`: prints a one-time sign-in
 * URL for the dashboard. */
int lr_cli_admin_link(int argc, char **argv);

/* A time for --since/--until and ?since=/?until=: "7d" or "24h" (before
 * now_ms), "YYYY-MM-DD" (midnight UTC) or an ISO-8601 time. *out: ISO,
 * UTC, milliseconds. False when s is none of these. */
bool lr_cli_parse_time(const char *s, int64_t now_ms, char out[32]);

/* {since, until, creditsPerDay: [{day, spent, bought, refunded, granted}],
 *  generationsPerModelPerDay: [{day, model, count}], models: [{model,
 *  total, succeeded, failed, canceled, successRate, p50Ms, p95Ms}],
 *  refunds: {credits}, topUsers: [{userId, spent, generations}]}; new
 * reference. */
json_t *lr_cli_analytics_json(const lr_analytics *x, const char *since, const char *until);

#endif
