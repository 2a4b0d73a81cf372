/* Backups: the rotation policy (parsing, which archives a folder keeps)
 * and the archive format's round trip with its hashes. The whole flow
 * through the binary is in tests/integration/test_backup.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/archive.h"
#include "backup/backup.h"
#include "core/util.h"

static void test_keep_policy_parses_newest_daily_weekly(void **state)
{
    lr_backup_keep k;
    assert_int_equal(lr_backup_keep_parse("7d,4w", &k), 0);
    assert_int_equal(k.newest, 0);
    assert_int_equal(k.daily, 7);
    assert_int_equal(k.weekly, 4);
    assert_int_equal(lr_backup_keep_parse("3, 7d, 4w", &k), 0);
    assert_int_equal(k.newest, 3);
    assert_int_equal(lr_backup_keep_parse("2", &k), 0);
    assert_int_equal(k.newest, 2);
    const char *bad[] = {"", "seven", "7x", "7d,7d", "0", "0d,0w", "-1", "d"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_not_equal(lr_backup_keep_parse(bad[i], &k), 0);
}

/* Archive names of day d after Monday 2026-01-05, at hour h. */
static char *name_at(int d, int h)
{
    int y = 2026, m = 1, day = 5 + d;
    static const int len[] = {31, 28, 31, 30};
    while (day > len[m - 1]) {
        day -= len[m - 1];
        m++;
    }
    char *s = NULL;
    if (asprintf(&s, LR_BACKUP_PREFIX "%04d%02d%02dT%02d0000.000Z" LR_BACKUP_SUFFIX, y, m, day, h) <
        0)
        abort();
    return s;
}

static void test_rotation_keeps_the_newest_of_recent_days_and_weeks(void **state)
{
    /* Two backups a day (06:00, 18:00) for 60 days, plus names that are
     * not archives. Day 59 is a Thursday of the ninth week. */
    enum { DAYS = 60, N = DAYS * 2 + 2 };
    char *names[N];
    for (int d = 0; d < DAYS; d++) {
        names[2 * d] = name_at(d, 18); /* any order */
        names[2 * d + 1] = name_at(d, 6);
    }
    names[N - 2] = lr_xstrdup("notes.txt");
    names[N - 1] = lr_xstrdup(LR_BACKUP_PREFIX "garbage" LR_BACKUP_SUFFIX);
    bool keep[N];
    lr_backup_keep k = {.daily = 7, .weekly = 4};
    lr_backup_keep_select((const char *const *)names, N, &k, keep);
    int kept = 0;
    for (int i = 0; i < N; i++)
        kept += keep[i];
    /* days 53..59 at 18:00; weeks 8 and 7 are covered by those; week 6's
     * newest is day 48, week 5's day 41; and the two foreign names. */
    assert_int_equal(kept, 7 + 2 + 2);
    for (int d = 53; d < DAYS; d++)
        assert_true(keep[2 * d]);
    assert_true(keep[2 * 48]);
    assert_true(keep[2 * 41]);
    assert_false(keep[2 * 59 + 1]); /* the older one of a kept day */
    assert_false(keep[2 * 47]);
    assert_true(keep[N - 2] && keep[N - 1]);

    lr_backup_keep newest = {.newest = 3};
    lr_backup_keep_select((const char *const *)names, N, &newest, keep);
    kept = 0;
    for (int i = 0; i < N - 2; i++)
        kept += keep[i];
    assert_int_equal(kept, 3);
    assert_true(keep[2 * 59] && keep[2 * 59 + 1] && keep[2 * 58]);
    for (int i = 0; i < N; i++)
        free(names[i]);
}

static int removed_count;
static void on_removed(void *ctx, const char *name)
{
    (void)ctx;
    assert_non_null(strstr(name, LR_BACKUP_PREFIX));
    removed_count++;
}

