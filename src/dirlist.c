/*
 * dirlist — directory entries from pages of sorted keys (see dirlist.h).
 *
 * One cursor drives everything: the lowest key not yet accounted for. It is
 * the start of the next range, and any key below it (the rest of a skipped
 * subtree in the current page, or a stale key from a confused server) is
 * ignored. It only moves forward, which is why no name is emitted twice:
 *   - file c (key D+c) moves it to D+c+"\0";
 *   - directory c (first key under D+c+"/") moves it to D+c+"0", the prefix
 *     end of D+c+"/", past the whole subtree.
 *
 * Pending files: file c is a directory instead if D+c+"/" has keys, and
 * keys like D+c+"!" sort between D+c and D+c+"/". So file c waits in
 * `pending` until a key K >= D+c+"/" arrives: if K is under D+c+"/", the
 * directory entry comes from K and c is dropped; otherwise c is a file.
 * Pending files always form a chain: each is the previous one plus a byte
 * below '/' and more, so when one settles, all those after it settle too.
 */
#include "dirlist.h"

#include <stdint.h>
#include <string.h>

#include "keymap.h"

struct ef_dirlist {
	GByteArray *dir;      /* D */
	GByteArray *cursor;   /* start of the next range */
	GBytes *end;          /* prefix end of D; "\0" means no end */
	bool unbounded;       /* end is "\0" */
	GPtrArray *entries;   /* struct ef_dirent *, emitted */
	GPtrArray *pending;   /* struct ef_dirent *, files not yet settled */
	bool done;
};

static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = MIN(alen, blen);
	int r = n > 0 ? memcmp(a, b, n) : 0;

	if (r != 0)
		return r;
	return alen < blen ? -1 : alen > blen;
}

static void dirent_free(void *p)
{
	struct ef_dirent *e = p;

	g_free(e->name);
	g_bytes_unref(e->key);
	g_free(e);
}

static void cursor_set(struct ef_dirlist *l, const void *p, size_t len, bool nul)
{
	g_byte_array_set_size(l->cursor, 0);
	g_byte_array_append(l->cursor, p, len);
	if (nul)
		g_byte_array_append(l->cursor, (const guint8 *)"", 1);
}

struct ef_dirlist *dirlist_new(const char *dir, size_t dlen)
{
	struct ef_dirlist *l = g_new0(struct ef_dirlist, 1);

	l->dir = g_byte_array_sized_new(dlen);
	g_byte_array_append(l->dir, (const guint8 *)dir, dlen);
	l->cursor = g_byte_array_new();
	/* etcd has no empty key: the root listing starts at the first byte. */
	if (dlen == 0)
		cursor_set(l, "", 0, true);
	else
		cursor_set(l, dir, dlen, false);
	l->end = keymap_prefix_end(dir, dlen);
	l->unbounded = g_bytes_get_size(l->end) == 1 &&
		       *(const char *)g_bytes_get_data(l->end, NULL) == '\0';
	l->entries = g_ptr_array_new_with_free_func(dirent_free);
	l->pending = g_ptr_array_new_with_free_func(dirent_free);
	return l;
}

void dirlist_free(struct ef_dirlist *l)
{
	if (!l)
		return;
	g_byte_array_unref(l->dir);
	g_byte_array_unref(l->cursor);
	g_bytes_unref(l->end);
	g_ptr_array_unref(l->entries);
	g_ptr_array_unref(l->pending);
	g_free(l);
}

bool dirlist_range(struct ef_dirlist *l, const char **start, size_t *slen,
		   const char **end, size_t *elen)
{
	if (l->done)
		return false;
	*start = (const char *)l->cursor->data;
	*slen = l->cursor->len;
	*end = g_bytes_get_data(l->end, elen);
	return true;
}

static void emit(struct ef_dirlist *l, char *name, bool is_dir, GBytes *key)
{
	struct ef_dirent *e = g_new(struct ef_dirent, 1);

	e->name = name;
	e->is_dir = is_dir;
	e->key = key;
	g_ptr_array_add(l->entries, e);
}

/* Moves pending files [from, len) to the entries, in key order, except
 * that a file whose own subtree starts at `key` is dropped: the caller
 * emits it as a directory. key == NULL settles everything as a file. */
static void settle_from(struct ef_dirlist *l, guint from, const char *key, size_t klen)
{
	for (guint i = from; i < l->pending->len; i++) {
		struct ef_dirent *p = l->pending->pdata[i];
		size_t plen;
		const char *pk = g_bytes_get_data(p->key, &plen);

		if (key && klen > plen && key[plen] == '/' && memcmp(key, pk, plen) == 0)
			continue;
		/* Hand the strings over: the array frees only the shell. */
		emit(l, p->name, false, p->key);
		p->name = NULL;
		p->key = NULL;
	}
	/* The shells left behind have NULL fields, and the dropped ones are
	 * whole: the free function handles both. */
	g_ptr_array_set_size(l->pending, from);
}

/* True when key >= p+"/": p (a pending file) can no longer gain a subtree
 * after key, or key is in that subtree. */
