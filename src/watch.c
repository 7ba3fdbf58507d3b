/*
 * watch — one Watch stream keeps the caches coherent (see watch.h).
 *
 * The connection's I/O thread only queues decoded responses; the watch
 * thread owns the stream's lifecycle and applies events in order. Resume
 * rule (as clientv3's): next = last event's mod_revision + 1, or a timed
 * progress notification's revision + 1, or the creation revision + 1; never
 * a batch header's revision, and never a requested progress response's
 * (etcd 3.4 may send one older than events already delivered).
 *
 * Invariant: while trusted is false nothing is served from a cache, and
 * trust is only withdrawn together with a full invalidation.
 *
 * Apply, then notify: the watch thread applies each event to the daemon's
 * own state at once and queues the kernel notifications for the notifier
 * thread. A notification can wait for a lock the kernel holds while a
 * request of ours waits on etcd (inval_entry takes the directory's lock);
 * only the notifier waits then, never the next event.
 */
#include "watch.h"

#include <errno.h>
#include <string.h>

#include "cache.h"
#include "etcd.h"
#include "inode.h"
#include "keymap.h"
#include "prober.h"
#include "revclock.h"

#define RING 4096
#define PROGRESS_EVERY_US (5 * G_USEC_PER_SEC)
/* No message at all for this long, though progress was asked for: the
 * stream is dead even if the connection is not. */
#define SILENCE_US (15 * G_USEC_PER_SEC)
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
enum item_kind { ITEM_MSG, ITEM_CLOSE, ITEM_STOP, ITEM_DOUBT, ITEM_PROBED };

enum notice_kind { NOTICE_INODE, NOTICE_EXPIRE, NOTICE_DELETE, NOTICE_STOP };

/* One kernel notification, queued for the notifier thread. */
struct notice {
	enum notice_kind kind;
	fuse_ino_t ino;            /* INODE: the inode; EXPIRE, DELETE: the parent */
	fuse_ino_t child;          /* DELETE */
	off_t off;                 /* INODE: as fuse_lowlevel_notify_inval_inode */
	char name[];               /* EXPIRE, DELETE */
};

struct item {
	enum item_kind kind;
	uint64_t stream;           /* which stream it came from */
	struct ef_watch_msg *m;    /* ITEM_MSG; NULL: undecodable */
};

static struct {
	struct ef_etcd *etcd;
	GBytes *root;              /* the mount's root prefix */
	GBytes *key, *end;         /* the watched range */
	struct fuse_session *se;
	GThread *thread;
	GAsyncQueue *q;
	GThread *notifier;
	GAsyncQueue *nq;           /* struct notice */
	gint stop;
	uint64_t stream;           /* watch thread only */
	bool frozen;               /* watch_start_frozen: no thread, trusted */
	uint64_t token_gen;        /* watch thread only: the auth token the
				    * stream was opened with */
	char refused[160];         /* watch thread only: the last refusal logged */
	const struct watch_listener *listener; /* set before the thread starts */

	gint doubt_queued;         /* an ITEM_DOUBT is in the queue */

	GMutex lock;
	bool trusted;              /* protected by lock */
	uint64_t seq;              /* protected by lock */
	uint64_t lost_seq;         /* protected by lock: seq when trust was last lost */
	GBytes *ring[RING];        /* protected by lock: key of event number seq % RING */
	GPtrArray *local;          /* protected by lock: struct local_op, in flight */
	int64_t ring_rev[RING];    /* protected by lock: its mod_revision (INT64_MAX:
				    * a change made here, whatever its revision) */
	int64_t seen_rev;          /* protected by lock: the newest event recorded */
	int64_t applied;           /* protected by lock: every event up to this
				    * revision is applied */
	int64_t floor;             /* protected by lock: caches serve nothing until
				    * applied reaches it (a lock was granted there) */
	GHashTable *created;       /* protected by lock: file key -> revision
				    * (gint64 *) at which this mount made it exist,
				    * until the watch reaches that revision */
} w;

