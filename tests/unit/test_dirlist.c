/*
 * Unit tests for dirlist. A fake etcd (a sorted array of keys answering
 * [start, end) ranges with a limit and etcd's `more`) feeds the listing in
 * pages of several sizes; every page size must give the same entry set,
 * which must also match an oracle computed from all keys at once. The fake
 * counts Range calls so the subtree skip can be held to its promise.
 */
#include <string.h>
#include <glib.h>

#include "dirlist.h"
#include "keymap.h"

static const size_t page_sizes[] = { 1, 2, 3, 5, 1000 };

struct fake_etcd {
	GPtrArray *keys;   /* GBytes *, sorted, unique */
	guint calls;
};

static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = MIN(alen, blen);
	int r = n > 0 ? memcmp(a, b, n) : 0;

	if (r != 0)
		return r;
	return alen < blen ? -1 : alen > blen;
}

static gint gbytes_cmp(gconstpointer a, gconstpointer b)
{
	return g_bytes_compare(*(GBytes *const *)a, *(GBytes *const *)b);
}

static struct fake_etcd *fake_new(void)
{
	struct fake_etcd *f = g_new0(struct fake_etcd, 1);

	f->keys = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	return f;
}

static void fake_free(struct fake_etcd *f)
{
	g_ptr_array_unref(f->keys);
	g_free(f);
}

static void fake_add(struct fake_etcd *f, const void *key, size_t len)
{
	g_assert_cmpuint(len, >, 0);   /* etcd has no empty key */
	g_ptr_array_add(f->keys, g_bytes_new(key, len));
}

static void fake_add_str(struct fake_etcd *f, const char *key)
{
	fake_add(f, key, strlen(key));
}

/* Sorts and drops duplicates: call after the last fake_add. */
static void fake_seal(struct fake_etcd *f)
{
	guint w = 0;

	g_ptr_array_sort(f->keys, gbytes_cmp);
	for (guint r = 0; r < f->keys->len; r++) {
		if (w > 0 && g_bytes_equal(f->keys->pdata[w - 1], f->keys->pdata[r])) {
			g_bytes_unref(f->keys->pdata[r]);
			continue;
		}
		f->keys->pdata[w++] = f->keys->pdata[r];
	}
	f->keys->len = w;
}

static bool below_end(GBytes *k, const char *end, size_t elen)
{
	size_t klen;
	const void *kd = g_bytes_get_data(k, &klen);

	if (elen == 1 && end[0] == '\0')
		return true;
	return bytes_cmp(kd, klen, end, elen) < 0;
}

/* etcd's Range: keys in [start, end) ("\0" end: no bound), at most limit,
 * and more = keys remain in the range past the limit. */
static size_t fake_range(struct fake_etcd *f, const char *start, size_t slen,
			 const char *end, size_t elen, size_t limit,
			 const char **keys, size_t *lens, bool *more)
{
	size_t n = 0;
	guint i = 0;

	f->calls++;
	while (i < f->keys->len) {
		size_t klen;
		const void *kd = g_bytes_get_data(f->keys->pdata[i], &klen);

		if (bytes_cmp(kd, klen, start, slen) >= 0)
			break;
		i++;
	}
	for (; i < f->keys->len && below_end(f->keys->pdata[i], end, elen); i++) {
		if (n == limit)
			break;
		keys[n] = g_bytes_get_data(f->keys->pdata[i], &lens[n]);
		n++;
	}
	*more = i < f->keys->len && below_end(f->keys->pdata[i], end, elen);
	return n;
}

static char *describe(const char *name, bool is_dir, GBytes *key)
{
	size_t klen;
	const char *k = g_bytes_get_data(key, &klen);
	g_autofree char *ename = g_strescape(name, NULL);
	GString *s = g_string_new(NULL);

	g_string_append_printf(s, "%s %c ", ename, is_dir ? 'd' : 'f');
	for (size_t i = 0; i < klen; i++) {
		if (g_ascii_isgraph(k[i]) && k[i] != '\\')
			g_string_append_c(s, k[i]);
		else
			g_string_append_printf(s, "\\x%02x", (unsigned char)k[i]);
	}
	return g_string_free(s, FALSE);
}

