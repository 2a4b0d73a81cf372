/* Command-line options of the lensroom subcommands: "--name value" and
 * bare "--flag", anywhere in argv. */
#ifndef LR_CLI_ARGS_H
#define LR_CLI_ARGS_H

#include <stdbool.h>

/* The word after name in argv[0..argc), or NULL when name is absent. */
const char *lr_cli_opt(int argc, char **argv, const char *name);
/* Whether name is one of argv[0..argc). */
bool lr_cli_flag(int argc, char **argv, const char *name);

#endif
