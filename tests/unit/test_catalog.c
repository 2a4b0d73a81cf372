/* The model catalog: the original's models and costs, params validation,
 * and override files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "providers/catalog.h"

static void test_builtin_catalog_has_original_models(void **state)
{
    lr_catalog *c = lr_catalog_load(NULL, NULL);
    assert_non_null(c);
    struct {
        const char *id;
        int cost;
        const char *cap;
        int enabled;
    } want[] = {{"anthropic_text", 2, "text", 1},   {"seedream_image", 8, "image", 1},
                {"nano_banana_edit", 8, "edit", 1}, {"nano_banana_pro_edit", 10, "edit", 1},
                {"veo3_video", 25, "video", 1},     {"midjourney_image", 10, "image", 0}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const lr_model *m = lr_catalog_find(c, want[i].id);
        assert_non_null(m);
        assert_int_equal(m->credit_cost, want[i].cost);
        assert_string_equal(m->capability, want[i].cap);
        assert_int_equal(m->enabled, want[i].enabled);
    }
    json_t *pub = lr_catalog_public(c);
    assert_int_equal(json_array_size(pub), 5); /* midjourney is disabled */
    json_decref(pub);
    assert_null(lr_catalog_find(c, "nope"));
    lr_catalog_free(c);
}

static int validate(const lr_model *m, const char *params, json_t **out, char **field)
{
    json_t *p = params ? json_loads(params, 0, NULL) : NULL;
    char *msg = NULL;
    *field = NULL;
    int rc = lr_model_validate_params(m, p, out, field, &msg);
    free(msg);
    json_decref(p);
    return rc;
}

static void test_params_defaults_and_rejections(void **state)
{
    lr_catalog *c = lr_catalog_load(NULL, NULL);
    const lr_model *seed = lr_catalog_find(c, "seedream_image");
    const lr_model *text = lr_catalog_find(c, "anthropic_text");
    const lr_model *pro = lr_catalog_find(c, "nano_banana_pro_edit");
    json_t *out = NULL;
    char *field = NULL;

    assert_int_equal(validate(seed, "{}", &out, &field), 0);
    assert_string_equal(json_string_value(json_object_get(out, "image_size")), "square_hd");
    json_decref(out);
    assert_int_equal(validate(seed, NULL, &out, &field), 0);
    json_decref(out);

    /* the original front end's spellings become Kie's */
    assert_int_equal(validate(seed, "{\"image_size\":\"portrait\"}", &out, &field), 0);
    assert_string_equal(json_string_value(json_object_get(out, "image_size")), "portrait_4_3");
    json_decref(out);
    assert_int_equal(validate(seed, "{\"image_size\":\"landscape\"}", &out, &field), 0);
    assert_string_equal(json_string_value(json_object_get(out, "image_size")), "landscape_4_3");
    json_decref(out);

    assert_int_equal(validate(seed, "{\"image_size\":\"huge\"}", &out, &field), LR_ERR_INVALID);
    assert_string_equal(field, "image_size");
    free(field);
    assert_int_equal(validate(seed, "{\"image_size\":3}", &out, &field), LR_ERR_INVALID);
    free(field);
    assert_int_equal(validate(seed, "{\"steps\":3}", &out, &field), LR_ERR_INVALID);
    assert_string_equal(field, "steps");
    free(field);
    assert_int_equal(validate(seed, "[1]", &out, &field), LR_ERR_INVALID);
    free(field);

    assert_int_equal(validate(text, "{\"temperature\":1.5}", &out, &field), LR_ERR_INVALID);
    assert_string_equal(field, "temperature");
    free(field);
    assert_int_equal(validate(text, "{\"max_tokens\":0}", &out, &field), LR_ERR_INVALID);
    free(field);
    assert_int_equal(validate(text, "{\"temperature\":0.2}", &out, &field), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "max_tokens")), 800);
    json_decref(out);

    assert_int_equal(validate(pro, "{\"resolution\":\"8K\"}", &out, &field), LR_ERR_INVALID);
    free(field);
    assert_int_equal(validate(pro, "{\"useGoogleSearch\":true}", &out, &field), LR_ERR_INVALID);
    assert_string_equal(field, "useGoogleSearch"); /* not a Kie field of nano-banana-pro */
    free(field);
    assert_int_equal(
        validate(pro, "{\"aspectRatio\":\"16:9\",\"resolution\":\"4K\"}", &out, &field), 0);
    json_decref(out);
    lr_catalog_free(c);
}

static void test_override_file_errors_are_reported(void **state)
{
    char path[] = "/tmp/lr-models-XXXXXX";
    int fd = mkstemp(path);
    const char *bad = "[{\"id\":\"x\",\"capability\":\"image\",\"creditCost\":0}]";
    assert_int_equal(write(fd, bad, strlen(bad)), (int)strlen(bad));
    close(fd);
    char *err = NULL;
    assert_null(lr_catalog_load(path, &err));
    assert_non_null(strstr(err, "creditCost"));
    free(err);

    FILE *f = fopen(path, "w");
    fputs("[{\"id\":\"solo\",\"capability\":\"image\",\"creditCost\":3,\"paramsSchema\":{}}]", f);
    fclose(f);
    lr_catalog *c = lr_catalog_load(path, &err);
    assert_non_null(c);
    assert_int_equal(lr_catalog_find(c, "solo")->credit_cost, 3);
    assert_null(lr_catalog_find(c, "seedream_image"));
    lr_catalog_free(c);

    f = fopen(path, "w");
    fputs("{not json", f);
    fclose(f);
    assert_null(lr_catalog_load(path, &err));
    assert_non_null(strstr(err, "not valid JSON"));
    free(err);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_catalog_has_original_models),
        cmocka_unit_test(test_params_defaults_and_rejections),
        cmocka_unit_test(test_override_file_errors_are_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