static gint str_cmp(gconstpointer a, gconstpointer b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A readable, order-independent rendering of an entry set. */
static char *render(GPtrArray *lines)
{
	g_ptr_array_sort(lines, str_cmp);
	g_ptr_array_add(lines, NULL);
	return g_strjoinv("\n", (char **)lines->pdata);
}

/* The name must decode to the component that makes the entry's key. */
static void check_entry_key(const char *dir, size_t dlen, const struct ef_dirent *e)
{
	g_autoptr(GBytes) d = g_bytes_new(dir, dlen);
	g_autoptr(GBytes) want = NULL;
	g_autofree char *c = NULL;
	size_t clen;

	g_assert_cmpint(keymap_component_from_name(e->name, &c, &clen), ==, 0);
	want = keymap_child_key(d, c, clen, e->is_dir);
	g_assert_true(g_bytes_equal(want, e->key));
}

/* Lists dir through the fake with the given page size; returns the
 * rendered entry set and leaves the Range call count in f->calls. */
static char *list(struct fake_etcd *f, const char *dir, size_t dlen, size_t page)
{
	struct ef_dirlist *l = dirlist_new(dir, dlen);
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
	g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
	const char **keys = g_new(const char *, page);
	size_t *lens = g_new(size_t, page);
	const char *start, *end;
	size_t slen, elen;

	f->calls = 0;
	while (dirlist_range(l, &start, &slen, &end, &elen)) {
		bool more;
		size_t n = fake_range(f, start, slen, end, elen, page, keys, lens, &more);

		g_assert_false(dirlist_done(l));
		dirlist_feed(l, keys, lens, n, more);
		g_assert_cmpuint(f->calls, <=, f->keys->len + 1);
	}
	g_assert_true(dirlist_done(l));
	for (size_t i = 0; i < dirlist_count(l); i++) {
		const struct ef_dirent *e = dirlist_get(l, i);

		g_assert_false(g_hash_table_contains(seen, e->name));
		g_hash_table_add(seen, e->name);
		check_entry_key(dir, dlen, e);
		g_ptr_array_add(lines, describe(e->name, e->is_dir, e->key));
	}
	g_free(keys);
	g_free(lens);
	dirlist_free(l);
	return render(lines);
}

/* The entries straight from the definition, over all keys at once. */
static char *oracle(struct fake_etcd *f, const char *dir, size_t dlen)
{
	g_autoptr(GHashTable) dirs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
							  (GDestroyNotify)g_bytes_unref);
	g_autoptr(GHashTable) files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
							   (GDestroyNotify)g_bytes_unref);
	g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
	GHashTableIter it;
	gpointer name, key;

	for (guint i = 0; i < f->keys->len; i++) {
		size_t klen, clen;
		const char *k = g_bytes_get_data(f->keys->pdata[i], &klen);
		enum keymap_kind kind;
		char *n;

		if (klen < dlen || memcmp(k, dir, dlen) != 0)
			continue;
		kind = keymap_split(k, klen, dlen, &clen);
		n = keymap_name_from_component(k + dlen, clen);
		if (!n)
			continue;
		if (kind == KEYMAP_DIR)
			g_hash_table_replace(dirs, n, g_bytes_new(k, dlen + clen + 1));
		else
			g_hash_table_replace(files, n, g_bytes_new(k, klen));
	}
	g_hash_table_iter_init(&it, dirs);
	while (g_hash_table_iter_next(&it, &name, &key))
		g_ptr_array_add(lines, describe(name, true, key));
	g_hash_table_iter_init(&it, files);
	while (g_hash_table_iter_next(&it, &name, &key))
		if (!g_hash_table_contains(dirs, name))
			g_ptr_array_add(lines, describe(name, false, key));
	return render(lines);
}

/* Every page size must agree with the oracle, and with `want` if given. */
static void check_all_pages(struct fake_etcd *f, const char *dir, size_t dlen,
			    const char *want)
{
	g_autofree char *expect = oracle(f, dir, dlen);

	if (want)
		g_assert_cmpstr(expect, ==, want);
	for (size_t i = 0; i < G_N_ELEMENTS(page_sizes); i++) {
		g_autofree char *got = list(f, dir, dlen, page_sizes[i]);

		if (strcmp(got, expect) != 0)
			g_test_message("page size %zu", page_sizes[i]);
		g_assert_cmpstr(got, ==, expect);
	}
}

