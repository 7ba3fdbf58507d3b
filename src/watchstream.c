/*
 * watchstream — the streams behind the %watch files (see watchstream.h).
 *
 * A stream is a log addressed by offset: a read at an offset the log still
 * holds is answered from it (bash's read builtin reads ahead and seeks
 * back), one at its end is parked until the next line. Bytes more than
 * KEEP_BEHIND before the last read's offset are let go, in steps.
 *
 * Feeding. The mount's watch thread calls delivered() after applying each
 * message; under ws.lock it appends the lines to every started stream
 * whose directory they concern and advances ws.position, the revision
 * through which everything has been delivered. A stream registers under
 * the same lock, so it gets exactly the events after the position it read:
 * its START line's revision (one registered while the position is unknown,
 * just after mounting or a compaction, starts at the next one known). A
 * %watch@REV stream older than that position starts "catching up": the
 * mount's events for it are held aside while a Watch of its own, from REV,
 * replays history on the history thread; the first replayed event newer
 * than the position it joined at (etcd sends events in order), or a timed
 * progress notification past it, shows that history has caught up, so the
 * held events follow and the stream is fed like the others.
 *
 * Backpressure. A fed stream whose reader is PAUSE_BEHIND behind starts
 * catching up the same way, from the revision after the position, and its
 * history Watch is closed whenever the reader falls that far behind and
 * opened again (H_RESUME) once a read brings it within RESUME_BEHIND. A
 * stream catching up that holds HELD_MAX lets its held lines go and joins
 * at the current position instead: history brings them. So nothing is
 * dropped for slowness, and only a compaction ends a stream.
 *
 * Parked reads. A read that must wait registers an interrupt callback
 * first and is "armed" after: until then nothing answers it but the
 * handler itself, so the request is never used after another thread
 * answered it. Whoever answers it takes it out of the stream under the
 * stream's lock, then clears the callback (which waits for one running:
 * libfuse runs it under the request's lock), then replies, holding no lock.
 *
 * Lock order: ws.lock, then a stream's lock. Replies are sent with
 * neither held.
 */
#include "watchstream.h"

#include <errno.h>
#include <string.h>

#include "etcd.h"
#include "keymap.h"
#include "watch.h"
#include "watchfmt.h"

/* Backpressure: a stream whose reader is PAUSE_BEHIND bytes behind takes
 * no more lines until it is RESUME_BEHIND behind; what comes meanwhile it
 * gets later from a history Watch. A stream catching up holds at most
 * HELD_MAX bytes of the mount's lines (then it lets them go, and joins
 * later). So a reader never loses events for being slow, only once etcd
 * has compacted what it has not read yet; and a stream's memory is
 * bounded. */
#define PAUSE_BEHIND (8u << 20)
#define RESUME_BEHIND (2u << 20)
#define HELD_MAX (8u << 20)
#define KEEP_BEHIND (1u << 20)
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000

/* One open of a %watch file. */
struct ef_wstream {
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
	bool paused;               /* protected by lock: its history Watch waits for
				    * the reader (PAUSE_BEHIND) */
	bool resume_asked;         /* protected by lock */

	bool registered;           /* protected by ws.lock: fed by delivered() */
	bool awaiting;             /* protected by ws.lock: registered while the
				    * position was unknown; no START line yet */
	bool catching;             /* protected by ws.lock: history not replayed yet */
	int64_t joined;            /* protected by ws.lock: the position it joined at */
	int64_t min_rev;           /* protected by ws.lock: events older are not its */
	GPtrArray *held;           /* protected by ws.lock: GBytes lines, while catching */
	size_t held_bytes;         /* protected by ws.lock */

	/* The history thread's: the replaying Watch. */
	struct ef_grpc_stream *hist;
	uint64_t hist_gen;         /* which Watch the messages are from */
	int64_t hist_next;         /* the revision to resume at */
	gint64 retry_at;           /* 0, or when to open it again */
	uint64_t token_gen;        /* the auth token it was opened with */
	int retry_ms;
};

/* A message for the history thread. */
enum hist_kind { H_START, H_MSG, H_CLOSED, H_ENDED, H_RESUME, H_RELEASE, H_STOP };

struct hist_item {
	enum hist_kind kind;
	struct ef_wstream *s;          /* a reference */
	uint64_t gen;              /* H_MSG, H_CLOSED */
	int64_t from;              /* H_START: the first revision it needs */
	struct ef_watch_msg *m;    /* H_MSG */
};

