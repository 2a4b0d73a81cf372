#include "core/err.h"

const char *lr_strerror(lr_err e)
{
    switch (e) {
    case LR_OK: return "ok";
    case LR_ERR_NOMEM: return "out of memory";
    case LR_ERR_INVALID: return "invalid argument";
    case LR_ERR_NOT_FOUND: return "not found";
    case LR_ERR_INSUFFICIENT: return "insufficient credits";
    case LR_ERR_CONFLICT: return "conflict";
    case LR_ERR_TOO_LARGE: return "too large";
    case LR_ERR_UNSUPPORTED: return "unsupported";
    case LR_ERR_IO: return "i/o error";
    case LR_ERR_DB: return "database error";
    case LR_ERR_UNAVAILABLE: return "unavailable";
    case LR_ERR_PROVIDER: return "provider error";
    case LR_ERR_DENIED: return "access denied";
    }
    return "unknown error";
}