static struct fake_etcd *fake_of(const char *const *keys)
{
	struct fake_etcd *f = fake_new();

	for (; *keys; keys++)
		fake_add_str(f, *keys);
	fake_seal(f);
	return f;
}

static void test_file_and_dir(void)
{
	static const char *const keys[] = {
		"/c", "/d", "/d0", "/d/b", "/d/b!", "/d/b.x", "/d/b/c", "/d/b/c/e",
		"/d/b!!", "/d/b!!/x", "/d/b!!!", "/e/x", NULL,
	};
	struct fake_etcd *f = fake_of(keys);

	check_all_pages(f, "/d/", 3,
			"b d /d/b/\n"
			"b! f /d/b!\n"
			"b!! d /d/b!!/\n"
			"b!!! f /d/b!!!\n"
			"b.x f /d/b.x");
	fake_free(f);
}

/* A pending chain settled all at once by a key far beyond it. */
static void test_pending_chain(void)
{
	static const char *const keys[] = {
		"/d/a", "/d/a!", "/d/a!!", "/d/a!!!", "/d/a!!!-", "/d/z", NULL,
	};
	struct fake_etcd *f = fake_of(keys);

	check_all_pages(f, "/d/", 3,
			"a f /d/a\n"
			"a! f /d/a!\n"
			"a!! f /d/a!!\n"
			"a!!! f /d/a!!!\n"
			"a!!!- f /d/a!!!-\n"
			"z f /d/z");
	fake_free(f);
}

static void test_skip_cost(void)
{
	struct fake_etcd *f = fake_new();
	g_autofree char *got = NULL;
	char key[32];

	fake_add_str(f, "/d/a");
	for (int i = 0; i < 10000; i++) {
		g_snprintf(key, sizeof(key), "/d/big/%05d", i);
		fake_add_str(f, key);
		g_snprintf(key, sizeof(key), "/d/big/%05d/deeper", i);
		fake_add_str(f, key);
	}
	fake_add_str(f, "/d/big");
	fake_add_str(f, "/d/z");
	fake_seal(f);

	got = list(f, "/d/", 3, 10);
	g_assert_cmpstr(got, ==, "a f /d/a\nbig d /d/big/\nz f /d/z");
	/* "/d/a", "/d/big", 8 keys of big; then "/d/z" with more = false. */
	g_assert_cmpuint(f->calls, ==, 2);
	g_free(got);
	/* One page per key that tells something: a, big, big/00000, z. */
	got = list(f, "/d/", 3, 1);
	g_assert_cmpuint(f->calls, ==, 4);
	fake_free(f);
}

static void test_empty_components(void)
{
	static const char *const self_only[] = { "/d", "/d/", "/d/f", NULL };
	static const char *const dir_only[] = { "/d//x", "/d//y/z", NULL };
	static const char *const both[] = { "/d/", "/d/!", "/d//x", NULL };
	struct fake_etcd *f;

	f = fake_of(self_only);
	check_all_pages(f, "/d/", 3, "% f /d/\nf f /d/f");
	fake_free(f);
	f = fake_of(dir_only);
	check_all_pages(f, "/d/", 3, "% d /d//");
	fake_free(f);
	f = fake_of(both);
	check_all_pages(f, "/d/", 3, "! f /d/!\n% d /d//");
	fake_free(f);
}

static void test_dots(void)
{
	static const char *const keys[] = {
		"/d/.", "/d/..", "/d/..x", "/d/.../z", "/d/./y", "/d/.a", NULL,
	};
	struct fake_etcd *f = fake_of(keys);

	check_all_pages(f, "/d/", 3,
			"%2E d /d/./\n"
			"%2E%2E f /d/..\n"
			"... d /d/.../\n"
			"..x f /d/..x\n"
			".a f /d/.a");
	fake_free(f);
}

