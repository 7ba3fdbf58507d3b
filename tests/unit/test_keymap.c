/*
 * Unit tests for keymap: the escapes one by one, the names that must be
 * refused, the NAME_MAX boundary, and seeded random round trips that check
 * the mapping is a bijection in both directions.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <glib.h>

#include "keymap.h"

struct enc_case {
	const char *comp;
	size_t len;
	const char *name;
};

/* Lengths are explicit because some components hold NUL. */
static const struct enc_case enc_cases[] = {
	{ "", 0, "%" },
	{ ".", 1, "%2E" },
	{ "..", 2, "%2E%2E" },
	{ "...", 3, "..." },
	{ ".a", 2, ".a" },
	{ "a.", 2, "a." },
	{ "%", 1, "%25" },
	{ "%%", 2, "%25%25" },
	{ "\0", 1, "%00" },
	{ "a\0b", 3, "a%00b" },
	{ "a%b\0c", 5, "a%25b%00c" },
	{ "%self", 5, "%25self" },
	{ "self", 4, "self" },
	{ "%2E", 3, "%252E" },
	{ "%00", 3, "%2500" },
	{ "\xff\x01 \n", 4, "\xff\x01 \n" },
	{ "plain-name_1", 12, "plain-name_1" },
};

static void test_encode_cases(void)
{
	for (size_t i = 0; i < G_N_ELEMENTS(enc_cases); i++) {
		const struct enc_case *t = &enc_cases[i];
		g_autofree char *name = keymap_name_from_component(t->comp, t->len);

		g_assert_cmpstr(name, ==, t->name);
	}
}

static void test_decode_cases(void)
{
	for (size_t i = 0; i < G_N_ELEMENTS(enc_cases); i++) {
		const struct enc_case *t = &enc_cases[i];
		g_autofree char *c = NULL;
		size_t len = 99;

		g_assert_cmpint(keymap_component_from_name(t->name, &c, &len), ==, 0);
		g_assert_cmpmem(c, len, t->comp, t->len);
		g_assert_cmpint(c[len], ==, '\0');
	}
}

static void test_decode_rejects(void)
{
	static const char *const bad[] = {
		KEYMAP_SELF_NAME, "%41", "%zz", "%2e", "%2e%2e", "%2E%2e", "a%",
		"%2", "%0", "%%", "%%25", "%2E.", ".%2E", "%2E%2E%2E", "a%2E",
		"%2Ea", "%25%", "%FF", "%0a", "", ".", "..", "a/b", "/",
		"%2F", "%self%", "x%self",
	};

	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		char *c = (char *)"untouched";
		size_t len = 99;

		int r = keymap_component_from_name(bad[i], &c, &len);

		if (r != -EINVAL)
			g_test_message("name \"%s\"", bad[i]);
		g_assert_cmpint(r, ==, -EINVAL);
		g_assert_cmpstr(c, ==, "untouched");
		g_assert_cmpuint(len, ==, 99);
	}
}

static char *repeat(char ch, size_t n)
{
	char *s = g_malloc(n + 1);

	memset(s, ch, n);
	s[n] = '\0';
	return s;
}

static void test_name_max(void)
{
	g_autofree char *a255 = repeat('a', NAME_MAX);
	g_autofree char *a256 = repeat('a', NAME_MAX + 1);
	g_autofree char *p85 = repeat('%', 85);
	g_autofree char *p86 = repeat('%', 86);
	g_autofree char *p100 = repeat('%', 100);
	g_autofree char *n255 = keymap_name_from_component(a255, NAME_MAX);
	g_autofree char *pct85 = keymap_name_from_component(p85, 85);
	g_autofree char *back = NULL;
	g_autofree char *esc = NULL;
	size_t len;

	g_assert_cmpstr(n255, ==, a255);
	g_assert_null(keymap_name_from_component(a256, NAME_MAX + 1));
	/* Escapes count: 85 '%' make exactly 255 bytes, 86 make 258. */
	g_assert_cmpuint(strlen(pct85), ==, 255);
	g_assert_null(keymap_name_from_component(p86, 86));
	g_assert_null(keymap_name_from_component(p100, 100));

	g_assert_cmpint(keymap_component_from_name(a255, &back, &len), ==, 0);
	g_assert_cmpuint(len, ==, NAME_MAX);
	g_assert_cmpint(keymap_component_from_name(a256, &esc, &len), ==, -ENAMETOOLONG);
	g_assert_null(esc);
	g_assert_cmpint(keymap_component_from_name(pct85, &esc, &len), ==, 0);
	g_assert_cmpmem(esc, len, p85, 85);
}

static void test_slash_unnameable(void)
{
	g_assert_null(keymap_name_from_component("a/b", 3));
	g_assert_null(keymap_name_from_component("/", 1));
}

