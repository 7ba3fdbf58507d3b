/*
 * watchfile — the %watch streams (see watchfile.h).
 *
 * A stream is a log addressed by offset: a read at an offset the log still
 * holds is answered from it (bash's read builtin reads ahead and seeks
 * back), one at its end is parked until the next line. Bytes more than
 * KEEP_BEHIND before the last read's offset are let go.
 *
 * Feeding. The mount's watch thread calls delivered() after applying each
 * message; under wf.lock it appends the lines to every live stream whose
 * directory they concern and advances wf.position, the revision through
 * which everything has been delivered. A stream registers under the same
 * lock, so it gets exactly the events after the position it read: its
 * START line's revision. A %watch@REV stream older than that position
 * starts "catching up": the mount's events for it are held aside while a
 * Watch of its own, from REV, replays history on the history thread; the
 * first replayed event newer than the position it joined at shows that
 * history has caught up (etcd sends events in order), so the held events
 * follow and the stream is fed like the others. A quiet directory keeps
 * that Watch until its next change.
 *
 * Parked reads. A read that must wait registers an interrupt callback
 * first and is "armed" after: until then nothing answers it but the
 * handler itself, so the request is never used after another thread
 * answered it. Whoever answers it takes it out of the stream under the
 * stream's lock, then clears the callback (which waits for one running:
 * libfuse runs it under the request's lock), then replies, holding no lock.
 *
 * Lock order: wf.lock, then a stream's lock. Replies are sent with
 * neither held.
 */
#include "watchfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "etcd.h"
#include "fs.h"
#include "fsops.h"
#include "inode.h"
#include "keymap.h"
#include "watch.h"
#include "watchfmt.h"

#define NAME "%watch"
#define NAME_AT "%watch@"
/* Inode numbers of the %watch files: below clusterfs's, above any the
 * inode table gives out. */
#define INO_FIRST ((fuse_ino_t)(UINT64_MAX - 64 - (UINT64_C(1) << 40)))
#define INO_LAST ((fuse_ino_t)(UINT64_MAX - 64))
/* Unread bytes (held ones included) beyond which a stream ends: a reader
 * that stopped reading must not hold the daemon's memory. */
#define MAX_BEHIND (64u << 20)
#define KEEP_BEHIND (1u << 20)
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000

/* One open of a %watch file. */
struct stream {
	gint ref;
	GBytes *dir;               /* immutable: the directory's key prefix */
	int64_t from;              /* immutable: REV of %watch@REV, or 0 */

	GMutex lock;
	GByteArray *log;           /* protected by lock: bytes [base, base + len) */
	uint64_t base;             /* protected by lock */
	uint64_t read_off;         /* protected by lock: the last read's offset */
	struct timespec mtime;     /* protected by lock: when the last line came */
	bool ended;                /* protected by lock: the ERROR line is in */
	fuse_req_t req;            /* protected by lock: a parked read */
	size_t req_size;           /* protected by lock */
	uint64_t req_off;          /* protected by lock */
	bool armed;                /* protected by lock: its callback is registered */

	bool registered;           /* protected by wf.lock: fed by delivered() */
	bool awaiting;             /* protected by wf.lock: registered while the
				    * position was unknown; no START line yet */
	bool catching;             /* protected by wf.lock: history not replayed yet */
	int64_t joined;            /* protected by wf.lock: the position it joined at */
	int64_t min_rev;           /* protected by wf.lock: events older are not its */
	GPtrArray *held;           /* protected by wf.lock: GBytes lines, while catching */
	size_t held_bytes;         /* protected by wf.lock */

	/* The history thread's: the replaying Watch. */
	struct ef_grpc_stream *hist;
	uint64_t hist_gen;         /* which Watch the messages are from */
	int64_t hist_next;         /* the revision to resume at */
	gint64 retry_at;           /* 0, or when to open it again */
	uint64_t token_gen;        /* the auth token it was opened with */
	int retry_ms;
};

/* A %watch inode: one per lookup. */
struct node {
	fuse_ino_t ino;
	uint64_t nlookup;          /* protected by wf.lock */
	GBytes *dir;
	int64_t from;
	struct stream *s;          /* protected by wf.lock: its last open's, for stat */
};

/* A message for the history thread. */
enum hist_kind { H_START, H_MSG, H_CLOSED, H_ENDED, H_RELEASE, H_STOP };

struct hist_item {
	enum hist_kind kind;
	struct stream *s;          /* a reference */
	uint64_t gen;              /* H_MSG, H_CLOSED */
	struct ef_watch_msg *m;    /* H_MSG */
};

/* The user data of one history Watch. */
struct hist_ctx {
	struct stream *s;          /* a reference */
	uint64_t gen;
};

/* A parked read answered: replied to once no lock is held. */
struct answer {
	fuse_req_t req;
	GBytes *data;              /* NULL: err */
	int err;
};

