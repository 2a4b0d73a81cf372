/* The provider interface's wrappers (provider.h) and what the real
 * providers share (remote.h): failure reporting, backoff, headers and the
 * callback token. */
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "providers/remote.h"

bool lr_provider_supports(lr_provider *p, const lr_model *m)
{
    return !p->ops->supports || p->ops->supports(p, m);
}

const char *lr_provider_name_for(lr_provider *p, const lr_model *m)
{
    return p->ops->name_for ? p->ops->name_for(p, m) : p->name;
}

void lr_provider_poke(lr_provider *p, lr_provider_task *t)
{
    if (p && p->ops->poke)
        p->ops->poke(p, t);
}

void lr_provider_release(lr_provider *p, lr_provider_task *t)
{
    if (p && p->ops->release)
        p->ops->release(p, t);
}

void lr_provider_callback_token(const unsigned char *key, size_t key_len, const char *generation_id,
                                int variant, char out[65])
{
    char msg[96];
    int n = snprintf(msg, sizeof msg, "kie-callback:%s:%d", generation_id, variant);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, (size_t)n, mac, &mac_len);
    lr_hex(mac, 32, out);
}

void lr_remote_fail(lr_provider_task *t, const char *task_id, lr_code code, const char *msg)
{
    lr_provider_result r = {.ok = false,
                            .error = code,
                            .error_message = msg,
                            .task_id = task_id && *task_id ? task_id : NULL};
    t->done(t, &r);
}

int lr_remote_backoff(int base_ms, int attempt, int max_ms)
{
    double d = base_ms;
    for (int i = 0; i < attempt && d < max_ms; i++)
        d *= 1.5;
    if (d > max_ms)
        d = max_ms;
    return (int)(d * (0.85 + 0.3 * lr_random_unit()));
}

struct curl_slist *lr_remote_header(struct curl_slist *l, const char *name, const char *value)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s: %s", name, value);
    struct curl_slist *n = curl_slist_append(l, buf);
    if (!n)
        abort();
    return n;
}