static void test_names_too_long(void)
{
	struct fake_etcd *f = fake_new();
	GString *k = g_string_new(NULL);
	g_autofree char *got = NULL;

	/* 256-byte file: hidden. 255 bytes: shown. */
	g_string_assign(k, "/d/");
	for (int i = 0; i < 256; i++)
		g_string_append_c(k, 'a');
	fake_add(f, k->str, k->len);
	g_string_truncate(k, k->len - 1);
	g_string_append(k, "/x");   /* a 255-byte directory */
	fake_add(f, k->str, k->len);
	/* 86 '%' escape to 258 bytes: a hidden directory with a subtree. */
	g_string_assign(k, "/d/");
	for (int i = 0; i < 86; i++)
		g_string_append_c(k, '%');
	g_string_append_c(k, '/');
	for (int i = 0; i < 50; i++) {
		g_autofree char *deep = g_strdup_printf("%s%02d", k->str, i);

		fake_add_str(f, deep);
	}
	fake_add_str(f, "/d/ok");
	fake_seal(f);

	check_all_pages(f, "/d/", 3, NULL);
	got = list(f, "/d/", 3, 1);
	/* The hidden directory costs one page, not fifty. */
	g_assert_cmpuint(f->calls, <=, 5);
	g_assert_cmpuint(strlen(got), ==, 255 + strlen(" d /d/") + 255 + 1 + strlen("\nok f /d/ok"));
	g_assert_true(g_str_has_suffix(got, "/\nok f /d/ok"));
	g_string_free(k, TRUE);
	fake_free(f);
}

static void test_root(void)
{
	struct fake_etcd *f = fake_new();
	struct ef_dirlist *l = dirlist_new("", 0);
	const char *start, *end;
	size_t slen, elen;

	g_assert_true(dirlist_range(l, &start, &slen, &end, &elen));
	g_assert_cmpmem(start, slen, "\0", 1);
	g_assert_cmpmem(end, elen, "\0", 1);
	dirlist_free(l);

	fake_add_str(f, "a");
	fake_add_str(f, "/x");
	fake_add_str(f, "/y/z");
	fake_add(f, "\0", 1);
	fake_add(f, "\0/q", 3);
	fake_add(f, "\xff\xff", 2);
	fake_add(f, "\xff/\xff", 3);
	fake_seal(f);
	check_all_pages(f, "", 0,
			"% d /\n"
			"%00 d \\x00/\n"
			"\\377 d \\xff/\n"
			"\\377\\377 f \\xff\\xff\n"
			"a f a");
	fake_free(f);
}

static void test_binary_keys(void)
{
	struct fake_etcd *f = fake_new();

	fake_add(f, "/d/a\0b", 6);
	fake_add(f, "/d/a\0b/c", 8);
	fake_add(f, "/d/a", 4);
	fake_add(f, "/d/\0", 4);
	fake_add(f, "/d/%\0", 5);
	fake_seal(f);
	check_all_pages(f, "/d/", 3,
			"%00 f /d/\\x00\n"
			"%25%00 f /d/%\\x00\n"
			"a f /d/a\n"
			"a%00b d /d/a\\x00b/");
	fake_free(f);

	/* A directory prefix with NUL inside, next to a shorter twin. */
	f = fake_new();
	fake_add(f, "/\0/x", 4);
	fake_add(f, "/\0/y/", 5);
	fake_add(f, "/\0", 2);
	fake_add(f, "/\0\0/w", 5);
	fake_seal(f);
	check_all_pages(f, "/\0/", 3, "x f /\\x00/x\ny d /\\x00/y/");
	fake_free(f);
}

static void test_ranges(void)
{
	struct ef_dirlist *l = dirlist_new("/d/", 3);
	const char *k1[] = { "/d/a/1", "/d/a/2" };
	const size_t l1[] = { 6, 6 };
	const char *k2[] = { "/d/a/3", "/d/b" };   /* "/d/a/3" is stale */
	const size_t l2[] = { 6, 4 };
	const char *start, *end;
	size_t slen, elen;

	g_assert_true(dirlist_range(l, &start, &slen, &end, &elen));
	g_assert_cmpmem(start, slen, "/d/", 3);
	g_assert_cmpmem(end, elen, "/d0", 3);
	dirlist_feed(l, k1, l1, 2, true);
	g_assert_true(dirlist_range(l, &start, &slen, &end, &elen));
	g_assert_cmpmem(start, slen, "/d/a0", 5);
	g_assert_cmpuint(dirlist_count(l), ==, 1);
	dirlist_feed(l, k2, l2, 2, true);
	g_assert_true(dirlist_range(l, &start, &slen, &end, &elen));
	g_assert_cmpmem(start, slen, "/d/b\0", 5);
	/* File b waits: "/d/b/..." could still follow. */
	g_assert_cmpuint(dirlist_count(l), ==, 1);
	g_assert_false(dirlist_done(l));
	dirlist_feed(l, NULL, NULL, 0, false);
	g_assert_true(dirlist_done(l));
	g_assert_false(dirlist_range(l, &start, &slen, &end, &elen));
	g_assert_cmpuint(dirlist_count(l), ==, 2);
	g_assert_cmpstr(dirlist_get(l, 0)->name, ==, "a");
	g_assert_true(dirlist_get(l, 0)->is_dir);
	g_assert_cmpstr(dirlist_get(l, 1)->name, ==, "b");
	g_assert_false(dirlist_get(l, 1)->is_dir);
	dirlist_free(l);

	/* more = false ends the listing without another (empty) page, and
	 * settles the pending file. */
	l = dirlist_new("/d/", 3);
	dirlist_feed(l, k2 + 1, l2 + 1, 1, false);
	g_assert_true(dirlist_done(l));
	g_assert_cmpuint(dirlist_count(l), ==, 1);
	g_assert_cmpstr(dirlist_get(l, 0)->name, ==, "b");
	dirlist_free(l);
}

