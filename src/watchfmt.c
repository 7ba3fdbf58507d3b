/*
 * watchfmt — %watch lines (see watchfmt.h).
 */
#include "watchfmt.h"

#include <inttypes.h>
#include <string.h>

#include "etcd.h"

/* s is valid UTF-8 without NUL: only ASCII needs escaping. */
static void json_text(GString *o, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	g_string_append_c(o, '"');
	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)s[i];

		if (b == '"' || b == '\\') {
			g_string_append_c(o, '\\');
			g_string_append_c(o, (char)b);
		} else if (b == '\n') {
			g_string_append(o, "\\n");
		} else if (b == '\t') {
			g_string_append(o, "\\t");
		} else if (b < 0x20 || b == 0x7f) {
			g_string_append_printf(o, "\\u00%c%c", hex[b >> 4], hex[b & 0xf]);
		} else {
			g_string_append_c(o, (char)b);
		}
	}
	g_string_append_c(o, '"');
}

/* ,"name":"text" or ,"name_base64":"..." for the bytes of b. */
static void bytes_field(GString *o, const char *name, GBytes *b)
{
	gsize len = 0;
	const char *p = b ? g_bytes_get_data(b, &len) : NULL;

	if (len == 0) {
		g_string_append_printf(o, ",\"%s\":\"\"", name);
	} else if (g_utf8_validate_len(p, len, NULL)) {
		g_string_append_printf(o, ",\"%s\":", name);
		json_text(o, p, len);
	} else {
		g_autofree char *enc = g_base64_encode((const guchar *)p, len);

		g_string_append_printf(o, ",\"%s_base64\":\"%s\"", name, enc);
	}
}

GString *watchfmt_start(int64_t rev)
{
	GString *o = g_string_new(NULL);

	g_string_printf(o, "{\"type\":\"START\",\"revision\":%" PRId64 "}\n", rev);
	return o;
}

GString *watchfmt_event(const struct ef_watch_event *ev)
{
	const struct ef_kv *kv = ev->kv;
	GString *o = g_string_sized_new(96 + (kv->value ? g_bytes_get_size(kv->value) : 0));

	g_string_append(o, ev->deleted ? "{\"type\":\"DELETE\"" : "{\"type\":\"PUT\"");
	bytes_field(o, "key", kv->key);
	if (ev->deleted) {
		g_string_append_printf(o, ",\"mod_revision\":%" PRId64 "}\n", kv->mod_revision);
		return o;
	}
	bytes_field(o, "value", kv->value);
	g_string_append_printf(o,
			       ",\"create_revision\":%" PRId64 ",\"mod_revision\":%" PRId64
			       ",\"version\":%" PRId64 ",\"lease\":%" PRId64 "}\n",
			       kv->create_revision, kv->mod_revision, kv->version, kv->lease);
	return o;
}

GString *watchfmt_error(const char *error, int64_t compact_revision, const char *message)
{
	GString *o = g_string_new("{\"type\":\"ERROR\",\"error\":");

	json_text(o, error, strlen(error));
	if (compact_revision > 0)
		g_string_append_printf(o, ",\"compact_revision\":%" PRId64, compact_revision);
	if (message) {
		g_autoptr(GBytes) m = g_bytes_new(message, strlen(message));

		bytes_field(o, "message", m);
	}
	g_string_append(o, "}\n");
	return o;
}
