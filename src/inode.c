/*
 * inode — the table of inodes the kernel knows about (see inode.h).
 *
 * Two indexes under one lock: by number (for every request) and by kind+key
 * (for lookups and renames). The key index holds the inodes themselves,
 * hashed on their own kind and key, so a key is stored once per inode: at
 * 100,000 keys that overhead is most of the daemon's memory. An inode
 * leaves both indexes once the kernel has forgotten it and the last request
 * reference is gone; rename and detach move or remove only its key entry.
 */
#include "inode.h"

#include <string.h>

static GMutex table_lock;
static GHashTable *by_ino;        /* protected by table_lock: ino -> inode */
static GHashTable *by_key;        /* protected by table_lock: set of inodes, by kind+key */
static fuse_ino_t next_fallback;  /* protected by table_lock */
static gint names_total;          /* names in every inode's set */
static gint n_odd;                /* inodes in by_key whose number is not their
				   * key's hash (renamed, or a collision) */

#define FALLBACK_BASE ((fuse_ino_t)1 << 63)

/* FNV-1a over the kind byte and the key. */
static uint64_t fnv(enum ef_kind kind, const char *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	h = (h ^ (guint8)kind) * 0x100000001b3ULL;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (guint8)key[i]) * 0x100000001b3ULL;
	return h;
}

static guint key_hash(gconstpointer p)
{
	const struct ef_inode *in = p;

	return (guint)fnv(in->kind, in->key, in->klen);
}

static gboolean key_equal(gconstpointer a, gconstpointer b)
{
	const struct ef_inode *x = a, *y = b;

	return x->kind == y->kind && x->klen == y->klen && memcmp(x->key, y->key, x->klen) == 0;
}

/* A stack inode that only names (kind, key) for a by_key lookup. */
static struct ef_inode probe(enum ef_kind kind, GBytes *key)
{
	gsize len;
	const char *p = g_bytes_get_data(key, &len);

	return (struct ef_inode){ .kind = kind, .key = (char *)(p ? p : ""), .klen = len };
}

/* Folded below FALLBACK_BASE and above the root. */
static fuse_ino_t hash_number(enum ef_kind kind, const char *key, size_t len)
{
	uint64_t h = fnv(kind, key, len) & (FALLBACK_BASE - 1);

	return h <= FUSE_ROOT_ID ? h + 2 : h;
}

/* Keeps in->odd and n_odd true to in's key and number. Table lock held. */
static void set_odd_locked(struct ef_inode *in)
{
	bool odd = in->key && in->ino != FUSE_ROOT_ID &&
		   in->ino != hash_number(in->kind, in->key, in->klen);

	if (odd != in->odd) {
		in->odd = odd;
		g_atomic_int_add(&n_odd, odd ? 1 : -1);
	}
}

static void inode_free(struct ef_inode *in)
{
	if (in->dir) {
		g_atomic_int_add(&names_total, -(gint)in->dir->names_counted);
		if (in->dir->names)
			g_hash_table_destroy(in->dir->names);
		g_free(in->dir);
	}
	ef_kv_free(in->kv);
	if (in->closed)
		g_bytes_unref(in->closed);
	if (in->wbuf)
		g_byte_array_unref(in->wbuf);
	g_free(in->key);
	g_mutex_clear(&in->lock);
	g_cond_clear(&in->cond);
	g_free(in);
}

static struct ef_inode *inode_new_locked(enum ef_kind kind, const char *key, size_t len,
					 fuse_ino_t ino)
{
	struct ef_inode *in = g_new0(struct ef_inode, 1);

	in->ino = ino;
	in->kind = kind;
	in->key = g_memdup2(key, len ? len : 1);
	in->klen = len;
	in->base_mod = -1;
	if (kind == EF_DIR)
		in->dir = g_new0(struct ef_dirinfo, 1);
	g_mutex_init(&in->lock);
	g_cond_init(&in->cond);
	g_hash_table_insert(by_ino, GSIZE_TO_POINTER(ino), in);
	g_hash_table_add(by_key, in);
	set_odd_locked(in);
	return in;
}

void inode_table_init(GBytes *root_prefix)
{
	gsize len;
	const char *p = g_bytes_get_data(root_prefix, &len);
	struct ef_inode *root;

	by_ino = g_hash_table_new(g_direct_hash, g_direct_equal);
	by_key = g_hash_table_new(key_hash, key_equal);
	next_fallback = FALLBACK_BASE;
	root = inode_new_locked(EF_DIR, p ? p : "", len, FUSE_ROOT_ID);
	root->nlookup = 1;   /* the root is never forgotten */
}

