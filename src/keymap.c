/*
 * keymap — the bijection between etcd keys and paths (see keymap.h).
 *
 * Invariant: keymap_component_from_name() accepts a name only if
 * keymap_name_from_component() of the result gives back that same name, so
 * two names never reach one key. Only uppercase hex escapes are canonical;
 * "%2e" is rejected rather than treated as "%2E".
 *
 * Keys and components are bytes with a length; NUL is an ordinary byte in
 * them. Names are NUL-terminated, which is why NUL needs an escape.
 */
#include "keymap.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define DOT_NAME "%2E"
#define DOTDOT_NAME "%2E%2E"

char *keymap_root_prefix(const char *opt)
{
	size_t len = opt ? strlen(opt) : 0;

	if (len == 0)
		return g_strdup("");
	if (opt[len - 1] == '/')
		return g_strdup(opt);
	return g_strconcat(opt, "/", NULL);
}

/* The encoded length of c, or 0 when c has no encoding (contains '/'). The
 * special names are never longer than NAME_MAX, so callers check them first. */
static size_t encoded_len(const char *c, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (c[i] == '/')
			return 0;
		n += (c[i] == '%' || c[i] == '\0') ? 3 : 1;
	}
	return n;
}

char *keymap_name_from_component(const char *c, size_t len)
{
	size_t n;
	char *name, *w;

	if (len == 0)
		return g_strdup(KEYMAP_EMPTY_NAME);
	if (len == 1 && c[0] == '.')
		return g_strdup(DOT_NAME);
	if (len == 2 && c[0] == '.' && c[1] == '.')
		return g_strdup(DOTDOT_NAME);
	n = encoded_len(c, len);
	/* A '/' inside c cannot be named at all: hide it like a long name. */
	if (n == 0 || n > NAME_MAX)
		return NULL;
	name = w = g_malloc(n + 1);
	for (size_t i = 0; i < len; i++) {
		if (c[i] == '%') {
			memcpy(w, "%25", 3);
			w += 3;
		} else if (c[i] == '\0') {
			memcpy(w, "%00", 3);
			w += 3;
		} else {
			*w++ = c[i];
		}
	}
	*w = '\0';
	return name;
}

/* Decodes the general case (each "%25"/"%00" to one byte, every other byte
 * as is). The special names are handled by the caller. */
static int decode_escapes(const char *name, size_t nlen, char **out, size_t *out_len)
{
	char *buf = g_malloc(nlen + 1), *w = buf;

	for (size_t i = 0; i < nlen; i++) {
		if (name[i] == '/')
			goto inval;
		if (name[i] != '%') {
			*w++ = name[i];
			continue;
		}
		if (nlen - i < 3)
			goto inval;
		if (name[i + 1] == '2' && name[i + 2] == '5')
			*w++ = '%';
		else if (name[i + 1] == '0' && name[i + 2] == '0')
			*w++ = '\0';
		else
			goto inval;
		i += 2;
	}
	*w = '\0';
	*out = buf;
	*out_len = (size_t)(w - buf);
	return 0;
inval:
	g_free(buf);
	return -EINVAL;
}

int keymap_component_from_name(const char *name, char **out, size_t *out_len)
{
	size_t nlen = strlen(name);

	if (nlen > NAME_MAX)
		return -ENAMETOOLONG;
	if (strcmp(name, KEYMAP_EMPTY_NAME) == 0) {
		*out = g_strdup("");
		*out_len = 0;
		return 0;
	}
	if (strcmp(name, DOT_NAME) == 0 || strcmp(name, DOTDOT_NAME) == 0) {
		*out_len = nlen / 3;
		*out = g_strndup("..", *out_len);
		return 0;
	}
	/* These decode by the general rule, but the components they would
	 * give are spelled "%", "%2E" and "%2E%2E". */
	if (nlen == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	return decode_escapes(name, nlen, out, out_len);
}

GBytes *keymap_child_key(GBytes *dir, const char *c, size_t clen, bool as_dir)
{
	size_t dlen = 0;
	const char *d = dir ? g_bytes_get_data(dir, &dlen) : NULL;
	size_t n = dlen + clen + (as_dir ? 1 : 0);
	char *buf = g_malloc(n > 0 ? n : 1);

	if (dlen > 0)
		memcpy(buf, d, dlen);
	if (clen > 0)
		memcpy(buf + dlen, c, clen);
	if (as_dir)
		buf[n - 1] = '/';
	return g_bytes_new_take(buf, n);
}

size_t keymap_self_len(const char *dir, size_t dlen)
{
	/* "/" would give the empty key, which etcd does not allow. */
	if (dlen < 2 || dir[dlen - 1] != '/')
		return 0;
	return dlen - 1;
}

GBytes *keymap_prefix_end(const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = len;
	unsigned char *end;

	while (i > 0 && u[i - 1] == 0xff)
		i--;
	if (i == 0)
		return g_bytes_new("", 1);
	end = g_malloc(i);
	memcpy(end, p, i);
	end[i - 1]++;
	return g_bytes_new_take(end, i);
}

enum keymap_kind keymap_split(const char *key, size_t klen, size_t dlen, size_t *comp_len)
{
	const char *rest = key + dlen;
	const char *slash = klen > dlen ? memchr(rest, '/', klen - dlen) : NULL;

	if (!slash) {
		*comp_len = klen - dlen;
		return KEYMAP_FILE;
	}
	*comp_len = (size_t)(slash - rest);
	return KEYMAP_DIR;
}

GBytes *keymap_lock_name(const char *prefix, size_t plen, const char *key, size_t klen)
{
	GByteArray *n = g_byte_array_sized_new(plen + klen + 1);
	static const char hex[] = "0123456789ABCDEF";

	g_byte_array_append(n, (const guint8 *)prefix, plen);
	for (size_t i = 0; i < klen; i++) {
		unsigned char c = (unsigned char)key[i];

		if (c == '%' || c < 0x20 || c == 0x7f) {
			const guint8 esc[3] = { '%', hex[c >> 4], hex[c & 15] };

			g_byte_array_append(n, esc, 3);
		} else {
			g_byte_array_append(n, &c, 1);
		}
	}
	g_byte_array_append(n, (const guint8 *)"%", 1);
	return g_byte_array_free_to_bytes(n);
}
