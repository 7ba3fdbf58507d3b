/*
 * session — leases kept alive while files are open (see session.h).
 *
 * The keepalive thread wakes every third of the shortest TTL and sends a
 * keepalive for each lease on one LeaseKeepAlive stream, opened again
 * when it drops. A lease etcd says is gone (TTL 0) took its keys with it:
 * it is forgotten, logged, and the next binding of that TTL gets a new one.
 */
#include "session.h"

#include <errno.h>
#include <inttypes.h>

#include "etcd.h"

/* A delete at last close whose answer was lost is sent again (it is
 * guarded by the lease: a copy that landed leaves nothing to delete). */
#define UNBIND_TRIES 3

struct ef_sessions {
	struct ef_etcd *etcd;
	GMutex lock;
	GCond cond;
	GHashTable *leases;             /* protected by lock: ttl -> lease id */
	GHashTable *lost;               /* protected by lock: ids etcd dropped */
	GHashTable *bound;              /* protected by lock: inode number -> lease */
	bool stop;                      /* protected by lock */
	GThread *thread;
	struct ef_grpc_stream *ka;      /* keepalive thread only */
	gint ka_closed;                 /* atomic: the stream ended */
};

static void on_ttl(void *ud, int64_t id, int64_t ttl)
{
	struct ef_sessions *s = ud;

	if (ttl > 0)
		return;
	g_mutex_lock(&s->lock);
	g_hash_table_add(s->lost, g_memdup2(&id, sizeof(id)));
	g_cond_signal(&s->cond);
	g_mutex_unlock(&s->lock);
}

static void on_close(void *ud, int err)
{
	struct ef_sessions *s = ud;

	g_atomic_int_set(&s->ka_closed, 1);
}

static const struct ef_keepalive_ops ka_ops = { .on_ttl = on_ttl, .on_close = on_close };

/* Forgets the leases etcd dropped; under lock. */
static void forget_lost_locked(struct ef_sessions *s)
{
	GHashTableIter it;
	gpointer k, v;

	g_hash_table_iter_init(&it, s->leases);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		if (g_hash_table_contains(s->lost, v)) {
			g_warning("etcdfs: session lease %" PRIx64 " expired: the keys of files "
				  "open on it are gone", *(int64_t *)v);
			g_hash_table_iter_remove(&it);
		}
	}
	g_hash_table_remove_all(s->lost);
}

/* Sends one keepalive per lease; returns the shortest TTL (0: none). */
static int64_t keepalive_round(struct ef_sessions *s)
{
	g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
	int64_t shortest = 0;
	GHashTableIter it;
	gpointer k, v;

	g_mutex_lock(&s->lock);
	forget_lost_locked(s);
	g_hash_table_iter_init(&it, s->leases);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		g_array_append_val(ids, *(int64_t *)v);
		if (!shortest || *(int64_t *)k < shortest)
			shortest = *(int64_t *)k;
	}
	g_mutex_unlock(&s->lock);
	if (s->ka && g_atomic_int_get(&s->ka_closed)) {
		etcd_keepalive_close(s->ka);
		s->ka = NULL;
	}
	if (ids->len && !s->ka) {
		g_atomic_int_set(&s->ka_closed, 0);
		if (etcd_keepalive_open(s->etcd, &ka_ops, s, &s->ka) < 0)
			s->ka = NULL;
	}
	for (guint i = 0; s->ka && i < ids->len; i++)
		etcd_keepalive_send(s->ka, g_array_index(ids, int64_t, i));
	return shortest;
}

