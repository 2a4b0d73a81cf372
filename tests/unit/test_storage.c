/* Storage: key rules, magic-byte typing, and the streaming sink on the
 * local folder backend. */
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

#include "core/util.h"
#include "storage/storage.h"

static const char USER[] = "3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f";
static const unsigned char PNG_HEAD[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

static void test_key_rules_refuse_escapes(void **state)
{
    assert_true(lr_store_key_valid("u/photo/g.png"));
    assert_true(lr_store_key_valid("a-b_c/d.e/f.mp4"));
    const char *bad[] = {"",         "/abs/path.png", "../x.png",  "u/../../x", "u/./x",
                         "u//x",     "u/x/",          "u/.hidden", "u/x\\y",    "u/x y",
                         "u/%2e%2e", "u/..",          "..",        "."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(lr_store_key_valid(bad[i]));
}

static void test_sniff_allowlist(void **state)
{
    assert_string_equal(lr_mime_sniff(PNG_HEAD, 16)->ext, "png");
    assert_string_equal(lr_mime_sniff((const unsigned char *)"\xff\xd8\xff\xe0", 4)->ext, "jpg");
    assert_string_equal(lr_mime_sniff((const unsigned char *)"RIFF\0\0\0\0WEBPVP8 ", 16)->ext,
                        "webp");
    assert_string_equal(lr_mime_sniff((const unsigned char *)"GIF89a", 6)->ext, "gif");
    assert_string_equal(lr_mime_sniff((const unsigned char *)"\0\0\0\x20"
                                                             "ftypisom",
                                      12)
                            ->ext,
                        "mp4");
    assert_string_equal(lr_mime_sniff((const unsigned char *)"\x1a\x45\xdf\xa3", 4)->ext, "webm");
    assert_null(lr_mime_sniff((const unsigned char *)"<!DOCTYPE html>", 15));
    assert_null(lr_mime_sniff((const unsigned char *)"%PDF-1.7", 8));
    assert_null(lr_mime_sniff((const unsigned char *)"\x89PN", 3));
}

typedef struct {
    char dir[64];
    lr_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/lr-unit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(lr_store_fs_open(f->dir, "generations", "http://h", &f->s), LR_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    lr_store_close(f->s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void test_sink_names_object_by_bytes_and_streams(void **state)
{
    fixture *f = *state;
    lr_blob_sink *k;
    assert_int_equal(lr_blob_begin(f->s, USER, "gen1", 1 << 20, &k), LR_OK);
    /* bytes arrive in tiny pieces: the type is decided once 16 are in */
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(lr_blob_write(k, PNG_HEAD + i, 1), LR_OK);
    char body[5000];
    memset(body, 'x', sizeof body);
    assert_int_equal(lr_blob_write(k, body, sizeof body), LR_OK);
    char *url = NULL, *key = NULL;
    const lr_mime *m = NULL;
    assert_int_equal(lr_blob_finish(k, &url, &key, &m), LR_OK);
    assert_string_equal(m->content_type, "image/png");
    char want[256];
    snprintf(want, sizeof want, "%s/photo/gen1.png", USER);
    assert_string_equal(key, want);
    snprintf(want, sizeof want, "http://h/storage/v1/object/public/generations/%s/photo/gen1.png",
             USER);
    assert_string_equal(url, want);
    int fd;
    struct stat st;
    assert_int_equal(f->s->ops->open_local(f->s, key, &fd, &st), LR_OK);
    assert_int_equal(st.st_size, 16 + sizeof body);
    close(fd);
    free(url);
    free(key);
}

static void test_sink_refuses_unknown_type_and_leaves_nothing(void **state)
{
    fixture *f = *state;
    lr_blob_sink *k;
    assert_int_equal(lr_blob_begin(f->s, USER, "gen2", 1 << 20, &k), LR_OK);
    assert_int_equal(lr_blob_write(k, "<html><body>not an image</body></html>", 38),
                     LR_ERR_UNSUPPORTED);
    lr_blob_abort(k);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -type f)\"", f->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_sink_aborts_past_limit(void **state)
{
    fixture *f = *state;
    lr_blob_sink *k;
    assert_int_equal(lr_blob_begin(f->s, USER, "gen3", 1000, &k), LR_OK);
    assert_int_equal(lr_blob_write(k, PNG_HEAD, 16), LR_OK);
    char body[1000] = {0};
    assert_int_equal(lr_blob_write(k, body, sizeof body), LR_ERR_TOO_LARGE);
    lr_blob_abort(k);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -type f)\"", f->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_local_open_refuses_traversal(void **state)
{
    fixture *f = *state;
    int fd;
    struct stat st;
    assert_int_equal(f->s->ops->open_local(f->s, "../../../etc/passwd", &fd, &st), LR_ERR_INVALID);
    assert_int_equal(f->s->ops->open_local(f->s, "/etc/passwd", &fd, &st), LR_ERR_INVALID);
}

static bool exists(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void touch(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fclose(fp);
}

/* A temp file is removed only once nobody holds it, only with our name. */
static void test_sweep_takes_only_abandoned_temp_files(void **state)
{
    fixture *f = *state;
    char live[128];
    snprintf(live, sizeof live, "%s/.tmp-XXXXXX", f->dir);
    int fd = lr_temp_create(live);
    assert_true(fd >= 0);
    touch(f->dir, ".tmp-dead01");
    touch(f->dir, ".tmp-toolong");
    touch(f->dir, "kept.png");
    assert_int_equal(lr_temp_sweep(f->dir, ".tmp-", 0, NULL), 1);
    assert_false(exists(f->dir, ".tmp-dead01"));
    assert_int_equal(access(live, F_OK), 0); /* its writer (this fd) still holds it */
    assert_true(exists(f->dir, ".tmp-toolong"));
    assert_true(exists(f->dir, "kept.png"));
    close(fd); /* the writer is gone */
    assert_int_equal(lr_temp_sweep(f->dir, ".tmp-", 0, NULL), 1);
    assert_int_not_equal(access(live, F_OK), 0);
}

/* A sweep leaves what changed after its cutoff: a writer of this process
 * that has made its file and not locked it yet. */
static void test_sweep_leaves_files_newer_than_its_cutoff(void **state)
{
    fixture *f = *state;
    touch(f->dir, ".tmp-new001");
    struct timespec past = {.tv_sec = 1};
    assert_int_equal(lr_temp_sweep(f->dir, ".tmp-", 0, &past), 0);
    assert_true(exists(f->dir, ".tmp-new001"));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    now.tv_sec += 1; /* file times come from a coarser clock */
    assert_int_equal(lr_temp_sweep(f->dir, ".tmp-", 0, &now), 1);
    assert_false(exists(f->dir, ".tmp-new001"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_rules_refuse_escapes),
        cmocka_unit_test(test_sniff_allowlist),
        cmocka_unit_test_setup_teardown(test_sink_names_object_by_bytes_and_streams, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sink_refuses_unknown_type_and_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sink_aborts_past_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_open_refuses_traversal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_leaves_files_newer_than_its_cutoff, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sweep_takes_only_abandoned_temp_files, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
