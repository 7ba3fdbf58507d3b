/*
 * dirhandle — open directories (see dirhandle.h).
 */
#include "dirhandle.h"

#include <string.h>

#include "dirlist.h"
#include "etcd.h"
#include "fs.h"
#include "inode.h"
#include "keymap.h"
#include "localdir.h"
#include "watch.h"

#define DIR_PAGE 1000
/* Keys of an entry's own directory read along with its lookup: as many as
 * a listing's page, so "too big to learn from one page" means one thing. */
#define CHILD_PAGE DIR_PAGE

struct ef_diritem {
	char *name;
	bool is_dir;
	fuse_ino_t ino;
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
};

static void diritem_free(struct ef_diritem *it)
{
	g_free(it->name);
	g_free(it);
}

static void dirh_add(struct ef_dirh *dh, const char *name, bool is_dir, fuse_ino_t ino)
{
	struct ef_diritem *it = g_new(struct ef_diritem, 1);

	it->name = g_strdup(name);
	it->is_dir = is_dir;
	it->ino = ino;
	g_ptr_array_add(dh->items, it);
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
			dirh_add(dh, name, true, inode_number(EF_DIR, kids->pdata[i]));
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
	int rc = 0;

	dh->seq = watch_seq();
	if (self && !dh->root)
		rc = etcd_range(fs->etcd, d, self, NULL, 0, 1, true, &kvs, NULL, NULL);
	if (rc < 0)
		return rc;
	dirh_add(dh, ".", true, ino);
	dirh_add(dh, "..", true, FUSE_ROOT_ID);
	if (kvs && kvs->len) {
		g_autoptr(GBytes) sk = g_bytes_new(d, self);
		dirh_add(dh, KEYMAP_SELF_NAME, false, inode_number(EF_FILE, sk));
	}
	dh->n_pre = dh->items->len;
	dh->started = true;
	return 0;
}

static void dirh_feed(void *ud, const char *const *keys, const size_t *lens, size_t n, bool more)
{
	dirlist_feed(ud, keys, lens, n, more);
}

/* Fetches one more page of the listing. */
static int dirh_fetch_page(struct ef_fs *fs, struct ef_dirh *dh, fuse_ino_t ino)
{
	const char *start, *end;
	size_t slen, elen;
	int rc;

	if (!dirlist_range(dh->list, &start, &slen, &end, &elen)) {
		dh->complete = true;
	} else {
		int64_t rev = 0;

		rc = etcd_range_keys(fs->etcd, start, slen, end, elen, DIR_PAGE, dirh_feed, dh->list,
				     &rev);
		if (rc < 0)
			return rc;
		/* Each page is read at its own revision: events after the
		 * first one may be missing from the earlier pages. */
		if (!dh->rev)
			dh->rev = rev;
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
	return dh;
}

int dirh_fetch(struct ef_fs *fs, struct ef_dirh *dh, fuse_ino_t ino, off_t off)
{
	int rc = 0;

	if (!dh->started)
		rc = dirh_start(fs, dh, ino);
	while (rc == 0 && !dh->complete && dirh_count(dh) <= (size_t)off)
		rc = dirh_fetch_page(fs, dh, ino);
	return rc;
}

static void dirh_page_learn_none(struct ef_dirpage *pg)
{
	dirh_page_learn(pg, NULL);
}