/* Whether the stream is established, whatever the floor. */
static bool stream_trusted(void)
{
	bool t;

	g_mutex_lock(&w.lock);
	t = w.trusted;
	g_mutex_unlock(&w.lock);
	return t;
}

bool watch_trusted(void)
{
	bool t;

	g_mutex_lock(&w.lock);
	t = w.trusted && w.applied >= w.floor;
	g_mutex_unlock(&w.lock);
	return t;
}

void watch_order_after(int64_t rev)
{
	g_mutex_lock(&w.lock);
	if (rev > w.floor)
		w.floor = rev;
	g_mutex_unlock(&w.lock);
}

static void set_applied(int64_t next)
{
	g_mutex_lock(&w.lock);
	if (next - 1 > w.applied)
		w.applied = next - 1;
	g_mutex_unlock(&w.lock);
}

uint64_t watch_seq(void)
{
	uint64_t s;

	g_mutex_lock(&w.lock);
	s = w.seq;
	g_mutex_unlock(&w.lock);
	return s;
}

static bool key_matches(GBytes *k, GBytes *key, bool prefix)
{
	gsize klen, len;
	const char *kp = g_bytes_get_data(k, &klen);
	const char *p = g_bytes_get_data(key, &len);

	/* An empty GBytes may have no data at all: memcmp must not see it. */
	if (len == 0)
		return prefix || klen == 0;
	if (prefix)
		return klen >= len && memcmp(kp, p, len) == 0;
	return klen == len && memcmp(kp, p, len) == 0;
}

static bool changed_after_locked(uint64_t seq, GBytes *key, bool prefix, int64_t rev)
{
	bool changed = !w.trusted || w.lost_seq > seq || w.seq - seq >= RING;

	for (uint64_t s = seq + 1; !changed && s <= w.seq; s++)
		changed = w.ring_rev[s % RING] > rev && key_matches(w.ring[s % RING], key, prefix);
	return changed;
}

bool watch_changed_after(uint64_t seq, GBytes *key, bool prefix, int64_t rev)
{
	bool changed;

	g_mutex_lock(&w.lock);
	changed = changed_after_locked(seq, key, prefix, rev);
	g_mutex_unlock(&w.lock);
	return changed;
}

bool watch_unchanged_do(uint64_t seq, GBytes *key, bool prefix, int64_t rev,
			void (*fn)(void *ud), void *ud)
{
	bool changed;

	/* Under the lock that records events: one recorded after this is
	 * applied after fn's effect, and so finds it. */
	g_mutex_lock(&w.lock);
	changed = changed_after_locked(seq, key, prefix, rev);
	if (!changed)
		fn(ud);
	g_mutex_unlock(&w.lock);
	return !changed;
}

bool watch_changed_since(uint64_t seq, GBytes *key, bool prefix)
{
	return watch_changed_after(seq, key, prefix, 0);
}

static void record_event(GBytes *key, int64_t rev)
{
	g_mutex_lock(&w.lock);
	w.seq++;
	if (w.ring[w.seq % RING])
		g_bytes_unref(w.ring[w.seq % RING]);
	w.ring[w.seq % RING] = g_bytes_ref(key);
	w.ring_rev[w.seq % RING] = rev;
	if (rev != INT64_MAX && rev > w.seen_rev)
		w.seen_rev = rev;
	g_mutex_unlock(&w.lock);
}

void watch_note_local(GBytes *key)
{
	record_event(key, INT64_MAX);
}

