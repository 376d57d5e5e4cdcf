/* web.c -- looks up the static files embedded in the binary. */
#include "web.h"

#include <string.h>

const web_file_t *web_find(const char *path)
{
    for (const web_file_t *f = web_files; f->path; f++)
        if (strcmp(f->path, path) == 0)
            return f;
    return NULL;
}
