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

struct lru_entry {
	fuse_ino_t ino;
	size_t size;
};

static GMutex lock;
static GQueue lru;                /* protected by lock: lru_entry, oldest first */
static GHashTable *entries;       /* protected by lock: ino -> GList node in lru */
static size_t total;              /* protected by lock */
static size_t cap;

void cache_init(size_t cap_bytes)
{
	cap = cap_bytes;
	g_queue_init(&lru);
	entries = g_hash_table_new(g_direct_hash, g_direct_equal);
	total = 0;
}

size_t cache_capacity(void)
{
	return cap;
}

void cache_fini(void)
{
	g_queue_clear_full(&lru, g_free);
	g_hash_table_destroy(entries);
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
		struct lru_entry *e = g_queue_pop_head(&lru);

		g_hash_table_remove(entries, GSIZE_TO_POINTER(e->ino));
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
	GList *node;
	GSList *victims;

	g_mutex_lock(&in->lock);
	if (in->kv && in->kv->value)
		size = in->kv->size;
	g_mutex_unlock(&in->lock);

	g_mutex_lock(&lock);
	node = g_hash_table_lookup(entries, GSIZE_TO_POINTER(in->ino));
	if (node) {
		struct lru_entry *e = node->data;

		total -= e->size;
		e->size = size;
		g_queue_unlink(&lru, node);
		g_queue_push_tail_link(&lru, node);
	} else {
		struct lru_entry *e = g_new(struct lru_entry, 1);

		e->ino = in->ino;
		e->size = size;
		g_queue_push_tail(&lru, e);
		g_hash_table_insert(entries, GSIZE_TO_POINTER(in->ino), lru.tail);
	}
	total += size;
	victims = over_cap_locked();
	g_mutex_unlock(&lock);
	/* Evict outside the LRU lock: it takes inode locks. */
	g_slist_free_full(victims, (GDestroyNotify)evict);
}
