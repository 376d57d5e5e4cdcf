/* agent_argv.h -- which program an exec agent's command starts.
 *
 * A plain command is exec'd directly, without a shell. Plain: nothing but
 * words of letters, digits and "-_./+,:@%=" separated by spaces or tabs,
 * whose first word has no '=' (an assignment) and is a path (has a '/') or
 * a name looked up on PATH that is neither a word of the sh language nor a
 * builtin of dash (echo, kill, test...). E.g. "/opt/agent/run --model=x" or
 * "python3 /srv/agent.py -v". sh would run that very program with those very
 * arguments (nothing in them expands), but from a child of its own: the
 * direct exec saves sh's start and a fork (about 0.9 ms of CPU per run).
 * Anything else (a quote, $, a glob, a redirection, ;, a builtin...) is not
 * plain: the caller runs it as "/bin/sh -c <command>". */
#ifndef AW_AGENT_ARGV_H
#define AW_AGENT_ARGV_H

/* The plain command's words (NULL-terminated, malloc'd: agent_argv_free),
 * or NULL when it is not plain (or out of memory): sh -c runs it. */
char **agent_argv_plain(const char *command);

void agent_argv_free(char **argv);

#endif