static void test_rotate_removes_only_archives_beyond_the_policy(void **state)
{
    char dir[] = "/tmp/lensroom-rotate-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512];
    for (int d = 0; d < 5; d++) {
        char *n = name_at(d, 12);
        snprintf(path, sizeof path, "%s/%s", dir, n);
        fclose(fopen(path, "w"));
        free(n);
    }
    snprintf(path, sizeof path, "%s/other.tar.zst", dir);
    fclose(fopen(path, "w"));
    lr_backup_keep k = {.newest = 2};
    removed_count = 0;
    assert_int_equal(lr_backup_rotate(dir, &k, on_removed, NULL), 2);
    assert_int_equal(removed_count, 3);
    assert_int_equal(access(path, F_OK), 0);
    char *newest = name_at(4, 12);
    snprintf(path, sizeof path, "%s/%s", dir, newest);
    assert_int_equal(access(path, F_OK), 0);
    free(newest);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static lr_err count_bytes(void *ctx, const void *buf, size_t len)
{
    (void)buf;
    *(size_t *)ctx += len;
    return LR_OK;
}

static void test_archive_round_trip_hashes_each_entry(void **state)
{
    char dir[] = "/tmp/lensroom-archive-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/a.tar.zst", dir);
    lr_archive_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(lr_archive_create(path, &w, &err), LR_OK);
    char sha_abc[LR_SHA256_HEX], sha_big[LR_SHA256_HEX];
    size_t big_len = 300 * 1000;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(lr_archive_add_buf(w, "abc", "abc", 3, sha_abc, &err), LR_OK);
    assert_string_equal(sha_abc,
                        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(lr_archive_add_buf(w, "dir/big", big, big_len, sha_big, &err), LR_OK);
    assert_int_equal(access(path, F_OK), -1); /* only the .partial until finished */
    assert_int_equal(lr_archive_finish(w, &err), LR_OK);

    lr_archive_reader *r = NULL;
    assert_int_equal(lr_archive_open(path, &r, &err), LR_OK);
    const char *name;
    int64_t size, got;
    char sha[LR_SHA256_HEX];
    size_t seen = 0;
    assert_int_equal(lr_archive_next(r, &name, &size, &err), 1);
    assert_string_equal(name, "abc");
    assert_int_equal(lr_archive_read(r, count_bytes, &seen, sha, &got, &err), LR_OK);
    assert_string_equal(sha, sha_abc);
    assert_int_equal(lr_archive_next(r, &name, &size, &err), 1);
    assert_string_equal(name, "dir/big");
    assert_int_equal(size, (int64_t)big_len);
    assert_int_equal(lr_archive_read(r, count_bytes, &seen, sha, &got, &err), LR_OK);
    assert_string_equal(sha, sha_big);
    assert_int_equal(seen, big_len + 3);
    assert_int_equal(lr_archive_next(r, &name, &size, &err), 0);
    lr_archive_close(r);
    free(big);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void touch(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("half", f);
    fclose(f);
}

static bool exists_in(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* A killed backup leaves its partial archive and snapshot file unlocked:
 * the sweep removes them; a live writer's (locked) and finished archives
 * stay. */
static void test_sweep_removes_only_what_dead_backups_left(void **state)
{
    (void)state;
    char dir[] = "/tmp/lensroom-sweep-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *dead = "lensroom-backup-20261101T000000.000Z.tar.zst";
    const char *live = "lensroom-backup-20261102T000000.000Z.tar.zst";
    char name[256], path[512];
    snprintf(name, sizeof name, "%s.partial", dead);
    touch(dir, name);
    snprintf(name, sizeof name, ".%s.db", dead);
    touch(dir, name);
    snprintf(name, sizeof name, ".%s.db-journal", dead);
    touch(dir, name);
    touch(dir, "lensroom-backup-20261031T000000.000Z.tar.zst"); /* a finished one */
    touch(dir, "notes.partial");                                /* not ours */
    snprintf(path, sizeof path, "%s/%s", dir, live);
    lr_archive_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(lr_archive_create(path, &w, &err), LR_OK);
    snprintf(name, sizeof name, ".%s.db", live);
    touch(dir, name); /* the live backup's snapshot */

    assert_int_equal(lr_backup_sweep(dir), 3);
    snprintf(name, sizeof name, "%s.partial", dead);
    assert_false(exists_in(dir, name));
    snprintf(name, sizeof name, "%s.partial", live);
    assert_true(exists_in(dir, name));
    snprintf(name, sizeof name, ".%s.db", live);
    assert_true(exists_in(dir, name));
    assert_true(exists_in(dir, "lensroom-backup-20261031T000000.000Z.tar.zst"));
    assert_true(exists_in(dir, "notes.partial"));
    lr_archive_abort(w); /* the writer gone, its snapshot file is a leftover too */
    assert_int_equal(lr_backup_sweep(dir), 1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_policy_parses_newest_daily_weekly),
        cmocka_unit_test(test_rotation_keeps_the_newest_of_recent_days_and_weeks),
        cmocka_unit_test(test_rotate_removes_only_archives_beyond_the_policy),
        cmocka_unit_test(test_archive_round_trip_hashes_each_entry),
        cmocka_unit_test(test_sweep_removes_only_what_dead_backups_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