/* A server that answers more = true but never gets past the cursor must
 * not make the caller loop forever. */
static void test_no_progress(void)
{
	struct ef_dirlist *l = dirlist_new("/d/", 3);
	const char *k[] = { "/d/x/1" };
	const size_t kl[] = { 6 };

	dirlist_feed(l, k, kl, 1, true);
	g_assert_false(dirlist_done(l));
	dirlist_feed(l, k, kl, 1, true);
	g_assert_true(dirlist_done(l));
	g_assert_cmpuint(dirlist_count(l), ==, 1);
	dirlist_free(l);
}

static size_t random_key(char *buf, size_t max, const char *dir, size_t dlen)
{
	static const char alphabet[] = { 'a', 'b', '/', '/', '!', '.', '%', '\0', '0', '\xff', '-' };
	size_t len = 0;

	if (g_test_rand_int_range(0, 4) != 0) {
		memcpy(buf, dir, dlen);
		len = dlen;
	}
	for (size_t n = (size_t)g_test_rand_int_range(1, 7); n > 0 && len < max; n--)
		buf[len++] = alphabet[g_test_rand_int_range(0, sizeof(alphabet))];
	return len;
}

static void test_random(void)
{
	static const struct { const char *d; size_t len; } dirs[] = {
		{ "", 0 }, { "/", 1 }, { "a/", 2 }, { "\0/", 2 }, { "/a/", 3 }, { "\xff/", 2 },
	};

	for (int iter = 0; iter < 400; iter++) {
		const char *dir = dirs[iter % G_N_ELEMENTS(dirs)].d;
		size_t dlen = dirs[iter % G_N_ELEMENTS(dirs)].len;
		int nkeys = g_test_rand_int_range(0, 80);
		struct fake_etcd *f = fake_new();
		char key[16];

		for (int i = 0; i < nkeys; i++)
			fake_add(f, key, random_key(key, sizeof(key), dir, dlen));
		fake_seal(f);
		check_all_pages(f, dir, dlen, NULL);
		fake_free(f);
	}
}

/* ---- paging within a byte budget ---- */

/* A directory of 10,000 small values: a first page of 100, then the rest in
 * one Range (what fits the budget is the whole rest). */
static void test_paging_small_values(void)
{
	struct ef_paging p;

	paging_init(&p, 8u << 20, true, 100);
	g_assert_true(p.values);
	g_assert_cmpint(p.limit, ==, 100);
	paging_after_page(&p, 100, 100 * 150, 10000);
	g_assert_true(p.values);
	g_assert_cmpint(p.left, ==, 9900);
	g_assert_cmpint(p.limit, ==, 0);
}

/* More than the budget holds: pages as big as it allows, never bigger. */
static void test_paging_budget_bounds_pages(void)
{
	struct ef_paging p;

	paging_init(&p, 1u << 20, true, 100);
	paging_after_page(&p, 100, 100 * 1000, 1000000);
	g_assert_true(p.values);
	g_assert_cmpint(p.limit, >, 0);
	/* With the margin for values that vary, a page stays under budget. */
	g_assert_cmpint(p.limit * 1000, <=, 1 << 20);
	g_assert_cmpint(p.limit, >=, 500);
}

