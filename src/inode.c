/*
 * inode — the table of inodes the kernel knows about (see inode.h).
 *
 * Two indexes under one lock: by number (for every request) and by kind+key
 * (for lookups and renames). An inode leaves both once the kernel has
 * forgotten it and the last request reference is gone; rename and detach
 * move or remove only the key index entry.
 */
#include "inode.h"

#include <string.h>

static GMutex table_lock;
static GHashTable *by_ino;        /* protected by table_lock: ino -> inode */
static GHashTable *by_key;        /* protected by table_lock: tkey -> inode */
static fuse_ino_t next_fallback;  /* protected by table_lock */

#define FALLBACK_BASE ((fuse_ino_t)1 << 63)

static GBytes *tkey_new(enum ef_kind kind, const void *key, size_t len)
{
	guint8 *buf = g_malloc(len + 1);

	buf[0] = (guint8)kind;
	if (len)
		memcpy(buf + 1, key, len);
	return g_bytes_new_take(buf, len + 1);
}

static GBytes *tkey_from(enum ef_kind kind, GBytes *key)
{
	gsize len;
	const void *p = g_bytes_get_data(key, &len);

	return tkey_new(kind, p, len);
}

/* FNV-1a over kind and key, folded below FALLBACK_BASE and above the root. */
static fuse_ino_t hash_number(GBytes *tkey)
{
	gsize len;
	const guint8 *p = g_bytes_get_data(tkey, &len);
	uint64_t h = 0xcbf29ce484222325ULL;

	for (gsize i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	h &= FALLBACK_BASE - 1;
	return h <= FUSE_ROOT_ID ? h + 2 : h;
}

static void inode_free(struct ef_inode *in)
{
	ef_kv_free(in->kv);
	if (in->wbuf)
		g_byte_array_unref(in->wbuf);
	g_bytes_unref(in->tkey);
	g_mutex_clear(&in->lock);
	g_cond_clear(&in->cond);
	g_free(in);
}

static struct ef_inode *inode_new_locked(GBytes *tkey, enum ef_kind kind, fuse_ino_t ino)
{
	struct ef_inode *in = g_new0(struct ef_inode, 1);

	in->ino = ino;
	in->kind = kind;
	in->tkey = g_bytes_ref(tkey);
	in->base_mod = -1;
	g_mutex_init(&in->lock);
	g_cond_init(&in->cond);
	g_hash_table_insert(by_ino, GSIZE_TO_POINTER(ino), in);
	g_hash_table_insert(by_key, g_bytes_ref(tkey), in);
	return in;
}

void inode_table_init(GBytes *root_prefix)
{
	g_autoptr(GBytes) tkey = tkey_from(EF_DIR, root_prefix);
	struct ef_inode *root;

	by_ino = g_hash_table_new(g_direct_hash, g_direct_equal);
	by_key = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
				       (GDestroyNotify)g_bytes_unref, NULL);
	next_fallback = FALLBACK_BASE;
	root = inode_new_locked(tkey, EF_DIR, FUSE_ROOT_ID);
	root->nlookup = 1;   /* the root is never forgotten */
}

void inode_table_fini(void)
{
	GHashTableIter it;
	gpointer v;

	g_hash_table_iter_init(&it, by_ino);
	while (g_hash_table_iter_next(&it, NULL, &v))
		inode_free(v);
	g_hash_table_destroy(by_ino);
	g_hash_table_destroy(by_key);
}

struct ef_inode *inode_get(fuse_ino_t ino)
{
	struct ef_inode *in;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_ino, GSIZE_TO_POINTER(ino));
	if (in)
		in->refs++;
	g_mutex_unlock(&table_lock);
	return in;
}

/* Frees in once nobody (kernel or request) refers to it. */
static void maybe_free_locked(struct ef_inode *in)
{
	if (in->nlookup || in->refs)
		return;
	g_hash_table_remove(by_ino, GSIZE_TO_POINTER(in->ino));
	if (g_hash_table_lookup(by_key, in->tkey) == in)
		g_hash_table_remove(by_key, in->tkey);
	inode_free(in);
}

void inode_unref(struct ef_inode *in)
{
	if (!in)
		return;
	g_mutex_lock(&table_lock);
	in->refs--;
	maybe_free_locked(in);
	g_mutex_unlock(&table_lock);
}

static fuse_ino_t number_locked(GBytes *tkey)
{
	fuse_ino_t ino = hash_number(tkey);
	struct ef_inode *other = g_hash_table_lookup(by_ino, GSIZE_TO_POINTER(ino));

	if (other && !g_bytes_equal(other->tkey, tkey))
		ino = next_fallback++;
	return ino;
}

struct ef_inode *inode_lookup(enum ef_kind kind, GBytes *key)
{
	g_autoptr(GBytes) tkey = tkey_from(kind, key);
	struct ef_inode *in;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_key, tkey);
	if (!in)
		in = inode_new_locked(tkey, kind, number_locked(tkey));
	in->nlookup++;
	in->refs++;
	g_mutex_unlock(&table_lock);
	return in;
}

