/*
 * lock — flock(2) and fcntl(2) locks on files as etcd locks (see lock.h).
 *
 * One thread per mount owns all lock state. FUSE handlers, interrupt
 * callbacks and the I/O thread's callbacks only queue messages to it, so a
 * grant, an interrupt and a release are decided in one order and no FUSE
 * worker waits on a contended lock. The thread makes the short etcd calls
 * itself (LeaseGrant, joining a queue, deleting a key), holding no lock; a
 * contended name is watched, and the watch's events come back as messages.
 *
 * Per name, the mount has at most two keys in etcd's queue (lockrule.h): a
 * writer's while a local owner holds or waits for an exclusive lock, a
 * reader's while local owners share it. The local owners are arbitrated
 * here, oldest request first, under the cover of those keys.
 *
 * A parked request is answered exactly once, by this thread: before it
 * replies it clears the request's interrupt callback, which waits for a
 * callback already running (libfuse runs it under the request's lock), so
 * none can run after the reply.
 */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>

#include "etcd.h"
#include "keymap.h"
#include "lockrule.h"
#include "watch.h"

enum msg_kind { MSG_SETLK, MSG_GETLK, MSG_FLUSH, MSG_RELEASE, MSG_INTERRUPT, MSG_WATCH,
		MSG_WATCH_CLOSED, MSG_KA_TTL, MSG_KA_CLOSED, MSG_REPUMP, MSG_STOP };

/* A lock request (flock, F_SETLK[W], F_GETLK), parked or about to be. */
struct waiter {
	gint ref;
	struct ef_locks *l;
	fuse_req_t req;
	bool flock;                /* flock(2); else fcntl, POSIX or OFD */
	bool nb;                   /* not to wait */
	uint64_t owner, fh, ino;
	pid_t pid;
	enum lock_mode mode;       /* LOCK_MODE_NONE: an unlock */
	int64_t start, end;        /* fcntl's range */
	GBytes *name;
	gint interrupted;          /* atomic: the caller was interrupted */
	int err;                   /* the answer, once decided */
};

struct msg {
	enum msg_kind kind;
	struct waiter *w;          /* SETLK, GETLK, INTERRUPT: a reference */
	uint64_t owner, fh, ino;   /* FLUSH, RELEASE */
	bool flock;                /* RELEASE: the flock owner lets go too */
	GBytes *name;              /* WATCH* */
	uint64_t gen;              /* WATCH*: of the watch; KA_*: of the stream */
	struct ef_watch_msg *wm;   /* WATCH */
	int64_t lease, ttl;        /* KA_TTL */
};

/* One owner's lock on one name, granted. */
struct hold {
	uint64_t owner;
	bool flock;
	uint64_t fh, ino;
	pid_t pid;
	enum lock_mode mode;
	GArray *ranges;            /* fcntl: struct lock_range; NULL for flock */
	bool lost;                 /* the key it was granted under is gone */
};

/* One of this mount's keys in a name's queue. */
struct ekey {
	GBytes *key;
	int64_t create_rev;
	bool granted;
	bool used;                 /* a local owner has been granted under it */
	bool draining;             /* a reader's with a writer queued behind it:
				    * no new local reader joins it */
};

/* What a Put of a file whose lock the mount holds is guarded with. */
struct fence {
	struct ef_fence f;         /* f.key NULL: the lock is lost */
};

static void fence_free(struct fence *f)
{
	if (f->f.key)
		g_bytes_unref(f->f.key);
	g_free(f);
}

/* A key of the queue, as last read or watched. */
struct skey {
	GBytes *key;
	int64_t create_rev;
	bool shared;
};

/* One lock name this mount holds or waits for. */
struct lk {
	GBytes *name;
	GBytes *pfx;               /* name + "/": the queue */
	GPtrArray *holds;          /* struct hold */
	GQueue waiters;            /* struct waiter, oldest first */
	struct ekey *w, *r;        /* our writer's and reader's keys */
	GPtrArray *snap;           /* struct skey, while one of ours waits */
	int64_t snap_rev;          /* snap is the queue as of this revision */
	struct ef_grpc_stream *watch;  /* on pfx, while snap is kept */
	uint64_t watch_gen;
};

struct ef_locks {
	struct ef_etcd *etcd;      /* borrowed */
	GBytes *prefix;
	int64_t ttl;
	GAsyncQueue *q;            /* struct msg */
	GThread *thread;
	gint n_posix;              /* atomic: fcntl holds, for FLUSH and RELEASE */
	gint n_fences;             /* atomic: entries in fences */
	GMutex fence_lock;
	GHashTable *fences;        /* name -> struct fence; under fence_lock */
	/* The thread's own, from here on. */
	GHashTable *locks;         /* name -> struct lk */
	GQueue replies;            /* struct waiter, answered at the end of the
				    * message (after the fences are set) */
	uint64_t gen;              /* last stream generation given */
	uint64_t seq;              /* last key number given */
	int64_t lease;             /* 0: none granted (or it was lost) */
	struct ef_grpc_stream *ka; /* the lease's keepalive stream, if open */
	uint64_t ka_gen;
	gint64 ka_due;             /* monotonic us: next keepalive request */
	GPtrArray *stale;          /* GBytes: our keys to delete, whose delete
				    * failed or whose making may have happened */
	gint64 retry_due;          /* monotonic us: next retry; 0: none due */
};

/* What an I/O thread callback needs to say which stream it is about. */
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
	if (m->wm)
		etcd_watch_msg_free(m->wm);
	g_free(m);
}

/* Answers a request, once, when the message in hand is done: an unlock
 * must not return before its key is gone and the fence that names it
 * taken down, nor a grant before its fence is up. */
static void answer(struct waiter *w, int err)
{
	w->err = err;
	g_queue_push_tail(&w->l->replies, w);
}

