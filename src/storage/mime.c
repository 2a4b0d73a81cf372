#include "storage/mime.h"

#include <string.h>

static const lr_mime types[] = {
    {"image/png", "png", "image"}, {"image/jpeg", "jpg", "image"}, {"image/webp", "webp", "image"},
    {"image/gif", "gif", "image"}, {"video/mp4", "mp4", "video"},  {"video/webm", "webm", "video"},
};

const lr_mime *lr_mime_sniff(const unsigned char *b, size_t n)
{
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8))
        return &types[0];
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return &types[1];
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return &types[2];
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
        return &types[3];
    if (n >= 12 && !memcmp(b + 4, "ftyp", 4))
        return &types[4];
    if (n >= 4 && !memcmp(b, "\x1a\x45\xdf\xa3", 4))
        return &types[5];
    return NULL;
}

const lr_mime *lr_mime_by_ext(const char *ext)
{
    if (!strcmp(ext, "jpeg"))
        return &types[1];
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        if (!strcmp(types[i].ext, ext))
            return &types[i];
    }
    return NULL;
}