void inode_unlookup(struct ef_inode *in)
{
	inode_forget(in->ino, 1);
}

struct ef_inode *inode_find(enum ef_kind kind, GBytes *key)
{
	g_autoptr(GBytes) tkey = tkey_from(kind, key);
	struct ef_inode *in;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_key, tkey);
	if (in)
		in->refs++;
	g_mutex_unlock(&table_lock);
	return in;
}

void inode_forget(fuse_ino_t ino, uint64_t n)
{
	struct ef_inode *in;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_ino, GSIZE_TO_POINTER(ino));
	if (in && ino != FUSE_ROOT_ID) {
		in->nlookup = n > in->nlookup ? 0 : in->nlookup - n;
		maybe_free_locked(in);
	}
	g_mutex_unlock(&table_lock);
}

GBytes *inode_key(struct ef_inode *in)
{
	GBytes *key;

	g_mutex_lock(&table_lock);
	key = g_bytes_new_from_bytes(in->tkey, 1, g_bytes_get_size(in->tkey) - 1);
	g_mutex_unlock(&table_lock);
	return key;
}

fuse_ino_t inode_number(enum ef_kind kind, GBytes *key)
{
	g_autoptr(GBytes) tkey = tkey_from(kind, key);
	struct ef_inode *in;
	fuse_ino_t ino;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_key, tkey);
	ino = in ? in->ino : hash_number(tkey);
	g_mutex_unlock(&table_lock);
	return ino;
}

static bool has_prefix(GBytes *b, size_t off, const guint8 *p, size_t plen)
{
	gsize len;
	const guint8 *d = g_bytes_get_data(b, &len);

	return len - off >= plen && memcmp(d + off, p, plen) == 0;
}

static void detach_locked(struct ef_inode *in);

/* Moves in to the key index entry new_tkey, detaching whoever was there. */
static void rekey_locked(struct ef_inode *in, GBytes *new_tkey)
{
	struct ef_inode *old = g_hash_table_lookup(by_key, new_tkey);

	if (old == in)
		return;
	if (g_hash_table_lookup(by_key, in->tkey) == in)
		g_hash_table_remove(by_key, in->tkey);
	/* The overwritten inode lives on for the kernel until forget, but
	 * no longer answers for the key. */
	if (old)
		detach_locked(old);
	g_bytes_unref(in->tkey);
	in->tkey = g_bytes_ref(new_tkey);
	g_hash_table_insert(by_key, g_bytes_ref(new_tkey), in);
}

void inode_rename(enum ef_kind kind, GBytes *from, GBytes *to)
{
	gsize flen, tlen;
	const guint8 *f = g_bytes_get_data(from, &flen);
	const guint8 *t = g_bytes_get_data(to, &tlen);
	g_autoptr(GPtrArray) moving = g_ptr_array_new();
	GHashTableIter it;
	gpointer v;

	g_mutex_lock(&table_lock);
	g_hash_table_iter_init(&it, by_key);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct ef_inode *in = v;
		gsize len = g_bytes_get_size(in->tkey) - 1;

		if (!has_prefix(in->tkey, 1, f, flen))
			continue;
		/* A file rename moves that one key; a directory rename moves
		 * everything under the prefix, of both kinds. */
		if (kind == EF_FILE && (in->kind != EF_FILE || len != flen))
			continue;
		g_ptr_array_add(moving, in);
	}
	for (guint i = 0; i < moving->len; i++) {
		struct ef_inode *in = moving->pdata[i];
		gsize len;
		const guint8 *d = g_bytes_get_data(in->tkey, &len);
		g_autoptr(GByteArray) nk = g_byte_array_sized_new(len - flen + tlen);
		g_autoptr(GBytes) ntkey = NULL;

		g_byte_array_append(nk, d, 1);
		g_byte_array_append(nk, t, tlen);
		g_byte_array_append(nk, d + 1 + flen, len - 1 - flen);
		ntkey = g_byte_array_free_to_bytes(g_steal_pointer(&nk));
		rekey_locked(in, ntkey);
	}
	g_mutex_unlock(&table_lock);
}

static void detach_locked(struct ef_inode *in)
{
	if (g_hash_table_lookup(by_key, in->tkey) == in)
		g_hash_table_remove(by_key, in->tkey);
	g_bytes_unref(in->tkey);
	/* Kind byte 2 never names a live key, so lookups cannot find it. */
	in->tkey = g_bytes_new("\x02", 1);
}

void inode_detach(struct ef_inode *in)
{
	g_mutex_lock(&table_lock);
	detach_locked(in);
	g_mutex_unlock(&table_lock);
}

GPtrArray *inode_all(void)
{
	GPtrArray *all = g_ptr_array_new_with_free_func((GDestroyNotify)inode_unref);
	GHashTableIter it;
	gpointer v;

	g_mutex_lock(&table_lock);
	g_hash_table_iter_init(&it, by_ino);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		((struct ef_inode *)v)->refs++;
		g_ptr_array_add(all, v);
	}
	g_mutex_unlock(&table_lock);
	return all;
}