/* Sends the answers decided, and drops the thread's references. */
static void replies_send(struct ef_locks *l)
{
	struct waiter *w;

	while ((w = g_queue_pop_head(&l->replies))) {
		fuse_req_interrupt_func(w->req, NULL, NULL);
		fuse_reply_err(w->req, w->err);
		waiter_unref(w);
	}
}

static GBytes *concat(GBytes *a, const char *b)
{
	gsize len;
	const char *d = g_bytes_get_data(a, &len);
	GByteArray *k = g_byte_array_sized_new(len + strlen(b));

	g_byte_array_append(k, (const guint8 *)d, len);
	g_byte_array_append(k, (const guint8 *)b, strlen(b));
	return g_byte_array_free_to_bytes(k);
}

static void hold_free(struct hold *h)
{
	if (h->ranges)
		g_array_unref(h->ranges);
	g_free(h);
}

static void ekey_free(struct ekey *e)
{
	if (e) {
		g_bytes_unref(e->key);
		g_free(e);
	}
}

static void skey_free(struct skey *s)
{
	g_bytes_unref(s->key);
	g_free(s);
}

static void lk_free(struct lk *lk)
{
	g_bytes_unref(lk->name);
	g_bytes_unref(lk->pfx);
	g_ptr_array_unref(lk->holds);
	ekey_free(lk->w);
	ekey_free(lk->r);
	if (lk->snap)
		g_ptr_array_unref(lk->snap);
	g_free(lk);
}

static struct lk *lk_get(struct ef_locks *l, GBytes *name)
{
	struct lk *lk = g_hash_table_lookup(l->locks, name);

	if (!lk) {
		lk = g_new0(struct lk, 1);
		lk->name = g_bytes_ref(name);
		lk->pfx = concat(name, "/");
		lk->holds = g_ptr_array_new_with_free_func((GDestroyNotify)hold_free);
		g_queue_init(&lk->waiters);
		g_hash_table_insert(l->locks, lk->name, lk);
	}
	return lk;
}

/* Forgets a name nobody here holds or waits for. */
static void lk_maybe_drop(struct ef_locks *l, struct lk *lk)
{
	if (!lk->holds->len && g_queue_is_empty(&lk->waiters) && !lk->w && !lk->r && !lk->watch)
		g_hash_table_remove(l->locks, lk->name);
}

/* ---- the lease ---- */

static void ka_on_ttl(void *ud, int64_t id, int64_t ttl)
{
	struct call_ud *c = ud;

	push(c->l, (struct msg){ .kind = MSG_KA_TTL, .gen = c->gen, .lease = id, .ttl = ttl });
}

