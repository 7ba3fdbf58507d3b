/* Unit tests for options: etcdctl-style durations and endpoint lists. */
#include <errno.h>
#include <glib.h>

#include "options.h"

static void test_duration_ok(void)
{
	static const struct {
		const char *in;
		int ms;
	} cases[] = {
		{ "5s", 5000 }, { "500ms", 500 }, { "1m", 60000 }, { "1m30s", 90000 },
		{ "1.5s", 1500 }, { "2", 2000 }, { "1h", 3600000 }, { "1500us", 2 },
		{ "1ns", 1 }, { "0.25s", 250 }, { "2m0.5s", 120500 },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		int ms = -1;

		g_assert_cmpint(options_parse_duration(cases[i].in, &ms), ==, 0);
		g_assert_cmpint(ms, ==, cases[i].ms);
	}
}

static void test_duration_bad(void)
{
	static const char *const bad[] = {
		"", "s", "5x", "-5s", "0s", "0", "5 s", "ms", "5sm", "1e3", "abc", "25h",
	};

	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		int ms = 42;

		g_assert_cmpint(options_parse_duration(bad[i], &ms), ==, -EINVAL);
		g_assert_cmpint(ms, ==, 42);
	}
	g_assert_cmpint(options_parse_duration(NULL, &(int){ 0 }), ==, -EINVAL);
}

static void test_endpoints(void)
{
	g_auto(GStrv) a = options_split_endpoints("127.0.0.1:2379");
	g_auto(GStrv) b = options_split_endpoints(" a:1 , ,b:2,");
	g_auto(GStrv) c = options_split_endpoints(" , ");

	g_assert_cmpuint(g_strv_length(a), ==, 1);
	g_assert_cmpstr(a[0], ==, "127.0.0.1:2379");
	g_assert_cmpuint(g_strv_length(b), ==, 2);
	g_assert_cmpstr(b[0], ==, "a:1");
	g_assert_cmpstr(b[1], ==, "b:2");
	g_assert_null(c);
	g_assert_null(options_split_endpoints(""));
}

static void test_hide_secrets(void)
{
	static const char *const cases[][2] = {
		{ "--password=s3cr,et", "--password=xxxxxxx" },
		{ "--user=alice:pw:with:colons", "--user=alice:xxxxxxxxxxxxxx" },
		{ "--user=alice", "--user=alice" },
		{ "-oallow_other,password=abc,prefix=/app", "-oallow_other,password=xxx,prefix=/app" },
		{ "prefix=/a,user=bob:pw,password=q", "prefix=/a,user=bob:xx,password=x" },
		{ "user=bob,password_file=/etc/pw", "user=bob,password_file=/etc/pw" },
		{ "--password-file=/etc/pw", "--password-file=/etc/pw" },
		{ "--password=", "--password=" },
		{ "/mnt/point", "/mnt/point" },
		{ "-opassword=pa\\,ss,ro", "-opassword=xxxxxx,ro" },
		{ "-ousername=bob:p\\,w", "-ousername=bob:xxxx" },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *arg = g_strdup(cases[i][0]);

		options_hide_secrets(arg);
		g_assert_cmpstr(arg, ==, cases[i][1]);
	}
}

static void test_size(void)
{
	size_t n = 7;

	g_assert_cmpint(options_parse_size("0", &n), ==, 0);
	g_assert_cmpuint(n, ==, 0);
	g_assert_cmpint(options_parse_size("512K", &n), ==, 0);
	g_assert_cmpuint(n, ==, 512 * 1024);
	g_assert_cmpint(options_parse_size("64M", &n), ==, 0);
	g_assert_cmpuint(n, ==, 64 << 20);
	g_assert_cmpint(options_parse_size("1g", &n), ==, 0);
	g_assert_cmpuint(n, ==, 1 << 30);
	g_assert_cmpint(options_parse_size("1.5MB", &n), ==, 0);
	g_assert_cmpuint(n, ==, 3 << 19);
	g_assert_cmpint(options_parse_size("123", &n), ==, 0);
	g_assert_cmpuint(n, ==, 123);
	n = 7;
	g_assert_cmpint(options_parse_size("", &n), ==, -EINVAL);
	g_assert_cmpint(options_parse_size("M", &n), ==, -EINVAL);
	g_assert_cmpint(options_parse_size("12X", &n), ==, -EINVAL);
	g_assert_cmpint(options_parse_size("-1M", &n), ==, -EINVAL);
	g_assert_cmpint(options_parse_size("1MM", &n), ==, -EINVAL);
	g_assert_cmpuint(n, ==, 7);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/options/duration/ok", test_duration_ok);
	g_test_add_func("/options/duration/bad", test_duration_bad);
	g_test_add_func("/options/endpoints", test_endpoints);
	g_test_add_func("/options/size", test_size);
	g_test_add_func("/options/hide_secrets", test_hide_secrets);
	return g_test_run();
}