static struct {
	const struct fuse_lowlevel_ops *inner;
	struct fuse_lowlevel_ops ops;
	struct ef_etcd *etcd;
	int command_ms;
	GThread *thread;
	GAsyncQueue *q;            /* struct hist_item */

	GMutex lock;
	bool running;              /* protected by lock */
	int64_t position;          /* protected by lock: -1 until known */
	bool denied;               /* protected by lock: etcd refused the mount's
				    * watch (permission), not created since */
	GPtrArray *streams;        /* protected by lock: the registered ones */
	GPtrArray *open;           /* protected by lock: every open stream; the
				    * reference its file handle holds */
	GHashTable *nodes;         /* protected by lock: ino -> struct node */
	fuse_ino_t next_ino;       /* protected by lock */
} wf;

static struct stream *stream_ref(struct stream *s)
{
	g_atomic_int_inc(&s->ref);
	return s;
}

static void stream_unref(struct stream *s)
{
	if (!s || !g_atomic_int_dec_and_test(&s->ref))
		return;
	g_bytes_unref(s->dir);
	g_byte_array_unref(s->log);
	if (s->held)
		g_ptr_array_unref(s->held);
	g_mutex_clear(&s->lock);
	g_free(s);
}

static void hist_push(enum hist_kind kind, struct stream *s, uint64_t gen,
		      struct ef_watch_msg *m);

/* ---- the log ---- */

static void append_locked(struct stream *s, const char *p, size_t len)
{
	g_byte_array_append(s->log, (const guint8 *)p, (guint)len);
	clock_gettime(CLOCK_REALTIME, &s->mtime);
}

static uint64_t end_locked(struct stream *s)
{
	return s->base + s->log->len;
}

/*
 * What a read of size bytes at off gets now: 0 with *data set, or an error
 * (-EAGAIN: nothing yet, the read waits). Lets go of what lies well before
 * off: no reader seeks back that far.
 */
static int take_locked(struct stream *s, uint64_t off, size_t size, GBytes **data)
{
	uint64_t end = end_locked(s), upto = MIN(off, end);
	size_t n;

	if (off < s->base)
		return -ESPIPE;
	s->read_off = upto;
	/* In steps of KEEP_BEHIND: each moves what is left of the log. */
	if (upto - s->base >= 2 * (uint64_t)KEEP_BEHIND) {
		guint drop = (guint)(upto - s->base - KEEP_BEHIND);

		g_byte_array_remove_range(s->log, 0, drop);
		s->base += drop;
	}
	if (off >= end)
		return s->ended ? -EIO : -EAGAIN;
	n = (size_t)MIN(size, end - off);
	/* The kernel splits a large direct read into requests and asks for
	 * the next as long as each comes back full: one that ends exactly
	 * where the stream ends would make the next wait for an event, with
	 * these bytes held back. One byte short, the read ends here. */
	if (n == size && off + n == end && n > 1 && !s->ended)
		n--;
	*data = g_bytes_new(s->log->data + (off - s->base), n);
	return 0;
}

/* Takes the parked read out if it can be answered now, into *a. */
static bool answer_parked_locked(struct stream *s, struct answer *a)
{
	int rc;

	if (!s->req || !s->armed)
		return false;
	rc = take_locked(s, s->req_off, s->req_size, &a->data);
	if (rc == -EAGAIN)
		return false;
	a->req = s->req;
	a->err = -rc;
	s->req = NULL;
	return true;
}

static void answer_send(struct answer *a)
{
	/* No callback runs after this, nor is one running: it may no
	 * longer see the request as parked, but must not race the reply. */
	fuse_req_interrupt_func(a->req, NULL, NULL);
	if (a->data)
		fuse_reply_buf(a->req, g_bytes_get_data(a->data, NULL), g_bytes_get_size(a->data));
	else
		fuse_reply_err(a->req, a->err);
	if (a->data)
		g_bytes_unref(a->data);
}

/* The bytes the reader has not read yet, held ones included. */
static size_t behind_locked(struct stream *s)
{
	return (size_t)(end_locked(s) - MIN(s->read_off, end_locked(s))) + s->held_bytes;
}

/*
 * Ends s with its last line (ownership of line taken): it is fed no more,
 * and reads past the line fail. Called with wf.lock held; the parked read,
 * if it can now be answered, is put in *a.
 */
static bool end_stream_wf_locked(struct stream *s, GString *line, struct answer *a)
{
	bool answered;

	if (s->registered) {
		g_ptr_array_remove(wf.streams, s);
		s->registered = false;
		stream_unref(s);
	}
	if (s->held)
		g_ptr_array_set_size(s->held, 0);
	s->held_bytes = 0;
	/* Its history Watch, if any, is closed at once. */
	if (s->catching)
		hist_push(H_ENDED, s, 0, NULL);
	s->catching = false;
	g_mutex_lock(&s->lock);
	if (!s->ended) {
		append_locked(s, line->str, line->len);
		s->ended = true;
	}
	answered = answer_parked_locked(s, a);
	g_mutex_unlock(&s->lock);
	g_string_free(line, TRUE);
	return answered;
}