static void ka_on_close(void *ud, int err)
{
	struct call_ud *c = ud;

	push(c->l, (struct msg){ .kind = MSG_KA_CLOSED, .gen = c->gen });
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

/* ---- the local owners ---- */

static struct hold *hold_find(struct lk *lk, uint64_t owner, bool flock)
{
	for (guint i = 0; i < lk->holds->len; i++) {
		struct hold *h = g_ptr_array_index(lk->holds, i);

		if (h->owner == owner && h->flock == flock)
			return h;
	}
	return NULL;
}

/* The mode owner's hold h (NULL: none) would have once w is granted. */
static enum lock_mode mode_after(const struct hold *h, const struct waiter *w)
{
	g_autoptr(GArray) r = NULL;

	if (w->flock)
		return w->mode;
	r = g_array_new(FALSE, FALSE, sizeof(struct lock_range));
	if (h)
		g_array_append_vals(r, h->ranges->data, h->ranges->len);
	lockrule_set_range(r, w->start, w->end, w->mode);
	return lockrule_ranges_mode(r);
}

/* A hold of another owner that a lock of mode m by owner cannot share the
 * file with (any range of a file locks all of it, across flock and fcntl,
 * as on NFS). */
static struct hold *conflict(struct lk *lk, uint64_t owner, enum lock_mode m)
{
	for (guint i = 0; i < lk->holds->len; i++) {
		struct hold *h = g_ptr_array_index(lk->holds, i);

		if (h->owner != owner && (m == LOCK_MODE_EXCL || h->mode == LOCK_MODE_EXCL))
			return h;
	}
	return NULL;
}

static void hold_remove(struct ef_locks *l, struct lk *lk, struct hold *h)
{
	if (!h->flock)
		g_atomic_int_add(&l->n_posix, -1);
	g_ptr_array_remove(lk->holds, h);
}

/* Gives w what it asked for (an unlock included). */
static void take(struct ef_locks *l, struct lk *lk, struct hold *h, const struct waiter *w)
{
	if (!h && w->mode == LOCK_MODE_NONE)
		return;
	if (!h) {
		h = g_new0(struct hold, 1);
		h->owner = w->owner;
		h->flock = w->flock;
		h->fh = w->fh;
		h->ino = w->ino;
		if (!w->flock) {
			h->ranges = g_array_new(FALSE, FALSE, sizeof(struct lock_range));
			g_atomic_int_inc(&l->n_posix);
		}
		g_ptr_array_add(lk->holds, h);
	}
	h->pid = w->pid ? w->pid : h->pid;
	if (w->flock) {
		h->mode = w->mode;
	} else {
		lockrule_set_range(h->ranges, w->start, w->end, w->mode);
		h->mode = lockrule_ranges_mode(h->ranges);
	}
	if (h->mode == LOCK_MODE_NONE)
		hold_remove(l, lk, h);
}

/* Every hold of lk was granted under a key that is gone. */
static void holds_lost(struct lk *lk)
{
	for (guint i = 0; i < lk->holds->len; i++)
		((struct hold *)g_ptr_array_index(lk->holds, i))->lost = true;
}

/* The key a lock of mode m is granted under here, if any. */
static struct ekey *cover(const struct lk *lk, enum lock_mode m)
{
	if (lk->w && lk->w->granted)
		return lk->w;
	if (m == LOCK_MODE_SHARED && lk->r && lk->r->granted && !lk->r->draining)
		return lk->r;
	return NULL;
}

static bool covered(const struct lk *lk, enum lock_mode m)
{
	return cover(lk, m) != NULL;
}

/* ---- the queue in etcd ---- */

static void retry_soon(struct ef_locks *l)
{
	if (!l->retry_due)
		l->retry_due = g_get_monotonic_time() + G_USEC_PER_SEC;
}

/* A key of ours that may be in etcd and must not stay: the lease keeps it
 * as long as the mount lives, and every other holder would wait for it. */
static void stale_add(struct ef_locks *l, GBytes *key)
{
	g_ptr_array_add(l->stale, g_bytes_ref(key));
	retry_soon(l);
}

static void unlock_key(struct ef_locks *l, struct ekey *e)
{
	int rc = etcd_unlock(l->etcd, e->key);

	if (rc < 0) {
		g_message("etcdfs: unlock failed (tried again): %s", g_strerror(-rc));
		stale_add(l, e->key);
	}
}

static void snap_drop(struct lk *lk)
{
	if (lk->watch)
		etcd_watch_close(lk->watch);
	lk->watch = NULL;
	if (lk->snap)
		g_ptr_array_unref(lk->snap);
	lk->snap = NULL;
}

/* A reader's key? */
static bool kv_shared(const struct ef_kv *kv)
{
	gsize vlen = 0;
	const void *v = kv->value ? g_bytes_get_data(kv->value, &vlen) : NULL;

	return v && vlen == strlen(LOCK_SHARED_VALUE) && memcmp(v, LOCK_SHARED_VALUE, vlen) == 0;
}

static struct skey *skey_new(const struct ef_kv *kv)
{
	struct skey *s = g_new0(struct skey, 1);

	s->key = g_bytes_ref(kv->key);
	s->create_rev = kv->create_revision;
	s->shared = kv_shared(kv);
	return s;
}

static void snap_set(struct lk *lk, GPtrArray *kvs, int64_t rev)
{
	if (lk->snap)
		g_ptr_array_unref(lk->snap);
	lk->snap = g_ptr_array_new_with_free_func((GDestroyNotify)skey_free);
	for (guint i = 0; i < kvs->len; i++)
		g_ptr_array_add(lk->snap, skey_new(g_ptr_array_index(kvs, i)));
	lk->snap_rev = rev;
}

/* Every key of name's queue, with values, into *kvs. */
static int queue_read(struct ef_etcd *etcd, GBytes *pfx, GPtrArray **kvs, int64_t *rev)
{
	gsize plen;
	const char *p = g_bytes_get_data(pfx, &plen);
	g_autoptr(GBytes) end = keymap_prefix_end(p, plen);

	return etcd_range(etcd, p, plen, g_bytes_get_data(end, NULL), g_bytes_get_size(end), 0,
			  false, kvs, NULL, rev);
}

static void watch_on_msg(void *ud, struct ef_watch_msg *m)
{
	struct call_ud *c = ud;

	push(c->l, (struct msg){ .kind = MSG_WATCH, .name = g_bytes_ref(c->name), .gen = c->gen,
				 .wm = m });
}

static void watch_on_close(void *ud, int err)
{
	struct call_ud *c = ud;

	/* The message takes c's reference to the name. */
	push(c->l, (struct msg){ .kind = MSG_WATCH_CLOSED, .name = c->name, .gen = c->gen });
	g_free(c);
}

static const struct ef_watch_ops watch_ops = { .on_msg = watch_on_msg, .on_close = watch_on_close };

static int watch_open(struct ef_locks *l, struct lk *lk)
{
	gsize plen;
	const char *p = g_bytes_get_data(lk->pfx, &plen);
	g_autoptr(GBytes) end = keymap_prefix_end(p, plen);
	struct call_ud *c = g_new0(struct call_ud, 1);
	int rc;

	c->l = l;
	c->name = g_bytes_ref(lk->name);
	c->gen = lk->watch_gen = ++l->gen;
	/* c goes with on_close, which runs even when this fails. */
	rc = etcd_watch_open(l->etcd, lk->pfx, end, lk->snap_rev + 1, &watch_ops, c, &lk->watch);
	if (rc < 0) {
		lk->watch = NULL;
		retry_soon(l);
	}
	return rc;
}

static bool is_ours(const struct lk *lk, GBytes *key)
{
	return (lk->w && g_bytes_equal(lk->w->key, key)) || (lk->r && g_bytes_equal(lk->r->key, key));
}

/* keys[i] for kvs[i] (a new array); ours by lk's keys when lk is given. */
static struct lock_key *keys_of(GPtrArray *kvs, const struct lk *lk)
{
	struct lock_key *keys = g_new0(struct lock_key, kvs->len + 1);

	for (guint i = 0; i < kvs->len; i++) {
		struct ef_kv *kv = g_ptr_array_index(kvs, i);

		keys[i] = (struct lock_key){ .create_rev = kv->create_revision,
					     .shared = kv_shared(kv),
					     .ours = lk && is_ours(lk, kv->key) };
	}
	return keys;
}

/* Our key e (a slot of lk) against the queue: granted now, or gone. */
static void judge(struct lk *lk, struct ekey **slot, const struct lock_key *keys)
{
	struct ekey *e = *slot;
	guint i;

	if (!e)
		return;
	for (i = 0; i < lk->snap->len; i++)
		if (g_bytes_equal(((struct skey *)g_ptr_array_index(lk->snap, i))->key, e->key))
			break;
	if (i == lk->snap->len) {
		/* Deleted behind our back (etcdctl del, an expired lease). */
		if (e->granted) {
			g_warning("etcdfs: the lock key of %.*s is gone: the lock is lost",
				  (int)g_bytes_get_size(lk->name),
				  (const char *)g_bytes_get_data(lk->name, NULL));
			holds_lost(lk);
		}
		ekey_free(e);
		*slot = NULL;
	} else if (!e->granted && lockrule_granted(keys, lk->snap->len, i)) {
		e->granted = true;
		/* What the previous holder wrote before letting go is older
		 * than this: the caches wait for the watch to bring it. */
		watch_order_after(lk->snap_rev);
	}
}

/* Decides our waiting keys against the queue as last seen; watches the
 * queue while one of them still waits, and only then. */
static void judge_all(struct ef_locks *l, struct lk *lk)
{
	g_autofree struct lock_key *keys = NULL;

	if (!lk->snap)
		return;
	keys = g_new0(struct lock_key, lk->snap->len + 1);
	for (guint i = 0; i < lk->snap->len; i++) {
		struct skey *s = g_ptr_array_index(lk->snap, i);

		keys[i] = (struct lock_key){ .create_rev = s->create_rev, .shared = s->shared,
					     .ours = is_ours(lk, s->key) };
	}
	judge(lk, &lk->w, keys);
	judge(lk, &lk->r, keys);
	if ((!lk->w || lk->w->granted) && (!lk->r || lk->r->granted))
		snap_drop(lk);
	else if (!lk->watch && watch_open(l, lk) < 0)
		g_message("etcdfs: cannot watch a lock queue: tried again");
}

/* The lease is gone (it expired while we could not reach etcd), and so is
 * every key on it. Holders keep their local hold, and their writes are
 * refused (locks_fence) until they let go; waiters queue again on a new
 * lease once repump() sees to their names. */
static void lease_drop(struct ef_locks *l)
{
	GHashTableIter it;
	struct lk *lk;

	l->lease = 0;
	ka_close(l);
	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk)) {
		snap_drop(lk);
		if ((lk->w && lk->w->granted) || (lk->r && lk->r->granted))
			holds_lost(lk);
		g_clear_pointer(&lk->w, ekey_free);
		g_clear_pointer(&lk->r, ekey_free);
	}
}

