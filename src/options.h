/*
 * options — parsing of option values that follow etcdctl's conventions.
 * Pure: no I/O, no globals.
 */
#pragma once

#include <stddef.h>

/* Parses a Go-style duration as etcdctl takes it ("5s", "500ms", "1m30s",
 * "1.5s"; a bare number means seconds) into milliseconds, rounding up.
 * Returns 0, or -EINVAL for anything else, zero or negative, or above a day. */
int options_parse_duration(const char *s, int *ms);

/* Splits a comma-separated endpoint list, trimming blanks and dropping
 * empty items. Returns a new NULL-terminated vector (g_strfreev), or NULL
 * when no endpoint is left. */
char **options_split_endpoints(const char *s);

/* Overwrites with 'x', in place, the passwords in one command-line
 * argument: the value of "password=" and the part after the first ':' of
 * "user=NAME:PASSWORD" or "username=NAME:PASSWORD" (in a long option, "--password=...", up to the
 * end; in an -o list, "-o a,password=b,c", up to a comma). */
void options_hide_secrets(char *arg);

/* Parses a size: a number of bytes with an optional K, M or G suffix
 * (powers of 1024). Returns 0, or -EINVAL. */
int options_parse_size(const char *s, size_t *bytes);
