/* Content type by magic bytes, against the allowlist (png, jpeg, webp,
 * gif, mp4, webm). A provider's Content-Type or file name is never
 * trusted: only the bytes decide. */
#ifndef LR_MIME_H
#define LR_MIME_H

#include <stddef.h>

typedef struct {
    const char *content_type;
    const char *ext;
    const char *kind; /* "image" or "video" */
} lr_mime;

/* Bytes needed to decide. */
#define LR_MIME_SNIFF_LEN 16

/* NULL when the bytes are not an allowed type. */
const lr_mime *lr_mime_sniff(const unsigned char *buf, size_t len);
/* Type for a stored key's extension (keys are only ever made by us). */
const lr_mime *lr_mime_by_ext(const char *ext);

#endif