/* Joins the queue of lk as a writer or a reader, unless already in it. */
static int key_make(struct ef_locks *l, struct lk *lk, enum lock_mode m)
{
	struct ekey **slot = m == LOCK_MODE_EXCL ? &lk->w : &lk->r;
	g_autoptr(GPtrArray) kvs = NULL;
	g_autofree char *suffix = NULL;
	g_autoptr(GBytes) key = NULL;
	int64_t rev = 0;
	int rc;

	if (*slot)
		return 0;
	for (int attempt = 0;; attempt++) {
		rc = lease_ensure(l);
		if (rc < 0)
			return rc;
		suffix = g_strdup_printf("%" PRIx64 ".%" PRIu64, (uint64_t)l->lease, ++l->seq);
		key = concat(lk->pfx, suffix);
		rc = etcd_lock_enter(l->etcd, lk->pfx, key, m == LOCK_MODE_SHARED, l->lease, &rev,
				     &kvs);
		/* The lease expired before its keepalive said so: its keys
		 * went with it. The other names are seen to after this one. */
		if (rc == -ENOENT && attempt == 0) {
			g_warning("etcdfs: the lock lease %" PRIx64 " is gone: locks held here are lost",
				  (uint64_t)l->lease);
			lease_drop(l);
			push(l, (struct msg){ .kind = MSG_REPUMP });
			g_clear_pointer(&suffix, g_free);
			g_clear_pointer(&key, g_bytes_unref);
			continue;
		}
		break;
	}
	if (rc < 0) {
		/* Sent, the Put may have happened with its answer lost. */
		if (rc != -ENOENT)
			stale_add(l, key);
		return rc;
	}
	*slot = g_new0(struct ekey, 1);
	(*slot)->key = g_steal_pointer(&key);
	(*slot)->create_rev = rev;
	/* A watch of the older snapshot would replay what this one has. */
	snap_drop(lk);
	snap_set(lk, kvs, rev);
	judge_all(l, lk);
	return 0;
}

/* The queue again from etcd: the watch ended or missed events. */
static void resync(struct ef_locks *l, struct lk *lk)
{
	g_autoptr(GPtrArray) kvs = NULL;
	int64_t rev = 0;
	int rc;

	snap_drop(lk);
	if (!lk->w && !lk->r)
		return;
	rc = queue_read(l->etcd, lk->pfx, &kvs, &rev);
	if (rc < 0) {
		/* The waiters keep waiting (an interrupt ends it). */
		g_message("etcdfs: cannot read a lock queue (tried again): %s", g_strerror(-rc));
		retry_soon(l);
		return;
	}
	snap_set(lk, kvs, rev);
	judge_all(l, lk);
}

static void on_watch(struct ef_locks *l, struct lk *lk, struct ef_watch_msg *wm)
{
	if (!wm || wm->canceled || wm->compact_revision) {
		resync(l, lk);
		return;
	}
	for (size_t i = 0; i < wm->n_events; i++) {
		const struct ef_watch_event *ev = &wm->events[i];
		guint j;

		for (j = 0; j < lk->snap->len; j++)
			if (g_bytes_equal(((struct skey *)g_ptr_array_index(lk->snap, j))->key,
					  ev->kv->key))
				break;
		if (ev->deleted) {
			if (j < lk->snap->len)
				g_ptr_array_remove_index(lk->snap, j);
		} else {
			/* A new key, or a writer's become a reader's. */
			if (j < lk->snap->len)
				g_ptr_array_remove_index(lk->snap, j);
			g_ptr_array_add(lk->snap, skey_new(ev->kv));
		}
		lk->snap_rev = MAX(lk->snap_rev, ev->kv->mod_revision);
	}
	lk->snap_rev = MAX(lk->snap_rev, wm->revision);
	judge_all(l, lk);
}