void watch_note_created(GBytes *key, int64_t rev)
{
	gint64 *r;

	if (rev <= 0)
		return;
	g_mutex_lock(&w.lock);
	/* The watch is past rev already (the Put's own event came before its
	 * reply): every older event has been applied, none can be late, and
	 * a record made now would wait for an event that may never come. */
	if (rev <= w.seen_rev) {
		g_mutex_unlock(&w.lock);
		return;
	}
	r = g_hash_table_lookup(w.created, key);
	if (!r) {
		r = g_new(gint64, 1);
		*r = 0;
		g_hash_table_insert(w.created, g_bytes_ref(key), r);
	}
	*r = MAX(*r, rev);
	g_mutex_unlock(&w.lock);
}

/* Whether an event at rev deleting key (deleted) is older than this
 * mount's own making of the key: then it is late, and takes nothing away.
 * The record goes once the watch reaches the revision it was made at. */
static bool late_delete(GBytes *key, int64_t rev, bool deleted)
{
	gint64 *made;
	bool late = false;

	g_mutex_lock(&w.lock);
	made = g_hash_table_lookup(w.created, key);
	if (made) {
		late = deleted && *made > rev;
		if (rev >= *made)
			g_hash_table_remove(w.created, key);
	}
	g_mutex_unlock(&w.lock);
	return late;
}

/* A change this mount is making: its events are ours to apply to the
 * kernel's view, not the watch's. */
struct local_op {
	GBytes *key;
	bool prefix;
};

void *watch_local_begin(GBytes *key, bool prefix)
{
	struct local_op *op = g_new(struct local_op, 1);

	op->key = g_bytes_ref(key);
	op->prefix = prefix;
	g_mutex_lock(&w.lock);
	g_ptr_array_add(w.local, op);
	g_mutex_unlock(&w.lock);
	return op;
}

void watch_local_end(void *token)
{
	struct local_op *op = token;

	g_mutex_lock(&w.lock);
	g_ptr_array_remove_fast(w.local, op);
	g_mutex_unlock(&w.lock);
	g_bytes_unref(op->key);
	g_free(op);
}

static bool key_is_local(GBytes *key)
{
	bool local = false;

	g_mutex_lock(&w.lock);
	for (guint i = 0; !local && i < w.local->len; i++) {
		struct local_op *op = w.local->pdata[i];

		local = key_matches(key, op->key, op->prefix);
	}
	g_mutex_unlock(&w.lock);
	return local;
}

static void set_trusted(bool trusted)
{
	g_mutex_lock(&w.lock);
	if (w.trusted && !trusted)
		w.lost_seq = ++w.seq;
	w.trusted = trusted;
	g_mutex_unlock(&w.lock);
}

void watch_doubt(void *unused)
{
	struct item *it;

	if (!w.q || !stream_trusted() || !g_atomic_int_compare_and_exchange(&w.doubt_queued, 0, 1))
		return;
	it = g_new0(struct item, 1);
	it->kind = ITEM_DOUBT;
	g_async_queue_push(w.q, it);
}

/* ---- kernel notifications ---- */

static void notice_push(enum notice_kind kind, fuse_ino_t ino, fuse_ino_t child, off_t off,
			const char *name)
{
	size_t len = name ? strlen(name) : 0;
	struct notice *n = g_malloc(sizeof(*n) + len + 1);

	n->kind = kind;
	n->ino = ino;
	n->child = child;
	n->off = off;
	memcpy(n->name, name ? name : "", len + 1);
	g_async_queue_push(w.nq, n);
}

static gpointer notifier_main(gpointer unused)
{
	for (;;) {
		struct notice *n = g_async_queue_pop(w.nq);
		size_t len = strlen(n->name);

		/* -ENOENT (the kernel forgot the inode) is harmless. */
		switch (n->kind) {
		case NOTICE_INODE:
			fuse_lowlevel_notify_inval_inode(w.se, n->ino, n->off, 0);
			break;
		case NOTICE_EXPIRE:
			/* Without FUSE_CAP_EXPIRE_ONLY, drop the entry. */
			if (fuse_lowlevel_notify_expire_entry(w.se, n->ino, n->name, len,
							      FUSE_LL_EXPIRE_ONLY) == -ENOSYS)
				fuse_lowlevel_notify_inval_entry(w.se, n->ino, n->name, len);
			break;
		case NOTICE_DELETE:
			fuse_lowlevel_notify_delete(w.se, n->ino, n->child, n->name, len);
			break;
		case NOTICE_STOP:
			g_free(n);
			return NULL;
		}
		g_free(n);
	}
}

