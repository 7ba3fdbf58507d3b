/*
 * dirhandle — open directories (see dirhandle.h).
 */
#include "dirhandle.h"

#include <errno.h>
#include <string.h>

#include "cache.h"
#include "dirlist.h"
#include "etcd.h"
#include "fs.h"
#include "inode.h"
#include "keymap.h"
#include "localdir.h"
#include "watch.h"

/* A lookup's keys-only pages, and a listing's without values. */
#define DIR_PAGE 1000
/* The first page of a listing with values: its count says how many keys
 * follow, and its size what they cost, so that the rest can be read in as
 * few pages as the byte budget allows (dirlist's paging). Small, because
 * etcd builds a response whole before sending it, however big its values. */
#define FIRST_PAGE 100
/* A page's response is at most this long, and at most a quarter of the
 * value cache its values go to: a longer one is refused as it starts and
 * asked for again with fewer keys. */
#define PAGE_BYTES_MAX (8u << 20)
#define PAGE_BYTES_MIN (64u << 10)
/* Keys of an entry's own directory read along with its lookup: as many as
 * a listing's page, so "too big to learn from one page" means one thing. */
#define CHILD_PAGE DIR_PAGE

struct ef_diritem {
	char *name;
	bool is_dir;
	fuse_ino_t ino;
	GBytes *key;               /* NULL for "." and ".." */
};

/* A file's key-value as a listing page read it. */
struct prefetched {
	struct ef_kv *kv;
	uint64_t seq;              /* watch_seq() before the page was read */
	int64_t rev;               /* the page's revision */
};

/* Offsets run over ".", "..", KEYMAP_SELF_NAME (the first n_pre items),
 * then the dirlist's entries, served in place, then the rest of items:
 * local directories etcd cannot know, added once the listing is complete. */
struct ef_dirh {
	GBytes *dir;               /* the directory's prefix */
	struct ef_dirlist *list;
	GPtrArray *items;          /* struct ef_diritem */
	size_t n_pre;
	bool started;              /* the first n_pre items are in */
	uint64_t seq;              /* watch_seq() before the first page */
	int64_t rev;               /* the revision of the first page (0: none yet) */
	bool complete;
	bool root;
	struct ef_paging paging;
	GHashTable *kvs;           /* key -> struct prefetched: files' key-values
				    * read by the listing, not yet handed to an
				    * inode by dirh_entry_plus */
};

static void diritem_free(struct ef_diritem *it)
{
	g_free(it->name);
	if (it->key)
		g_bytes_unref(it->key);
	g_free(it);
}

static void prefetched_free(struct prefetched *pf)
{
	ef_kv_free(pf->kv);
	g_free(pf);
}

/* key: borrowed (NULL for "." and ".."). */
static void dirh_add(struct ef_dirh *dh, const char *name, bool is_dir, fuse_ino_t ino,
		     GBytes *key)
{
	struct ef_diritem *it = g_new(struct ef_diritem, 1);

	it->name = g_strdup(name);
	it->is_dir = is_dir;
	it->ino = ino;
	it->key = key ? g_bytes_ref(key) : NULL;
	g_ptr_array_add(dh->items, it);
}

/* Keeps kvs (each taken; read at rev, seq taken before) for
 * dirh_entry_plus. */
static void dirh_stash(struct ef_dirh *dh, GPtrArray *kvs, uint64_t seq, int64_t rev)
{
	for (guint i = 0; i < kvs->len; i++) {
		struct prefetched *pf = g_new(struct prefetched, 1);

		pf->kv = g_steal_pointer(&kvs->pdata[i]);
		pf->seq = seq;
		pf->rev = rev;
		g_hash_table_replace(dh->kvs, pf->kv->key, pf);
	}
}

static bool dirh_has_name(struct ef_dirh *dh, const char *name)
{
	for (guint i = 0; i < dh->items->len; i++)
		if (strcmp(((struct ef_diritem *)dh->items->pdata[i])->name, name) == 0)
			return true;
	for (size_t i = 0; i < dirlist_count(dh->list); i++)
		if (strcmp(dirlist_get(dh->list, i)->name, name) == 0)
			return true;
	return false;
}

size_t dirh_count(const struct ef_dirh *dh)
{
	return dh->items->len + dirlist_count(dh->list);
}

const char *dirh_entry(const struct ef_dirh *dh, size_t i, struct stat *st)
{
	size_t n = dirlist_count(dh->list);
	const struct ef_diritem *it;
	const struct ef_dirent *d;

	if (i >= dh->n_pre && i - dh->n_pre < n) {
		d = dirlist_get(dh->list, i - dh->n_pre);
		st->st_mode = d->is_dir ? S_IFDIR : S_IFREG;
		st->st_ino = inode_number_of(d->is_dir ? EF_DIR : EF_FILE, d->key);
		return d->name;
	}
	it = dh->items->pdata[i < dh->n_pre ? i : i - n];
	st->st_mode = it->is_dir ? S_IFDIR : S_IFREG;
	st->st_ino = it->ino;
	return it->name;
}