/* Our writer's key becomes our reader's in place (its value only). */
static void downgrade(struct ef_locks *l, struct lk *lk)
{
	int64_t rev;
	int rc = etcd_lock_mark(l->etcd, lk->w->key, lk->w->create_rev, l->lease, &rev);

	if (rc == -ESTALE) {
		/* Not ours any more: the lease or the key is gone. */
		holds_lost(lk);
		g_clear_pointer(&lk->w, ekey_free);
		return;
	}
	/* Failed or not, the key may be a reader's now (an answer lost
	 * after the write): taken as one, an exclusive lock needs a
	 * writer's key again, which is never wrong. */
	if (rc < 0)
		g_message("etcdfs: lock downgrade: %s", g_strerror(-rc));
	lk->r = g_steal_pointer(&lk->w);
}

/* Keeps in etcd just the keys the local owners need: a writer's as long
 * as one holds or waits exclusively, a reader's as long as one shares and
 * no writer's covers it. A writer's whose holder moved to shared becomes
 * a reader's in place, so no other writer gets in between. */
static void settle(struct ef_locks *l, struct lk *lk)
{
	bool hold_x = false, want_x = false, want_s = false;
	bool hold_any = lk->holds->len > 0;

	for (guint i = 0; i < lk->holds->len; i++)
		hold_x |= ((struct hold *)g_ptr_array_index(lk->holds, i))->mode == LOCK_MODE_EXCL;
	for (GList *n = lk->waiters.head; n; n = n->next) {
		struct waiter *w = n->data;
		enum lock_mode m = mode_after(hold_find(lk, w->owner, w->flock), w);

		want_x |= m == LOCK_MODE_EXCL;
		want_s |= m == LOCK_MODE_SHARED;
	}
	/* A key etcd has just granted is kept for the waiter it was made
	 * for; one that has served is given up, so that the waiters
	 * elsewhere get their turn before the next one here. */
	if (lk->w && lk->w->granted && !hold_x && (lk->w->used || !want_x)) {
		if (hold_any && !lk->r) {
			downgrade(l, lk);
		} else {
			unlock_key(l, lk->w);
			g_clear_pointer(&lk->w, ekey_free);
		}
	}
	if (lk->w && !lk->w->granted && !want_x) {
		unlock_key(l, lk->w);
		g_clear_pointer(&lk->w, ekey_free);
	}
	/* Our granted writer's key may have passed writers that wait for
	 * our reader's (lockrule_granted): the reader's stays as long. */
	if (lk->r && !(lk->w && lk->w->granted) &&
	    ((lk->r->granted && !hold_any && (lk->r->used || !want_s)) ||
	     (!lk->r->granted && !want_s))) {
		unlock_key(l, lk->r);
		g_clear_pointer(&lk->r, ekey_free);
	}
	if ((!lk->w || lk->w->granted) && (!lk->r || lk->r->granted))
		snap_drop(lk);
}

static void fail_waiters(struct lk *lk, int err)
{
	struct waiter *w;

	while ((w = g_queue_pop_head(&lk->waiters)))
		answer(w, err);
}

/* A local reader joining our reader's key would overtake a writer queued
 * behind it, and readers that keep overlapping would starve it: once one
 * is queued, new readers queue after it with a key of their own. */
static void check_drain(struct ef_locks *l, struct lk *lk)
{
	g_autoptr(GPtrArray) kvs = NULL;

	if (!lk->r || !lk->r->granted || (lk->w && lk->w->granted) ||
	    queue_read(l->etcd, lk->pfx, &kvs, NULL) < 0)
		return;
	/* Asked again each time: a writer that gave up frees the readers. */
	lk->r->draining = false;
	for (guint i = 0; i < kvs->len; i++) {
		struct ef_kv *kv = g_ptr_array_index(kvs, i);

		if (!kv_shared(kv) && !is_ours(lk, kv->key))
			lk->r->draining = true;
	}
}

/* Grants waiting requests, oldest first, as far as the local owners and
 * the mount's keys allow; joins etcd's queue for the first that needs it. */
static void pump(struct ef_locks *l, struct lk *lk)
{
	struct waiter *w;

	while ((w = g_queue_peek_head(&lk->waiters))) {
		struct hold *h = hold_find(lk, w->owner, w->flock);
		enum lock_mode m = mode_after(h, w);

		if (conflict(lk, w->owner, m))
			break;
		if (m == LOCK_MODE_SHARED)
			check_drain(l, lk);
		if (!covered(lk, m)) {
			int rc = key_make(l, lk, m);

			if (rc < 0) {
				/* Every waiter would get the same answer now. */
				fail_waiters(lk, ENOLCK);
				break;
			}
			if (!covered(lk, m))
				break;
		}
		g_queue_pop_head(&lk->waiters);
		cover(lk, m)->used = true;
		take(l, lk, h, w);
		answer(w, 0);
	}
}

/* Tells the writers what guards their Puts while the mount holds lk: the
 * key that covers the holders, or that a holder has lost its lock. */
static void fence_publish(struct ef_locks *l, struct lk *lk)
{
	struct fence *f = NULL;
	bool lost = false;

	for (guint i = 0; i < lk->holds->len; i++)
		lost |= ((struct hold *)g_ptr_array_index(lk->holds, i))->lost;
	if (lk->holds->len && !lost) {
		struct ekey *e = lk->w && lk->w->granted ? lk->w : lk->r && lk->r->granted ? lk->r : NULL;

		if (e) {
			f = g_new0(struct fence, 1);
			f->f.key = g_bytes_ref(e->key);
			f->f.create_rev = e->create_rev;
		}
	} else if (lost) {
		f = g_new0(struct fence, 1);
	}
	g_mutex_lock(&l->fence_lock);
	if (f)
		g_hash_table_replace(l->fences, g_bytes_ref(lk->name), f);
	else
		g_hash_table_remove(l->fences, lk->name);
	g_atomic_int_set(&l->n_fences, (gint)g_hash_table_size(l->fences));
	g_mutex_unlock(&l->fence_lock);
}

/* After any change to a name's owners or waiters. */
static void after(struct ef_locks *l, struct lk *lk)
{
	settle(l, lk);
	pump(l, lk);
	settle(l, lk);
	fence_publish(l, lk);
	lk_maybe_drop(l, lk);
}