/* The user data of one history Watch. */
struct hist_ctx {
	struct ef_wstream *s;          /* a reference */
	uint64_t gen;
};

/* A parked read answered: replied to once no lock is held. */
struct answer {
	fuse_req_t req;
	GBytes *data;              /* NULL: err */
	int err;
};

static struct {
	struct ef_etcd *etcd;
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
} ws;

struct ef_wstream *wstream_ref(struct ef_wstream *s)
{
	g_atomic_int_inc(&s->ref);
	return s;
}

void wstream_unref(struct ef_wstream *s)
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

static void hist_push(enum hist_kind kind, struct ef_wstream *s, uint64_t gen,
		      struct ef_watch_msg *m);

/* ---- the log ---- */

static void append_locked(struct ef_wstream *s, const char *p, size_t len)
{
	g_byte_array_append(s->log, (const guint8 *)p, (guint)len);
	clock_gettime(CLOCK_REALTIME, &s->mtime);
}

static uint64_t end_locked(struct ef_wstream *s)
{
	return s->base + s->log->len;
}

/*
 * What a read of size bytes at off gets now: 0 with *data set, or an error
 * (-EAGAIN: nothing yet, the read waits). Lets go of what lies well before
 * off: no reader seeks back that far.
 */
static int take_locked(struct ef_wstream *s, uint64_t off, size_t size, GBytes **data)
{
	uint64_t end = end_locked(s), upto = MIN(off, end);
	size_t n;

	if (off < s->base)
		return -ESPIPE;
	s->read_off = upto;
	/* Each trim moves what is left of the log: only once what goes is
	 * as much as what stays, so that the moving costs, spread over the
	 * bytes read, stays constant. */
	if (upto - s->base >= 2 * (uint64_t)KEEP_BEHIND &&
	    2 * (upto - s->base - KEEP_BEHIND) >= s->log->len) {
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
static bool answer_parked_locked(struct ef_wstream *s, struct answer *a)
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

/* The bytes the reader has not read yet. */
static size_t behind_locked(struct ef_wstream *s)
{
	return (size_t)(end_locked(s) - MIN(s->read_off, end_locked(s)));
}

/*
 * Ends s with its last line (ownership of line taken): it is fed no more,
 * and reads past the line fail. Called with ws.lock held; the parked read,
 * if it can now be answered, is put in *a.
 */
static bool end_stream_ws_locked(struct ef_wstream *s, GString *line, struct answer *a)
{
	bool answered;

	if (s->registered) {
		g_ptr_array_remove(ws.streams, s);
		s->registered = false;
		wstream_unref(s);
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

/* Adds line to a fed stream, or to what it holds while catching up.
 * Called with ws.lock held. */
static void feed_ws_locked(struct ef_wstream *s, GBytes *line)
{
	if (s->catching) {
		g_ptr_array_add(s->held, g_bytes_ref(line));
		s->held_bytes += g_bytes_get_size(line);
		return;
	}
	g_mutex_lock(&s->lock);
	append_locked(s, g_bytes_get_data(line, NULL), g_bytes_get_size(line));
	g_mutex_unlock(&s->lock);
}

static void hist_push_start(struct ef_wstream *s, int64_t from);

/*
 * Before a message's events (all newer than ws.position). A fed stream
 * whose reader is PAUSE_BEHIND behind takes them no more: it catches up
 * from the revision after the position, by a history Watch that waits
 * for the reader. One catching up that holds more than HELD_MAX lets them
 * go: joining at the position instead, it gets them from history too.
 * Called with ws.lock held.
 */
static void before_message_ws_locked(struct ef_wstream *s)
{
	bool behind;

	if (s->awaiting || !s->registered)
		return;
	if (s->catching) {
		if (s->held_bytes > HELD_MAX) {
			g_ptr_array_set_size(s->held, 0);
			s->held_bytes = 0;
			s->joined = ws.position;
		}
		return;
	}
	g_mutex_lock(&s->lock);
	behind = behind_locked(s) > PAUSE_BEHIND;
	g_mutex_unlock(&s->lock);
	if (!behind)
		return;
	s->catching = true;
	s->joined = ws.position;
	if (!s->held)
		s->held = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	hist_push_start(s, MAX(ws.position + 1, s->min_rev));
}

static void answers_send(GArray *answers)
{
	for (guint i = 0; i < answers->len; i++)
		answer_send(&g_array_index(answers, struct answer, i));
	g_array_set_size(answers, 0);
}

/*
 * s starts at position: its START line, and from REV at or before it, a
 * history Watch of its own. Called with ws.lock held, s registered; no
 * event has been fed to it yet.
 */
static void begin_ws_locked(struct ef_wstream *s, int64_t position)
{
	g_autoptr(GString) first = watchfmt_start(s->from ? s->from - 1 : position);

	s->awaiting = false;
	s->joined = position;
	s->min_rev = s->from;
	s->catching = s->from && s->from <= position;
	if (s->catching) {
		s->held = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
		hist_push_start(s, s->from);
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

/* Takes ws.lock, unless the streams are stopped (the watch thread runs a
 * little longer). */
static bool lock_running(void)
{
	g_mutex_lock(&ws.lock);
	if (ws.running)
		return true;
	g_mutex_unlock(&ws.lock);
	return false;
}

static void delivered(const struct ef_watch_event *ev, size_t n, int64_t through)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));
	g_autofree GBytes **lines = g_new0(GBytes *, n + 1);

	if (!lock_running())
		return;
	for (guint j = ws.streams->len; j-- > 0;) {
		struct ef_wstream *s = ws.streams->pdata[j];
		struct answer a = { 0 };
		bool fed = false;

		if (n)
			before_message_ws_locked(s);
		for (size_t i = 0; i < n && s->registered && !s->awaiting; i++) {
			if (ev[i].kv->mod_revision < s->min_rev || !key_in(ev[i].kv->key, s->dir))
				continue;
			if (!lines[i]) {
				GString *l = watchfmt_event(&ev[i]);

				lines[i] = g_string_free_to_bytes(l);
			}
			feed_ws_locked(s, lines[i]);
			fed = true;
		}
		if (!fed || !s->registered)
			continue;
		g_mutex_lock(&s->lock);
		if (answer_parked_locked(s, &a))
			g_array_append_val(answers, a);
		g_mutex_unlock(&s->lock);
	}
	if (through > ws.position)
		ws.position = through;
	ws.denied = false;
	/* Those that waited for a position start at this one: its events
	 * were not theirs. */
	for (guint j = 0; j < ws.streams->len; j++) {
		struct ef_wstream *s = ws.streams->pdata[j];
		struct answer a = { 0 };

		if (!s->awaiting || ws.position < 0)
			continue;
		begin_ws_locked(s, ws.position);
		g_mutex_lock(&s->lock);
		if (answer_parked_locked(s, &a))
			g_array_append_val(answers, a);
		g_mutex_unlock(&s->lock);
	}
	g_mutex_unlock(&ws.lock);
	answers_send(answers);
	for (size_t i = 0; i < n; i++)
		if (lines[i])
			g_bytes_unref(lines[i]);
}

static void lost(int64_t compact_revision)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));

	if (!lock_running())
		return;
	for (guint j = ws.streams->len; j-- > 0;) {
		struct ef_wstream *s = ws.streams->pdata[j];
		struct answer a = { 0 };

		if (s->awaiting)
			continue;
		if (end_stream_ws_locked(s, watchfmt_error("compacted", compact_revision, NULL),
					 &a))
			g_array_append_val(answers, a);
	}
	/* Unknown until the new stream is created: a stream opened meanwhile
	 * waits for it rather than claim a start it cannot keep. */
	ws.position = -1;
	g_mutex_unlock(&ws.lock);
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
	if (!lock_running())
		return;
	ws.denied = true;
	for (guint j = ws.streams->len; j-- > 0;) {
		struct ef_wstream *s = ws.streams->pdata[j];
		struct answer a = { 0 };

		if (s->awaiting && end_stream_ws_locked(s, watchfmt_error("refused", 0, why), &a))
			g_array_append_val(answers, a);
	}
	g_mutex_unlock(&ws.lock);
	answers_send(answers);
}