void inode_table_fini(void)
{
	GHashTableIter it;
	gpointer v;

	g_hash_table_destroy(by_key);
	g_hash_table_iter_init(&it, by_ino);
	while (g_hash_table_iter_next(&it, NULL, &v))
		inode_free(v);
	g_hash_table_destroy(by_ino);
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

static void detach_locked(struct ef_inode *in)
{
	if (!in->key)
		return;
	if (g_hash_table_lookup(by_key, in) == in)
		g_hash_table_remove(by_key, in);
	g_free(in->key);
	in->key = NULL;
	in->klen = 0;
	set_odd_locked(in);
}

/* Frees in once nobody (kernel or request) refers to it. */
static void maybe_free_locked(struct ef_inode *in)
{
	if (in->nlookup || in->refs)
		return;
	g_hash_table_remove(by_ino, GSIZE_TO_POINTER(in->ino));
	detach_locked(in);
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

static fuse_ino_t number_locked(enum ef_kind kind, const char *key, size_t len)
{
	fuse_ino_t ino = hash_number(kind, key, len);

	/* A live inode already has that number for another key. */
	if (g_hash_table_lookup(by_ino, GSIZE_TO_POINTER(ino)))
		ino = next_fallback++;
	return ino;
}

struct ef_inode *inode_lookup(enum ef_kind kind, GBytes *key)
{
	struct ef_inode pr = probe(kind, key), *in;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_key, &pr);
	if (!in)
		in = inode_new_locked(kind, pr.key, pr.klen, number_locked(kind, pr.key, pr.klen));
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
	struct ef_inode pr = probe(kind, key), *in;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_key, &pr);
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
	key = g_bytes_new(in->key, in->klen);
	g_mutex_unlock(&table_lock);
	return key;
}

fuse_ino_t inode_number(enum ef_kind kind, GBytes *key)
{
	struct ef_inode pr = probe(kind, key), *in;
	fuse_ino_t ino;

	g_mutex_lock(&table_lock);
	in = g_hash_table_lookup(by_key, &pr);
	ino = in ? in->ino : hash_number(kind, pr.key, pr.klen);
	g_mutex_unlock(&table_lock);
	return ino;
}

fuse_ino_t inode_number_of(enum ef_kind kind, GBytes *key)
{
	struct ef_inode pr = probe(kind, key);

	/* Almost always no inode has moved: no lock needed then. */
	if (g_atomic_int_get(&n_odd))
		return inode_number(kind, key);
	return hash_number(kind, pr.key, pr.klen);
}

/* Gives in the key nk (taking it), detaching whoever had it. */
static void rekey_locked(struct ef_inode *in, char *nk, size_t nlen)
{
	struct ef_inode pr = { .kind = in->kind, .key = nk, .klen = nlen };
	struct ef_inode *old = g_hash_table_lookup(by_key, &pr);

	/* The overwritten inode lives on for the kernel until forget, but
	 * no longer answers for the key. */
	if (old && old != in)
		detach_locked(old);
	detach_locked(in);
	in->key = nk;
	in->klen = nlen;
	g_hash_table_add(by_key, in);
	set_odd_locked(in);
}

