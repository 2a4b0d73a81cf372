/* Opening a database: the URL picks the backend. */
#include <string.h>

#include "db/db.h"

bool lr_db_url_is_postgres(const char *url)
{
    return url && (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13));
}

lr_err lr_db_open(const char *url, int pool_size, lr_db **out, char **errmsg)
{
    if (lr_db_url_is_postgres(url))
        return lr_db_pg_open(url, pool_size, out, errmsg);
    return lr_db_sqlite_open(url, pool_size, out, errmsg);
}

void lr_db_close(lr_db *db)
{
    if (db)
        db->ops->close(db);
}
