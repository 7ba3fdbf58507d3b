/*
 * fuzz_etcd — the protobuf decoders and what etcd.c makes of them.
 *
 * etcd.c is the edge where everything a server says is unpacked and turned
 * into the daemon's structures. This target calls its real typed calls
 * (Range in its forms, the read-only and writing Txns, Status, MemberList,
 * Alarm, LeaseGrant, Lock) over grpc.c with fake_h2 answering from the
 * input, so unpacking, the header and cluster checks, retries, Txn
 * response walking and conversion all run on hostile bytes; the keys a
 * Range hands out go on into a dirlist, as a directory listing does.
 * Input: [op u8][argument u8], then fake_h2's script of answers.
 */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "dirlist.h"
#include "etcd.h"
#include "fake_h2.h"
#include "fuzz.h"
#include "revclock.h"

#define TIMEOUT_MS 60000

static GBytes *key_a, *dir_d, *dir_r;

/* The pages a listing would feed to its dirlist. */
static void feed_keys(void *ud, const char *const *keys, const size_t *lens, size_t n, bool more)
{
	dirlist_feed(ud, keys, lens, n, more);
}

static bool keep_odd(void *ud, const char *key, size_t len)
{
	return len & 1;
}

static void check_kv(const struct ef_kv *kv, bool keys_only)
{
	g_assert_nonnull(kv);
	g_assert_nonnull(kv->key);
	if (keys_only)
		return;
	g_assert_nonnull(kv->value);
	g_assert_cmpuint(g_bytes_get_size(kv->value), ==, kv->size);
}

static void check_kvs(GPtrArray *kvs, bool keys_only)
{
	for (guint i = 0; i < kvs->len; i++)
		check_kv(kvs->pdata[i], keys_only);
}

static void listing(struct ef_etcd *e, uint8_t arg, int op)
{
	struct ef_dirlist *l = dirlist_new("/r/", 3);
	const char *s, *end;
	size_t slen, elen;

	/* A whole listing, page after page, as long as the script answers. */
	while (dirlist_range(l, &s, &slen, &end, &elen)) {
		struct ef_page_req rq = {
			.key = s, .klen = slen, .end = end, .elen = elen, .limit = arg >> 1,
			.keys_only = arg & 1, .max_bytes = (size_t)arg << 4,
			.keys_fn = feed_keys, .keep = keep_odd, .ud = l,
		};
		struct ef_page pg;
		int rc;

		if (op == 1) {
			rc = etcd_range_keys(e, s, slen, end, elen, arg, feed_keys, l, NULL);
		} else {
			rc = etcd_range_page(e, &rq, &pg);
			if (rc == 0) {
				check_kvs(pg.kvs, rq.keys_only);
				g_assert_cmpuint(pg.kvs->len, <=, pg.n);
				g_ptr_array_unref(pg.kvs);
			}
		}
		if (rc < 0)
			break;
	}
	for (size_t i = 0; i < dirlist_count(l); i++)
		g_assert_nonnull(dirlist_get(l, i)->name);
	dirlist_free(l);
}

static void lookup(struct ef_etcd *e, uint8_t arg)
{
	struct ef_dirlist *child = dirlist_new("/r/d/", 5);
	struct ef_dirlist *parent = dirlist_new("/r/", 3);
	struct ef_lookup_pages pg = {
		.child_fn = arg & 1 ? feed_keys : NULL, .child_ud = child, .child_limit = 1000,
		.list_dir = arg & 2 ? dir_r : NULL, .list_fn = feed_keys, .list_ud = parent,
		.list_limit = 1000,
	};
	struct ef_kv *kv = NULL;
	bool has_children;
	int64_t rev;

	if (etcd_lookup_pages(e, dir_d, dir_d, &pg, &kv, &has_children, &rev) == 0 && kv)
		check_kv(kv, false);
	ef_kv_free(kv);
	dirlist_free(child);
	dirlist_free(parent);
}

static void writes(struct ef_etcd *e, int op, uint8_t arg)
{
	g_autoptr(GBytes) fence_key = g_bytes_new_static("/lock/a%/1", 10);
	struct ef_fence fence = { fence_key, 7 };
	GBytes *prefixes[] = { dir_r, dir_d, key_a };
	bool any[3], probe_any;
	int64_t n, rev;

	switch (op) {
	case 5:
		etcd_put(e, key_a, "value", 5, arg & 4 ? 0x1234 : 0, (int)(arg & 3) - 1,
			 arg & 8 ? &fence : NULL, &rev);
		break;
	case 6:
		etcd_delete(e, arg & 1 ? dir_d : key_a, arg & 2 ? dir_r : NULL, &n);
		break;
	case 7:
		etcd_any(e, prefixes, 1 + arg % 3, any);
		break;
	default:
		etcd_unlink(e, key_a, dir_r, &n, &probe_any);
		break;
	}
}