/* Appends the mkdir'd directories etcd cannot know about. */
static void dirh_add_local(struct ef_dirh *dh)
{
	g_autoptr(GPtrArray) kids = localdir_children(dh->dir);
	gsize dlen = g_bytes_get_size(dh->dir);

	for (guint i = 0; i < kids->len; i++) {
		gsize len;
		const char *k = g_bytes_get_data(kids->pdata[i], &len);
		g_autofree char *name = keymap_name_from_component(k + dlen, len - dlen - 1);

		if (name && !dirh_has_name(dh, name))
			dirh_add(dh, name, true, inode_number(EF_DIR, kids->pdata[i]),
				 kids->pdata[i]);
	}
}

/* The entries before the keys: ".", "..", and the directory's own value,
 * which lies in the parent's range, so it takes a round trip of its own.
 * Done on the first readdir, not in opendir: a listing the kernel has
 * cached is opened but never read. */
static int dirh_start(struct ef_fs *fs, struct ef_dirh *dh, fuse_ino_t ino)
{
	gsize dlen;
	const char *d = g_bytes_get_data(dh->dir, &dlen);
	size_t self = keymap_self_len(d, dlen);
	g_autoptr(GPtrArray) kvs = NULL;
	int64_t rev = 0;
	int rc = 0;

	dh->seq = watch_seq();
	if (self && !dh->root)
		rc = etcd_range(fs->etcd, d, self, NULL, 0, 1, !dh->paging.values, &kvs, NULL, &rev);
	/* A role may read a directory's keys but not its own key's. */
	if (rc == -EACCES)
		rc = 0;
	if (rc < 0)
		return rc;
	dirh_add(dh, ".", true, ino, NULL);
	dirh_add(dh, "..", true, FUSE_ROOT_ID, NULL);
	if (kvs && kvs->len) {
		g_autoptr(GBytes) sk = g_bytes_new(d, self);

		dirh_add(dh, KEYMAP_SELF_NAME, false, inode_number(EF_FILE, sk), sk);
		if (dh->paging.values)
			dirh_stash(dh, kvs, dh->seq, rev);
	}
	dh->n_pre = dh->items->len;
	dh->started = true;
	return 0;
}

static void dirh_feed(void *ud, const char *const *keys, const size_t *lens, size_t n, bool more)
{
	struct ef_dirh *dh = ud;

	dirlist_feed(dh->list, keys, lens, n, more);
}

/* The key-values worth keeping from a page: the directory's own files'
 * (a key with no '/' after the prefix), while pages carry values. */
static bool dirh_keep(void *ud, const char *key, size_t len)
{
	struct ef_dirh *dh = ud;
	gsize dlen = g_bytes_get_size(dh->dir);

	return dh->paging.values && len > dlen && !memchr(key + dlen, '/', len - dlen);
}

/* Fetches one more page of the listing. */
static int dirh_fetch_page(struct ef_fs *fs, struct ef_dirh *dh, fuse_ino_t ino)
{
	struct ef_page_req rq = {
		.limit = dh->paging.limit, .keys_only = !dh->paging.values,
		/* Keys only: no cap but the transport's. */
		.max_bytes = dh->paging.values ? dh->paging.max_bytes : 0,
		.keys_fn = dirh_feed, .keep = dirh_keep, .ud = dh,
	};
	int rc;

	if (!dirlist_range(dh->list, (const char **)&rq.key, &rq.klen, (const char **)&rq.end,
			   &rq.elen)) {
		dh->complete = true;
	} else {
		uint64_t seq = watch_seq();
		struct ef_page pg;

		rc = etcd_range_page(fs->etcd, &rq, &pg);
		/* Only a page with values is capped; the next try asks for
		 * fewer keys or none of the values, so this ends. */
		if (rc == -EMSGSIZE && dh->paging.values) {
			paging_too_big(&dh->paging, pg.need);
			return 0;
		}
		if (rc < 0)
			return rc;
		dirh_stash(dh, pg.kvs, seq, pg.rev);
		g_ptr_array_unref(pg.kvs);
		/* Each page is read at its own revision: events after the
		 * first one may be missing from the earlier pages. */
		if (!dh->rev)
			dh->rev = pg.rev;
		paging_after_page(&dh->paging, pg.n, pg.bytes, pg.count);
		dh->complete = dirlist_done(dh->list);
	}
	if (dh->complete) {
		struct ef_inode *din = inode_get(ino);

		dirh_add_local(dh);
		if (din)
			dirh_learn_names(din, dh->dir, dh->list, dh->seq, dh->rev);
		inode_unref(din);
	}
	return 0;
}

