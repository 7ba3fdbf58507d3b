/*
 * Unit tests for watchfmt: every line is one JSON object (RFC 8259) that
 * gives back the exact bytes of the key and value. The expected lines are
 * written out by hand from the grammar; the integration tests parse real
 * streams with python's json and jq.
 */
#include <string.h>
#include <glib.h>

#include "etcd.h"
#include "watchfmt.h"

static void check(GString *got, const char *want)
{
	g_assert_cmpstr(got->str, ==, want);
	g_string_free(got, TRUE);
}

static GString *event(bool deleted, const char *k, size_t klen, const char *v, size_t vlen)
{
	struct ef_kv kv = {
		.key = g_bytes_new(k, klen),
		.value = v ? g_bytes_new(v, vlen) : NULL,
		.size = vlen,
		.create_revision = deleted ? 0 : 7,
		.mod_revision = 9,
		.version = deleted ? 0 : 2,
		.lease = deleted ? 0 : 7587868441151145000,
	};
	struct ef_watch_event ev = { .deleted = deleted, .kv = &kv };
	GString *o = watchfmt_event(&ev);

	g_bytes_unref(kv.key);
	if (kv.value)
		g_bytes_unref(kv.value);
	return o;
}

static void test_put(void)
{
	check(event(false, "/app/conf", 9, "x=1", 3),
	      "{\"type\":\"PUT\",\"key\":\"/app/conf\",\"value\":\"x=1\",\"create_revision\":7,"
	      "\"mod_revision\":9,\"version\":2,\"lease\":7587868441151145000}\n");
}

static void test_delete(void)
{
	check(event(true, "/a", 2, NULL, 0), "{\"type\":\"DELETE\",\"key\":\"/a\",\"mod_revision\":9}\n");
}

static void test_escapes(void)
{
	/* Quote, backslash, newline, tab, other controls, DEL: escaped;
	 * UTF-8 beyond ASCII is kept as it is. */
	static const char v[] = "a\"b\\c\nd\te\001f\x7fg\xc3\xa9h\xe2\x80\xa8";

	check(event(false, "/k", 2, v, sizeof(v) - 1),
	      "{\"type\":\"PUT\",\"key\":\"/k\",\"value\":\"a\\\"b\\\\c\\nd\\te\\u0001f\\u007fg"
	      "\xc3\xa9h\xe2\x80\xa8\",\"create_revision\":7,\"mod_revision\":9,\"version\":2,"
	      "\"lease\":7587868441151145000}\n");
}

static void test_bytes(void)
{
	/* Not UTF-8 (a lone continuation byte, an overlong form), or with a
	 * NUL: base64 under a name of its own, never a lossy string. */
	check(event(false, "/\x80", 2, "a\0b", 3),
	      "{\"type\":\"PUT\",\"key_base64\":\"L4A=\",\"value_base64\":\"YQBi\","
	      "\"create_revision\":7,\"mod_revision\":9,\"version\":2,"
	      "\"lease\":7587868441151145000}\n");
	check(event(true, "\xc0\xaf", 2, NULL, 0),
	      "{\"type\":\"DELETE\",\"key_base64\":\"wK8=\",\"mod_revision\":9}\n");
}

static void test_empty_value(void)
{
	check(event(false, "/e", 2, "", 0),
	      "{\"type\":\"PUT\",\"key\":\"/e\",\"value\":\"\",\"create_revision\":7,"
	      "\"mod_revision\":9,\"version\":2,\"lease\":7587868441151145000}\n");
}

static void test_start_and_errors(void)
{
	check(watchfmt_start(41), "{\"type\":\"START\",\"revision\":41}\n");
	check(watchfmt_error("compacted", 120, NULL),
	      "{\"type\":\"ERROR\",\"error\":\"compacted\",\"compact_revision\":120}\n");
	check(watchfmt_error("overflow", 0, NULL), "{\"type\":\"ERROR\",\"error\":\"overflow\"}\n");
	check(watchfmt_error("refused", 0, "etcdserver: permission \"denied\""),
	      "{\"type\":\"ERROR\",\"error\":\"refused\","
	      "\"message\":\"etcdserver: permission \\\"denied\\\"\"}\n");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/watchfmt/put", test_put);
	g_test_add_func("/watchfmt/delete", test_delete);
	g_test_add_func("/watchfmt/escapes", test_escapes);
	g_test_add_func("/watchfmt/bytes", test_bytes);
	g_test_add_func("/watchfmt/empty_value", test_empty_value);
	g_test_add_func("/watchfmt/start_and_errors", test_start_and_errors);
	return g_test_run();
}