static const struct watch_listener listener = {
	.delivered = delivered, .lost = lost, .refused = refused,
};

/* ---- the history thread ---- */

static void hist_push(enum hist_kind kind, struct ef_wstream *s, uint64_t gen, struct ef_watch_msg *m)
{
	struct hist_item *it = g_new0(struct hist_item, 1);

	it->kind = kind;
	it->s = s ? wstream_ref(s) : NULL;
	it->gen = gen;
	it->m = m;
	g_async_queue_push(ws.q, it);
}

static void hist_push_start(struct ef_wstream *s, int64_t from)
{
	struct hist_item *it = g_new0(struct hist_item, 1);

	it->kind = H_START;
	it->s = wstream_ref(s);
	it->from = from;
	g_async_queue_push(ws.q, it);
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
	wstream_unref(c->s);
	g_free(c);
}

static const struct ef_watch_ops hist_ops = { .on_msg = hist_on_msg, .on_close = hist_on_close };

static void hist_close(struct ef_wstream *s)
{
	struct ef_grpc_stream *h = s->hist;

	/* Messages of this Watch still queued are recognised as old. */
	s->hist_gen++;
	s->hist = NULL;
	if (h)
		etcd_watch_close(h);
}

/* Whether s's reader is too far behind for more history: then it waits
 * until a read asks for it again (H_RESUME). */