/* The entries of directory din changed: its mtime moves. */
static void dir_changed(struct ef_inode *din)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	g_mutex_lock(&din->lock);
	din->dir->mtime = now;
	g_mutex_unlock(&din->lock);
}

/*
 * Entry `comp` (a key component) of the directory prefix dir changed, if
 * that directory is known: its name set follows (added: a key appeared
 * below the entry, else one vanished; is_dir: the entry is a directory, the
 * key goes on below it), and with notify the kernel forgets the entry. A
 * file entry goes with its key (unless it is a directory too); whether a
 * directory entry went with a vanished key is unknown, so the set is
 * dropped and the kernel's entry only expires: it is looked up again when
 * next used, and what the kernel holds below it stays if it still exists.
 */
/* A change to a directory's entries, as the watch applies it. */
struct ns_change {
	bool added;      /* a key appeared (else one vanished) */
	bool notify;     /* the kernel needs telling */
	int64_t rev;     /* the event's revision (INT64_MAX: a loss of trust) */
};

static void inval_entry(const char *dir, size_t dlen, const char *comp, size_t clen, bool is_dir,
			const struct ns_change *c)
{
	g_autoptr(GBytes) d = g_bytes_new(dir, dlen);
	struct ef_inode *din = inode_find(EF_DIR, d);
	g_autofree char *name = keymap_name_from_component(comp, clen);

	if (!din)
		return;
	/* A set learned from a listing at a later revision already says what
	 * this event did: applied again, a late event would undo what came
	 * after it. */
	if (inode_names_reflect(din, c->rev))
		;
	else if (c->added && name)
		inode_names_add(din, name, is_dir);
	else if (name && !is_dir)
		inode_names_remove_file(din, name);
	else
		inode_names_forget(din);
	if (c->notify) {
		dir_changed(din);
		/* The listing changes too: drop the kernel's cached readdir. */
		notice_push(NOTICE_INODE, din->ino, 0, 0, NULL);
		/* Expire, never drop: an open or create may be walking
		 * through the entry right now, and a dropped entry fails it
		 * with ENOENT inside the kernel. An expired one is looked up
		 * again on its next use, negative ones too. */
		if (name)
			notice_push(NOTICE_EXPIRE, din->ino, 0, 0, name);
	}
	inode_unref(din);
}

/* Tells the kernel the file in (key k, len bytes) is gone, so watchers of
 * the file itself get IN_DELETE_SELF, under its name and as the value of
 * a directory (KEYMAP_SELF_NAME) alike. */
static void notify_deleted(const char *k, size_t len, fuse_ino_t child)
{
	size_t rlen = g_bytes_get_size(w.root), start = len;
	g_autoptr(GBytes) d = NULL, sd = NULL;
	g_autofree char *name = NULL;
	g_autofree char *self = g_malloc(len + 1);
	struct ef_inode *din;

	if (len < rlen)
		return;
	while (start > rlen && k[start - 1] != '/')
		start--;
	d = g_bytes_new(k, start);
	name = keymap_name_from_component(k + start, len - start);
	if (name && (din = inode_find(EF_DIR, d))) {
		notice_push(NOTICE_DELETE, din->ino, child, 0, name);
		inode_unref(din);
	}
	/* Keys are bytes: a NUL inside must not end the copy. */
	memcpy(self, k, len);
	self[len] = '/';
	sd = g_bytes_new_take(g_steal_pointer(&self), len + 1);
	if ((din = inode_find(EF_DIR, sd))) {
		notice_push(NOTICE_DELETE, din->ino, child, 0, KEYMAP_SELF_NAME);
		inode_unref(din);
	}
}

