/* web.h -- static files built into the binary: the demo page (web/) and the
 * JavaScript client (clients/js/agentwire.js). Generated at build time by
 * cmake/embed.cmake; the table ends with a NULL path. */
#ifndef AW_WEB_H
#define AW_WEB_H

#include <stddef.h>

typedef struct web_file {
    const char *path; /* URL path, "/" for the page */
    const char *content_type;
    const char *data;
    size_t len;
} web_file_t;

extern const web_file_t web_files[];

/* The file served at path, or NULL. */
const web_file_t *web_find(const char *path);

#endif
