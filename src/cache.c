/*
 * cache — the daemon's copy of key-values, bounded in memory (see cache.h).
 *
 * The LRU holds inode numbers, not pointers: an inode may be forgotten by
 * the kernel while listed, and eviction simply finds it gone. Accounting
 * follows what the LRU believes each entry holds, so a freed inode's bytes
 * linger only until its entry reaches the head and is evicted.
 */
#include "cache.h"

#include <glib.h>

#include "etcd.h"
#include "inode.h"

/* One allocation per cached value, list link included, and the index a
 * set of the entries themselves: at 100,000 cached files every byte here
 * is 100 KB. */
struct lru_entry {
	GList link;                   /* in lru; link.data is the entry */
	fuse_ino_t ino;
	size_t size;
};

static GMutex lock;
static GQueue lru;                /* protected by lock: lru_entry links, oldest first */
static GHashTable *entries;       /* protected by lock: the lru_entries, by ino */
static size_t total;              /* protected by lock */
static size_t cap;

static guint entry_hash(gconstpointer p)
{
	const struct lru_entry *e = p;

	return (guint)(e->ino ^ (e->ino >> 32));
}

static gboolean entry_equal(gconstpointer a, gconstpointer b)
{
	return ((const struct lru_entry *)a)->ino == ((const struct lru_entry *)b)->ino;
}

void cache_init(size_t cap_bytes)
{
	cap = cap_bytes;
	g_queue_init(&lru);
	entries = g_hash_table_new(entry_hash, entry_equal);
	total = 0;
}

size_t cache_capacity(void)
{
	return cap;
}

void cache_fini(void)
{
	GList *l;

	g_hash_table_destroy(entries);
	while ((l = g_queue_pop_head_link(&lru)))
		g_free(l->data);
}

/* Makes kv (taken) in's kv. */
static void set_kv_locked(struct ef_inode *in, struct ef_kv *kv, bool ok)
{
	/* The inode knows its key: a second copy per cached key would be
	 * most of the cache's overhead for small values. */
	if (kv->key) {
		g_bytes_unref(kv->key);
		kv->key = NULL;
	}
	ef_kv_free(in->kv);
	in->kv = kv;
	in->kv_ok = ok;
	in->gone = false;
}

void cache_store_locked(struct ef_inode *in, struct ef_kv *kv, bool ok)
{
	/* Older, or the same revision already known current (our Put's
	 * echo can be applied before the Put's own reply is): keep it. */
	if (in->kv && (kv->mod_revision < in->kv->mod_revision ||
		       (kv->mod_revision == in->kv->mod_revision && in->kv_ok && in->kv->value))) {
		ef_kv_free(kv);
		return;
	}
	set_kv_locked(in, kv, ok);
}

void cache_replace(struct ef_inode *in, struct ef_kv *kv, bool ok)
{
	g_mutex_lock(&in->lock);
	set_kv_locked(in, kv, ok);
	g_mutex_unlock(&in->lock);
	cache_touch(in);
}

void cache_store(struct ef_inode *in, struct ef_kv *kv, bool ok)
{
	g_mutex_lock(&in->lock);
	cache_store_locked(in, kv, ok);
	g_mutex_unlock(&in->lock);
	cache_touch(in);
}

void cache_drop_locked(struct ef_inode *in)
{
	ef_kv_free(in->kv);
	in->kv = NULL;
	in->kv_ok = false;
}

void cache_drop(struct ef_inode *in)
{
	g_mutex_lock(&in->lock);
	cache_drop_locked(in);
	g_mutex_unlock(&in->lock);
}

/* Takes entries beyond the cap off the LRU; returns them for eviction. */
static GSList *over_cap_locked(void)
{
	GSList *victims = NULL;

	while (total > cap && !g_queue_is_empty(&lru)) {
		struct lru_entry *e = g_queue_pop_head_link(&lru)->data;

		g_hash_table_remove(entries, e);
		total -= e->size;
		victims = g_slist_prepend(victims, e);
	}
	return victims;
}

static void evict(struct lru_entry *e)
{
	struct ef_inode *in = inode_get(e->ino);

	if (in) {
		g_mutex_lock(&in->lock);
		if (in->kv && in->kv->value) {
			g_bytes_unref(in->kv->value);
			in->kv->value = NULL;
		}
		g_mutex_unlock(&in->lock);
		inode_unref(in);
	}
	g_free(e);
}

void cache_touch(struct ef_inode *in)
{
	size_t size = 0;
	struct lru_entry probe = { .ino = in->ino }, *e;
	GSList *victims;

	g_mutex_lock(&in->lock);
	if (in->kv && in->kv->value)
		size = in->kv->size;
	g_mutex_unlock(&in->lock);

	g_mutex_lock(&lock);
	e = g_hash_table_lookup(entries, &probe);
	if (e) {
		total -= e->size;
		g_queue_unlink(&lru, &e->link);
	} else {
		e = g_new0(struct lru_entry, 1);
		e->link.data = e;
		e->ino = in->ino;
		g_hash_table_add(entries, e);
	}
	e->size = size;
	g_queue_push_tail_link(&lru, &e->link);
	total += size;
	victims = over_cap_locked();
	g_mutex_unlock(&lock);
	/* Evict outside the LRU lock: it takes inode locks. */
	g_slist_free_full(victims, (GDestroyNotify)evict);
}
