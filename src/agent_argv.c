/* agent_argv.c -- which program an exec agent's command starts (agent_argv.h). */
#include "agent_argv.h"

#include <stdlib.h>
#include <string.h>

#include "aw.h"

/* Words sh reads itself in a first word: the reserved words, and the
 * builtins of dash (some also exist as programs, behaving a little
 * differently). Those made of plain characters are enough here. */
static const char *const sh_words[] = {
    "alias", "bg",       "break",    "case",   "cd",    "chdir",   "command", "continue",
    "do",    "done",     "echo",     "elif",   "else",  "esac",    "eval",    "exec",
    "exit",  "export",   "false",    "fc",     "fg",    "fi",      "for",     "getopts",
    "hash",  "if",       "in",       "jobs",   "kill",  "local",   "printf",  "pwd",
    "read",  "readonly", "return",   "set",    "shift", "test",    "then",    "times",
    "trap",  "true",     "type",     "ulimit", "umask", "unalias", "unset",   "until",
    "wait",  "while",    "function", "select", "time",  ".",       ":"};

/* Is the first word (len bytes, no '/') a program sh would look up on PATH,
 * with PATH set (posix_spawnp searches the server's PATH, which is the one
 * the agent gets: PATH always passes)? */
static bool name_is_program(const char *word, size_t len)
{
    const char *path = getenv("PATH");

    if (!path || !*path)
        return false; /* sh's default PATH differs from libc's: let sh look */
    for (size_t i = 0; i < AW_ARRAY_LEN(sh_words); i++)
        if (strlen(sh_words[i]) == len && strncmp(word, sh_words[i], len) == 0)
            return false;
    return true;
}

char **agent_argv_plain(const char *command)
{
    static const char seps[] = " \t";
    static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                "-_./+,:@%=";
    size_t words = 0, first;
    char **argv;

    for (const char *p = command; *p;) {
        size_t n;
        p += strspn(p, seps);
        n = strspn(p, plain);
        if (p[n] != '\0' && !strchr(seps, p[n]))
            return NULL; /* a character sh would read specially */
        if (n > 0)
            words++;
        p += n;
    }
    command += strspn(command, seps);
    first = strspn(command, plain);
    if (words == 0 || memchr(command, '=', first))
        return NULL; /* an assignment */
    if (!memchr(command, '/', first) && !name_is_program(command, first))
        return NULL; /* sh's own word, or no PATH to look it up on */
    argv = calloc(words + 1, sizeof *argv);
    if (!argv)
        return NULL;
    for (size_t i = 0; i < words; i++) {
        command += strspn(command, seps);
        size_t n = strspn(command, plain);
        if (!(argv[i] = strndup(command, n))) {
            agent_argv_free(argv);
            return NULL;
        }
        command += n;
    }
    return argv;
}

void agent_argv_free(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}