/* Invalidates the entry for the last component of key (len bytes) in its
 * directory, when the key lies below the root. Returns false at the root. */
static bool inval_parent_entry(const char *k, size_t len, bool is_dir, const struct ns_change *c)
{
	size_t rlen = g_bytes_get_size(w.root), start = len;

	if (len < rlen)
		return false;
	while (start > rlen && k[start - 1] != '/')
		start--;
	inval_entry(k, start, k + start, len - start, is_dir, c);
	return start > rlen;
}

/* True if the kernel knows the directory whose prefix is k[0, len]. */
static bool dir_known(const char *k, size_t len)
{
	g_autoptr(GBytes) d = g_bytes_new(k, len);
	struct ef_inode *din = inode_find(EF_DIR, d);

	inode_unref(din);
	return din != NULL;
}

/*
 * A key appeared or vanished: its directory gained or lost an entry, so may
 * the directories above it (a new key can create several at once, the last
 * key's deletion can empty several), and a directory whose own value it is
 * shows it as KEYMAP_SELF_NAME. Going up, an addition stops at the first
 * directory the kernel already knows: its entry, and everything above,
 * stands as it was, and invalidating it would make the kernel forget it.
 */
static void inval_namespace(GBytes *key, const struct ns_change *c)
{
	gsize klen;
	const char *k = g_bytes_get_data(key, &klen);
	g_autoptr(GByteArray) self = g_byte_array_new();
	size_t end = klen;

	g_byte_array_append(self, (const guint8 *)k, klen);
	g_byte_array_append(self, (const guint8 *)"/", 1);
	inval_entry((const char *)self->data, self->len, KEYMAP_SELF_NAME,
		    strlen(KEYMAP_SELF_NAME), false, c);
	/* Walk up: the component ending at `end` lives in the prefix that
	 * ends at the '/' before it. */
	while (inval_parent_entry(k, end, end < klen, c)) {
		while (k[end - 1] != '/')
			end--;
		if (c->added && dir_known(k, end))
			break;
		end--;
	}
}

static void apply_event(const struct ef_watch_event *ev)
{
	GBytes *key = ev->kv->key;
	struct ef_inode *in = inode_find(EF_FILE, key);
	bool ns_change = ev->deleted || ev->kv->version == 1;
	bool stale = true, local = false;

	/* A delete older than this mount's own (re)making of the key (a
	 * rename onto it whose reply came before this event, with no inode
	 * left at the key to hold the newer revision) must not take its name
	 * out of a set, nor the kernel's entry away. */
	if (late_delete(key, ev->kv->mod_revision, ev->deleted)) {
		record_event(key, ev->kv->mod_revision);
		revclock_observe(ev->kv->mod_revision);
		inode_unref(in);
		return;
	}

	record_event(key, ev->kv->mod_revision);
	revclock_observe(ev->kv->mod_revision);
	if (in) {
		g_mutex_lock(&in->lock);
		/* Open for writing here: the kernel made (or still holds) the
		 * entry itself, and the writers' close Puts the key again.
		 * Invalidating it would also wait for the directory's lock,
		 * which a create in progress holds; a delete older than the
		 * file being created here must not take its name away. */
		local = in->writers > 0;
		/* Our own Put (or rename) already stored this revision or a
		 * newer one: nothing to refetch (read-your-writes without a
		 * round trip), and a late event must not undo it. */
		if (in->kv && in->kv->mod_revision >= ev->kv->mod_revision) {
			stale = false;
		} else if (ev->deleted) {
			cache_drop_locked(in);
		} else {
			struct ef_kv *kv = g_new(struct ef_kv, 1);

			*kv = *ev->kv;
			kv->key = g_bytes_ref(ev->kv->key);
			kv->value = g_bytes_ref(ev->kv->value);
			cache_store_locked(in, kv, true);
		}
		g_mutex_unlock(&in->lock);
		if (stale && !ev->deleted)
			cache_touch(in);
		/* Even our own Put moves mtime: the kernel may hold the
		 * attributes from before it (off -1: attributes only). */
		notice_push(NOTICE_INODE, in->ino, 0, stale ? 0 : -1, NULL);
		if (ev->deleted && stale && !local) {
			gsize klen;
			const char *k = g_bytes_get_data(key, &klen);

			notify_deleted(k, klen, in->ino);
		}
		inode_unref(in);
	}
	/* Name sets follow every new key, our own too (a set learned from
	 * a page read before our Put lacks it); the kernel only needs
	 * telling about what it does not know already. A late delete is
	 * news to nobody. */
	if (ns_change && (stale || !ev->deleted) && !(ev->deleted && local))
		inval_namespace(key, &(struct ns_change){
			.added = !ev->deleted, .rev = ev->kv->mod_revision,
			.notify = stale && !local && !key_is_local(key),
		});
}