/* Adds line to a fed stream, or to what it holds while catching up, unless
 * the reader is too far behind. Called with wf.lock held. */
static void feed_wf_locked(struct stream *s, GBytes *line, GArray *answers)
{
	struct answer a = { 0 };
	bool over;

	g_mutex_lock(&s->lock);
	over = behind_locked(s) + g_bytes_get_size(line) > MAX_BEHIND;
	if (!over && !s->catching)
		append_locked(s, g_bytes_get_data(line, NULL), g_bytes_get_size(line));
	g_mutex_unlock(&s->lock);
	if (over) {
		if (end_stream_wf_locked(s, watchfmt_error("overflow", 0, NULL), &a))
			g_array_append_val(answers, a);
		return;
	}
	if (s->catching) {
		g_ptr_array_add(s->held, g_bytes_ref(line));
		s->held_bytes += g_bytes_get_size(line);
	}
}

static void answers_send(GArray *answers)
{
	for (guint i = 0; i < answers->len; i++)
		answer_send(&g_array_index(answers, struct answer, i));
	g_array_set_size(answers, 0);
}

/*
 * s starts at position: its START line, and from REV at or before it, a
 * history Watch of its own. Called with wf.lock held, s registered; no
 * event has been fed to it yet.
 */
static void begin_wf_locked(struct stream *s, int64_t position)
{
	g_autoptr(GString) first = watchfmt_start(s->from ? s->from - 1 : position);

	s->awaiting = false;
	s->joined = position;
	s->min_rev = s->from;
	s->catching = s->from && s->from <= position;
	if (s->catching) {
		s->held = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
		s->hist_next = s->from;
		hist_push(H_START, s, 0, NULL);
	}
	g_mutex_lock(&s->lock);
	append_locked(s, first->str, first->len);
	g_mutex_unlock(&s->lock);
}

/* ---- fed by the mount's watch ---- */

static bool key_in(GBytes *key, GBytes *dir)
{
	gsize klen, dlen;
	const char *k = g_bytes_get_data(key, &klen);
	const char *d = g_bytes_get_data(dir, &dlen);

	return klen >= dlen && (dlen == 0 || memcmp(k, d, dlen) == 0);
}

static void delivered(const struct ef_watch_event *ev, size_t n, int64_t through)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));
	g_autofree GBytes **lines = g_new0(GBytes *, n + 1);

	g_mutex_lock(&wf.lock);
	if (!wf.running) {
		g_mutex_unlock(&wf.lock);
		return;
	}
	/* Backwards: a stream that falls too far behind leaves the array. */
	for (guint j = wf.streams->len; j-- > 0;) {
		struct stream *s = wf.streams->pdata[j];
		struct answer a = { 0 };
		bool fed = false;

		for (size_t i = 0; i < n && s->registered && !s->awaiting; i++) {
			if (ev[i].kv->mod_revision < s->min_rev || !key_in(ev[i].kv->key, s->dir))
				continue;
			if (!lines[i]) {
				GString *l = watchfmt_event(&ev[i]);

				lines[i] = g_string_free_to_bytes(l);
			}
			feed_wf_locked(s, lines[i], answers);
			fed = true;
		}
		if (!fed || !s->registered)
			continue;
		g_mutex_lock(&s->lock);
		if (answer_parked_locked(s, &a))
			g_array_append_val(answers, a);
		g_mutex_unlock(&s->lock);
	}
	if (through > wf.position)
		wf.position = through;
	wf.denied = false;
	/* Those that waited for a position start at this one: its events
	 * were not theirs. */
	for (guint j = 0; j < wf.streams->len; j++) {
		struct stream *s = wf.streams->pdata[j];
		struct answer a = { 0 };

		if (!s->awaiting || wf.position < 0)
			continue;
		begin_wf_locked(s, wf.position);
		g_mutex_lock(&s->lock);
		if (answer_parked_locked(s, &a))
			g_array_append_val(answers, a);
		g_mutex_unlock(&s->lock);
	}
	g_mutex_unlock(&wf.lock);
	answers_send(answers);
	for (size_t i = 0; i < n; i++)
		if (lines[i])
			g_bytes_unref(lines[i]);
}

static void lost(int64_t compact_revision)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));

	g_mutex_lock(&wf.lock);
	if (!wf.running) {
		g_mutex_unlock(&wf.lock);
		return;
	}
	for (guint j = wf.streams->len; j-- > 0;) {
		struct stream *s = wf.streams->pdata[j];
		struct answer a = { 0 };

		if (s->awaiting)
			continue;
		if (end_stream_wf_locked(s, watchfmt_error("compacted", compact_revision, NULL),
					 &a))
			g_array_append_val(answers, a);
	}
	/* Unknown until the new stream is created: a stream opened meanwhile
	 * waits for it rather than claim a start it cannot keep. */
	wf.position = -1;
	g_mutex_unlock(&wf.lock);
	answers_send(answers);
}

