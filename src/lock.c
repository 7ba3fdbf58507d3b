/*
 * lock — flock(2) on files as etcd locks (see lock.h).
 *
 * One thread per mount owns all lock state. FUSE handlers, interrupt
 * callbacks and the I/O thread's callbacks only queue messages to it, so a
 * grant, an interrupt and a release are decided in one order and no FUSE
 * worker waits on a contended lock. The thread makes the short etcd calls
 * itself (LeaseGrant, the try-lock Txn, Unlock, LeaseRevoke), holding no
 * lock; a contended Lock is a stream whose answer comes back as a message.
 *
 * A parked request is answered exactly once, by this thread: before it
 * replies it clears the request's interrupt callback, which waits for a
 * callback already running (libfuse runs it under the request's lock), so
 * none can run after the reply.
 */
#include "lock.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>

#include "etcd.h"
#include "keymap.h"
#include "watch.h"

enum msg_kind { MSG_FLOCK, MSG_RELEASE, MSG_INTERRUPT, MSG_GRANT, MSG_KA_TTL, MSG_KA_CLOSED,
		MSG_STOP };

/* A flock request, parked or about to be. */
struct waiter {
	gint ref;
	struct ef_locks *l;
	fuse_req_t req;
	uint64_t owner;
	int op;
	GBytes *name;
	gint interrupted;          /* atomic: the caller was interrupted */
};

struct msg {
	enum msg_kind kind;
	struct waiter *w;          /* FLOCK, INTERRUPT: a reference */
	uint64_t owner;            /* RELEASE */
	GBytes *name;              /* GRANT */
	uint64_t gen;              /* GRANT: of the call; KA_*: of the stream */
	int err;                   /* GRANT */
	GBytes *key;               /* GRANT: the owner key etcd made */
	int64_t rev;               /* GRANT: the revision it was granted at */
	int64_t ttl;               /* KA_TTL */
};

/* One lock name this mount holds, waits for, or is asked about. */
struct lk {
	GBytes *name;
	uint64_t holder;           /* the owner holding it here; 0: none */
	GBytes *key;               /* while held: its owner key in etcd */
	GQueue waiters;            /* struct waiter, oldest first */
	struct ef_grpc_stream *call;   /* the Lock call for the first waiter */
	uint64_t gen;              /* of that call */
};

struct ef_locks {
	struct ef_etcd *etcd;      /* borrowed */
	GBytes *prefix;
	int64_t ttl;
	GAsyncQueue *q;            /* struct msg */
	GThread *thread;
	/* The thread's own, from here on. */
	GHashTable *locks;         /* name -> struct lk */
	uint64_t gen;              /* last call or stream generation given */
	int64_t lease;             /* 0: none granted (or it was lost) */
	struct ef_grpc_stream *ka; /* the lease's keepalive stream, if open */
	uint64_t ka_gen;
	gint64 ka_due;             /* monotonic us: next keepalive request */
};

/* What an I/O thread callback needs to say which call it is about. */
struct call_ud {
	struct ef_locks *l;
	GBytes *name;              /* a reference; NULL for the keepalive stream */
	uint64_t gen;
};

static struct waiter *waiter_ref(struct waiter *w)
{
	g_atomic_int_inc(&w->ref);
	return w;
}

static void waiter_unref(struct waiter *w)
{
	if (w && g_atomic_int_dec_and_test(&w->ref)) {
		g_bytes_unref(w->name);
		g_free(w);
	}
}

static void push(struct ef_locks *l, struct msg m)
{
	g_async_queue_push(l->q, g_memdup2(&m, sizeof(m)));
}

static void msg_free(struct msg *m)
{
	waiter_unref(m->w);
	if (m->name)
		g_bytes_unref(m->name);
	if (m->key)
		g_bytes_unref(m->key);
	g_free(m);
}

/* Answers a request, once, and drops the thread's reference to it. */
static void answer(struct waiter *w, int err)
{
	fuse_req_interrupt_func(w->req, NULL, NULL);
	fuse_reply_err(w->req, err);
	waiter_unref(w);
}