struct install {
	struct ef_inode *din;
	GHashTable *names;
	int64_t rev;
};

static void install_names(void *ud)
{
	struct install *inst = ud;

	inode_names_install(inst->din, inst->names, inst->rev);
}

void dirh_learn_names(struct ef_inode *din, GBytes *dir, const struct ef_dirlist *l, uint64_t seq,
		      int64_t rev)
{
	g_autoptr(GPtrArray) kids = localdir_children(dir);
	gsize dlen;
	const char *d = g_bytes_get_data(dir, &dlen);
	g_autoptr(GBytes) around = g_bytes_new(d, dlen ? dlen - 1 : 0);

	GHashTable *names = inode_names_new();

	/* Built aside, installed whole: a lookup must never see it half
	 * filled (a name missing from a known set is "no such file"). */
	for (size_t i = 0; i < dirlist_count(l); i++)
		inode_names_put(names, dirlist_get(l, i)->name, dirlist_get(l, i)->is_dir);
	for (guint i = 0; i < kids->len; i++) {
		gsize len;
		const char *k = g_bytes_get_data(kids->pdata[i], &len);
		g_autofree char *name = keymap_name_from_component(k + dlen, len - dlen - 1);

		if (name)
			inode_names_put(names, name, true);
	}
	/* Installed only if no event newer than the listing (on the
	 * directory's keys or its own value, both under `around`), and no
	 * change made here, came since seq: those may be missing from it.
	 * Atomically so: the watch applies every later event to it. */
	struct install inst = { .din = din, .names = names, .rev = rev };

	if (!watch_unchanged_do(seq, around, true, rev, install_names, &inst))
		g_hash_table_destroy(names);
}

static void lookup_feed(void *ud, const char *const *keys, const size_t *lens, size_t n, bool more)
{
	dirlist_feed(ud, keys, lens, n, more);
}

static void dirh_page_learn_none(struct ef_dirpage *pg);

/* A page of a directory's keys, read before its inode is known. */
struct ef_dirpage {
	GBytes *dir;
	struct ef_dirlist *list;
	uint64_t seq;
	int64_t rev;
};

void dirh_page_learn(struct ef_dirpage *pg, struct ef_inode *in)
{
	if (!pg)
		return;
	if (in && in->kind == EF_DIR && inode_names_wanted(in)) {
		/* A directory larger than the page: the lookups in it that
		 * come next need not read another page to find that out. */
		if (dirlist_done(pg->list))
			dirh_learn_names(in, pg->dir, pg->list, pg->seq, pg->rev);
		else
			inode_names_set_big(in);
	}
	g_bytes_unref(pg->dir);
	dirlist_free(pg->list);
	g_free(pg);
}

int dirh_lookup(struct ef_fs *fs, struct ef_inode *din, GBytes *dir, GBytes *fk, GBytes *dp,
		struct ef_kv **kv, bool *children, struct ef_dirpage **child)
{
	gsize dlen, plen;
	const char *d = g_bytes_get_data(dir, &dlen);
	const char *p = g_bytes_get_data(dp, &plen);
	struct ef_dirlist *l = NULL;
	struct ef_dirpage *pg = g_new0(struct ef_dirpage, 1);
	struct ef_lookup_pages pages = { 0 };
	uint64_t seq = watch_seq();
	int64_t rev = 0;
	int rc;

	/* The entry's own keys, should it be a directory: a small one's
	 * page tells its names (and so its link count) at no extra trip. */
	pg->dir = g_bytes_ref(dp);
	pg->list = dirlist_new(p, plen);
	pg->seq = seq;
	pages = (struct ef_lookup_pages){
		.child_fn = lookup_feed, .child_ud = pg->list, .child_limit = CHILD_PAGE,
	};
	/* The parent's keys, if its names are not known yet. */
	if (din && dlen && watch_trusted() && inode_names_wanted(din)) {
		l = dirlist_new(d, dlen);
		pages.list_dir = dir;
		pages.list_fn = lookup_feed;
		pages.list_ud = l;
		pages.list_limit = DIR_PAGE;
	}
	rc = etcd_lookup_pages(fs->etcd, fk, dp, &pages, kv, children, &rev);
	if (rc == -EACCES) {
		/* No pages to learn from, then. */
		rc = etcd_lookup_split(fs->etcd, fk, dp, kv, children);
		g_clear_pointer(&l, dirlist_free);
		if (rc == 0)
			g_clear_pointer(&pg, dirh_page_learn_none);
	}
	if (pg)
		pg->rev = rev;
	if (rc == 0 && l && dirlist_done(l))
		dirh_learn_names(din, dir, l, seq, rev);
	else if (rc == 0 && l)
		inode_names_set_big(din);
	if (l)
		dirlist_free(l);
	if (rc < 0)
		g_clear_pointer(&pg, dirh_page_learn_none);
	*child = pg;
	return rc;
}