/* POSIX deadlock between two owners of one file: the holder in the way
 * waits here for something the asker holds. */
static bool deadlock(struct lk *lk, uint64_t asker, const struct hold *in_way)
{
	struct hold *mine = hold_find(lk, asker, false);

	if (!mine || in_way->flock)
		return false;
	for (GList *n = lk->waiters.head; n; n = n->next) {
		struct waiter *v = n->data;

		if (!v->flock && v->owner == in_way->owner &&
		    (mine->mode == LOCK_MODE_EXCL ||
		     mode_after(hold_find(lk, v->owner, false), v) == LOCK_MODE_EXCL))
			return true;
	}
	return false;
}

static void on_setlk(struct ef_locks *l, struct waiter *w)
{
	struct lk *lk = lk_get(l, w->name);
	struct hold *h = hold_find(lk, w->owner, w->flock);
	struct hold *in_way;
	enum lock_mode m;

	g_debug("lock: %s mode %d [%" PRId64 ", %" PRId64 "] owner %" PRIx64 "%s",
		w->flock ? "flock" : "fcntl", w->mode, w->start, w->end, w->owner, w->nb ? " nb" : "");
	if (g_atomic_int_get(&w->interrupted)) {
		answer(w, EINTR);
		lk_maybe_drop(l, lk);
		return;
	}
	/* flock converts by letting go first (flock(2)): two owners that
	 * both upgrade must not wait for each other. */
	if (w->flock && h && h->mode == LOCK_MODE_SHARED && w->mode == LOCK_MODE_EXCL) {
		hold_remove(l, lk, h);
		h = NULL;
		settle(l, lk);
	}
	m = mode_after(h, w);
	if (w->mode == LOCK_MODE_NONE || (h && m <= h->mode)) {
		/* Unlocks, and locks the owner has already. */
		take(l, lk, h, w);
		answer(w, 0);
	} else if (w->nb) {
		int rc = 0;

		if (m == LOCK_MODE_SHARED)
			check_drain(l, lk);
		if (conflict(lk, w->owner, m) || !g_queue_is_empty(&lk->waiters))
			rc = EAGAIN;
		else if (!covered(lk, m) && key_make(l, lk, m) < 0)
			rc = ENOLCK;
		else if (!covered(lk, m))
			rc = EAGAIN;
		if (rc == 0) {
			cover(lk, m)->used = true;
			take(l, lk, h, w);
		}
		answer(w, rc);
	} else if (!w->flock && (in_way = conflict(lk, w->owner, m)) && deadlock(lk, w->owner, in_way)) {
		answer(w, EDEADLK);
	} else if (h) {
		/* An owner that holds the lock and asks for more (fcntl's
		 * upgrade) waits only for the other holders, not behind
		 * waiters that its own hold keeps waiting. */
		g_queue_push_head(&lk->waiters, w);
	} else {
		g_queue_push_tail(&lk->waiters, w);
	}
	after(l, lk);
}

static void reply_lock(fuse_req_t req, short type, int64_t start, int64_t end, pid_t pid)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start,
			    .l_len = end == INT64_MAX ? 0 : end - start + 1, .l_pid = pid };

	fuse_req_interrupt_func(req, NULL, NULL);
	fuse_reply_lock(req, &fl);
}

/* F_GETLK: a local owner in the way, with its range and pid; or the oldest
 * key in etcd's queue that would be, as the whole file with pid 0 (no
 * process of this machine: see etcdfs(1)). */
static void on_getlk(struct ef_locks *l, struct waiter *w)
{
	struct lk *lk = g_hash_table_lookup(l->locks, w->name);
	struct hold *h = lk ? conflict(lk, w->owner, w->mode) : NULL;
	g_autoptr(GBytes) pfx = NULL;
	g_autoptr(GPtrArray) kvs = NULL;
	g_autofree struct lock_key *keys = NULL;
	ssize_t b;
	int rc;

	if (h) {
		const struct lock_range *r = h->ranges && h->ranges->len ?
			&g_array_index(h->ranges, struct lock_range, 0) : NULL;

		reply_lock(w->req, h->mode == LOCK_MODE_EXCL ? F_WRLCK : F_RDLCK, r ? r->start : 0,
			   r ? r->end : INT64_MAX, h->pid);
		waiter_unref(w);
		return;
	}
	if (lk && covered(lk, LOCK_MODE_EXCL)) {
		reply_lock(w->req, F_UNLCK, w->start, w->end, 0);
		waiter_unref(w);
		return;
	}
	pfx = concat(w->name, "/");
	rc = queue_read(l->etcd, pfx, &kvs, NULL);
	if (rc < 0) {
		answer(w, ENOLCK);
		return;
	}
	keys = keys_of(kvs, lk);
	b = lockrule_blocker(keys, kvs->len, w->mode);
	if (b < 0)
		reply_lock(w->req, F_UNLCK, w->start, w->end, 0);
	else
		reply_lock(w->req, keys[b].shared ? F_RDLCK : F_WRLCK, 0, INT64_MAX, 0);
	waiter_unref(w);
}

static void on_interrupt(struct ef_locks *l, struct waiter *w)
{
	struct lk *lk = g_hash_table_lookup(l->locks, w->name);
	GList *n = lk ? g_queue_find(&lk->waiters, w) : NULL;

	/* Not parked (answered already, or its message is still queued and
	 * will see the flag). */
	if (!n)
		return;
	g_queue_delete_link(&lk->waiters, n);
	answer(w, EINTR);
	after(l, lk);
}

/* Lets go of the holds that match: fcntl locks of owner on ino (a close by
 * the owner: FLUSH), or those taken through fh and fh's flock owner (the
 * last close of an open file: RELEASE). */