/* etcd's owner key of name for our lease: name/<lease in hex>. */
static GBytes *owner_key(struct ef_locks *l, GBytes *name)
{
	gsize len;
	const char *n = g_bytes_get_data(name, &len);
	g_autofree char *suffix = g_strdup_printf("/%" PRIx64, (uint64_t)l->lease);
	GByteArray *k = g_byte_array_sized_new(len + strlen(suffix));

	g_byte_array_append(k, (const guint8 *)n, len);
	g_byte_array_append(k, (const guint8 *)suffix, strlen(suffix));
	return g_byte_array_free_to_bytes(k);
}

static void lk_free(struct lk *lk)
{
	g_bytes_unref(lk->name);
	if (lk->key)
		g_bytes_unref(lk->key);
	g_free(lk);
}

static struct lk *lk_get(struct ef_locks *l, GBytes *name)
{
	struct lk *lk = g_hash_table_lookup(l->locks, name);

	if (!lk) {
		lk = g_new0(struct lk, 1);
		lk->name = g_bytes_ref(name);
		g_queue_init(&lk->waiters);
		g_hash_table_insert(l->locks, lk->name, lk);
	}
	return lk;
}

/* Forgets a name nobody here holds, waits for or calls about. */
static void lk_maybe_drop(struct ef_locks *l, struct lk *lk)
{
	if (!lk->holder && !lk->call && g_queue_is_empty(&lk->waiters))
		g_hash_table_remove(l->locks, lk->name);
}

/* ---- the lease ---- */

static void ka_on_ttl(void *ud, int64_t id, int64_t ttl)
{
	struct call_ud *c = ud;

	push(c->l, (struct msg){ .kind = MSG_KA_TTL, .gen = c->gen, .ttl = id ? ttl : 0 });
}

static void ka_on_close(void *ud, int err)
{
	struct call_ud *c = ud;

	push(c->l, (struct msg){ .kind = MSG_KA_CLOSED, .gen = c->gen, .err = err });
	g_free(c);
}

static const struct ef_keepalive_ops ka_ops = { .on_ttl = ka_on_ttl, .on_close = ka_on_close };

static void ka_close(struct ef_locks *l)
{
	if (l->ka)
		etcd_keepalive_close(l->ka);
	l->ka = NULL;
}

/* Sends the next keepalive, opening the stream first if it is not. */
static void ka_tick(struct ef_locks *l)
{
	l->ka_due = g_get_monotonic_time() + l->ttl * G_USEC_PER_SEC / 3;
	if (!l->lease)
		return;
	if (!l->ka) {
		struct call_ud *c = g_new0(struct call_ud, 1);

		c->l = l;
		c->gen = l->ka_gen = ++l->gen;
		if (etcd_keepalive_open(l->etcd, &ka_ops, c, &l->ka) < 0) {
			g_free(c);
			l->ka = NULL;
			return;
		}
	}
	if (etcd_keepalive_send(l->ka, l->lease) < 0)
		ka_close(l);
}

static int lease_ensure(struct ef_locks *l)
{
	int64_t id, ttl;
	int rc;

	if (l->lease)
		return 0;
	rc = etcd_lease_grant(l->etcd, l->ttl, &id, &ttl);
	if (rc < 0) {
		g_message("etcdfs: no lease for locks: %s", g_strerror(-rc));
		return rc;
	}
	l->lease = id;
	ka_tick(l);
	return 0;
}



/* ---- Lock calls ---- */

static void call_on_done(void *ud, int err, GBytes *key, int64_t rev)
{
	struct call_ud *c = ud;

	/* The message takes c's reference to the name. */
	push(c->l, (struct msg){ .kind = MSG_GRANT, .name = c->name, .gen = c->gen, .err = err,
				 .key = key ? g_bytes_ref(key) : NULL, .rev = rev });
	g_free(c);
}

static const struct ef_lock_ops call_ops = { .on_done = call_on_done };

