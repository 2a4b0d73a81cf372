/* Internal to the real providers: the Kie.ai and Anthropic halves the
 * router (remote.c) puts together, and what they share (provider.c). */
#ifndef LR_PROVIDERS_REMOTE_H
#define LR_PROVIDERS_REMOTE_H

#include "net/net.h"
#include "providers/provider.h"

lr_provider *lr_kie_new(lr_loop *loop, const lr_remote_options *o);
lr_provider *lr_anthropic_new(lr_loop *loop, const lr_remote_options *o);

/* Ends t with a failure (code, message) and its task id, if any. */
void lr_remote_fail(lr_provider_task *t, const char *task_id, lr_code code, const char *msg);
/* Next delay of an exponential backoff with jitter: base * 1.5^attempt,
 * capped at max_ms. */
int lr_remote_backoff(int base_ms, int attempt, int max_ms);
/* "Authorization: Bearer <key>"-style header, malloc'd into the list. */
struct curl_slist *lr_remote_header(struct curl_slist *l, const char *name, const char *value);

#endif