/* Trust is gone: every cache could be stale. */
static void invalidate_all(void)
{
	static const struct ns_change lost = { .added = false, .notify = true, .rev = INT64_MAX };
	g_autoptr(GPtrArray) all = inode_all();

	/* Every set is dropped below: no late event can undo anything. */
	g_mutex_lock(&w.lock);
	g_hash_table_remove_all(w.created);
	g_mutex_unlock(&w.lock);

	for (guint i = 0; i < all->len; i++) {
		struct ef_inode *in = all->pdata[i];
		g_autoptr(GBytes) key = inode_key(in);
		gsize len;
		const char *k = g_bytes_get_data(key, &len);

		cache_drop(in);
		inode_names_forget(in);
		notice_push(NOTICE_INODE, in->ino, 0, 0, NULL);
		/* Entries point at this inode from its parent: drop them so
		 * a key that vanished meanwhile is looked up again. */
		if (in->ino != FUSE_ROOT_ID)
			inval_parent_entry(k, in->kind == EF_DIR && len ? len - 1 : len,
					   in->kind == EF_DIR, &lost);
	}
}

/* ---- the stream ---- */

static void on_msg(void *ud, struct ef_watch_msg *m)
{
	struct item *it = g_new0(struct item, 1);

	it->kind = ITEM_MSG;
	it->stream = GPOINTER_TO_SIZE(ud);
	it->m = m;
	g_async_queue_push(w.q, it);
}

static void on_close(void *ud, int err)
{
	struct item *it = g_new0(struct item, 1);

	g_debug("watch: stream closed: %s", g_strerror(-err));
	it->kind = ITEM_CLOSE;
	it->stream = GPOINTER_TO_SIZE(ud);
	g_async_queue_push(w.q, it);
}

static const struct ef_watch_ops stream_ops = { .on_msg = on_msg, .on_close = on_close };

static void item_free(struct item *it)
{
	if (it && it->kind == ITEM_DOUBT)
		g_atomic_int_set(&w.doubt_queued, 0);
	if (it)
		etcd_watch_msg_free(it->m);
	g_free(it);
}