/* Lets go of the lock in etcd (the owner key, whether granted or still
 * waiting: deleting a waiter's key withdraws it). */
static void unlock_key(struct ef_locks *l, GBytes *key)
{
	int rc = etcd_unlock(l->etcd, key);

	/* The key stays until the lease ends: at unmount, or TTL after the
	 * daemon is gone. */
	if (rc < 0)
		g_message("etcdfs: unlock failed: %s", g_strerror(-rc));
}

/* Ends the call in flight, and withdraws the key it may have made. */
static void call_cancel(struct ef_locks *l, struct lk *lk)
{
	g_autoptr(GBytes) key = NULL;

	if (!lk->call)
		return;
	/* Its answer, if one comes now, is queued with a stale generation. */
	etcd_lock_cancel(lk->call);
	lk->call = NULL;
	key = owner_key(l, lk->name);
	unlock_key(l, key);
}

/* Fails every waiter of lk with err. */
static void fail_waiters(struct lk *lk, int err)
{
	struct waiter *w;

	while ((w = g_queue_pop_head(&lk->waiters)))
		answer(w, err);
}

/* Starts the Lock call for the first waiter, if the lock is free here. */
static void call_next(struct ef_locks *l, struct lk *lk)
{
	struct call_ud *c;
	int rc;

	if (lk->holder || lk->call || g_queue_is_empty(&lk->waiters))
		return;
	rc = lease_ensure(l);
	if (rc == 0) {
		c = g_new0(struct call_ud, 1);
		c->l = l;
		c->name = g_bytes_ref(lk->name);
		c->gen = lk->gen = ++l->gen;
		rc = etcd_lock_start(l->etcd, lk->name, l->lease, &call_ops, c, &lk->call);
		if (rc < 0) {
			g_bytes_unref(c->name);
			g_free(c);
			lk->call = NULL;
		}
	}
	if (rc < 0)
		fail_waiters(lk, ENOLCK);
}

/* etcd says the lease is gone (it expired while we could not reach etcd):
 * so is every lock key on it. The holders here are told nothing today; the
 * waiters wait again on a new lease (their keys went with the old one). */
static void lease_lost(struct ef_locks *l)
{
	GHashTableIter it;
	struct lk *lk;

	g_warning("etcdfs: the lock lease %" PRIx64 " expired: locks held here are lost",
		  (uint64_t)l->lease);
	l->lease = 0;
	ka_close(l);
	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk)) {
		if (lk->key) {
			g_bytes_unref(lk->key);
			lk->key = NULL;
		}
		if (lk->call) {
			etcd_lock_cancel(lk->call);
			lk->call = NULL;
			call_next(l, lk);
		}
	}
}

/* Gives the lock to owner (etcd granted it at rev), and says so to every
 * waiter of that owner. */
static void grant(struct lk *lk, uint64_t owner, GBytes *key, int64_t rev)
{
	GList *n = lk->waiters.head, *next;

	/* What the previous holder wrote before letting go is older than
	 * rev: the caches wait for the watch to bring it. */
	watch_order_after(rev);
	lk->holder = owner;
	lk->key = key;
	for (; n; n = next) {
		struct waiter *w = n->data;

		next = n->next;
		if (w->owner == owner) {
			g_queue_delete_link(&lk->waiters, n);
			answer(w, 0);
		}
	}
}

/* Lets go of what owner holds; the caller drops lk if nobody needs it. */
static void release_held(struct ef_locks *l, struct lk *lk)
{
	if (lk->key) {
		unlock_key(l, lk->key);
		g_bytes_unref(lk->key);
	}
	lk->key = NULL;
	lk->holder = 0;
	call_next(l, lk);
}

