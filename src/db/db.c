#include "db/db.h"

#include <stdlib.h>

lr_err lr_db_open(const char *url, int pool_size, lr_db **out, char **errmsg)
{
    return lr_db_sqlite_open(url, pool_size, out, errmsg);
}

void lr_db_close(lr_db *db)
{
    if (db)
        db->ops->close(db);
}
