/*
 * fuzz_dirlist — directory listings from pages of keys.
 *
 * Mode 0 (a well-behaved etcd): the keys given are stored sorted, and a
 * fake Range answers dirlist's ranges a page at a time, as etcd would.
 * Whatever the keys and the page size, the listing must end, name every
 * entry exactly once with the kind and key that an oracle computed from
 * all the keys at once gives it, and cost no more Range calls than there
 * are entries and files to account for (a subtree is skipped, not read).
 * Mode 1 (a confused server): pages are taken from the input as they
 * come, unsorted and out of range; the listing must still end, and never
 * name an entry twice. Mode 2: paging's arithmetic on the sizes and
 * counts a server reports.
 * Keys: one byte whose low 7 bits are the length and whose high bit puts
 * the listed directory in front, then the bytes.
 */
#include <string.h>
#include <glib.h>

#include "dirlist.h"
#include "fuzz.h"
#include "keymap.h"

#define MAX_PAGES 256

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

static GBytes *take_key(struct fz_in *in, GBytes *dir)
{
	uint8_t hdr = fz_u8(in);
	const uint8_t *p;
	size_t len = fz_bytes(in, hdr & 0x7f, &p);
	GByteArray *k = g_byte_array_new();

	if (hdr & 0x80)
		g_byte_array_append(k, g_bytes_get_data(dir, NULL), (guint)g_bytes_get_size(dir));
	g_byte_array_append(k, p, (guint)len);
	return g_byte_array_free_to_bytes(k);
}

/* What the listing must hold: name -> GINT_TO_POINTER(1 file, 2 directory). */
static GHashTable *oracle(GPtrArray *keys, GBytes *dir, guint *files, guint *subtrees)
{
	GHashTable *want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	g_autoptr(GHashTable) trees = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
							    (GDestroyNotify)g_bytes_unref, NULL);
	gsize dlen;
	const char *d = g_bytes_get_data(dir, &dlen);

	*files = 0;
	for (guint i = 0; i < keys->len; i++) {
		gsize klen;
		const char *k = g_bytes_get_data(keys->pdata[i], &klen);
		const char *slash;
		size_t clen;
		char *name;

		if (klen < dlen || (dlen && memcmp(k, d, dlen) != 0))
			continue;
		slash = memchr(k + dlen, '/', klen - dlen);
		clen = slash ? (size_t)(slash - (k + dlen)) : klen - dlen;
		if (slash)
			g_hash_table_add(trees, g_bytes_new(k + dlen, clen));
		else
			(*files)++;
		name = keymap_name_from_component(k + dlen, clen);
		if (!name)
			continue;
		if (slash || !g_hash_table_contains(want, name))
			g_hash_table_insert(want, name, GINT_TO_POINTER(slash ? 2 : 1));
		else
			g_free(name);
	}
	*subtrees = g_hash_table_size(trees);
	return want;
}

/* etcd's Range over sorted keys: [start, end) ("\0": no end), limit keys. */
static void fake_range(GPtrArray *keys, const char *s, size_t slen, const char *e, size_t elen,
		       size_t limit, GPtrArray *page, bool *more)
{
	bool unbounded = elen == 1 && e[0] == '\0';

	*more = false;
	for (guint i = 0; i < keys->len; i++) {
		gsize klen;
		const char *k = g_bytes_get_data(keys->pdata[i], &klen);

		if (bytes_cmp(k, klen, s, slen) < 0)
			continue;
		if (!unbounded && bytes_cmp(k, klen, e, elen) >= 0)
			break;
		if (page->len == limit) {
			*more = true;
			break;
		}
		g_ptr_array_add(page, keys->pdata[i]);
	}
}

static void feed(struct ef_dirlist *l, GPtrArray *page, bool more)
{
	g_autofree const char **ks = g_new(const char *, page->len + 1);
	g_autofree size_t *ls = g_new(size_t, page->len + 1);

	for (guint i = 0; i < page->len; i++)
		ks[i] = g_bytes_get_data(page->pdata[i], &ls[i]);
	dirlist_feed(l, ks, ls, page->len, more);
}

/* Every entry once; with want, exactly want's entries, keys included. */
static void check_entries(struct ef_dirlist *l, GBytes *dir, GHashTable *want)
{
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

	for (size_t i = 0; i < dirlist_count(l); i++) {
		const struct ef_dirent *e = dirlist_get(l, i);
		g_autofree char *c = NULL;
		g_autoptr(GBytes) key = NULL;
		size_t clen;
		gsize klen;
		const char *k;

		g_assert_true(g_hash_table_add(seen, e->name));
		if (!want)
			continue;
		g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(want, e->name)), ==,
				e->is_dir ? 2 : 1);
		g_assert_cmpint(keymap_component_from_name(e->name, &c, &clen), ==, 0);
		key = keymap_child_key(dir, c, clen, e->is_dir);
		k = g_bytes_get_data(e->key, &klen);
		g_assert_cmpmem(k, klen, g_bytes_get_data(key, NULL), g_bytes_get_size(key));
	}
	if (want)
		g_assert_cmpuint(g_hash_table_size(seen), ==, g_hash_table_size(want));
}