static void on_grant(struct ef_locks *l, struct msg *m)
{
	struct lk *lk = g_hash_table_lookup(l->locks, m->name);
	struct waiter *w;

	g_debug("lock: answer %d for call %" PRIu64 " (current %" PRIu64 ")", m->err, m->gen,
		lk ? lk->gen : 0);
	/* Cancelled meanwhile: call_cancel already withdrew its key. */
	if (!lk || !lk->call || lk->gen != m->gen)
		return;
	etcd_lock_cancel(lk->call);
	lk->call = NULL;
	if (m->err < 0) {
		/* Every waiter would get the same answer from etcd now. */
		fail_waiters(lk, ENOLCK);
		lk_maybe_drop(l, lk);
		return;
	}
	w = g_queue_peek_head(&lk->waiters);
	if (!w) {
		unlock_key(l, m->key);
		lk_maybe_drop(l, lk);
		return;
	}
	grant(lk, w->owner, g_steal_pointer(&m->key), m->rev);
}

/* LOCK_NB on a lock free here: one Txn takes it if it is free in etcd
 * too. Returns the errno to answer. */
static int lock_try(struct ef_locks *l, struct lk *lk, uint64_t owner)
{
	g_autoptr(GBytes) key = NULL;
	int64_t rev = 0;
	int rc = lease_ensure(l);

	if (rc == 0) {
		key = owner_key(l, lk->name);
		rc = etcd_lock_try(l->etcd, lk->name, key, l->lease, &rev);
	}
	if (rc == 0)
		grant(lk, owner, g_steal_pointer(&key), rev);
	return rc == 0 ? 0 : rc == -EAGAIN ? EWOULDBLOCK : ENOLCK;
}

static void on_flock(struct ef_locks *l, struct waiter *w)
{
	struct lk *lk = lk_get(l, w->name);
	bool busy = lk->holder || lk->call || !g_queue_is_empty(&lk->waiters);
	bool nb = w->op & LOCK_NB;
	int mode = w->op & ~LOCK_NB;

	g_debug("lock: flock op %d owner %" PRIx64 " (holder %" PRIx64 ", %u waiting%s)", w->op,
		w->owner, lk->holder, g_queue_get_length(&lk->waiters), lk->call ? ", calling" : "");
	if (g_atomic_int_get(&w->interrupted)) {
		answer(w, EINTR);
	} else if (mode == LOCK_UN || lk->holder == w->owner) {
		/* An unlock, or a lock this owner has already (a conversion
		 * to the other mode). */
		if (mode == LOCK_UN && lk->holder == w->owner)
			release_held(l, lk);
		answer(w, 0);
	} else if (busy && nb) {
		answer(w, EWOULDBLOCK);
	} else if (!nb) {
		g_queue_push_tail(&lk->waiters, w);
		call_next(l, lk);
	} else {
		answer(w, lock_try(l, lk, w->owner));
	}
	lk_maybe_drop(l, lk);
}

static void on_interrupt(struct ef_locks *l, struct waiter *w)
{
	struct lk *lk = g_hash_table_lookup(l->locks, w->name);
	GList *n = lk ? g_queue_find(&lk->waiters, w) : NULL;

	/* Not parked (answered already, or its FLOCK is still queued and
	 * will see the flag). */
	if (!n)
		return;
	if (n == lk->waiters.head)
		call_cancel(l, lk);
	g_queue_delete_link(&lk->waiters, n);
	answer(w, EINTR);
	call_next(l, lk);
	lk_maybe_drop(l, lk);
}

static void on_release(struct ef_locks *l, uint64_t owner)
{
	GHashTableIter it;
	struct lk *lk;

	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk))
		if (lk->holder == owner) {
			release_held(l, lk);
			lk_maybe_drop(l, lk);
			return;
		}
}

/* Unmount: nothing waits any longer, and the lease goes with its keys. */
static void shut_down(struct ef_locks *l)
{
	GHashTableIter it;
	struct lk *lk;

	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk)) {
		if (lk->call) {
			etcd_lock_cancel(lk->call);
			lk->call = NULL;
		}
		fail_waiters(lk, ENOLCK);
	}
	ka_close(l);
	if (l->lease && etcd_lease_revoke(l->etcd, l->lease) < 0)
		g_message("etcdfs: the lock lease could not be revoked: it lapses in %" PRId64 " s",
			  l->ttl);
	l->lease = 0;
}