static bool pause_if_behind(struct ef_wstream *s)
{
	bool pause;

	g_mutex_lock(&s->lock);
	pause = behind_locked(s) > PAUSE_BEHIND;
	if (pause) {
		s->paused = true;
		s->resume_asked = false;
	}
	g_mutex_unlock(&s->lock);
	return pause;
}

static void hist_open(struct ef_wstream *s)
{
	struct hist_ctx *c = g_new(struct hist_ctx, 1);
	gsize len;
	const char *d = g_bytes_get_data(s->dir, &len);
	/* The whole keyspace is "\0" up to "\0" (etcd refuses an empty key). */
	g_autoptr(GBytes) key = len ? g_bytes_ref(s->dir) : g_bytes_new("", 1);
	g_autoptr(GBytes) end = NULL;

	s->retry_at = 0;
	if (pause_if_behind(s)) {
		g_free(c);
		return;
	}
	end = keymap_prefix_end(d, len);
	s->hist_gen++;
	s->token_gen = etcd_auth_generation(ws.etcd);
	c->s = wstream_ref(s);
	c->gen = s->hist_gen;
	/* A failure comes back as H_CLOSED, and is retried. */
	if (etcd_watch_open(ws.etcd, key, end, s->hist_next, &hist_ops, c, &s->hist) < 0)
		s->hist = NULL;
}

/* Ends a catching-up stream from the history thread. */
static void hist_fail(struct ef_wstream *s, GString *line)
{
	struct answer a = { 0 };
	bool answered;

	hist_close(s);
	g_mutex_lock(&ws.lock);
	answered = end_stream_ws_locked(s, line, &a);
	g_mutex_unlock(&ws.lock);
	if (answered)
		answer_send(&a);
}

/* History has reached the position s joined at: what the mount's watch
 * delivered since follows, and then everything it delivers. */
static void hist_join(struct ef_wstream *s)
{
	struct answer a = { 0 };
	bool answered;

	hist_close(s);
	g_mutex_lock(&ws.lock);
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
	g_mutex_unlock(&ws.lock);
	if (answered)
		answer_send(&a);
}