/* etcd refused the mount's watch. Refused for good (permission): streams
 * waiting for it end, and opens fail, until it is created. Otherwise the
 * watch retries (a token renewed) and they wait on. */
static void refused(const char *why)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));

	if (!strstr(why, "permission denied"))
		return;
	g_mutex_lock(&wf.lock);
	if (!wf.running) {
		g_mutex_unlock(&wf.lock);
		return;
	}
	wf.denied = true;
	for (guint j = wf.streams->len; j-- > 0;) {
		struct stream *s = wf.streams->pdata[j];
		struct answer a = { 0 };

		if (s->awaiting && end_stream_wf_locked(s, watchfmt_error("refused", 0, why), &a))
			g_array_append_val(answers, a);
	}
	g_mutex_unlock(&wf.lock);
	answers_send(answers);
}

static const struct watch_listener listener = {
	.delivered = delivered, .lost = lost, .refused = refused,
};

/* ---- the history thread ---- */

static void hist_push(enum hist_kind kind, struct stream *s, uint64_t gen, struct ef_watch_msg *m)
{
	struct hist_item *it = g_new0(struct hist_item, 1);

	it->kind = kind;
	it->s = s ? stream_ref(s) : NULL;
	it->gen = gen;
	it->m = m;
	g_async_queue_push(wf.q, it);
}

static void hist_on_msg(void *ud, struct ef_watch_msg *m)
{
	struct hist_ctx *c = ud;

	hist_push(H_MSG, c->s, c->gen, m);
}

static void hist_on_close(void *ud, int err)
{
	struct hist_ctx *c = ud;

	(void)err;
	hist_push(H_CLOSED, c->s, c->gen, NULL);
	stream_unref(c->s);
	g_free(c);
}

static const struct ef_watch_ops hist_ops = { .on_msg = hist_on_msg, .on_close = hist_on_close };

static void hist_close(struct stream *s)
{
	struct ef_grpc_stream *h = s->hist;

	/* Messages of this Watch still queued are recognised as old. */
	s->hist_gen++;
	s->hist = NULL;
	if (h)
		etcd_watch_close(h);
}

static void hist_open(struct stream *s)
{
	struct hist_ctx *c = g_new(struct hist_ctx, 1);
	gsize len;
	const char *d = g_bytes_get_data(s->dir, &len);
	/* The whole keyspace is "\0" up to "\0" (etcd refuses an empty key). */
	g_autoptr(GBytes) key = len ? g_bytes_ref(s->dir) : g_bytes_new("", 1);
	g_autoptr(GBytes) end = keymap_prefix_end(d, len);

	s->hist_gen++;
	s->retry_at = 0;
	s->token_gen = etcd_auth_generation(wf.etcd);
	c->s = stream_ref(s);
	c->gen = s->hist_gen;
	/* A failure comes back as H_CLOSED, and is retried. */
	if (etcd_watch_open(wf.etcd, key, end, s->hist_next, &hist_ops, c, &s->hist) < 0)
		s->hist = NULL;
}

/* Ends a catching-up stream from the history thread. */
static void hist_fail(struct stream *s, GString *line)
{
	struct answer a = { 0 };
	bool answered;

	hist_close(s);
	g_mutex_lock(&wf.lock);
	answered = end_stream_wf_locked(s, line, &a);
	s->catching = false;
	g_mutex_unlock(&wf.lock);
	if (answered)
		answer_send(&a);
}

/* History has reached the position s joined at: what the mount's watch
 * delivered since follows, and then everything it delivers. */
static void hist_join(struct stream *s)
{
	struct answer a = { 0 };
	bool answered;

	hist_close(s);
	g_mutex_lock(&wf.lock);
	g_mutex_lock(&s->lock);
	if (s->catching) {
		for (guint i = 0; i < s->held->len; i++) {
			GBytes *l = s->held->pdata[i];

			append_locked(s, g_bytes_get_data(l, NULL), g_bytes_get_size(l));
		}
		g_ptr_array_set_size(s->held, 0);
		s->held_bytes = 0;
		s->catching = false;
	}
	answered = answer_parked_locked(s, &a);
	g_mutex_unlock(&s->lock);
	g_mutex_unlock(&wf.lock);
	if (answered)
		answer_send(&a);
}