/* Values so big that few fit: the rest of the listing is keys only. */
static void test_paging_big_values_go_keys_only(void)
{
	struct ef_paging p;

	paging_init(&p, 1u << 20, true, 100);
	paging_after_page(&p, 100, 100 * (200u << 10), 5000);
	g_assert_false(p.values);
	g_assert_cmpint(p.limit, >, 0);
}

/* A refused page: each retry asks for strictly fewer keys until values
 * are given up, so refusals end; the unpaged rest is counted by `left`. */
static void test_paging_refusals_end(void)
{
	struct ef_paging p;
	int64_t prev;
	int tries = 0;

	paging_init(&p, 1u << 20, true, 100);
	paging_after_page(&p, 100, 100 * 100, 2000);
	g_assert_cmpint(p.limit, ==, 0);
	/* The rest turned out to hold big values: 1,900 keys, 190 MB. */
	paging_too_big(&p, 190u << 20);
	g_assert_false(p.values);
	g_assert_cmpint(p.limit, ==, 1000);

	/* Values that grow: each refusal halves at least. */
	paging_init(&p, 1u << 20, true, 100);
	prev = p.limit;
	while (p.values) {
		paging_too_big(&p, (1u << 20) + 1);
		g_assert_true(!p.values || p.limit < prev);
		g_assert_cmpint(p.limit, >=, 1);
		prev = p.limit;
		g_assert_cmpint(++tries, <, 64);
	}
	g_assert_cmpint(p.limit, ==, 1000);
}

/* Keys only from the start (no value cache): pages from the budget too. */
static void test_paging_keys_only(void)
{
	struct ef_paging p;

	paging_init(&p, 8u << 20, false, 1000);
	paging_after_page(&p, 1000, 1000 * 40, 50000);
	g_assert_false(p.values);
	g_assert_cmpint(p.limit, ==, 0);
	paging_after_page(&p, 1000, 1000 * 40, 10000000);
	g_assert_cmpint(p.limit, ==, 100000);
	/* An empty page (nothing left) asks for the (empty) rest. */
	paging_after_page(&p, 0, 10, 0);
	g_assert_cmpint(p.left, ==, 0);
	g_assert_cmpint(p.limit, ==, 0);
}

/* Found by tests/fuzz/fuzz_dirlist: a count near INT64_MIN overflowed. */
static void test_paging_odd_count(void)
{
	struct ef_paging p;

	paging_init(&p, 8u << 20, true, 1000);
	paging_after_page(&p, 15104, 15104 * 40, INT64_MIN);
	g_assert_cmpint(p.left, ==, 0);
	g_assert_cmpint(p.limit, ==, 0);
	paging_after_page(&p, 3, 120, -1);
	g_assert_cmpint(p.left, ==, 0);
	paging_after_page(&p, 3, 120, INT64_MAX);
	g_assert_cmpint(p.left, ==, INT64_MAX - 3);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/dirlist/file_and_dir", test_file_and_dir);
	g_test_add_func("/dirlist/pending_chain", test_pending_chain);
	g_test_add_func("/dirlist/skip_cost", test_skip_cost);
	g_test_add_func("/dirlist/empty_components", test_empty_components);
	g_test_add_func("/dirlist/dots", test_dots);
	g_test_add_func("/dirlist/names_too_long", test_names_too_long);
	g_test_add_func("/dirlist/root", test_root);
	g_test_add_func("/dirlist/binary_keys", test_binary_keys);
	g_test_add_func("/dirlist/ranges", test_ranges);
	g_test_add_func("/dirlist/no_progress", test_no_progress);
	g_test_add_func("/dirlist/random", test_random);
	g_test_add_func("/dirlist/paging/small_values", test_paging_small_values);
	g_test_add_func("/dirlist/paging/budget_bounds_pages", test_paging_budget_bounds_pages);
	g_test_add_func("/dirlist/paging/big_values_go_keys_only", test_paging_big_values_go_keys_only);
	g_test_add_func("/dirlist/paging/refusals_end", test_paging_refusals_end);
	g_test_add_func("/dirlist/paging/keys_only", test_paging_keys_only);
	g_test_add_func("/dirlist/paging/odd_count", test_paging_odd_count);
	return g_test_run();
}