/* One message of s's history Watch. */
static void hist_msg(struct ef_wstream *s, const struct ef_watch_msg *m)
{
	int64_t joined;

	const char *why = m && m->cancel_reason ? m->cancel_reason : "";

	/* A token etcd forgot, or one made before a change of users or
	 * roles: log in again, and open it again. */
	if (m && m->canceled &&
	    (strstr(why, "invalid auth token") || strstr(why, "revision of auth store is old"))) {
		etcd_auth_renew(ws.etcd, s->token_gen);
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
	g_mutex_lock(&ws.lock);
	joined = s->joined;
	g_mutex_unlock(&ws.lock);
	/* A timed progress notification (etcd sends them only to a watcher
	 * that has caught up; a requested one may come early, and none is
	 * requested): every event up to its revision has been sent. */
	if (!m->created && !m->fragment && m->n_events == 0 && m->watch_id >= 0 &&
	    m->revision >= joined) {
		hist_join(s);
		return;
	}
	for (size_t i = 0; i < m->n_events; i++) {
		const struct ef_watch_event *ev = &m->events[i];
		g_autoptr(GString) line = NULL;
		struct answer a = { 0 };
		bool answered;

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
		append_locked(s, line->str, line->len);
		answered = answer_parked_locked(s, &a);
		g_mutex_unlock(&s->lock);
		if (answered)
			answer_send(&a);
		s->hist_next = ev->kv->mod_revision + 1;
	}
	/* Between messages, which never split a revision: the Watch goes
	 * on from hist_next once the reader has caught up. */
	if (m->n_events && pause_if_behind(s))
		hist_close(s);
}

/* Opens again, at their time, the history Watches that closed. */
static void hist_retry(GPtrArray *catching)
{
	gint64 now = g_get_monotonic_time();

	for (guint i = 0; i < catching->len; i++) {
		struct ef_wstream *s = catching->pdata[i];

		if (s->retry_at && now >= s->retry_at) {
			s->retry_ms = MIN(s->retry_ms * 2, RETRY_MAX_MS);
			hist_open(s);
		}
	}
}

static bool retry_due(GPtrArray *catching)
{
	for (guint i = 0; i < catching->len; i++)
		if (((struct ef_wstream *)catching->pdata[i])->retry_at)
			return true;
	return false;
}

static bool still_catching(struct ef_wstream *s)
{
	bool c;

	g_mutex_lock(&ws.lock);
	c = s->catching;
	g_mutex_unlock(&ws.lock);
	return c;
}

static void hist_item(GPtrArray *catching, struct hist_item *it)
{
	struct ef_wstream *s = it->s;

	switch (it->kind) {
	case H_START:
		/* Again for one that caught up and fell behind since. */
		if (!g_ptr_array_find(catching, s, NULL))
			g_ptr_array_add(catching, wstream_ref(s));
		hist_close(s);
		s->hist_next = it->from;
		s->retry_ms = RETRY_MIN_MS;
		hist_open(s);
		break;
	case H_RESUME:
		g_mutex_lock(&s->lock);
		s->paused = false;
		g_mutex_unlock(&s->lock);
		if (!s->hist && still_catching(s))
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
			wstream_unref(s);
		break;
	case H_STOP:
		break;
	}
	/* Done: it needs the thread no more. */
	if (s && !still_catching(s) && g_ptr_array_remove(catching, s)) {
		hist_close(s);
		wstream_unref(s);
	}
}

static void hist_item_free(struct hist_item *it)
{
	etcd_watch_msg_free(it->m);
	wstream_unref(it->s);
	g_free(it);
}

static gpointer hist_main(gpointer unused)
{
	g_autoptr(GPtrArray) catching = g_ptr_array_new();

	(void)unused;
	for (;;) {
		struct hist_item *it = retry_due(catching)
					       ? g_async_queue_timeout_pop(ws.q, RETRY_MIN_MS * 1000)
					       : g_async_queue_pop(ws.q);
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
		wstream_unref(catching->pdata[i]);
	}
	return NULL;
}

/* Registers s: it starts now, or once the mount's watch knows where it
 * stands. Returns 0, or -EACCES when etcd refused that watch outright. */
static int stream_register(struct ef_wstream *s)
{
	g_mutex_lock(&ws.lock);
	if (!ws.running || (ws.position < 0 && ws.denied)) {
		g_mutex_unlock(&ws.lock);
		return ws.running ? -EACCES : -ENOTCONN;
	}
	s->registered = true;
	g_ptr_array_add(ws.streams, wstream_ref(s));
	g_ptr_array_add(ws.open, s);
	if (ws.position >= 0)
		begin_ws_locked(s, ws.position);
	else
		s->awaiting = true;
	g_mutex_unlock(&ws.lock);
	return 0;
}

static struct ef_wstream *stream_new(GBytes *dir, int64_t from)
{
	struct ef_wstream *s = g_new0(struct ef_wstream, 1);

	s->ref = 1;
	s->dir = g_bytes_ref(dir);
	s->from = from;
	s->log = g_byte_array_new();
	g_mutex_init(&s->lock);
	clock_gettime(CLOCK_REALTIME, &s->mtime);
	return s;
}

int wstream_open(GBytes *dir, int64_t from, struct ef_wstream **out)
{
	struct ef_wstream *s = stream_new(dir, from);
	int rc = stream_register(s);

	if (rc < 0) {
		wstream_unref(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* Takes s out of every list and drops the handle's reference; the history
 * thread drops its own part. */
void wstream_close(struct ef_wstream *s)
{
	bool was_open;

	g_mutex_lock(&ws.lock);
	if (s->registered) {
		g_ptr_array_remove(ws.streams, s);
		s->registered = false;
		wstream_unref(s);
	}
	was_open = g_ptr_array_remove(ws.open, s);
	s->catching = false;
	if (s->held)
		g_ptr_array_set_size(s->held, 0);
	s->held_bytes = 0;
	/* Its inode may stay for stat long after: only the size stays. */
	g_mutex_lock(&s->lock);
	s->base = end_locked(s);
	g_byte_array_set_size(s->log, 0);
	g_mutex_unlock(&s->lock);
	g_mutex_unlock(&ws.lock);
	hist_push(H_RELEASE, s, 0, NULL);
	if (was_open)
		wstream_unref(s);
}

/* ---- reads ---- */

/*
 * libfuse's interrupt callback, under the request's lock: an armed read
 * that nobody has taken yet is answered EINTR here. Only an armed one: run
 * from inside fuse_req_interrupt_func (the interrupt came first), a reply
 * would free the request under the lock that call still holds; wf_read
 * looks for that interrupt itself once it has armed the read.
 */
static void interrupted(fuse_req_t req, void *data)
{
	struct ef_wstream *s = data;
	bool mine;

	g_mutex_lock(&s->lock);
	mine = s->req == req && s->armed;
	if (mine)
		s->req = NULL;
	g_mutex_unlock(&s->lock);
	if (mine)
		fuse_reply_err(req, EINTR);
}

void wstream_read(struct ef_wstream *s, fuse_req_t req, size_t size, off_t off, bool nonblock)
{
	struct answer a = { 0 };
	GBytes *data = NULL;
	bool answered;
	int rc;

	g_mutex_lock(&s->lock);
	rc = take_locked(s, (uint64_t)off, size, &data);
	/* The reader has caught up: its history Watch goes on. */
	if (s->paused && !s->resume_asked && behind_locked(s) <= RESUME_BEHIND) {
		s->resume_asked = true;
		hist_push(H_RESUME, s, 0, NULL);
	}
	if (rc == -EAGAIN && !nonblock && s->req)
		rc = -EBUSY;          /* one read at a time waits */
	if (rc == -EAGAIN && !nonblock) {
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

void wstream_stat(struct ef_wstream *s, off_t *size, struct timespec *mtime)
{
	g_mutex_lock(&s->lock);
	*size = (off_t)end_locked(s);
	*mtime = s->mtime;
	g_mutex_unlock(&s->lock);
}

/* ---- start and stop ---- */

void wstreams_start(struct ef_etcd *etcd)
{
	ws.etcd = etcd;
	ws.q = g_async_queue_new();
	ws.streams = g_ptr_array_new();
	ws.open = g_ptr_array_new();
	ws.position = -1;
	ws.running = true;
	ws.thread = g_thread_new("watchstream", hist_main, NULL);
	watch_set_listener(&listener);
}

void wstreams_stop(void)
{
	g_autoptr(GArray) answers = g_array_new(FALSE, FALSE, sizeof(struct answer));
	struct hist_item *it;

	if (!ws.thread)
		return;
	g_mutex_lock(&ws.lock);
	ws.running = false;
	for (guint i = 0; i < ws.open->len; i++) {
		struct ef_wstream *s = ws.open->pdata[i];
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
	g_mutex_unlock(&ws.lock);
	answers_send(answers);
	hist_push(H_STOP, NULL, 0, NULL);
	g_thread_join(ws.thread);
	ws.thread = NULL;
	while ((it = g_async_queue_try_pop(ws.q)))
		hist_item_free(it);
	g_async_queue_unref(ws.q);
	g_mutex_lock(&ws.lock);
	/* No release comes after the session: the handles' references go
	 * with the lists. */
	for (guint i = 0; i < ws.streams->len; i++)
		wstream_unref(ws.streams->pdata[i]);
	for (guint i = 0; i < ws.open->len; i++)
		wstream_unref(ws.open->pdata[i]);
	g_ptr_array_unref(ws.streams);
	g_ptr_array_unref(ws.open);
	ws.streams = ws.open = NULL;
	g_mutex_unlock(&ws.lock);
}