static bool reaches_subtree(const char *key, size_t klen, const char *p, size_t plen)
{
	size_t n = MIN(klen, plen);
	int r = n > 0 ? memcmp(key, p, n) : 0;

	if (r != 0)
		return r > 0;
	return klen > plen && (unsigned char)key[plen] >= '/';
}

/* Settles the pending files that key is the proof for. */
static void settle(struct ef_dirlist *l, const char *key, size_t klen)
{
	for (guint i = 0; i < l->pending->len; i++) {
		struct ef_dirent *p = l->pending->pdata[i];
		size_t plen;
		const char *pk = g_bytes_get_data(p->key, &plen);

		if (reaches_subtree(key, klen, pk, plen)) {
			settle_from(l, i, key, klen);
			return;
		}
	}
}

static void finish(struct ef_dirlist *l)
{
	settle_from(l, 0, NULL, 0);
	l->done = true;
}

/* Accounts for one key under D; returns false if it was below the cursor. */
static bool take_key(struct ef_dirlist *l, const char *key, size_t klen)
{
	size_t dlen = l->dir->len, clen;
	enum keymap_kind kind;
	char *name;

	if (klen < dlen || (dlen > 0 && memcmp(key, l->dir->data, dlen) != 0) ||
	    bytes_cmp(key, klen, l->cursor->data, l->cursor->len) < 0)
		return false;
	settle(l, key, klen);
	kind = keymap_split(key, klen, dlen, &clen);
	name = keymap_name_from_component(key + dlen, clen);
	if (kind == KEYMAP_FILE) {
		/* A hidden file needs no settling: its directory twin, having
		 * the same name, is hidden too. */
		if (name) {
			struct ef_dirent *e = g_new(struct ef_dirent, 1);

			e->name = name;
			e->is_dir = false;
			e->key = g_bytes_new(key, klen);
			g_ptr_array_add(l->pending, e);
		}
		cursor_set(l, key, klen, true);
		return true;
	}
	if (name)
		emit(l, name, true, g_bytes_new(key, dlen + clen + 1));
	/* D+c+"0" is the prefix end of D+c+"/". */
	cursor_set(l, key, dlen + clen, false);
	g_byte_array_append(l->cursor, (const guint8 *)"0", 1);
	return true;
}

void dirlist_feed(struct ef_dirlist *l, const char *const *keys, const size_t *lens,
		  size_t n, bool more)
{
	bool progress = false;
	size_t elen;
	const char *end;

	if (l->done)
		return;
	for (size_t i = 0; i < n; i++)
		progress |= take_key(l, keys[i], lens[i]);
	if (n == 0 || !more || !progress) {
		/* !progress: a server repeating itself would make us loop. */
		finish(l);
		return;
	}
	end = g_bytes_get_data(l->end, &elen);
	if (!l->unbounded && bytes_cmp(l->cursor->data, l->cursor->len, end, elen) >= 0)
		finish(l);
}

size_t dirlist_count(const struct ef_dirlist *l)
{
	return l->entries->len;
}

const struct ef_dirent *dirlist_get(const struct ef_dirlist *l, size_t i)
{
	g_return_val_if_fail(i < l->entries->len, NULL);
	return l->entries->pdata[i];
}

bool dirlist_done(const struct ef_dirlist *l)
{
	return l->done;
}

/* ---- paging ---- */

/* Keys-only pages once values are too big to prefetch. */
#define PAGING_KEYS_PAGE 1000
/* Fewer keys than this per page at the sizes seen: the values are too big
 * to prefetch. */
#define PAGING_VALUES_MIN 32
/* No page asks for more keys than this, whatever the budget allows. */
#define PAGING_KEYS_MAX 100000

void paging_init(struct ef_paging *p, size_t max_bytes, bool values, int64_t first)
{
	*p = (struct ef_paging){ .values = values, .limit = first, .max_bytes = max_bytes };
}

/* Keys that fit in a response at per bytes each, with room for sizes that
 * vary. */
static int64_t paging_fit(const struct ef_paging *p, size_t per)
{
	return (int64_t)MIN(p->max_bytes / MAX(per, 1) / 4 * 3, (size_t)INT64_MAX);
}

void paging_after_page(struct ef_paging *p, size_t n, size_t bytes, int64_t count)
{
	int64_t fit = paging_fit(p, n ? bytes / n : 1);

	/* count is the server's word: any int64, and the subtraction must
	 * not overflow on a negative one (nothing is left then). */
	p->left = count > (int64_t)n ? count - (int64_t)n : 0;
	if (p->values && fit < PAGING_VALUES_MIN) {
		p->values = false;
		p->limit = PAGING_KEYS_PAGE;
	} else {
		fit = CLAMP(fit, 1, PAGING_KEYS_MAX);
		p->limit = p->left <= fit ? 0 : fit;
	}
}

void paging_too_big(struct ef_paging *p, size_t need)
{
	int64_t asked = p->limit ? p->limit : MAX(p->left, 1);
	int64_t fit = paging_fit(p, need / (size_t)asked);

	if (!p->values || fit < PAGING_VALUES_MIN) {
		p->values = false;
		p->limit = PAGING_KEYS_PAGE;
	} else {
		/* Strictly fewer each time, so that refusals end. */
		p->limit = MAX(MIN(fit, asked / 2), 1);
	}
}