/* One message of s's history Watch. */
static void hist_msg(struct stream *s, const struct ef_watch_msg *m)
{
	int64_t joined;

	const char *why = m && m->cancel_reason ? m->cancel_reason : "";

	/* A token etcd forgot, or one made before a change of users or
	 * roles: log in again, and open it again. */
	if (m && m->canceled &&
	    (strstr(why, "invalid auth token") || strstr(why, "revision of auth store is old"))) {
		etcd_auth_renew(wf.etcd, s->token_gen);
		m = NULL;
	}
	if (!m || (m->canceled && !m->compact_revision && !m->created)) {
		/* Refused, or cancelled without a word: open it again. */
		hist_close(s);
		s->retry_at = g_get_monotonic_time() + (gint64)s->retry_ms * 1000;
		return;
	}
	if (m->canceled) {
		if (m->compact_revision)
			hist_fail(s, watchfmt_error("compacted", m->compact_revision, NULL));
		else
			hist_fail(s, watchfmt_error("refused", 0, m->cancel_reason));
		return;
	}
	s->retry_ms = RETRY_MIN_MS;
	g_mutex_lock(&wf.lock);
	joined = s->joined;
	g_mutex_unlock(&wf.lock);
	/* A timed progress notification (etcd sends them only to a watcher
	 * that has caught up; a requested one may come early, and none is
	 * requested): every event up to its revision has been sent. */
	if (!m->created && m->n_events == 0 && m->watch_id >= 0 && m->revision >= joined) {
		hist_join(s);
		return;
	}
	for (size_t i = 0; i < m->n_events; i++) {
		const struct ef_watch_event *ev = &m->events[i];
		g_autoptr(GString) line = NULL;
		struct answer a = { 0 };
		bool answered, over;

		if (ev->kv->mod_revision > joined) {
			hist_join(s);
			return;
		}
		line = watchfmt_event(ev);
		g_mutex_lock(&s->lock);
		if (s->ended) {
			g_mutex_unlock(&s->lock);
			return;
		}
		over = behind_locked(s) + line->len > MAX_BEHIND;
		if (!over)
			append_locked(s, line->str, line->len);
		answered = answer_parked_locked(s, &a);
		g_mutex_unlock(&s->lock);
		if (answered)
			answer_send(&a);
		if (over) {
			hist_fail(s, watchfmt_error("overflow", 0, NULL));
			return;
		}
		s->hist_next = ev->kv->mod_revision + 1;
	}
}

/* Opens again, at their time, the history Watches that closed. */
static void hist_retry(GPtrArray *catching)
{
	gint64 now = g_get_monotonic_time();

	for (guint i = 0; i < catching->len; i++) {
		struct stream *s = catching->pdata[i];

		if (s->retry_at && now >= s->retry_at) {
			s->retry_ms = MIN(s->retry_ms * 2, RETRY_MAX_MS);
			hist_open(s);
		}
	}
}

static bool retry_due(GPtrArray *catching)
{
	for (guint i = 0; i < catching->len; i++)
		if (((struct stream *)catching->pdata[i])->retry_at)
			return true;
	return false;
}

static bool still_catching(struct stream *s)
{
	bool c;

	g_mutex_lock(&wf.lock);
	c = s->catching;
	g_mutex_unlock(&wf.lock);
	return c;
}

static void hist_item(GPtrArray *catching, struct hist_item *it)
{
	struct stream *s = it->s;

	switch (it->kind) {
	case H_START:
		g_ptr_array_add(catching, stream_ref(s));
		s->retry_ms = RETRY_MIN_MS;
		hist_open(s);
		break;
	case H_MSG:
		if (it->gen == s->hist_gen && s->hist && still_catching(s))
			hist_msg(s, it->m);
		break;
	case H_CLOSED:
		if (it->gen == s->hist_gen && still_catching(s)) {
			hist_close(s);
			s->retry_at = g_get_monotonic_time() + (gint64)s->retry_ms * 1000;
		}
		break;
	case H_ENDED:             /* the check below does it */
		break;
	case H_RELEASE:
		hist_close(s);
		if (g_ptr_array_remove(catching, s))
			stream_unref(s);
		break;
	case H_STOP:
		break;
	}
	/* Done: it needs the thread no more. */
	if (s && !still_catching(s) && g_ptr_array_remove(catching, s)) {
		hist_close(s);
		stream_unref(s);
	}
}

static void hist_item_free(struct hist_item *it)
{
	etcd_watch_msg_free(it->m);
	stream_unref(it->s);
	g_free(it);
}

static gpointer hist_main(gpointer unused)
{
	g_autoptr(GPtrArray) catching = g_ptr_array_new();

	(void)unused;
	for (;;) {
		struct hist_item *it = retry_due(catching)
					       ? g_async_queue_timeout_pop(wf.q, RETRY_MIN_MS * 1000)
					       : g_async_queue_pop(wf.q);
		bool stop = it && it->kind == H_STOP;

		if (it) {
			hist_item(catching, it);
			hist_item_free(it);
		}
		if (stop)
			break;
		hist_retry(catching);
	}
	for (guint i = 0; i < catching->len; i++) {
		hist_close(catching->pdata[i]);
		stream_unref(catching->pdata[i]);
	}
	return NULL;
}