static void list_sorted(struct fz_in *in, GBytes *dir, size_t page_size)
{
	g_autoptr(GPtrArray) keys = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	g_autoptr(GHashTable) want = NULL;
	struct ef_dirlist *l = dirlist_new(g_bytes_get_data(dir, NULL), g_bytes_get_size(dir));
	guint w = 0, files, subtrees, calls = 0;
	const char *s, *e;
	size_t slen, elen;

	while (in->n > 0) {
		GBytes *k = take_key(in, dir);

		/* etcd has no empty key. */
		if (g_bytes_get_size(k) == 0)
			g_bytes_unref(k);
		else
			g_ptr_array_add(keys, k);
	}
	g_ptr_array_sort(keys, gbytes_cmp);
	for (guint r = 0; r < keys->len; r++) {
		if (w > 0 && g_bytes_equal(keys->pdata[w - 1], keys->pdata[r])) {
			g_bytes_unref(keys->pdata[r]);
			continue;
		}
		keys->pdata[w++] = keys->pdata[r];
	}
	keys->len = w;
	want = oracle(keys, dir, &files, &subtrees);

	while (dirlist_range(l, &s, &slen, &e, &elen)) {
		g_autoptr(GPtrArray) page = g_ptr_array_new();
		bool more;

		g_assert_cmpuint(++calls, <=, files + subtrees + 1);
		fake_range(keys, s, slen, e, elen, page_size, page, &more);
		feed(l, page, more);
	}
	g_assert_true(dirlist_done(l));
	check_entries(l, dir, want);
	dirlist_free(l);
}

static void list_confused(struct fz_in *in, GBytes *dir)
{
	struct ef_dirlist *l = dirlist_new(g_bytes_get_data(dir, NULL), g_bytes_get_size(dir));
	const char *s, *e;
	size_t slen, elen;

	for (int pages = 0; in->n > 0 && pages < MAX_PAGES && dirlist_range(l, &s, &slen, &e, &elen);
	     pages++) {
		g_autoptr(GPtrArray) page = g_ptr_array_new_with_free_func(
			(GDestroyNotify)g_bytes_unref);
		uint8_t hdr = fz_u8(in);

		for (int i = 0; i < (hdr & 0x3f); i++)
			g_ptr_array_add(page, take_key(in, dir));
		feed(l, page, hdr & 0x40);
	}
	check_entries(l, dir, NULL);
	dirlist_free(l);
}

static void paging(struct fz_in *in)
{
	struct ef_paging p;
	uint32_t max = (uint32_t)fz_u16(in) << 8 | fz_u8(in);
	uint8_t first = fz_u8(in);

	paging_init(&p, (size_t)max + 1, first & 1, first >> 1);
	while (in->n > 0) {
		uint8_t op = fz_u8(in);
		int64_t asked = p.limit ? p.limit : MAX(p.left, 1);
		bool values = p.values;

		if (op & 1) {
			/* The transport refuses only what is over the cap. */
			size_t need = p.max_bytes + 1 + ((size_t)fz_u16(in) << (op >> 4));

			paging_too_big(&p, need);
			g_assert_true(!p.values || (values && p.limit < asked));
		} else {
			size_t n = fz_u16(in);
			size_t bytes = (size_t)fz_u16(in) << (op >> 3);
			int64_t count = (int64_t)((uint64_t)fz_u16(in) << 48 | (uint64_t)fz_u16(in) << 32 |
						  (uint64_t)fz_u16(in) << 16 | fz_u16(in));

			paging_after_page(&p, n, bytes, count);
			g_assert_cmpint(p.left, >=, 0);
		}
		g_assert_cmpint(p.limit, >=, 0);
		g_assert_true(p.values || !values || p.limit > 0);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t page_sizes[] = { 1, 2, 3, 5, 8, 1000 };
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in);
	const uint8_t *d;
	size_t dlen;
	g_autoptr(GBytes) given = NULL, dir = NULL;

	if (mode % 3 == 2) {
		paging(&in);
		return 0;
	}
	dlen = fz_bytes(&in, fz_u8(&in) & 0x3f, &d);
	/* A directory is the root "" or a prefix ending in '/' (keymap.h). */
	given = g_bytes_new(d, dlen);
	dir = dlen && d[dlen - 1] != '/' ? keymap_child_key(given, "", 0, true)
					 : g_bytes_ref(given);
	if (mode % 3 == 0)
		list_sorted(&in, dir, page_sizes[(mode / 3) % G_N_ELEMENTS(page_sizes)]);
	else
		list_confused(&in, dir);
	return 0;
}
