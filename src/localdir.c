/*
 * localdir — directories made by mkdir that no key backs yet (see
 * localdir.h). A plain set under one mutex: it holds only what this mount
 * created and has not yet filled, so linear scans stay cheap.
 */
#include "localdir.h"

#include <string.h>

static GMutex lock;
static GHashTable *dirs;   /* protected by lock: set of GBytes prefixes */

void localdir_init(void)
{
	dirs = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
				     (GDestroyNotify)g_bytes_unref, NULL);
}

void localdir_fini(void)
{
	g_hash_table_destroy(dirs);
}

void localdir_add(GBytes *prefix)
{
	g_mutex_lock(&lock);
	g_hash_table_add(dirs, g_bytes_ref(prefix));
	g_mutex_unlock(&lock);
}

bool localdir_remove(GBytes *prefix)
{
	bool found;

	g_mutex_lock(&lock);
	found = g_hash_table_remove(dirs, prefix);
	g_mutex_unlock(&lock);
	return found;
}

static bool starts_with(GBytes *b, GBytes *prefix)
{
	gsize blen, plen;
	const char *bp = g_bytes_get_data(b, &blen);
	const char *pp = g_bytes_get_data(prefix, &plen);

	return blen >= plen && memcmp(bp, pp, plen) == 0;
}

/* True if a local directory starts with prefix (strictly below it, with
 * strict). */
static bool any_under(GBytes *prefix, bool strict)
{
	GHashTableIter it;
	gpointer k;
	bool found = false;

	g_mutex_lock(&lock);
	g_hash_table_iter_init(&it, dirs);
	while (!found && g_hash_table_iter_next(&it, &k, NULL))
		found = starts_with(k, prefix) && !(strict && g_bytes_equal(k, prefix));
	g_mutex_unlock(&lock);
	return found;
}

bool localdir_holds(GBytes *prefix)
{
	return any_under(prefix, false);
}

bool localdir_has_below(GBytes *prefix)
{
	return any_under(prefix, true);
}

GPtrArray *localdir_children(GBytes *prefix)
{
	GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	g_autoptr(GHashTable) seen = g_hash_table_new(g_bytes_hash, g_bytes_equal);
	gsize plen = g_bytes_get_size(prefix);
	GHashTableIter it;
	gpointer k;

	g_mutex_lock(&lock);
	g_hash_table_iter_init(&it, dirs);
	while (g_hash_table_iter_next(&it, &k, NULL)) {
		gsize len;
		const char *p = g_bytes_get_data(k, &len);
		const char *slash;
		GBytes *child;

		if (len <= plen || !starts_with(k, prefix))
			continue;
		/* A local directory deeper down makes the child on its way
		 * exist too: the prefix up to the first '/' after ours. */
		slash = memchr(p + plen, '/', len - plen);
		child = g_bytes_new(p, slash - p + 1);
		if (g_hash_table_contains(seen, child)) {
			g_bytes_unref(child);
			continue;
		}
		g_hash_table_add(seen, child);
		g_ptr_array_add(out, child);
	}
	g_mutex_unlock(&lock);
	return out;
}

void localdir_backed(GBytes *key)
{
	GHashTableIter it;
	gpointer k;

	g_mutex_lock(&lock);
	g_hash_table_iter_init(&it, dirs);
	while (g_hash_table_iter_next(&it, &k, NULL))
		if (starts_with(key, k))
			g_hash_table_iter_remove(&it);
	g_mutex_unlock(&lock);
}

void localdir_rename(GBytes *from, GBytes *to)
{
	g_autoptr(GPtrArray) moved = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	gsize flen, tlen;
	const char *t = g_bytes_get_data(to, &tlen);
	GHashTableIter it;
	gpointer k;

	g_bytes_get_data(from, &flen);
	g_mutex_lock(&lock);
	g_hash_table_iter_init(&it, dirs);
	while (g_hash_table_iter_next(&it, &k, NULL)) {
		gsize len;
		const char *p = g_bytes_get_data(k, &len);
		GByteArray *nk;

		if (!starts_with(k, from))
			continue;
		nk = g_byte_array_sized_new(len - flen + tlen);
		g_byte_array_append(nk, (const guint8 *)t, tlen);
		g_byte_array_append(nk, (const guint8 *)p + flen, len - flen);
		g_ptr_array_add(moved, g_byte_array_free_to_bytes(nk));
		g_hash_table_iter_remove(&it);
	}
	for (guint i = 0; i < moved->len; i++)
		g_hash_table_add(dirs, g_bytes_ref(moved->pdata[i]));
	g_mutex_unlock(&lock);
}
