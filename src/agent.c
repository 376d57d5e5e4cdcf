/* agent.c -- turns an --agent spec into a backend. Knows the spec syntax
 * only; what a backend does lives in agent_demo.c, agent_exec.c and
 * agent_http.c. */
#include "agent.h"

#include <stdio.h>
#include <string.h>

#include "aw.h"

int agent_backend_create(const char *spec, const agent_options_t *opts, agent_backend_t **out,
                         char *err, size_t errlen)
{
    *out = NULL;
    if (strcmp(spec, "builtin:demo") == 0)
        return agent_demo_create(opts, out);
    if (strncmp(spec, "exec:", 5) == 0) {
        if (!spec[5]) {
            snprintf(err, errlen, "--agent exec: needs a command");
            return AW_EINVAL;
        }
        return agent_exec_create(spec + 5, opts, out, err, errlen);
    }
    if (strncmp(spec, "http:http://", 12) == 0)
        return agent_http_create(spec + 5, opts, out, err, errlen);
    if (strncmp(spec, "http://", 7) == 0)
        return agent_http_create(spec, opts, out, err, errlen);
    snprintf(err, errlen, "--agent: expected builtin:demo, exec:COMMAND or http:URL, got '%s'",
             spec);
    return AW_EINVAL;
}