/* Applies one message. Returns false when the stream must start over. */
static bool handle_msg(const struct ef_watch_msg *m, int64_t *next, bool *created)
{
	if (m->created) {
		if (m->canceled) {
			const char *why = m->cancel_reason ? m->cancel_reason : "no reason given";

			/* Once per reason: a role that may not read the whole
			 * mount is refused again at every try. */
			if (strncmp(why, w.refused, sizeof(w.refused) - 1) != 0)
				g_message("etcdfs: watch refused: %s", why);
			g_strlcpy(w.refused, why, sizeof(w.refused));
			if (w.listener)
				w.listener->refused(why);
			/* A token etcd forgot, or one made before a change of
			 * users or roles: log in again before the next try. */
			if (strstr(why, "invalid auth token") ||
			    strstr(why, "revision of auth store is old"))
				etcd_auth_renew(w.etcd, w.token_gen);
			return false;
		}
		w.refused[0] = '\0';
		if (*next == 0)
			*next = m->revision + 1;
		if (w.listener)
			w.listener->delivered(NULL, 0, *next - 1);
		/* Trusted once a probe has vouched for the member too. */
		*created = true;
		return true;
	}
	if (m->canceled) {
		/* Compacted past our resume point: events are lost, so start
		 * from now on caches that are about to be dropped. */
		if (m->compact_revision) {
			*next = 0;
			if (w.listener)
				w.listener->lost(m->compact_revision);
		}
		return false;
	}
	for (size_t i = 0; i < m->n_events; i++) {
		apply_event(&m->events[i]);
		*next = MAX(*next, m->events[i].kv->mod_revision + 1);
	}
	if (m->n_events == 0 && m->watch_id >= 0 && m->revision)
		*next = MAX(*next, m->revision + 1);
	if (w.listener)
		w.listener->delivered(m->events, m->n_events, *next - 1);
	return true;
}

/* Runs one stream until it ends; returns whether it ever got created. */
static bool run_stream(int64_t *next)
{
	struct ef_grpc_stream *s = NULL;
	gint64 heard, asked;
	/* Until trusted: whether a probe has vouched for the member since
	 * the stream began or was last doubted. */
	bool created = false, doubted = true, probed = false;
	struct item *it;

	w.stream++;
	w.token_gen = etcd_auth_generation(w.etcd);
	if (etcd_watch_open(w.etcd, w.key, w.end, *next, &stream_ops,
			    GSIZE_TO_POINTER(w.stream), &s) < 0)
		return false;
	prober_kick();
	heard = asked = g_get_monotonic_time();
	while (!g_atomic_int_get(&w.stop)) {
		gint64 now;

		it = g_async_queue_timeout_pop(w.q, G_USEC_PER_SEC);
		now = g_get_monotonic_time();
		if (it && it->kind == ITEM_STOP) {
			item_free(it);
			break;
		}
		/* Whatever else comes: the prober's items (every probe) keep
		 * coming while the stream says nothing. */
		if (now - heard > SILENCE_US) {
			item_free(it);
			break;
		}
		if (created && now - asked > PROGRESS_EVERY_US) {
			etcd_watch_request_progress(s);
			asked = now;
		}
		if (it && it->kind == ITEM_DOUBT) {
			/* Serve nothing from the caches until this stream
			 * answers again: a progress request makes it. */
			item_free(it);
			if (stream_trusted()) {
				set_trusted(false);
				invalidate_all();
				doubted = true;
				probed = false;
				prober_kick();
			}
			continue;
		}
		if (it && it->kind == ITEM_PROBED) {
			/* The member answered with a leader: trusted at the
			 * stream's next message, which this asks for, so that
			 * nothing it delivered before the probe is missed. */
			item_free(it);
			if (doubted && !probed) {
				probed = true;
				etcd_watch_request_progress(s);
				asked = now;
			}
			continue;
		}
		if (it && it->stream != w.stream) {
			item_free(it);
			continue;
		}
		if (!it)
			continue;
		heard = now;
		/* Part of a response still arriving: alive, nothing yet. */
		if (it->kind == ITEM_MSG && it->m && it->m->fragment) {
			item_free(it);
			continue;
		}
		if (it->kind == ITEM_CLOSE || !it->m || !handle_msg(it->m, next, &created)) {
			item_free(it);
			break;
		}
		item_free(it);
		set_applied(*next);
		/* The stream answered after the probe: no event was lost on
		 * it, and the caches were emptied meanwhile. */
		if (doubted && created && probed) {
			doubted = false;
			set_trusted(true);
		}
	}
	set_trusted(false);
	invalidate_all();
	etcd_watch_close(s);
	return created;
}