static void drop_holds(struct ef_locks *l, const struct msg *m)
{
	g_autoptr(GPtrArray) touched = g_ptr_array_new();
	GHashTableIter it;
	struct lk *lk;

	g_debug("lock: %s owner %" PRIx64 " fh %" PRIx64 "%s", m->kind == MSG_FLUSH ? "flush" : "release",
		m->owner, m->fh, m->flock ? " flock" : "");
	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk)) {
		bool any = false;

		for (guint i = lk->holds->len; i-- > 0;) {
			struct hold *h = g_ptr_array_index(lk->holds, i);
			bool match = m->kind == MSG_FLUSH ?
				!h->flock && h->owner == m->owner && h->ino == m->ino :
				(h->flock ? m->flock && h->owner == m->owner : h->fh == m->fh);

			if (match) {
				hold_remove(l, lk, h);
				any = true;
			}
		}
		if (any)
			g_ptr_array_add(touched, lk);
	}
	for (guint i = 0; i < touched->len; i++)
		after(l, g_ptr_array_index(touched, i));
}

/* after() for every name. */
static void repump(struct ef_locks *l)
{
	g_autoptr(GPtrArray) all = g_ptr_array_new();
	GHashTableIter it;
	gpointer v;

	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, &v))
		g_ptr_array_add(all, v);
	for (guint i = 0; i < all->len; i++)
		after(l, g_ptr_array_index(all, i));
}

/* Unmount: nothing waits any longer, and the lease goes with its keys. */
static void shut_down(struct ef_locks *l)
{
	GHashTableIter it;
	struct lk *lk;

	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk)) {
		snap_drop(lk);
		fail_waiters(lk, ENOLCK);
	}
	ka_close(l);
	if (l->lease && etcd_lease_revoke(l->etcd, l->lease) < 0)
		g_message("etcdfs: the lock lease could not be revoked: it lapses in %" PRId64 " s",
			  l->ttl);
	l->lease = 0;
}

static void dispatch(struct ef_locks *l, struct msg *m)
{
	struct lk *lk;

	switch (m->kind) {
	case MSG_SETLK:
		on_setlk(l, g_steal_pointer(&m->w));
		break;
	case MSG_GETLK:
		on_getlk(l, g_steal_pointer(&m->w));
		break;
	case MSG_INTERRUPT:
		on_interrupt(l, m->w);
		break;
	case MSG_FLUSH:
	case MSG_RELEASE:
		drop_holds(l, m);
		break;
	case MSG_WATCH:
	case MSG_WATCH_CLOSED:
		lk = g_hash_table_lookup(l->locks, m->name);
		if (!lk || !lk->watch || lk->watch_gen != m->gen)
			break;
		if (m->kind == MSG_WATCH)
			on_watch(l, lk, m->wm);
		else
			resync(l, lk);
		after(l, lk);
		break;
	case MSG_KA_TTL:
		if (m->gen == l->ka_gen && l->lease && m->lease == l->lease && m->ttl <= 0) {
			g_warning("etcdfs: the lock lease %" PRIx64 " expired: locks held here are lost",
				  (uint64_t)l->lease);
			lease_drop(l);
			repump(l);
		}
		break;
	case MSG_REPUMP:
		repump(l);
		break;
	case MSG_KA_CLOSED:
		/* Opened again at the next tick. */
		if (m->gen == l->ka_gen)
			ka_close(l);
		break;
	case MSG_STOP:
		shut_down(l);
		break;
	}
}

/* Deletes the stale keys, and reads again the queues of waiting keys that
 * are not watched; what fails is tried again a second later. */
static void retry(struct ef_locks *l)
{
	g_autoptr(GPtrArray) names = g_ptr_array_new();
	GHashTableIter it;
	struct lk *lk;

	l->retry_due = 0;
	for (guint i = l->stale->len; i-- > 0;) {
		int rc = etcd_unlock(l->etcd, g_ptr_array_index(l->stale, i));

		if (rc == 0)
			g_ptr_array_remove_index_fast(l->stale, i);
	}
	if (l->stale->len)
		retry_soon(l);
	g_hash_table_iter_init(&it, l->locks);
	while (g_hash_table_iter_next(&it, NULL, (gpointer *)&lk))
		if (((lk->w && !lk->w->granted) || (lk->r && !lk->r->granted)) && !lk->watch)
			g_ptr_array_add(names, g_bytes_ref(lk->name));
	for (guint i = 0; i < names->len; i++) {
		GBytes *name = g_ptr_array_index(names, i);

		lk = g_hash_table_lookup(l->locks, name);
		if (lk) {
			resync(l, lk);
			after(l, lk);
		}
		g_bytes_unref(name);
	}
}

static gpointer lock_thread(gpointer data)
{
	struct ef_locks *l = data;
	bool stop = false;

	while (!stop) {
		gint64 now = g_get_monotonic_time();
		gint64 wait = l->lease ? l->ka_due - now : (gint64)G_USEC_PER_SEC * 3600;
		struct msg *m;

		/* Due keepalives and retries go first: a steady stream of
		 * messages must not starve them. */
		if (l->lease && wait <= 0) {
			ka_tick(l);
			continue;
		}
		if (l->retry_due && l->retry_due <= now) {
			retry(l);
			replies_send(l);
			continue;
		}
		if (l->retry_due)
			wait = MIN(wait, l->retry_due - now);
		m = g_async_queue_timeout_pop(l->q, (guint64)wait);
		if (!m)
			continue;
		dispatch(l, m);
		replies_send(l);
		stop = m->kind == MSG_STOP;
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
	g_queue_init(&l->replies);
	l->stale = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	l->locks = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, NULL,
					 (GDestroyNotify)lk_free);
	g_mutex_init(&l->fence_lock);
	l->fences = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
					  (GDestroyNotify)g_bytes_unref, (GDestroyNotify)fence_free);
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
	/* Answers of closed streams, queued after the stop. */
	while ((m = g_async_queue_try_pop(l->q)))
		msg_free(m);
	g_async_queue_unref(l->q);
	g_hash_table_destroy(l->locks);
	g_hash_table_destroy(l->fences);
	g_ptr_array_unref(l->stale);
	g_mutex_clear(&l->fence_lock);
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
 * request's lock, possibly before the request's message is taken. */
