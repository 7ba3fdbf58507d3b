/*
 * options — parsing of option values that follow etcdctl's conventions
 * (see options.h).
 */
#include "options.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <glib.h>

static const struct {
	const char *unit;
	double ms;
} units[] = {
	/* Longer units first, so "ms" is not read as "m". */
	{ "ns", 1e-6 }, { "us", 1e-3 }, { "\xc2\xb5s", 1e-3 }, { "ms", 1.0 },
	{ "s", 1000.0 }, { "m", 60000.0 }, { "h", 3600000.0 },
};

/* Reads a decimal number (digits, optionally a fraction) at *p, without
 * strtod's exponents, hex, "inf" or signs, which Go durations do not have. */
static int parse_number(const char **p, double *v)
{
	const char *s = *p;
	double scale = 0.1;
	bool digits = false;

	*v = 0;
	for (; g_ascii_isdigit(*s); s++, digits = true)
		*v = *v * 10 + (*s - '0');
	if (*s == '.')
		for (s++; g_ascii_isdigit(*s); s++, digits = true, scale /= 10)
			*v += (*s - '0') * scale;
	if (!digits)
		return -EINVAL;
	*p = s;
	return 0;
}

/* Reads one "<number><unit>" term at *p; adds it to *total. */
static int parse_term(const char **p, double *total)
{
	double v;

	if (parse_number(p, &v) < 0)
		return -EINVAL;
	for (size_t i = 0; i < G_N_ELEMENTS(units); i++) {
		size_t n = strlen(units[i].unit);

		if (strncmp(*p, units[i].unit, n) == 0) {
			*total += v * units[i].ms;
			*p += n;
			return 0;
		}
	}
	return -EINVAL;
}

int options_parse_duration(const char *s, int *ms)
{
	double total = 0;
	const char *p = s;

	if (!s || !*s)
		return -EINVAL;
	/* A bare number means seconds. */
	if (parse_number(&p, &total) == 0 && *p == '\0') {
		total *= 1000.0;
	} else {
		total = 0;
		p = s;
		while (*p)
			if (parse_term(&p, &total) < 0)
				return -EINVAL;
	}
	if (!(total > 0) || total > 86400000.0)
		return -EINVAL;
	*ms = (int)(total + 0.999999);
	return 0;
}

char **options_split_endpoints(const char *s)
{
	g_auto(GStrv) parts = g_strsplit(s ? s : "", ",", -1);
	GPtrArray *out = g_ptr_array_new();

	for (size_t i = 0; parts[i]; i++) {
		char *t = g_strstrip(parts[i]);

		if (*t)
			g_ptr_array_add(out, g_strdup(t));
	}
	if (out->len == 0) {
		g_ptr_array_free(out, TRUE);
		return NULL;
	}
	g_ptr_array_add(out, NULL);
	return (char **)g_ptr_array_free(out, FALSE);
}

int options_parse_size(const char *s, size_t *bytes)
{
	const char *p = s;
	double v;
	int shift = 0;

	if (!s || parse_number(&p, &v) < 0)
		return -EINVAL;
	switch (g_ascii_toupper(*p)) {
	case 'G':
		shift += 10;
		/* fall through */
	case 'M':
		shift += 10;
		/* fall through */
	case 'K':
		shift += 10;
		p++;
		break;
	case '\0':
		break;
	default:
		return -EINVAL;
	}
	if (*p == 'B' || *p == 'b')
		p++;
	if (*p || v * (double)(1ULL << shift) > (double)SIZE_MAX / 2)
		return -EINVAL;
	*bytes = (size_t)(v * (double)(1ULL << shift));
	return 0;
}

/* Where a value that starts at v ends: a long option's takes the rest of
 * the argument, one in an -o list ends at a comma that fuse_opt does not
 * see escaped ("\\,"). */
static char *secret_end(const char *arg, char *v)
{
	if (g_str_has_prefix(arg, "--"))
		return v + strlen(v);
	for (; *v && *v != ','; v++)
		if (*v == '\\' && v[1])
			v++;
	return v;
}

void options_hide_secrets(char *arg)
{
	for (char *p = strstr(arg, "password="); p; p = strstr(p, "password=")) {
		char *end;

		p += strlen("password=");
		end = secret_end(arg, p);
		memset(p, 'x', (size_t)(end - p));
	}
	for (const char *const *k = (const char *const[]){ "user=", "username=", NULL }; *k; k++) {
		for (char *p = strstr(arg, *k); p; p = strstr(p, *k)) {
			char *end, *colon;

			p += strlen(*k);
			end = secret_end(arg, p);
			colon = memchr(p, ':', (size_t)(end - p));
			if (colon)
				memset(colon + 1, 'x', (size_t)(end - colon - 1));
		}
	}
}