/* The prober heard the member answer, with a leader. */
static void probed(void)
{
	struct item *it = g_new0(struct item, 1);

	it->kind = ITEM_PROBED;
	g_async_queue_push(w.q, it);
}

static gpointer watch_main(gpointer unused)
{
	int64_t next = 0;
	int backoff = BACKOFF_MIN_MS;

	while (!g_atomic_int_get(&w.stop)) {
		struct item *it;
		gint64 deadline, left;

		if (run_stream(&next))
			backoff = BACKOFF_MIN_MS;
		else
			backoff = MIN(backoff * 2, BACKOFF_MAX_MS);
		if (g_atomic_int_get(&w.stop))
			break;
		/* Sleep, but wake for stop; drop what old streams left. Until
		 * a deadline: the prober's items keep coming once the member
		 * answers again, and each must not start the wait over. */
		deadline = g_get_monotonic_time() + (gint64)backoff * 1000;
		while ((left = deadline - g_get_monotonic_time()) > 0 &&
		       (it = g_async_queue_timeout_pop(w.q, (guint64)left))) {
			bool stop = it->kind == ITEM_STOP;

			item_free(it);
			if (stop)
				return NULL;
		}
	}
	return NULL;
}

/* What watch_start and watch_start_frozen both set up (watch_free's). */
static void watch_init(GBytes *root)
{
	gsize len;
	const char *r = g_bytes_get_data(root, &len);

	w.root = g_bytes_ref(root);
	/* An empty root watches everything: key "\0" to end "\0" (etcd
	 * rejects an empty key). */
	w.key = len ? g_bytes_ref(root) : g_bytes_new("", 1);
	w.end = keymap_prefix_end(r, len);
	w.q = g_async_queue_new();
	w.nq = g_async_queue_new();
	w.local = g_ptr_array_new();
	w.created = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
					  (GDestroyNotify)g_bytes_unref, g_free);
}

void watch_set_listener(const struct watch_listener *l)
{
	w.listener = l;
}

void watch_start(struct ef_etcd *etcd, GBytes *root, struct fuse_session *se)
{
	w.etcd = etcd;
	w.se = se;
	watch_init(root);
	w.notifier = g_thread_new("notify", notifier_main, NULL);
	prober_init();
	w.thread = g_thread_new("watch", watch_main, NULL);
	prober_start(etcd, probed);
}

void watch_start_frozen(GBytes *root)
{
	watch_init(root);
	g_mutex_lock(&w.lock);
	w.trusted = true;
	w.frozen = true;
	g_mutex_unlock(&w.lock);
}

/* Frees what watch_start (or watch_start_frozen) made. */
static void watch_free(void)
{
	struct item *it;

	g_async_queue_unref(w.nq);
	g_ptr_array_unref(w.local);
	g_hash_table_destroy(w.created);
	while ((it = g_async_queue_try_pop(w.q)))
		item_free(it);
	g_async_queue_unref(w.q);
	g_bytes_unref(w.root);
	g_bytes_unref(w.key);
	g_bytes_unref(w.end);
	for (size_t i = 0; i < RING; i++)
		if (w.ring[i])
			g_bytes_unref(w.ring[i]);
}

void watch_stop(void)
{
	struct item *it;

	if (w.frozen) {
		watch_free();
		w.frozen = false;
		return;
	}
	if (!w.thread)
		return;
	it = g_new0(struct item, 1);
	g_atomic_int_set(&w.stop, 1);
	/* First: it queues items for the watch thread. */
	prober_stop();
	it->kind = ITEM_STOP;
	g_async_queue_push(w.q, it);
	g_thread_join(w.thread);
	w.thread = NULL;
	prober_fini();
	notice_push(NOTICE_STOP, 0, 0, 0, NULL);
	g_thread_join(w.notifier);
	watch_free();
}
