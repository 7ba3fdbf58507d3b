/*
 * fuzz_watch — where WatchResponses become cache updates and kernel
 * notifications.
 *
 * watch.c is compiled into this file (its state and its message handler
 * are file-local) and driven without its threads: each message record is
 * decoded by etcd_watch_msg_parse and applied by handle_msg, as the watch
 * thread does; a message that does not decode or ends the stream costs
 * the trust and the caches, as when run_stream returns. Other records set
 * the scene the events land in: file inodes with cached values, directory
 * inodes with known name sets, keys this mount made or is changing. After
 * every record the name sets must still agree with their counts, the
 * resume revision may only have moved forward (or been dropped after a
 * compaction), and every queued notification must name an entry.
 * Input: [config u8], then records [tag u8][length u16][bytes].
 */
#include "../../src/watch.c"

#include "fuzz.h"

#define MAX_LOCAL 8

static void setup(uint8_t cfg)
{
	const char *root = cfg & 1 ? "" : "/r/";
	g_autoptr(GBytes) r = g_bytes_new_static(root, strlen(root));

	inode_table_init(r);
	cache_init(cfg & 2 ? 64 : 1 << 20);
	/* No w.se: only the notifier thread, which never runs here, uses it. */
	memset(&w, 0, sizeof(w));
	w.root = g_bytes_ref(r);
	w.key = g_bytes_ref(r);
	w.end = keymap_prefix_end(root, strlen(root));
	w.q = g_async_queue_new();
	w.nq = g_async_queue_new();
	w.local = g_ptr_array_new();
	w.created = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
					  (GDestroyNotify)g_bytes_unref, g_free);
}

static void teardown(void)
{
	struct notice *n;
	struct item *it;

	while (w.local->len)
		watch_local_end(w.local->pdata[0]);
	while ((n = g_async_queue_try_pop(w.nq)))
		g_free(n);
	while ((it = g_async_queue_try_pop(w.q)))
		item_free(it);
	g_async_queue_unref(w.nq);
	g_async_queue_unref(w.q);
	g_ptr_array_unref(w.local);
	g_hash_table_destroy(w.created);
	g_bytes_unref(w.root);
	g_bytes_unref(w.key);
	g_bytes_unref(w.end);
	for (size_t i = 0; i < RING; i++)
		if (w.ring[i])
			g_bytes_unref(w.ring[i]);
	inode_table_fini();
	cache_fini();
}

/* The notifier's queue: every notice names an inode, and an entry by a
 * name the kernel could hold. */
static void drain_notices(void)
{
	struct notice *n;

	while ((n = g_async_queue_try_pop(w.nq))) {
		g_assert_cmpuint(n->ino, !=, 0);
		if (n->kind == NOTICE_EXPIRE || n->kind == NOTICE_DELETE) {
			g_assert_cmpuint(strlen(n->name), >, 0);
			g_assert_cmpuint(strlen(n->name), <=, NAME_MAX);
			g_assert_null(strchr(n->name, '/'));
		}
		g_free(n);
	}
}

static void check_name_sets(void)
{
	g_autoptr(GPtrArray) all = inode_all();

	for (guint i = 0; i < all->len; i++) {
		struct ef_inode *in = all->pdata[i];
		GHashTableIter it;
		gpointer v;
		unsigned dirs = 0;

		if (!in->dir)
			continue;
		g_mutex_lock(&in->lock);
		if (in->dir->names) {
			g_hash_table_iter_init(&it, in->dir->names);
			while (g_hash_table_iter_next(&it, NULL, &v))
				dirs += GPOINTER_TO_INT(v) == 2;
			g_assert_cmpuint(dirs, ==, in->dir->nsubdirs);
			g_assert_cmpuint(g_hash_table_size(in->dir->names), ==,
					 in->dir->names_counted);
		}
		g_mutex_unlock(&in->lock);
	}
}

/* The stream ended (or could not be read): what run_stream's end does. */
static void stream_lost(bool *created)
{
	set_trusted(false);
	invalidate_all();
	*created = false;
}

static void message(const uint8_t *p, size_t len, bool probed, int64_t *next, bool *created)
{
	struct ef_watch_msg *m = etcd_watch_msg_parse(p, len);
	int64_t before = *next;

	if (!m || !handle_msg(m, next, created)) {
		g_assert_true(*next >= before || (*next == 0 && m && m->canceled));
		etcd_watch_msg_free(m);
		stream_lost(created);
		return;
	}
	g_assert_cmpint(*next, >=, before);
	etcd_watch_msg_free(m);
	set_applied(*next);
	/* A probe vouched for the member: the stream is trusted from here. */
	if (probed && *created)
		set_trusted(true);
}

/* An inode the kernel looked up: name bytes below the root, as a lookup
 * makes them (never the empty key, which etcd does not have). */
static GBytes *below_root(const uint8_t *p, size_t len, bool as_dir)
{
	GByteArray *k = g_byte_array_new();

	g_byte_array_append(k, g_bytes_get_data(w.root, NULL), (guint)g_bytes_get_size(w.root));
	g_byte_array_append(k, p, (guint)len);
	if (as_dir && len > 0 && p[len - 1] != '/')
		g_byte_array_append(k, (const guint8 *)"/", 1);
	return g_byte_array_free_to_bytes(k);
}

/* A file inode holding the value it read at revision rev. */
static void file_inode(const uint8_t *p, size_t len, int64_t rev)
{
	g_autoptr(GBytes) key = below_root(p, len, false);
	struct ef_inode *in;
	struct ef_kv *kv;

	if (g_bytes_get_size(key) == 0)
		return;
	in = inode_lookup(EF_FILE, key);
	kv = g_new0(struct ef_kv, 1);
	kv->key = g_bytes_ref(key);
	kv->value = g_bytes_new_static("cached", 6);
	kv->size = 6;
	kv->mod_revision = rev;
	kv->create_revision = 1;
	kv->version = 1;
	cache_store(in, kv, true);
	inode_unref(in);
}

/* A directory inode whose name set is known (empty until events fill it);
 * no bytes: the root. */
static void dir_inode(const uint8_t *p, size_t len)
{
	g_autoptr(GBytes) key = below_root(p, len, true);
	struct ef_inode *in = inode_lookup(EF_DIR, key);

	inode_names_start(in);
	inode_unref(in);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fz_quiet_logs();
	revclock_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	int64_t next = 0;
	bool created = false;

	setup(fz_u8(&in));
	while (in.n > 0) {
		uint8_t tag = fz_u8(&in);
		const uint8_t *p;
		size_t len = fz_record(&in, &p);
		g_autoptr(GBytes) key = NULL;

		switch (tag % 8) {
		case 0:
		case 1:
			message(p, len, tag % 8 == 1, &next, &created);
			break;
		case 2:
			if (stream_trusted())
				stream_lost(&created);
			break;
		case 3:
			file_inode(p, len, tag >> 3);
			break;
		case 4:
			dir_inode(p, len);
			break;
		case 5:
			key = below_root(p, len, false);
			watch_note_created(key, tag >> 3);
			break;
		case 6:
			key = below_root(p, len, tag & 8);
			if (w.local->len < MAX_LOCAL)
				watch_local_begin(key, tag & 8);
			break;
		default:
			if (w.local->len)
				watch_local_end(w.local->pdata[0]);
			break;
		}
		check_name_sets();
		drain_notices();
	}
	teardown();
	return 0;
}