/* Components biased toward the bytes the escapes care about. */
static size_t random_component(char *buf, size_t max)
{
	static const char special[] = { '%', '.', '\0', '2', '5', '0', 'E', 's' };
	size_t len = (size_t)g_test_rand_int_range(0, (gint32)max + 1);

	if (g_test_rand_bit() && len > 4)
		len = (size_t)g_test_rand_int_range(0, 4);
	for (size_t i = 0; i < len; i++) {
		char ch;

		if (g_test_rand_bit())
			ch = special[g_test_rand_int_range(0, sizeof(special))];
		else
			ch = (char)g_test_rand_int_range(0, 256);
		buf[i] = ch == '/' ? 'x' : ch;
	}
	return len;
}

static size_t expected_len(const char *c, size_t len)
{
	size_t n = 0;

	if (len == 0)
		return 1;
	if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
		return 3 * len;
	for (size_t i = 0; i < len; i++)
		n += (c[i] == '%' || c[i] == '\0') ? 3 : 1;
	return n;
}

static void test_random_round_trip(void)
{
	char buf[300];

	for (int iter = 0; iter < 20000; iter++) {
		size_t len = random_component(buf, sizeof(buf));
		g_autofree char *name = keymap_name_from_component(buf, len);
		g_autofree char *back = NULL;
		size_t blen;

		if (expected_len(buf, len) > NAME_MAX) {
			g_assert_null(name);
			continue;
		}
		g_assert_nonnull(name);
		g_assert_cmpuint(strlen(name), ==, expected_len(buf, len));
		g_assert_null(strchr(name, '/'));
		g_assert_cmpstr(name, !=, KEYMAP_SELF_NAME);
		g_assert_cmpint(keymap_component_from_name(name, &back, &blen), ==, 0);
		g_assert_cmpmem(back, blen, buf, len);
	}
}

/* The other direction: any name that decodes must be the canonical
 * encoding of what it decodes to, so no two names share a key. */
static void test_random_names_canonical(void)
{
	static const char alphabet[] = "%%%25E0e.sl/fa";
	char name[12];

	for (int iter = 0; iter < 50000; iter++) {
		size_t len = (size_t)g_test_rand_int_range(0, sizeof(name));
		g_autofree char *c = NULL;
		g_autofree char *again = NULL;
		size_t clen;
		int r;

		for (size_t i = 0; i < len; i++)
			name[i] = alphabet[g_test_rand_int_range(0, sizeof(alphabet) - 1)];
		name[len] = '\0';
		r = keymap_component_from_name(name, &c, &clen);
		if (r != 0) {
			g_assert_cmpint(r, ==, -EINVAL);
			continue;
		}
		again = keymap_name_from_component(c, clen);
		g_assert_cmpstr(again, ==, name);
	}
}

static void test_root_prefix(void)
{
	static const char *const cases[][2] = {
		{ "", "" }, { "/", "/" }, { "/app", "/app/" }, { "/app/", "/app/" },
		{ "app", "app/" }, { "//", "//" },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *p = keymap_root_prefix(cases[i][0]);

		g_assert_cmpstr(p, ==, cases[i][1]);
	}
}

static void check_prefix_end(const char *p, size_t len, const char *want, size_t wlen)
{
	g_autoptr(GBytes) end = keymap_prefix_end(p, len);
	size_t elen;
	const void *e = g_bytes_get_data(end, &elen);

	g_assert_cmpmem(e, elen, want, wlen);
}

static void test_prefix_end(void)
{
	check_prefix_end("a", 1, "b", 1);
	check_prefix_end("a\xff", 2, "b", 1);
	check_prefix_end("\xff\xff", 2, "\0", 1);
	check_prefix_end("", 0, "\0", 1);
	check_prefix_end("/", 1, "0", 1);
	check_prefix_end("/app/", 5, "/app0", 5);
	check_prefix_end("a\xfe", 2, "a\xff", 2);
	check_prefix_end("a\0", 2, "a\x01", 2);
	check_prefix_end("a\xff\0\xff", 4, "a\xff\x01", 3);
}

static void check_child(const char *d, size_t dlen, const char *c, size_t clen,
			bool as_dir, const char *want, size_t wlen)
{
	g_autoptr(GBytes) dir = g_bytes_new(d, dlen);
	g_autoptr(GBytes) key = keymap_child_key(dir, c, clen, as_dir);
	size_t klen;
	const void *k = g_bytes_get_data(key, &klen);

	g_assert_cmpmem(k, klen, want, wlen);
}

static void test_child_key(void)
{
	check_child("/a/", 3, "b", 1, false, "/a/b", 4);
	check_child("/a/", 3, "b", 1, true, "/a/b/", 5);
	check_child("/a/", 3, "", 0, false, "/a/", 3);
	check_child("/a/", 3, "", 0, true, "/a//", 4);
	check_child("", 0, "x\0y", 3, false, "x\0y", 3);
	check_child("", 0, "", 0, true, "/", 1);
	check_child("", 0, "", 0, false, "", 0);
	check_child("/\0/", 3, "%", 1, true, "/\0/%/", 5);
}

