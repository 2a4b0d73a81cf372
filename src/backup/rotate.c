/* Rotation (backup.h): which archives of a folder to keep.
 *
 * The time of an archive is read from its name (lensroom-backup-
 * YYYYMMDDTHHMMSS.mmmZ.tar.zst), never from the file's mtime, which a
 * copy resets. Only names of that exact shape are ever removed.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "core/util.h"

#define STAMP_LEN 20 /* 20261126T133800.123Z */

int lr_backup_keep_parse(const char *s, lr_backup_keep *k)
{
    *k = (lr_backup_keep){0};
    char *copy = lr_xstrdup(s), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ", ", &save); t && rc == 0; t = strtok_r(NULL, ", ", &save)) {
        size_t n = strlen(t);
        char unit = t[n - 1];
        int *slot = unit == 'd' ? &k->daily : unit == 'w' ? &k->weekly : &k->newest;
        if (unit == 'd' || unit == 'w')
            t[n - 1] = '\0';
        long v;
        if (*slot || lr_parse_long(t, 0, 100000, &v) != 0)
            rc = -1;
        else
            *slot = (int)v;
    }
    free(copy);
    if (k->newest + k->daily + k->weekly == 0)
        rc = -1;
    return rc;
}

/* Days since the epoch of an archive's name; -1 when it is not one. */
static long archive_day(const char *name)
{
    size_t pl = strlen(LR_BACKUP_PREFIX), sl = strlen(LR_BACKUP_SUFFIX), n = strlen(name);
    if (n != pl + STAMP_LEN + sl || strncmp(name, LR_BACKUP_PREFIX, pl) != 0 ||
        strcmp(name + pl + STAMP_LEN, LR_BACKUP_SUFFIX) != 0)
        return -1;
    const char *s = name + pl;
    for (int i = 0; i < STAMP_LEN; i++) {
        bool digit = s[i] >= '0' && s[i] <= '9';
        char want = i == 8 ? 'T' : i == 15 ? '.' : i == 19 ? 'Z' : 0;
        if (want ? s[i] != want : !digit)
            return -1;
    }
    struct tm tm = {0};
    tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') - 1900;
    tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
    tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
    time_t t = timegm(&tm);
    return t < 0 ? -1 : (long)(t / 86400);
}

static int newest_first(const void *a, const void *b)
{
    return -strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

void lr_backup_keep_select(const char *const *names, size_t n, const lr_backup_keep *k, bool *keep)
{
    /* Sort pointers into names, newest first (the stamp sorts as text). */
    const char *const **order = lr_xcalloc(n ? n : 1, sizeof *order);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        keep[i] = archive_day(names[i]) < 0;
        if (!keep[i])
            order[m++] = &names[i];
    }
    qsort(order, m, sizeof *order, newest_first);
    long last_day = -1, last_week = -1;
    int days = 0, weeks = 0;
    for (size_t j = 0; j < m; j++) {
        size_t i = (size_t)(order[j] - names);
        long day = archive_day(names[i]);
        /* Weeks begin on Monday (ISO); 1970-01-05, day 4, was one. */
        long week = (day + 3) / 7;
        if ((int)j < k->newest)
            keep[i] = true;
        if (day != last_day && days < k->daily) {
            keep[i] = true;
            days++;
        }
        if (week != last_week && weeks < k->weekly) {
            keep[i] = true;
            weeks++;
        }
        last_day = day;
        last_week = week;
    }
    free(order);
}

int lr_backup_rotate(const char *dir, const lr_backup_keep *k,
                     void (*removed)(void *ctx, const char *name), void *ctx)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (archive_day(de->d_name) < 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = lr_xrealloc(names, cap * sizeof *names);
        }
        names[n++] = lr_xstrdup(de->d_name);
    }
    closedir(d);
    bool *keep = lr_xcalloc(n ? n : 1, sizeof *keep);
    lr_backup_keep_select((const char *const *)names, n, k, keep);
    int kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (keep[i]) {
            kept++;
            continue;
        }
        char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, names[i]) < 0)
            abort();
        if (unlink(path) == 0 && removed)
            removed(ctx, names[i]);
        free(path);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(keep);
    return kept;
}