void inode_rename(enum ef_kind kind, GBytes *from, GBytes *to)
{
	gsize flen, tlen;
	const char *f = g_bytes_get_data(from, &flen);
	const char *t = g_bytes_get_data(to, &tlen);
	g_autoptr(GPtrArray) moving = g_ptr_array_new();
	GHashTableIter it;
	gpointer v;

	g_mutex_lock(&table_lock);
	g_hash_table_iter_init(&it, by_key);
	while (g_hash_table_iter_next(&it, &v, NULL)) {
		struct ef_inode *in = v;

		if (in->klen < flen || memcmp(in->key, f, flen) != 0)
			continue;
		/* A file rename moves that one key; a directory rename moves
		 * everything under the prefix, of both kinds. */
		if (kind == EF_FILE && (in->kind != EF_FILE || in->klen != flen))
			continue;
		g_ptr_array_add(moving, in);
	}
	for (guint i = 0; i < moving->len; i++) {
		struct ef_inode *in = moving->pdata[i];
		size_t nlen = in->klen - flen + tlen;
		char *nk = g_malloc(nlen ? nlen : 1);

		memcpy(nk, t, tlen);
		memcpy(nk + tlen, in->key + flen, in->klen - flen);
		rekey_locked(in, nk, nlen);
	}
	g_mutex_unlock(&table_lock);
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

GHashTable *inode_names_new(void)
{
	return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
}

void inode_names_put(GHashTable *names, const char *name, bool is_dir)
{
	/* A name can be a file and a directory at once (a key with
	 * children): the directory wins, as in a listing. */
	if (GPOINTER_TO_INT(g_hash_table_lookup(names, name)) != 2)
		g_hash_table_insert(names, g_strdup(name), GINT_TO_POINTER(is_dir ? 2 : 1));
}

static void names_forget_locked(struct ef_inode *in);

/* Keeps names_total true to in's set after a change to it; past the budget
 * the set is dropped (a lookup then asks etcd, as without one). */
static void names_account_locked(struct ef_inode *in)
{
	if (!in->dir)
		return;
	unsigned size = in->dir->names ? g_hash_table_size(in->dir->names) : 0;
	gint total = g_atomic_int_add(&names_total, (gint)size - (gint)in->dir->names_counted) +
		     (gint)size - (gint)in->dir->names_counted;

	in->dir->names_counted = size;
	if (size && total > INODE_NAMES_BUDGET) {
		names_forget_locked(in);
		g_atomic_int_add(&names_total, -(gint)size);
		in->dir->names_counted = 0;
		/* No room: learning it again would cost a page per lookup. */
		in->dir->names_big = true;
	}
}

void inode_names_install(struct ef_inode *in, GHashTable *names, int64_t rev)
{
	GHashTableIter it;
	gpointer v;
	unsigned dirs = 0;

	if (!in->dir) {
		g_hash_table_destroy(names);
		return;
	}
	g_hash_table_iter_init(&it, names);
	while (g_hash_table_iter_next(&it, NULL, &v))
		dirs += GPOINTER_TO_INT(v) == 2;
	g_mutex_lock(&in->lock);
	names_forget_locked(in);
	in->dir->names_big = g_hash_table_size(names) > INODE_NAMES_MAX;
	if (!in->dir->names_big) {
		in->dir->names = names;
		in->dir->nsubdirs = dirs;
		in->dir->names_rev = rev;
		names = NULL;
	}
	names_account_locked(in);
	g_mutex_unlock(&in->lock);
	if (names)
		g_hash_table_destroy(names);
}

void inode_names_start(struct ef_inode *in)
{
	if (!in->dir)
		return;
	g_mutex_lock(&in->lock);
	if (!in->dir->names) {
		in->dir->names = inode_names_new();
		in->dir->nsubdirs = 0;
		in->dir->names_rev = 0;
	}
	names_account_locked(in);
	g_mutex_unlock(&in->lock);
}

bool inode_names_reflect(struct ef_inode *in, int64_t rev)
{
	if (!in->dir)
		return false;
	bool reflects;

	g_mutex_lock(&in->lock);
	reflects = in->dir->names && rev <= in->dir->names_rev;
	g_mutex_unlock(&in->lock);
	return reflects;
}

static void names_forget_locked(struct ef_inode *in)
{
	if (!in->dir)
		return;
	if (in->dir->names)
		g_hash_table_destroy(in->dir->names);
	in->dir->names = NULL;
	in->dir->nsubdirs = 0;
	in->dir->names_big = false;
}

void inode_names_add(struct ef_inode *in, const char *name, bool is_dir)
{
	if (!in->dir)
		return;
	gpointer old;

	g_mutex_lock(&in->lock);
	if (in->dir->names) {
		old = g_hash_table_lookup(in->dir->names, name);
		if (GPOINTER_TO_INT(old) != 2 && is_dir)
			in->dir->nsubdirs++;
		inode_names_put(in->dir->names, name, is_dir);
		if (g_hash_table_size(in->dir->names) > INODE_NAMES_MAX)
			names_forget_locked(in);
	}
	names_account_locked(in);
	g_mutex_unlock(&in->lock);
}

void inode_names_remove(struct ef_inode *in, const char *name)
{
	if (!in->dir)
		return;
	gpointer old;

	g_mutex_lock(&in->lock);
	if (in->dir->names && (old = g_hash_table_lookup(in->dir->names, name))) {
		if (GPOINTER_TO_INT(old) == 2)
			in->dir->nsubdirs--;
		g_hash_table_remove(in->dir->names, name);
	}
	names_account_locked(in);
	g_mutex_unlock(&in->lock);
}

void inode_names_remove_file(struct ef_inode *in, const char *name)
{
	if (!in->dir)
		return;
	g_mutex_lock(&in->lock);
	if (in->dir->names && GPOINTER_TO_INT(g_hash_table_lookup(in->dir->names, name)) == 1)
		g_hash_table_remove(in->dir->names, name);
	names_account_locked(in);
	g_mutex_unlock(&in->lock);
}

void inode_names_forget(struct ef_inode *in)
{
	if (!in->dir)
		return;
	g_mutex_lock(&in->lock);
	names_forget_locked(in);
	names_account_locked(in);
	g_mutex_unlock(&in->lock);
}

bool inode_names_lack(struct ef_inode *in, const char *name)
{
	if (!in->dir)
		return false;
	bool lack;

	g_mutex_lock(&in->lock);
	lack = in->dir->names && !g_hash_table_contains(in->dir->names, name);
	g_mutex_unlock(&in->lock);
	return lack;
}

bool inode_names_wanted(struct ef_inode *in)
{
	if (!in->dir)
		return false;
	bool wanted;

	g_mutex_lock(&in->lock);
	wanted = !in->dir->names && !in->dir->names_big;
	g_mutex_unlock(&in->lock);
	return wanted;
}

void inode_names_set_big(struct ef_inode *in)
{
	if (!in->dir)
		return;
	g_mutex_lock(&in->lock);
	in->dir->names_big = true;
	g_mutex_unlock(&in->lock);
}