static void test_self_len(void)
{
	g_assert_cmpuint(keymap_self_len("/a/", 3), ==, 2);
	g_assert_cmpuint(keymap_self_len("/", 1), ==, 0);
	g_assert_cmpuint(keymap_self_len("", 0), ==, 0);
	g_assert_cmpuint(keymap_self_len("a/", 2), ==, 1);
	g_assert_cmpuint(keymap_self_len("/a/b/", 5), ==, 4);
	g_assert_cmpuint(keymap_self_len("//", 2), ==, 1);
}

static void check_split(const char *key, size_t klen, size_t dlen,
			enum keymap_kind want, size_t want_len)
{
	size_t clen = 999;

	g_assert_cmpint(keymap_split(key, klen, dlen, &clen), ==, want);
	g_assert_cmpuint(clen, ==, want_len);
}

static void test_split(void)
{
	check_split("/d/b", 4, 3, KEYMAP_FILE, 1);
	check_split("/d/b/c", 6, 3, KEYMAP_DIR, 1);
	check_split("/d/", 3, 3, KEYMAP_FILE, 0);
	check_split("/d//x", 5, 3, KEYMAP_DIR, 0);
	check_split("/d/b\0/c", 7, 3, KEYMAP_DIR, 2);
	check_split("/d/b\0c", 6, 3, KEYMAP_FILE, 3);
	check_split("/a", 2, 0, KEYMAP_DIR, 0);
	check_split("abc", 3, 0, KEYMAP_FILE, 3);
	check_split("ab/", 3, 0, KEYMAP_DIR, 2);
}

static char *lock_name(const char *prefix, const char *key, size_t klen)
{
	g_autoptr(GBytes) n = keymap_lock_name(prefix, strlen(prefix), key, klen);
	gsize len;
	const char *d = g_bytes_get_data(n, &len);

	return g_strndup(d, len);
}

static void test_lock_name_cases(void)
{
	static const struct {
		const char *key;
		size_t len;
		const char *name;
	} cases[] = {
		{ "/app/deploy.lock", 16, "etcdfs-lock/app/deploy.lock%" },
		{ "a%b", 3, "etcdfs-locka%25b%" },
		{ "x\0y\n\x7f", 5, "etcdfs-lockx%00y%0A%7F%" },
		{ "", 0, "etcdfs-lock%" },
		{ "caf\xc3\xa9 bar", 9, "etcdfs-lockcaf\xc3\xa9 bar%" },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *n = lock_name("etcdfs-lock", cases[i].key, cases[i].len);

		g_assert_cmpstr(n, ==, cases[i].name);
	}
}

/* etcd's owner keys of lock N are N + "/" + lease: no other lock's name may
 * start with N + "/", or its owners would count as N's. Keys built from the
 * bytes that matter ('%', '/', digits, letters, NUL). */
static void test_lock_name_prefix_free(void)
{
	static const char alphabet[] = { '%', '/', '2', '5', 'a', 'F', '\0' };
	GRand *r = g_rand_new_with_seed(7);
	GPtrArray *names = g_ptr_array_new_with_free_func(g_free);

	for (int i = 0; i < 3000; i++) {
		char key[8];
		size_t len = (size_t)g_rand_int_range(r, 0, 8);

		for (size_t j = 0; j < len; j++)
			key[j] = alphabet[g_rand_int_range(r, 0, sizeof(alphabet))];
		g_ptr_array_add(names, lock_name("p/", key, len));
	}
	for (guint i = 0; i < names->len; i++) {
		g_autofree char *owner = g_strconcat(names->pdata[i], "/", NULL);

		for (guint j = 0; j < names->len; j++)
			if (strcmp(names->pdata[i], names->pdata[j]) != 0)
				g_assert_false(g_str_has_prefix(names->pdata[j], owner));
	}
	g_ptr_array_unref(names);
	g_rand_free(r);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/keymap/encode/cases", test_encode_cases);
	g_test_add_func("/keymap/decode/cases", test_decode_cases);
	g_test_add_func("/keymap/decode/rejects", test_decode_rejects);
	g_test_add_func("/keymap/name_max", test_name_max);
	g_test_add_func("/keymap/encode/slash", test_slash_unnameable);
	g_test_add_func("/keymap/random/round_trip", test_random_round_trip);
	g_test_add_func("/keymap/random/canonical", test_random_names_canonical);
	g_test_add_func("/keymap/root_prefix", test_root_prefix);
	g_test_add_func("/keymap/prefix_end", test_prefix_end);
	g_test_add_func("/keymap/child_key", test_child_key);
	g_test_add_func("/keymap/self_len", test_self_len);
	g_test_add_func("/keymap/split", test_split);
	g_test_add_func("/keymap/lock_name/cases", test_lock_name_cases);
	g_test_add_func("/keymap/lock_name/prefix_free", test_lock_name_prefix_free);
	return g_test_run();
}