static gpointer keepalive_main(gpointer data)
{
	struct ef_sessions *s = data;

	for (;;) {
		int64_t ttl = keepalive_round(s);
		/* A third of the TTL: two keepalives may be lost before it
		 * lapses; a stream that failed is opened again within 1 s. */
		gint64 wait = ttl ? MIN(ttl * G_USEC_PER_SEC / 3, G_USEC_PER_SEC) : G_USEC_PER_SEC;
		gint64 until = g_get_monotonic_time() + wait;
		bool stop;

		g_mutex_lock(&s->lock);
		while (!s->stop && g_hash_table_size(s->lost) == 0 &&
		       g_cond_wait_until(&s->cond, &s->lock, until))
			;
		stop = s->stop;
		g_mutex_unlock(&s->lock);
		if (stop)
			break;
	}
	if (s->ka)
		etcd_keepalive_close(s->ka);
	return NULL;
}

struct ef_sessions *sessions_new(struct ef_etcd *etcd)
{
	struct ef_sessions *s = g_new0(struct ef_sessions, 1);

	s->etcd = etcd;
	g_mutex_init(&s->lock);
	g_cond_init(&s->cond);
	s->leases = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->lost = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
	s->bound = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	s->thread = g_thread_new("etcdfs-session", keepalive_main, s);
	return s;
}

void sessions_free(struct ef_sessions *s)
{
	GHashTableIter it;
	gpointer k, v;

	if (!s)
		return;
	g_mutex_lock(&s->lock);
	s->stop = true;
	g_cond_signal(&s->cond);
	g_mutex_unlock(&s->lock);
	g_thread_join(s->thread);
	/* The mount goes: the keys of files still open go with it. */
	g_hash_table_iter_init(&it, s->leases);
	while (g_hash_table_iter_next(&it, &k, &v))
		etcd_lease_revoke(s->etcd, *(int64_t *)v);
	g_hash_table_destroy(s->leases);
	g_hash_table_destroy(s->lost);
	g_hash_table_destroy(s->bound);
	g_mutex_clear(&s->lock);
	g_cond_clear(&s->cond);
	g_free(s);
}

int sessions_lease(struct ef_sessions *s, int64_t ttl, int64_t *lease)
{
	int64_t id, granted, *have;
	int rc;

	g_mutex_lock(&s->lock);
	forget_lost_locked(s);
	have = g_hash_table_lookup(s->leases, &ttl);
	if (have)
		*lease = *have;
	g_mutex_unlock(&s->lock);
	if (have)
		return 0;
	/* Granted without the lock; two binders racing each get a lease,
	 * and both are kept alive. */
	rc = etcd_lease_grant(s->etcd, ttl, &id, &granted);
	if (rc < 0)
		return rc;
	g_mutex_lock(&s->lock);
	if ((have = g_hash_table_lookup(s->leases, &ttl))) {
		g_mutex_unlock(&s->lock);
		etcd_lease_revoke(s->etcd, id);
		*lease = *have;
		return 0;
	}
	g_hash_table_insert(s->leases, g_memdup2(&ttl, sizeof(ttl)), g_memdup2(&id, sizeof(id)));
	g_cond_signal(&s->cond);
	g_mutex_unlock(&s->lock);
	*lease = id;
	return 0;
}

int sessions_unbind(struct ef_sessions *s, GBytes *key, int64_t lease)
{
	int rc = 0;

	for (int i = 0; i < UNBIND_TRIES; i++) {
		rc = etcd_delete_if_lease(s->etcd, key, lease);
		if (rc != -ENOTCONN && rc != -ETIMEDOUT && rc != -EAGAIN)
			break;
	}
	return rc;
}

void sessions_bind(struct ef_sessions *s, uint64_t ino, int64_t lease)
{
	g_mutex_lock(&s->lock);
	g_hash_table_insert(s->bound, g_memdup2(&ino, sizeof(ino)), g_memdup2(&lease, sizeof(lease)));
	g_mutex_unlock(&s->lock);
}

int64_t sessions_take(struct ef_sessions *s, uint64_t ino)
{
	int64_t lease = 0, *l;

	g_mutex_lock(&s->lock);
	if ((l = g_hash_table_lookup(s->bound, &ino))) {
		lease = *l;
		g_hash_table_remove(s->bound, &ino);
	}
	g_mutex_unlock(&s->lock);
	return lease;
}