static gpointer lock_thread(gpointer data)
{
	struct ef_locks *l = data;
	struct msg *m;
	bool stop = false;

	while (!stop) {
		gint64 wait = l->lease ? l->ka_due - g_get_monotonic_time() : (gint64)G_USEC_PER_SEC * 3600;

		/* Due keepalives go first: a steady stream of messages must
		 * not starve them. */
		if (l->lease && wait <= 0) {
			ka_tick(l);
			continue;
		}
		m = g_async_queue_timeout_pop(l->q, (guint64)wait);
		if (!m)
			continue;
		switch (m->kind) {
		case MSG_FLOCK:
			on_flock(l, g_steal_pointer(&m->w));
			break;
		case MSG_INTERRUPT:
			on_interrupt(l, m->w);
			break;
		case MSG_RELEASE:
			on_release(l, m->owner);
			break;
		case MSG_GRANT:
			on_grant(l, m);
			break;
		case MSG_KA_TTL:
			if (m->gen == l->ka_gen && l->lease && m->ttl <= 0)
				lease_lost(l);
			break;
		case MSG_KA_CLOSED:
			/* Opened again at the next tick. */
			if (m->gen == l->ka_gen)
				ka_close(l);
			break;
		case MSG_STOP:
			shut_down(l);
			stop = true;
			break;
		}
		msg_free(m);
	}
	return NULL;
}

struct ef_locks *locks_new(struct ef_etcd *etcd, const char *prefix, int ttl)
{
	struct ef_locks *l = g_new0(struct ef_locks, 1);

	l->etcd = etcd;
	l->prefix = g_bytes_new(prefix, strlen(prefix));
	l->ttl = ttl;
	l->q = g_async_queue_new();
	l->locks = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, NULL,
					 (GDestroyNotify)lk_free);
	l->thread = g_thread_new("etcdfs-lock", lock_thread, l);
	return l;
}

void locks_free(struct ef_locks *l)
{
	struct msg *m;

	if (!l)
		return;
	push(l, (struct msg){ .kind = MSG_STOP });
	g_thread_join(l->thread);
	/* Answers of cancelled calls and streams, queued after the stop. */
	while ((m = g_async_queue_try_pop(l->q)))
		msg_free(m);
	g_async_queue_unref(l->q);
	g_hash_table_destroy(l->locks);
	g_bytes_unref(l->prefix);
	g_free(l);
}

GBytes *locks_name(struct ef_locks *l, GBytes *key)
{
	gsize plen, klen;
	const char *p = g_bytes_get_data(l->prefix, &plen);
	const char *k = g_bytes_get_data(key, &klen);

	return keymap_lock_name(p, plen, k, klen);
}

/* libfuse's interrupt callback: runs on another worker, under the
 * request's lock, possibly before the FLOCK message is taken. */
static void interrupted(fuse_req_t req, void *data)
{
	struct waiter *w = data;

	(void)req;
	g_atomic_int_set(&w->interrupted, 1);
	push(w->l, (struct msg){ .kind = MSG_INTERRUPT, .w = waiter_ref(w) });
}

void locks_flock(struct ef_locks *l, fuse_req_t req, GBytes *key, uint64_t owner, int op)
{
	struct waiter *w = g_new0(struct waiter, 1);

	w->ref = 1;
	w->l = l;
	w->req = req;
	w->owner = owner;
	w->op = op;
	w->name = locks_name(l, key);
	/* Registered before the request is queued, so that the thread's
	 * answer always comes after it: an interrupt that came first has
	 * set the flag the FLOCK message is checked against. */
	if (!(op & LOCK_NB) && (op & ~LOCK_NB) != LOCK_UN)
		fuse_req_interrupt_func(req, interrupted, w);
	push(l, (struct msg){ .kind = MSG_FLOCK, .w = w });
}

void locks_release(struct ef_locks *l, uint64_t owner)
{
	push(l, (struct msg){ .kind = MSG_RELEASE, .owner = owner });
}