static void interrupted(fuse_req_t req, void *data)
{
	struct waiter *w = data;

	(void)req;
	g_atomic_int_set(&w->interrupted, 1);
	push(w->l, (struct msg){ .kind = MSG_INTERRUPT, .w = waiter_ref(w) });
}

static struct waiter *waiter_new(struct ef_locks *l, fuse_req_t req, GBytes *key,
				 const struct locks_who *who)
{
	struct waiter *w = g_new0(struct waiter, 1);

	w->ref = 1;
	w->l = l;
	w->req = req;
	w->owner = who->owner;
	w->fh = who->fh;
	w->ino = who->ino;
	w->pid = who->pid;
	w->name = locks_name(l, key);
	w->end = INT64_MAX;
	return w;
}

/* Queues w; a request that may wait can be interrupted. The callback is
 * registered before the request is queued, so that the thread's answer
 * always comes after it: an interrupt that came first has set the flag
 * the message is checked against. */
static void submit(struct ef_locks *l, struct waiter *w, enum msg_kind kind)
{
	if (kind == MSG_SETLK && !w->nb && w->mode != LOCK_MODE_NONE)
		fuse_req_interrupt_func(w->req, interrupted, w);
	push(l, (struct msg){ .kind = kind, .w = w });
}

void locks_flock(struct ef_locks *l, fuse_req_t req, GBytes *key, const struct locks_who *who,
		 int op)
{
	struct waiter *w = waiter_new(l, req, key, who);
	int mode = op & ~LOCK_NB;

	w->flock = true;
	w->nb = op & LOCK_NB;
	w->mode = mode == LOCK_EX ? LOCK_MODE_EXCL : mode == LOCK_SH ? LOCK_MODE_SHARED :
		  LOCK_MODE_NONE;
	submit(l, w, MSG_SETLK);
}

static enum lock_mode fcntl_mode(short type)
{
	return type == F_WRLCK ? LOCK_MODE_EXCL : type == F_RDLCK ? LOCK_MODE_SHARED : LOCK_MODE_NONE;
}

static void fcntl_range(struct waiter *w, const struct flock *fl)
{
	/* libfuse gives whence SEEK_SET and l_len 0 for "to the end". */
	w->start = fl->l_start;
	w->end = fl->l_len > 0 && fl->l_start <= INT64_MAX - fl->l_len ?
		 fl->l_start + fl->l_len - 1 : INT64_MAX;
}

void locks_setlk(struct ef_locks *l, fuse_req_t req, GBytes *key, const struct locks_who *who,
		 const struct flock *fl, bool sleep)
{
	struct waiter *w = waiter_new(l, req, key, who);

	w->nb = !sleep;
	w->mode = fcntl_mode(fl->l_type);
	fcntl_range(w, fl);
	submit(l, w, MSG_SETLK);
}

void locks_getlk(struct ef_locks *l, fuse_req_t req, GBytes *key, const struct locks_who *who,
		 const struct flock *fl)
{
	struct waiter *w = waiter_new(l, req, key, who);

	w->mode = fcntl_mode(fl->l_type);
	fcntl_range(w, fl);
	submit(l, w, MSG_GETLK);
}

void locks_flush(struct ef_locks *l, uint64_t ino, uint64_t owner)
{
	/* Every close sends one: a mount with no fcntl lock skips the trip. */
	if (g_atomic_int_get(&l->n_posix) > 0)
		push(l, (struct msg){ .kind = MSG_FLUSH, .ino = ino, .owner = owner });
}

void locks_release(struct ef_locks *l, uint64_t fh, uint64_t owner, bool flock)
{
	if (flock || g_atomic_int_get(&l->n_posix) > 0)
		push(l, (struct msg){ .kind = MSG_RELEASE, .fh = fh, .owner = owner, .flock = flock });
}

int locks_owners(struct ef_locks *l, GBytes *key, GString *out)
{
	g_autoptr(GBytes) name = locks_name(l, key);
	g_autoptr(GBytes) pfx = concat(name, "/");
	g_autoptr(GPtrArray) kvs = NULL;
	g_autofree struct lock_key *keys = NULL;
	int rc = queue_read(l->etcd, pfx, &kvs, NULL);

	if (rc < 0)
		return rc;
	keys = keys_of(kvs, NULL);
	for (guint i = 0; i < kvs->len; i++) {
		struct ef_kv *kv = g_ptr_array_index(kvs, i);

		if (!lockrule_granted(keys, kvs->len, i))
			continue;
		g_string_append_printf(out, "%s %" PRIx64 " ", keys[i].shared ? "shared" : "exclusive",
				       (uint64_t)kv->lease);
		g_string_append_len(out, g_bytes_get_data(kv->key, NULL),
				    (gssize)g_bytes_get_size(kv->key));
		g_string_append_c(out, '\n');
	}
	return 0;
}

int locks_fence(struct ef_locks *l, GBytes *key, struct ef_fence *out)
{
	g_autoptr(GBytes) name = NULL;
	struct fence *f;
	int rc = 0;

	*out = (struct ef_fence){ 0 };
	if (!l || g_atomic_int_get(&l->n_fences) == 0)
		return 0;
	name = locks_name(l, key);
	g_mutex_lock(&l->fence_lock);
	f = g_hash_table_lookup(l->fences, name);
	if (f && !f->f.key)
		rc = -ENOLCK;
	else if (f)
		*out = (struct ef_fence){ g_bytes_ref(f->f.key), f->f.create_rev };
	g_mutex_unlock(&l->fence_lock);
	return rc;
}

bool locks_holding(struct ef_locks *l)
{
	return l && g_atomic_int_get(&l->n_fences) > 0;
}