/* ---- the names ---- */

/* Whether name is one of ours; *from is REV of %watch@REV, else 0. */
static bool parse_name(const char *name, int64_t *from)
{
	guint64 rev;

	*from = 0;
	if (strcmp(name, NAME) == 0)
		return true;
	if (strncmp(name, NAME_AT, strlen(NAME_AT)) != 0)
		return false;
	name += strlen(NAME_AT);
	/* Digits only, no sign, no leading zero: one name per revision. */
	if (!g_ascii_isdigit(name[0]) || name[0] == '0' ||
	    !g_ascii_string_to_unsigned(name, 10, 1, INT64_MAX, &rev, NULL))
		return false;
	*from = (int64_t)rev;
	return true;
}

static bool ours(fuse_ino_t ino)
{
	return ino >= INO_FIRST && ino <= INO_LAST;
}

/* s: the stream whose size and time it shows, or NULL. */
static void fill_attr(struct ef_fs *fs, struct node *nd, struct stream *s, struct stat *st)
{
	*st = (struct stat){ 0 };
	st->st_ino = nd->ino;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
	if (s) {
		g_mutex_lock(&s->lock);
		st->st_size = (off_t)end_locked(s);
		st->st_mtim = st->st_ctim = s->mtime;
		g_mutex_unlock(&s->lock);
	}
}

static void node_free(gpointer p)
{
	struct node *nd = p;

	g_bytes_unref(nd->dir);
	stream_unref(nd->s);
	g_free(nd);
}

static void wf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { 0 };
	struct ef_inode *in;
	struct node *nd;
	int64_t from;

	if (!parse_name(name, &from) || !(in = inode_get(parent))) {
		wf.inner->lookup(req, parent, name);
		return;
	}
	if (in->kind != EF_DIR) {
		inode_unref(in);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	nd = g_new0(struct node, 1);
	nd->dir = inode_key(in);
	nd->from = from;
	nd->nlookup = 1;
	inode_unref(in);
	g_mutex_lock(&wf.lock);
	if (!wf.running || wf.next_ino > INO_LAST) {
		g_mutex_unlock(&wf.lock);
		node_free(nd);
		/* A mount of the past has no stream to show. */
		fuse_reply_err(req, wf.running ? ENFILE : ENOENT);
		return;
	}
	nd->ino = wf.next_ino++;
	g_hash_table_insert(wf.nodes, &nd->ino, nd);
	e.ino = nd->ino;
	fill_attr(fuse_req_userdata(req), nd, NULL, &e.attr);
	g_mutex_unlock(&wf.lock);
	/* No timeouts: every path walk looks the name up again and gets an
	 * inode (and a size in stat) of its own. */
	if (fuse_reply_entry(req, &e) != 0) {
		g_mutex_lock(&wf.lock);
		g_hash_table_remove(wf.nodes, &e.ino);
		g_mutex_unlock(&wf.lock);
	}
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct node *nd;

	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd && (nd->nlookup -= MIN(nlookup, nd->nlookup)) == 0)
		g_hash_table_remove(wf.nodes, &ino);
	g_mutex_unlock(&wf.lock);
}

static void wf_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (!ours(ino)) {
		wf.inner->forget(req, ino, nlookup);
		return;
	}
	forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void wf_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	size_t k = 0;

	for (size_t i = 0; i < count; i++) {
		if (ours(forgets[i].ino))
			forget_one(forgets[i].ino, forgets[i].nlookup);
		else
			forgets[k++] = forgets[i];
	}
	wf.inner->forget_multi(req, k, forgets);
}

static void wf_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *nd;
	struct stat st;

	if (!ours(ino)) {
		wf.inner->getattr(req, ino, fi);
		return;
	}
	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd)
		fill_attr(fuse_req_userdata(req), nd,
			  fi ? (struct stream *)(uintptr_t)fi->fh : nd->s, &st);
	g_mutex_unlock(&wf.lock);
	if (nd)
		fuse_reply_attr(req, &st, 0);
	else
		fuse_reply_err(req, ESTALE);
}

/* ---- open, read, release ---- */

/* Registers s: it starts now, or once the mount's watch knows where it
 * stands. Returns 0, or -EACCES when etcd refused that watch outright. */
static int stream_register(struct stream *s)
{
	g_mutex_lock(&wf.lock);
	if (!wf.running || (wf.position < 0 && wf.denied)) {
		g_mutex_unlock(&wf.lock);
		return wf.running ? -EACCES : -ENOTCONN;
	}
	s->registered = true;
	g_ptr_array_add(wf.streams, stream_ref(s));
	g_ptr_array_add(wf.open, s);
	if (wf.position >= 0)
		begin_wf_locked(s, wf.position);
	else
		s->awaiting = true;
	g_mutex_unlock(&wf.lock);
	return 0;
}

