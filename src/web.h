/* web.h -- static files built into the binary (generated from web/ by the
 * build; see cmake/embed.cmake). */
#ifndef AW_WEB_H
#define AW_WEB_H

#include <stddef.h>

extern const char web_index_html[];
extern const size_t web_index_html_len;

#endif
