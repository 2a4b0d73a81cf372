#include "cli/args.h"

#include <string.h>

const char *lr_cli_opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    }
    return NULL;
}

bool lr_cli_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], name))
            return true;
    }
    return false;
}