static struct stream *stream_new(struct node *nd)
{
	struct stream *s = g_new0(struct stream, 1);

	s->ref = 1;
	s->dir = g_bytes_ref(nd->dir);
	s->from = nd->from;
	s->log = g_byte_array_new();
	g_mutex_init(&s->lock);
	clock_gettime(CLOCK_REALTIME, &s->mtime);
	return s;
}

/* The file handle's end: takes s out of every list and drops the handle's
 * reference; the history thread drops its own part. */
static void stream_close(struct stream *s)
{
	bool was_open;

	g_mutex_lock(&wf.lock);
	if (s->registered) {
		g_ptr_array_remove(wf.streams, s);
		s->registered = false;
		stream_unref(s);
	}
	was_open = g_ptr_array_remove(wf.open, s);
	s->catching = false;
	if (s->held)
		g_ptr_array_set_size(s->held, 0);
	s->held_bytes = 0;
	/* Its inode may stay for stat long after: only the size stays. */
	g_mutex_lock(&s->lock);
	s->base = end_locked(s);
	g_byte_array_set_size(s->log, 0);
	g_mutex_unlock(&s->lock);
	g_mutex_unlock(&wf.lock);
	hist_push(H_RELEASE, s, 0, NULL);
	if (was_open)
		stream_unref(s);
}

static void wf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stream *s = NULL;
	struct node *nd;
	int rc;

	if (!ours(ino)) {
		wf.inner->open(req, ino, fi);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd)
		s = stream_new(nd);
	g_mutex_unlock(&wf.lock);
	if (!s) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	rc = stream_register(s);
	if (rc < 0) {
		stream_unref(s);
		fuse_reply_err(req, -rc);
		return;
	}
	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd) {
		stream_unref(nd->s);
		nd->s = stream_ref(s);
	}
	g_mutex_unlock(&wf.lock);
	fi->fh = (uint64_t)(uintptr_t)s;
	/* Reads reach the stream at their offsets, never a page cache; a
	 * close has nothing to flush (and must not fail once unmounted). */
	fi->direct_io = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) != 0)
		stream_close(s);
}

/*
 * libfuse's interrupt callback, under the request's lock: an armed read
 * that nobody has taken yet is answered EINTR here. Only an armed one: run
 * from inside fuse_req_interrupt_func (the interrupt came first), a reply
 * would free the request under the lock that call still holds; wf_read
 * looks for that interrupt itself once it has armed the read.
 */
static void interrupted(fuse_req_t req, void *data)
{
	struct stream *s = data;
	bool mine;

	g_mutex_lock(&s->lock);
	mine = s->req == req && s->armed;
	if (mine)
		s->req = NULL;
	g_mutex_unlock(&s->lock);
	if (mine)
		fuse_reply_err(req, EINTR);
}

static void wf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct stream *s = (struct stream *)(uintptr_t)fi->fh;
	struct answer a = { 0 };
	GBytes *data = NULL;
	bool answered;
	int rc;

	if (!ours(ino)) {
		wf.inner->read(req, ino, size, off, fi);
		return;
	}
	g_mutex_lock(&s->lock);
	rc = take_locked(s, (uint64_t)off, size, &data);
	if (rc == -EAGAIN && !(fi->flags & O_NONBLOCK) && s->req)
		rc = -EBUSY;          /* one read at a time waits */
	if (rc == -EAGAIN && !(fi->flags & O_NONBLOCK)) {
		s->req = req;
		s->req_size = size;
		s->req_off = (uint64_t)off;
		s->armed = false;
		g_mutex_unlock(&s->lock);
		/* Unarmed, nobody answers it meanwhile: req and s stay. */
		fuse_req_interrupt_func(req, interrupted, s);
		g_mutex_lock(&s->lock);
		s->armed = true;
		answered = answer_parked_locked(s, &a);
		/* An interrupt that came before the callback was registered
		 * found it armed by nobody: answered here. */
		if (!answered && fuse_req_interrupted(req)) {
			s->req = NULL;
			a = (struct answer){ .req = req, .err = EINTR };
			answered = true;
		}
		g_mutex_unlock(&s->lock);
		if (answered)
			answer_send(&a);
		return;
	}
	g_mutex_unlock(&s->lock);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_buf(req, g_bytes_get_data(data, NULL), g_bytes_get_size(data));
	g_bytes_unref(data);
}

static void wf_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stream *s = (struct stream *)(uintptr_t)fi->fh;

	if (!ours(ino)) {
		wf.inner->release(req, ino, fi);
		return;
	}
	stream_close(s);
	fuse_reply_err(req, 0);
}

/* ---- everything else: read-only, no locks, no attributes ---- */

static void wf_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->setattr(req, ino, attr, to_set, fi);
}

static void wf_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		wf.inner->flush(req, ino, fi);
}