static void rename_txn(struct ef_etcd *e, uint8_t arg)
{
	g_autoptr(GBytes) dst = g_bytes_new_static("/r/b", 4);
	g_autoptr(GBytes) dst2 = g_bytes_new_static("/r/e/x", 6);
	struct ef_kv src = { .key = key_a, .value = dir_d, .size = 5, .mod_revision = 3 };
	struct ef_kv src2 = { .key = dir_d, .value = key_a, .size = 4, .mod_revision = 4 };
	struct ef_move moves[] = { { &src, dst }, { &src2, dst2 } };
	int64_t rev;
	bool probe_any;
	struct ef_rename r = {
		.moves = moves, .n_moves = 1 + (arg & 1),
		.del_key = arg & 2 ? dir_d : NULL, .del_end = dir_r,
		.guard_key = arg & 4 ? dir_r : NULL, .guard_rev = 9,
		.empty_key = arg & 8 ? dir_d : NULL,
		.absent_key = arg & 16 ? dst : NULL,
		.rev = &rev, .probe = arg & 32 ? dir_r : NULL, .probe_any = &probe_any,
	};

	etcd_rename(e, &r);
}

static void locks(struct ef_etcd *e, int op, uint8_t arg)
{
	g_autoptr(GBytes) pfx = g_bytes_new_static("/lock/a%/", 9);
	g_autoptr(GBytes) key = g_bytes_new_static("/lock/a%/694d", 13);
	g_autoptr(GPtrArray) kvs = NULL;
	int64_t rev;

	if (op == 9 && etcd_lock_enter(e, pfx, key, arg & 1, 0x694d, &rev, &kvs) == 0)
		check_kvs(kvs, false);
	else if (op == 10)
		etcd_lock_mark(e, key, 5, 0x694d, &rev);
	else if (op == 11)
		etcd_unlock(e, key);
}

static void cluster(struct ef_etcd *e, int op)
{
	struct ef_status st = { 0 };
	struct ef_member_info *m = NULL;
	struct ef_header h;
	g_autofree char *why = NULL;
	int64_t id, ttl;
	uint64_t leader;
	size_t n = 0;

	switch (op) {
	case 12:
		if (etcd_status(e, &st) == 0)
			g_assert_nonnull(st.errors);
		ef_status_clear(&st);
		break;
	case 13:
		if (etcd_member_list(e, &h, &m, &n) == 0)
			for (size_t i = 0; i < n; i++)
				g_assert_true(m[i].peer_urls && m[i].client_urls);
		ef_members_free(m, n);
		break;
	case 14:
		etcd_sync_endpoints(e);
		break;
	case 15:
		if (etcd_health(e, &why) < 0)
			g_assert_nonnull(why);
		break;
	case 16:
		etcd_header(e, &h);
		break;
	case 17:
		etcd_probe(e, TIMEOUT_MS, &leader);
		break;
	default:
		etcd_lease_grant(e, 10, &id, &ttl);
		break;
	}
}

static void watch_msg(struct fz_in *in)
{
	const uint8_t *p;
	size_t len = fz_bytes(in, in->n, &p);
	struct ef_watch_msg *m = etcd_watch_msg_parse(p, len);

	for (size_t i = 0; m && i < m->n_events; i++)
		check_kv(m->events[i].kv, false);
	etcd_watch_msg_free(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fz_quiet_logs();
	revclock_init();
	key_a = g_bytes_new_static("/r/a", 4);
	dir_d = g_bytes_new_static("/r/d/", 5);
	dir_r = g_bytes_new_static("/r/", 3);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	int op = fz_u8(&in) % 20;
	uint8_t arg = fz_u8(&in);
	struct ef_etcd *e = etcd_new(NULL, TIMEOUT_MS, arg & 0x80);
	g_autoptr(GPtrArray) kvs = NULL;
	struct ef_kv *kv = NULL;
	bool more;
	int64_t rev;

	fake_h2_script(&in);
	switch (op) {
	case 0:
		if (etcd_range(e, "/r/", 3, "/r0", 3, arg & 0x3f, arg & 0x40, &kvs, &more,
			       &rev) == 0)
			check_kvs(kvs, arg & 0x40);
		break;
	case 1:
	case 2:
		listing(e, arg, op);
		break;
	case 3:
		lookup(e, arg);
		break;
	case 4:
		if (arg & 1) {
			if (etcd_get(e, key_a, &kv) == 0 && kv)
				check_kv(kv, false);
			ef_kv_free(kv);
		} else {
			etcd_mod_revision(e, key_a, &rev);
		}
		break;
	case 5:
	case 6:
	case 7:
	case 8:
		writes(e, op, arg);
		break;
	case 19:
		watch_msg(&in);
		break;
	default:
		if (op == 18 && (arg & 1))
			rename_txn(e, arg >> 1);
		else if (op >= 9 && op <= 11)
			locks(e, op, arg);
		else
			cluster(e, op);
		break;
	}
	etcd_free(e);
	return 0;
}
