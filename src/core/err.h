/* Error codes shared by every module.
 *
 * Functions return an lr_err (LR_OK == 0, failures negative) and deliver
 * results through out-parameters. lr_strerror gives a fixed human text;
 * callers that need more detail carry it in their own out-parameters.
 */
#ifndef LR_ERR_H
#define LR_ERR_H

typedef enum {
    LR_OK = 0,
    LR_ERR_NOMEM = -1,
    LR_ERR_INVALID = -2,      /* caller passed something malformed */
    LR_ERR_NOT_FOUND = -3,    /* no such row / object (or not the caller's) */
    LR_ERR_INSUFFICIENT = -4, /* not enough credits */
    LR_ERR_CONFLICT = -5,     /* state does not allow it, duplicate key */
    LR_ERR_TOO_LARGE = -6,
    LR_ERR_UNSUPPORTED = -7, /* e.g. a MIME type outside the allowlist */
    LR_ERR_IO = -8,
    LR_ERR_DB = -9,
    LR_ERR_UNAVAILABLE = -10, /* backend down, retry later */
    LR_ERR_PROVIDER = -11,
    LR_ERR_DENIED = -12, /* a backend refused our credentials (401/403) */
} lr_err;

const char *lr_strerror(lr_err e);

#endif