static void wf_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		wf.inner->fsync(req, ino, datasync, fi);
}

static void wf_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, ENOTDIR);
	else
		wf.inner->opendir(req, ino, fi);
}

static bool our_name(const char *name)
{
	int64_t from;

	return parse_name(name, &from);
}

static void wf_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (our_name(name))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->unlink(req, parent, name);
}

static void wf_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (our_name(name))
		fuse_reply_err(req, ENOTDIR);
	else
		wf.inner->rmdir(req, parent, name);
}

static void wf_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	if (our_name(name))
		fuse_reply_err(req, EEXIST);
	else
		wf.inner->mkdir(req, parent, name, mode);
}

static void wf_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	if (our_name(name))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->create(req, parent, name, mode, fi);
}

static void wf_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	if (our_name(name) || our_name(newname))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->rename(req, parent, name, newparent, newname, flags);
}

static void wf_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		wf.inner->flock(req, ino, fi, op);
}

static void wf_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		wf.inner->getlk(req, ino, fi, lock);
}

static void wf_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		wf.inner->setlk(req, ino, fi, lock, sleep);
}

static void wf_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (ours(ino))
		fuse_reply_err(req, ENODATA);
	else
		wf.inner->getxattr(req, ino, name, size);
}

static void wf_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (ours(ino))
		fsops_reply_xattr(req, "", 0, size);
	else
		wf.inner->listxattr(req, ino, size);
}

static void wf_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->setxattr(req, ino, name, value, size, flags);
}

static void wf_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->removexattr(req, ino, name);
}

/* ---- start and stop ---- */

void watchfile_start(struct ef_etcd *etcd, int command_ms)
{
	wf.etcd = etcd;
	wf.command_ms = command_ms;
	wf.q = g_async_queue_new();
	wf.streams = g_ptr_array_new();
	wf.open = g_ptr_array_new();
	wf.nodes = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, node_free);
	wf.position = -1;
	wf.next_ino = INO_FIRST;
	wf.running = true;
	wf.thread = g_thread_new("watchfile", hist_main, NULL);
	watch_set_listener(&listener);
}

void watchfile_stop(void)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));
	struct hist_item *it;

	if (!wf.thread)
		return;
	g_mutex_lock(&wf.lock);
	wf.running = false;
	for (guint i = 0; i < wf.open->len; i++) {
		struct stream *s = wf.open->pdata[i];
		struct answer a = { 0 };

		g_mutex_lock(&s->lock);
		if (s->req) {
			/* Unmounting: the reader gets an end of file. */
			a.req = s->req;
			a.data = g_bytes_new(NULL, 0);
			s->req = NULL;
			g_array_append_val(answers, a);
		}
		g_mutex_unlock(&s->lock);
	}
	g_mutex_unlock(&wf.lock);
	answers_send(answers);
	hist_push(H_STOP, NULL, 0, NULL);
	g_thread_join(wf.thread);
	wf.thread = NULL;
	while ((it = g_async_queue_try_pop(wf.q)))
		hist_item_free(it);
	g_async_queue_unref(wf.q);
	g_mutex_lock(&wf.lock);
	/* No release comes after the session: the handles' references go
	 * with the lists. */
	for (guint i = 0; i < wf.streams->len; i++)
		stream_unref(wf.streams->pdata[i]);
	for (guint i = 0; i < wf.open->len; i++)
		stream_unref(wf.open->pdata[i]);
	g_ptr_array_unref(wf.streams);
	g_ptr_array_unref(wf.open);
	g_hash_table_destroy(wf.nodes);
	g_mutex_unlock(&wf.lock);
}

const struct fuse_lowlevel_ops *watchfile_ops(const struct fuse_lowlevel_ops *inner)
{
	wf.inner = inner;
	wf.ops = *inner;
	wf.ops.lookup = wf_lookup;
	wf.ops.forget = wf_forget;
	wf.ops.forget_multi = wf_forget_multi;
	wf.ops.getattr = wf_getattr;
	wf.ops.setattr = wf_setattr;
	wf.ops.open = wf_open;
	wf.ops.read = wf_read;
	wf.ops.flush = wf_flush;
	wf.ops.fsync = wf_fsync;
	wf.ops.release = wf_release;
	wf.ops.opendir = wf_opendir;
	wf.ops.unlink = wf_unlink;
	wf.ops.rmdir = wf_rmdir;
	wf.ops.mkdir = wf_mkdir;
	wf.ops.create = wf_create;
	wf.ops.rename = wf_rename;
	wf.ops.flock = wf_flock;
	wf.ops.getlk = wf_getlk;
	wf.ops.setlk = wf_setlk;
	wf.ops.getxattr = wf_getxattr;
	wf.ops.listxattr = wf_listxattr;
	wf.ops.setxattr = wf_setxattr;
	wf.ops.removexattr = wf_removexattr;
	return &wf.ops;
}
