/* Per-user request rate for POST /api/infer: a token bucket per user
 * (rate_per_min tokens a minute, bursts up to the same number), kept in
 * this process's memory; idle full buckets are dropped. Thread-safe.
 * With several processes each applies its own limit. */
#ifndef LR_RATELIMIT_H
#define LR_RATELIMIT_H

#include <stdbool.h>

typedef struct lr_ratelimit lr_ratelimit;

lr_ratelimit *lr_ratelimit_new(int rate_per_min); /* 0: no limit */
/* true when user may go ahead (a token is taken); else *retry_after_s says
 * when the next token comes. */
bool lr_ratelimit_take(lr_ratelimit *l, const char *user, int *retry_after_s);
void lr_ratelimit_free(lr_ratelimit *l);

#endif