void dirh_free(struct ef_dirh *dh)
{
	g_bytes_unref(dh->dir);
	dirlist_free(dh->list);
	g_ptr_array_unref(dh->items);
	g_hash_table_destroy(dh->kvs);
	g_free(dh);
}

struct ef_dirh *dirh_new(GBytes *dir, bool root)
{
	struct ef_dirh *dh = g_new0(struct ef_dirh, 1);
	gsize dlen;
	const char *d;

	dh->dir = g_bytes_ref(dir);
	d = g_bytes_get_data(dh->dir, &dlen);
	dh->list = dirlist_new(d, dlen);
	dh->items = g_ptr_array_new_with_free_func((GDestroyNotify)diritem_free);
	dh->root = root;
	if (cache_capacity() > 0)
		paging_init(&dh->paging, CLAMP(cache_capacity() / 4, PAGE_BYTES_MIN, PAGE_BYTES_MAX),
			    true, FIRST_PAGE);
	else
		paging_init(&dh->paging, PAGE_BYTES_MAX, false, DIR_PAGE);
	dh->kvs = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, NULL,
					(GDestroyNotify)prefetched_free);
	return dh;
}

int dirh_fetch(struct ef_fs *fs, struct ef_dirh *dh, fuse_ino_t ino, off_t off)
{
	int rc = 0;

	if (!dh->started)
		rc = dirh_start(fs, dh, ino);
	/* The first page comes with the first entries, so that a listing
	 * known empty is known so at offset 0. */
	while (rc == 0 && !dh->complete && (dirh_count(dh) <= (size_t)off || !dh->rev))
		rc = dirh_fetch_page(fs, dh, ino);
	/* Nothing in etcd and not made here: the directory went away (its
	 * keys were deleted elsewhere) while the kernel still held it, in the
	 * moment before the watch's notice reaches the kernel. Listing it as
	 * empty would show a state that never was; ENOENT would too (glibc's
	 * readdir takes it for the end of the directory): ESTALE, as NFS
	 * says of a directory removed on the server. */
	if (rc == 0 && off == 0 && dh->complete && !dh->root && dirh_count(dh) == 2 &&
	    !localdir_holds(dh->dir))
		rc = -ESTALE;
	return rc;
}

static void dirh_page_learn_none(struct ef_dirpage *pg)
{
	dirh_page_learn(pg, NULL);
}

struct store {
	struct ef_inode *in;
	struct ef_kv *kv;
};

static void store_kv(void *ud)
{
	struct store *st = ud;

	g_mutex_lock(&st->in->lock);
	cache_store_locked(st->in, g_steal_pointer(&st->kv), true);
	g_mutex_unlock(&st->in->lock);
}

/* Hands in what the listing read of key, if anything, and if no event
 * newer than that read touched the key since (else it is dropped). */
static void dirh_hand_over(struct ef_dirh *dh, GBytes *key, struct ef_inode *in)
{
	struct prefetched *pf;
	gpointer k;
	struct store st = { .in = in };

	if (!g_hash_table_steal_extended(dh->kvs, key, &k, (gpointer *)&pf))
		return;
	st.kv = g_steal_pointer(&pf->kv);
	/* Atomically with the check: an event recorded after it finds the
	 * stored kv and updates it. */
	if (watch_unchanged_do(pf->seq, key, false, pf->rev, store_kv, &st))
		cache_touch(in);
	ef_kv_free(st.kv);
	g_free(pf);
}

const char *dirh_entry_plus(struct ef_dirh *dh, size_t i, struct stat *st, struct ef_inode **in)
{
	size_t n = dirlist_count(dh->list);
	const char *name = dirh_entry(dh, i, st);
	GBytes *key;
	bool is_dir;

	if (i >= dh->n_pre && i - dh->n_pre < n) {
		const struct ef_dirent *d = dirlist_get(dh->list, i - dh->n_pre);

		key = d->key;
		is_dir = d->is_dir;
	} else {
		const struct ef_diritem *it = dh->items->pdata[i < dh->n_pre ? i : i - n];

		key = it->key;
		is_dir = it->is_dir;
	}
	*in = NULL;
	if (!key)
		return name;
	*in = inode_lookup(is_dir ? EF_DIR : EF_FILE, key);
	if (!is_dir)
		dirh_hand_over(dh, key, *in);
	return name;
}
