/*
 * h2 — one HTTP/2 connection to an etcd cluster, owned by one I/O thread.
 *
 * Threads. Other threads never touch the socket or the nghttp2 session: they
 * append commands (submit, write, cancel, connect) to h->cmds under h->lock
 * and wake the I/O thread through an eventfd. The I/O thread drains the queue,
 * runs nghttp2 and the socket, and sleeps in poll() over {eventfd, socket}
 * until the nearest deadline. h->lock is only ever held for queue and field
 * updates, never across I/O. nghttp2 callbacks only record what happened and
 * hand bytes to the stream's callbacks (which themselves only record).
 *
 * Connection life. IDLE -> CONNECTING (non-blocking connect) -> TLS (for
 * https://: handshake, ALPN h2, certificate checked against the name we
 * dialled) -> HANDSHAKE (preface and SETTINGS sent, waiting for the server's
 * SETTINGS) -> READY.
 * A connection is only made when something waits for it (a stream or
 * h2_connect). One "pass" tries every address of every endpoint in order,
 * each bounded by dial_timeout_ms; a failed pass fails the waiting streams
 * with -ENOTCONN and starts a short backoff, during which calls fail at once
 * and no-deadline streams wait for its end. Requests wait for READY so that
 * a dead or wrong endpoint never swallows them. Losing a READY connection
 * (EOF, socket error, GOAWAY, fatal nghttp2 error, an unanswered PING) fails
 * every submitted stream with -ENOTCONN; streams not yet submitted keep
 * waiting and cause a reconnect. h->generation is bumped on every READY.
 *
 * Invariants.
 *  - Every stream the I/O thread knows is in h->streams (by id). A stream is
 *    either pending (sid < 0, also in h->pending) or submitted (sid > 0,
 *    nghttp2 holds a pointer to it until its stream-close callback, or until
 *    the session is deleted; only then is it freed).
 *  - on_close runs exactly once per stream (st->done); after it, the stream's
 *    ops and ud are never used again.
 *  - A PING is sent only when a call timed out on a READY connection or a
 *    no-deadline stream is open, and at most every H2_PING_INTERVAL (etcd
 *    sends GOAWAY too_many_pings otherwise); an unacknowledged PING kills the
 *    connection after dial_timeout_ms.
 */
#include "h2.h"

#include "auth.h"
#include "endpoint.h"
#include "tls.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define H2_DEFAULT_DIAL_MS 2000
#define H2_BACKOFF_MIN_US (100 * G_TIME_SPAN_MILLISECOND)
#define H2_BACKOFF_MAX_US (1000 * G_TIME_SPAN_MILLISECOND)
#define H2_PING_INTERVAL (10 * G_TIME_SPAN_SECOND)
/* Large windows so an 8 MiB Range response does not crawl at 64 KiB/RTT. */
#define H2_STREAM_WINDOW (4 << 20)
#define H2_CONN_WINDOW (32 << 20)
/* Bytes of frames gathered into one send. */
#define H2_SEND_BATCH (64 * 1024)
#define H2_READ_BURST 16

/* A member we left, or that failed us, is tried last for this long. */
#define H2_AVOID_US (10 * G_TIME_SPAN_SECOND)

enum ef_h2_state {
	CONN_IDLE, CONN_RESOLVING, CONN_CONNECTING, CONN_TLS, CONN_HANDSHAKE, CONN_READY
};

struct ef_h2_stream {
	uint64_t id;
	int32_t sid;            /* nghttp2 stream id once submitted, else -1 */
	gint64 deadline;        /* 0: none */
	uint64_t generation;    /* non-zero: only over that connection */
	gboolean anonymous;     /* without the auth token */
	gint64 sent_at;         /* when it was handed to nghttp2 */
	char *path;
	char **hdrs;            /* name, value, name, value, ..., NULL */
	const struct ef_h2_stream_ops *ops;
	void *ud;
	GBytes *replay;         /* a whole request body, kept to send it again
				 * if the server refuses the stream unseen */
	GQueue out;             /* GBytes of body not yet given to nghttp2 */
	size_t out_off;         /* bytes of the head of out already given */
	gboolean out_eof;       /* the body ends after out */
	gboolean done;          /* on_close has run */
};

/* h2_connect's completion; lives on the caller's stack. */
struct ef_h2_waiter {
	GMutex lock;
	GCond cond;
	gboolean done;          /* protected by lock */
	gboolean ok;            /* protected by lock */
	char *reason;           /* protected by lock */
};

enum ef_h2_cmd_kind {
	CMD_SUBMIT, CMD_WRITE, CMD_CANCEL, CMD_CONNECT, CMD_LEAVE, CMD_RESOLVED, CMD_ENDPOINTS,
	CMD_ABANDON
};

struct ef_h2_cmd {
	enum ef_h2_cmd_kind kind;
	uint64_t id;
	struct ef_h2_stream *stream;   /* CMD_SUBMIT; owned by the I/O thread */
	GBytes *data;                  /* CMD_WRITE; may be NULL */
	gboolean end_stream;           /* CMD_WRITE */
	struct ef_h2_waiter *waiter;   /* CMD_CONNECT */
	char *why;                     /* CMD_LEAVE (id: the generation to leave) */
	struct addrinfo *ai;           /* CMD_RESOLVED (id: the lookup's number) */
	int gai_rc;                    /* CMD_RESOLVED */
	struct ef_endpoint *eps;       /* CMD_ENDPOINTS, owned */
	size_t n_eps;                  /* CMD_ENDPOINTS */
	gint64 before;                 /* CMD_ABANDON */
};

struct ef_h2 {
	struct ef_endpoint *eps;
	size_t n_eps;
	char **configured;      /* the endpoints h2_new was given: always used */
	struct ef_resolver *resolver;
	gint64 dial_us;
	GThread *thread;
	int efd;
	struct ef_tls *tls;     /* NULL unless an endpoint uses TLS */
	struct ef_auth *auth;   /* borrowed; NULL without etcd auth */
	gboolean tls_default;   /* "host:port" means TLS */
	gboolean refuse_plain;  /* http:// endpoints are not used */

	GMutex lock;
	GQueue cmds;            /* protected by lock */
	gboolean stopping;      /* protected by lock */
	uint64_t next_id;       /* protected by lock */
	uint64_t generation;    /* protected by lock */
	char *current;          /* protected by lock */

	/* Everything below belongs to the I/O thread alone. */
	enum ef_h2_state state;
	int fd;
	SSL *ssl;               /* NULL on a plain connection */
	gboolean tls_want_write; /* OpenSSL needs the socket writable to go on */
	gboolean read_more;     /* conn_read stopped early: more may be buffered */
	char tls_err[200];      /* OpenSSL's words for the last -EPROTO */
	nghttp2_session *session;
	GByteArray *wbuf;       /* bytes nghttp2 produced that the socket refused */
	size_t wbuf_off;
	GHashTable *streams;    /* id -> struct ef_h2_stream */
	GQueue pending;         /* streams waiting for READY, oldest first */
	GSList *waiters;        /* h2_connect calls waiting for the current pass */

	size_t ep_idx;          /* the endpoint being tried, or connected */
	size_t *order;          /* this pass's order of endpoints (n_eps) */
	size_t order_pos;       /* ep_idx == order[order_pos] during a pass */
	size_t next_start;      /* where the next pass's rotation begins */
	uint64_t lookup_seq;    /* the name lookup this pass waits for */
	struct ef_endpoint *next_eps; /* a new list, waiting for the pass to end */
	size_t n_next_eps;
	struct addrinfo *ai_list, *ai_next;
	gint64 attempt_deadline;
	GString *reasons;       /* why this pass's attempts failed */
	gint64 backoff_us;
	gint64 backoff_until;

	gboolean got_settings;  /* set by a callback during HANDSHAKE */
	gboolean goaway;        /* set by a callback */
	int32_t goaway_last;    /* its last_stream_id: the server may still
				 * answer streams up to it, and saw none above */
	gboolean ping_pending;
	gint64 ping_sent;       /* 0: never on this connection */

	uint8_t rbuf[64 * 1024];
};

/* ---- endpoints ---- */

/* ---- errors: nghttp2 and HTTP/2 codes are mapped here and nowhere else ---- */

static int h2_errno(int lib_err)
{
	if (nghttp2_is_fatal(lib_err))
		return lib_err == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ENOTCONN;
	switch (lib_err) {
	case NGHTTP2_ERR_INVALID_ARGUMENT:
		return -EINVAL;
	case NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE:
	case NGHTTP2_ERR_STREAM_CLOSING:
	case NGHTTP2_ERR_START_STREAM_NOT_ALLOWED:
	case NGHTTP2_ERR_SESSION_CLOSING:
		return -ENOTCONN;
	default:
		return -EPROTO;
	}
}

/* A stream closed by RST_STREAM (or closed without END_STREAM from the peer). */
static int h2_rst_errno(uint32_t code)
{
	switch (code) {
	case NGHTTP2_REFUSED_STREAM:
	case NGHTTP2_ENHANCE_YOUR_CALM:
		return -EAGAIN;
	case NGHTTP2_CANCEL:
		return -ECANCELED;
	default:
		return -EPROTO;
	}
}

static GQuark h2_error_quark(void)
{
	return g_quark_from_static_string("ef-h2-error-quark");
}

/* ---- streams (I/O thread) ---- */

static void stream_free(struct ef_h2_stream *st)
{
	GBytes *b;

	while ((b = g_queue_pop_head(&st->out)))
		g_bytes_unref(b);
	if (st->replay)
		g_bytes_unref(st->replay);
	g_free(st->path);
	g_strfreev(st->hdrs);
	g_free(st);
}

/* Delivers on_close once; the stream itself stays until its owner frees it. */
static void stream_finish(struct ef_h2_stream *st, int err)
{
	if (st->done)
		return;
	st->done = TRUE;
	st->ops->on_close(st->ud, err);
	st->ud = NULL;
}

/* Finishes and frees a stream that nghttp2 never saw. */
static void stream_drop_pending(struct ef_h2 *h, struct ef_h2_stream *st, int err)
{
	g_queue_remove(&h->pending, st);
	g_hash_table_remove(h->streams, &st->id);
	stream_finish(st, err);
	stream_free(st);
}

/* A submitted stream the server refused unseen (above a GOAWAY's
 * last_stream_id): it goes out again, first, on the next connection. */
static void stream_requeue(struct ef_h2 *h, struct ef_h2_stream *st)
{
	GBytes *b;

	while ((b = g_queue_pop_head(&st->out)))
		g_bytes_unref(b);
	g_queue_push_tail(&st->out, g_bytes_ref(st->replay));
	st->out_off = 0;
	st->out_eof = TRUE;
	st->sid = -1;
	g_queue_push_head(&h->pending, st);
}

/* Whether the server said it never saw st, so it may go out again. */
static gboolean stream_unseen(const struct ef_h2 *h, const struct ef_h2_stream *st)
{
	return h->goaway && st->sid > h->goaway_last && st->replay && !st->done;
}

static struct ef_h2_stream *stream_by_sid(struct ef_h2 *h, int32_t sid)
{
	if (!h->session)
		return NULL;
	return nghttp2_session_get_stream_user_data(h->session, sid);
}

static gboolean ping_allowed(struct ef_h2 *h, gint64 now)
{
	return h->state == CONN_READY && !h->ping_pending &&
	       (h->ping_sent == 0 || now - h->ping_sent >= H2_PING_INTERVAL);
}

static void ping_send(struct ef_h2 *h, gint64 now)
{
	/* Stamped even on failure, so a failing submit cannot spin the loop. */
	h->ping_sent = now;
	if (nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, NULL) == 0)
		h->ping_pending = TRUE;
}

/* Resets a submitted stream and finishes it now; nghttp2 frees it later. */
static void stream_reset(struct ef_h2 *h, struct ef_h2_stream *st, int err)
{
	if (st->sid > 0 && h->session)
		nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_CANCEL);
	stream_finish(st, err);
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
	struct ef_h2_stream *st = source->ptr;
	size_t n = 0;
	GBytes *b;

	while (n < length && (b = g_queue_peek_head(&st->out))) {
		gsize blen;
		const uint8_t *p = g_bytes_get_data(b, &blen);
		size_t k = MIN(length - n, blen - st->out_off);

		memcpy(buf + n, p + st->out_off, k);
		n += k;
		st->out_off += k;
		if (st->out_off == blen) {
			g_bytes_unref(g_queue_pop_head(&st->out));
			st->out_off = 0;
		}
	}
	if (g_queue_is_empty(&st->out) && st->out_eof)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	else if (n == 0)
		return NGHTTP2_ERR_DEFERRED;
	return (ssize_t)n;
}

/* Hands one pending stream to nghttp2. Returns 0 or an nghttp2 error. */
static int stream_submit(struct ef_h2 *h, struct ef_h2_stream *st)
{
	const struct ef_endpoint *ep = &h->eps[h->ep_idx];
	size_t nh = g_strv_length(st->hdrs) / 2;
	/* etcd's auth token goes with every request, streams included; taken
	 * now, so that a request queued before a renewal carries the new one. */
	g_autofree char *token = h->auth && !st->anonymous ? auth_token(h->auth) : NULL;
	g_autofree nghttp2_nv *nva = g_new0(nghttp2_nv, 5 + nh);
	nghttp2_data_provider prd = { .source.ptr = st, .read_callback = data_read_cb };
	const char *pseudo[4][2] = {
		{ ":method", "POST" },
		{ ":scheme", ep->tls ? "https" : "http" },
		{ ":path", st->path },
		{ ":authority", ep->name },
	};
	int32_t sid;

	for (size_t i = 0; i < 4 + nh; i++) {
		const char *name = i < 4 ? pseudo[i][0] : st->hdrs[2 * (i - 4)];
		const char *value = i < 4 ? pseudo[i][1] : st->hdrs[2 * (i - 4) + 1];

		nva[i] = (nghttp2_nv){ (uint8_t *)name, (uint8_t *)value, strlen(name),
				       strlen(value), NGHTTP2_NV_FLAG_NONE };
	}
	/* A credential: kept out of HPACK's table (RFC 7541, 7.1.3). */
	if (token)
		nva[4 + nh++] = (nghttp2_nv){ (uint8_t *)"token", (uint8_t *)token, 5, strlen(token),
					      NGHTTP2_NV_FLAG_NO_INDEX };
	/* nghttp2 copies the headers: token may go when this returns. */
	sid = nghttp2_submit_request(h->session, NULL, nva, 4 + nh, &prd, st);
	if (token)
		explicit_bzero(token, strlen(token));
	if (sid < 0)
		return sid;
	st->sid = sid;
	st->sent_at = g_get_monotonic_time();
	return 0;
}

static void conn_lost(struct ef_h2 *h, const char *why);

static void submit_pending(struct ef_h2 *h)
{
	struct ef_h2_stream *st;

	/* After a GOAWAY the server takes no new stream: they wait for the
	 * next connection. */
	while (h->state == CONN_READY && !h->goaway && (st = g_queue_pop_head(&h->pending))) {
		int rc;

		if (st->generation && st->generation != h->generation) {
			g_hash_table_remove(h->streams, &st->id);
			stream_finish(st, -ESRCH);
			stream_free(st);
			continue;
		}
		rc = stream_submit(h, st);

		if (rc == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
			/* Stream ids ran out: it never went out, so it can wait for
			 * the next connection. */
			g_queue_push_head(&h->pending, st);
			conn_lost(h, "stream ids exhausted");
			return;
		}
		if (rc < 0) {
			g_hash_table_remove(h->streams, &st->id);
			stream_finish(st, h2_errno(rc));
			stream_free(st);
			continue;
		}
		if (st->ops->on_open)
			st->ops->on_open(st->ud);
	}
}

/* ---- nghttp2 callbacks: record and return ---- */

static int on_header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
			size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			void *user_data)
{
	struct ef_h2_stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (st && !st->done && st->ops->on_header)
		st->ops->on_header(st->ud, (const char *)name, namelen, (const char *)value,
				   valuelen, (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
	return 0;
}

static int on_data_chunk_cb(nghttp2_session *session, uint8_t flags, int32_t sid,
			    const uint8_t *data, size_t len, void *user_data)
{
	struct ef_h2_stream *st = nghttp2_session_get_stream_user_data(session, sid);
	int rc;

	if (!st || st->done)
		return 0;
	rc = st->ops->on_data(st->ud, data, len);
	if (rc < 0)
		stream_reset(user_data, st, rc);
	return 0;
}

static void on_stream_end(struct ef_h2 *h, int32_t sid)
{
	struct ef_h2_stream *st = stream_by_sid(h, sid);

	if (!st || st->done)
		return;
	stream_finish(st, 0);
	/* A bidi stream whose server side ended (e.g. a Watch rejected by
	 * trailers) would otherwise stay half-open forever. */
	if (!nghttp2_session_get_stream_local_close(h->session, sid))
		nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
}

/*
 * The server is going away but finishes what it took: unary calls run to
 * their end here, while streams that would never end (Watch, keepalive)
 * are ended now so that their owners open them again elsewhere, and the
 * server need not wait for them.
 */
static void goaway_drain(struct ef_h2 *h)
{
	GHashTableIter it;
	gpointer v;

	g_hash_table_iter_init(&it, h->streams);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct ef_h2_stream *st = v;

		if (st->sid > 0 && st->sid <= h->goaway_last && st->deadline == 0 && !st->done)
			stream_reset(h, st, -ENOTCONN);
	}
}

static int on_frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame,
			    void *user_data)
{
	struct ef_h2 *h = user_data;

	switch (frame->hd.type) {
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			h->got_settings = TRUE;
		break;
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			h->ping_pending = FALSE;
		break;
	case NGHTTP2_GOAWAY:
		/* A graceful stop sends two: the first with the largest id. */
		h->goaway = TRUE;
		h->goaway_last = frame->goaway.last_stream_id;
		goaway_drain(h);
		break;
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
			on_stream_end(h, frame->hd.stream_id);
		break;
	default:
		break;
	}
	return 0;
}

static int on_stream_close_cb(nghttp2_session *session, int32_t sid, uint32_t error_code,
			      void *user_data)
{
	struct ef_h2 *h = user_data;
	struct ef_h2_stream *st = nghttp2_session_get_stream_user_data(session, sid);

	if (!st)
		return 0;
	/* REFUSED_STREAM means the server did not act on it (RFC 9113
	 * 8.7); nghttp2 also closes so a request it had queued but not sent
	 * when a GOAWAY came. Either way it may go out again. Only after a
	 * GOAWAY, though: a server refusing streams for load would make a
	 * loop of it. */
	if (stream_unseen(h, st) ||
	    (h->goaway && error_code == NGHTTP2_REFUSED_STREAM && st->replay && !st->done)) {
		stream_requeue(h, st);
		return 0;
	}
	/* Reaching here unfinished means no END_STREAM came from the server.
	 * After a GOAWAY nghttp2 closes the streams the server never saw (as
	 * REFUSED_STREAM): for a stream that cannot go out again, that is the
	 * connection going away. */
	stream_finish(st, h->goaway && st->sid > h->goaway_last ? -ENOTCONN
								: h2_rst_errno(error_code));
	g_hash_table_remove(h->streams, &st->id);
	stream_free(st);
	return 0;
}

static nghttp2_session_callbacks *callbacks_new(void)
{
	nghttp2_session_callbacks *cbs;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return NULL;
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_cb);
	return cbs;
}

/* ---- the endpoint list ---- */

static void endpoints_free(struct ef_endpoint *eps, size_t n)
{
	for (size_t i = 0; eps && i < n; i++) {
		g_free(eps[i].host);
		g_free(eps[i].name);
	}
	g_free(eps);
}

static ssize_t endpoint_find(const struct ef_endpoint *eps, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(eps[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/*
 * Takes eps as the endpoint list. Members keep how long they are avoided;
 * a READY connection to a member no longer listed stays (its endpoint is
 * kept at the end) until it fails. Never during a pass, whose order
 * refers to the old list: pass_end and conn_ready apply a list that came
 * meanwhile.
 */
static void endpoints_apply(struct ef_h2 *h, struct ef_endpoint *eps, size_t n)
{
	const char *cur = h->state == CONN_READY ? h->eps[h->ep_idx].name : NULL;
	ssize_t at;

	for (size_t i = 0; i < n; i++) {
		at = endpoint_find(h->eps, h->n_eps, eps[i].name);
		if (at >= 0)
			eps[i].avoid_until = h->eps[at].avoid_until;
	}
	at = cur ? endpoint_find(eps, n, cur) : 0;
	if (at < 0) {
		eps = g_renew(struct ef_endpoint, eps, n + 1);
		eps[n] = h->eps[h->ep_idx];
		eps[n].host = g_strdup(eps[n].host);
		eps[n].name = g_strdup(eps[n].name);
		at = (ssize_t)n++;
	}
	endpoints_free(h->eps, h->n_eps);
	h->eps = eps;
	h->n_eps = n;
	h->order = g_renew(size_t, h->order, n);
	h->ep_idx = (size_t)at;
	h->next_start = cur ? (h->ep_idx + 1) % n : 0;
}

static void endpoints_apply_waiting(struct ef_h2 *h)
{
	if (!h->next_eps)
		return;
	endpoints_apply(h, h->next_eps, h->n_next_eps);
	h->next_eps = NULL;
	h->n_next_eps = 0;
}

static void endpoints_set(struct ef_h2 *h, struct ef_endpoint *eps, size_t n)
{
	if (h->state == CONN_IDLE || h->state == CONN_READY) {
		endpoints_apply(h, eps, n);
		return;
	}
	endpoints_free(h->next_eps, h->n_next_eps);
	h->next_eps = eps;
	h->n_next_eps = n;
}

/* ---- the connection (I/O thread) ---- */

static void conn_close(struct ef_h2 *h)
{
	if (h->session) {
		nghttp2_session_del(h->session);
		h->session = NULL;
	}
	if (h->ssl) {
		SSL_free(h->ssl);
		h->ssl = NULL;
	}
	h->tls_want_write = FALSE;
	h->read_more = FALSE;
	h->tls_err[0] = '\0';
	if (h->fd >= 0) {
		close(h->fd);
		h->fd = -1;
	}
	g_byte_array_set_size(h->wbuf, 0);
	h->wbuf_off = 0;
	h->got_settings = FALSE;
	h->goaway = FALSE;
	h->ping_pending = FALSE;
	h->ping_sent = 0;
	h->state = CONN_IDLE;
}

/* w lives on its caller's stack: not touched after the unlock. */
static void waiter_finish(struct ef_h2_waiter *w, gboolean ok, const char *reason)
{
	g_mutex_lock(&w->lock);
	w->ok = ok;
	w->reason = g_strdup(reason);
	w->done = TRUE;
	g_cond_signal(&w->cond);
	g_mutex_unlock(&w->lock);
}

static void waiters_finish(struct ef_h2 *h, gboolean ok, const char *reason)
{
	for (GSList *l = h->waiters; l; l = l->next)
		waiter_finish(l->data, ok, reason);
	g_slist_free(h->waiters);
	h->waiters = NULL;
}

/*
 * A READY connection died: what went out on it is lost (-ECONNRESET: the
 * server may have acted on it), unless the server said it never saw it;
 * what did not go out waits for the next connection, which begins with
 * the next member. The member is tried last for a while.
 */
static void conn_lost(struct ef_h2 *h, const char *why)
{
	GHashTableIter it;
	gpointer v;

	g_debug("h2: connection to %s lost: %s", h->eps[h->ep_idx].name, why);
	h->eps[h->ep_idx].avoid_until = g_get_monotonic_time() + H2_AVOID_US;
	h->next_start = (h->ep_idx + 1) % h->n_eps;
	g_hash_table_iter_init(&it, h->streams);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct ef_h2_stream *st = v;

		if (st->sid < 0)
			continue;
		if (stream_unseen(h, st)) {
			stream_requeue(h, st);
			continue;
		}
		stream_finish(st, -ECONNRESET);
		g_hash_table_iter_remove(&it);
		stream_free(st);
	}
	conn_close(h);
	g_mutex_lock(&h->lock);
	g_clear_pointer(&h->current, g_free);
	g_mutex_unlock(&h->lock);
}

/* Leaves a READY connection: like conn_lost, but with a reset, so that a
 * member that wakes up (SIGCONT) finds the connection gone and does not
 * act on requests it had not read yet. */
static void conn_abort(struct ef_h2 *h, const char *why)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(h->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	conn_lost(h, why);
}

static void conn_ready(struct ef_h2 *h)
{
	h->state = CONN_READY;
	g_clear_pointer(&h->ai_list, freeaddrinfo);
	h->ai_next = NULL;
	h->backoff_us = 0;
	g_mutex_lock(&h->lock);
	h->generation++;
	g_free(h->current);
	h->current = g_strdup(h->eps[h->ep_idx].name);
	g_mutex_unlock(&h->lock);
	g_debug("h2: connected to %s", h->eps[h->ep_idx].name);
	endpoints_apply_waiting(h);
	waiters_finish(h, TRUE, NULL);
}

/* ---- socket I/O, plain or TLS ---- */

/* Maps an OpenSSL I/O failure: -EAGAIN to retry when poll says so, 0 for
 * the peer's close, else -errno. */
static ssize_t tls_io_error(struct ef_h2 *h, int rc)
{
	switch (SSL_get_error(h->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		h->tls_want_write = TRUE;
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		return errno ? -errno : 0;
	default:
		tls_io_reason(h->tls, h->tls_err, sizeof(h->tls_err));
		return -EPROTO;
	}
}

/* Returns bytes sent, -EAGAIN when the socket is full, or -errno. */
static ssize_t conn_send(struct ef_h2 *h, const void *buf, size_t len)
{
	ssize_t n;

	if (h->ssl) {
		int rc;

		ERR_clear_error();
		errno = 0;
		h->tls_want_write = FALSE;
		rc = SSL_write(h->ssl, buf, (int)MIN(len, (size_t)G_MAXINT));
		n = rc > 0 ? rc : tls_io_error(h, rc);
		return n == 0 ? -EPIPE : n;
	}
	do
		n = send(h->fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : n;
}

/* Returns bytes read, 0 at EOF, -EAGAIN when nothing is there, or -errno. */
static ssize_t conn_recv(struct ef_h2 *h, void *buf, size_t len)
{
	ssize_t n;

	if (h->ssl) {
		int rc;

		ERR_clear_error();
		errno = 0;
		h->tls_want_write = FALSE;
		rc = SSL_read(h->ssl, buf, (int)MIN(len, (size_t)G_MAXINT));
		return rc > 0 ? rc : tls_io_error(h, rc);
	}
	do
		n = recv(h->fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	return n < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : n;
}

/* Writes what nghttp2 has to say until the socket pushes back. 0 or -errno. */
static int conn_flush(struct ef_h2 *h)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n, w;

		if (h->wbuf_off < h->wbuf->len) {
			w = conn_send(h, h->wbuf->data + h->wbuf_off, h->wbuf->len - h->wbuf_off);
			if (w < 0)
				return w == -EAGAIN ? 0 : (int)w;
			h->wbuf_off += (size_t)w;
			continue;
		}
		g_byte_array_set_size(h->wbuf, 0);
		h->wbuf_off = 0;
		/* nghttp2 hands out one frame at a time: gathered, a request
		 * costs one send (one TLS record) instead of one per frame. */
		while (h->wbuf->len < H2_SEND_BATCH &&
		       (n = nghttp2_session_mem_send(h->session, &data)) != 0) {
			if (n < 0)
				return h2_errno((int)n);
			g_byte_array_append(h->wbuf, data, (guint)n);
		}
		if (h->wbuf->len == 0)
			return 0;
	}
}

/* Feeds what the socket has to nghttp2. 0, or -errno when the connection
 * is unusable (-ECONNRESET for EOF, -ENOTCONN for GOAWAY). Sets
 * h->read_more when it stopped before the socket ran dry: TLS may hold
 * decrypted bytes that poll() cannot see. */
static int conn_read(struct ef_h2 *h)
{
	h->read_more = FALSE;
	for (int i = 0; i < H2_READ_BURST; i++) {
		ssize_t n = conn_recv(h, h->rbuf, sizeof(h->rbuf));
		ssize_t rv;

		if (n == -EAGAIN)
			return 0;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
		rv = nghttp2_session_mem_recv(h->session, h->rbuf, (size_t)n);
		if (rv < 0) {
			g_debug("h2: nghttp2: %s", nghttp2_strerror((int)rv));
			return h2_errno((int)rv);
		}
	}
	h->read_more = TRUE;
	return 0;
}

/* ---- connecting: one pass over every address of every endpoint ---- */

static void pass_note(struct ef_h2 *h, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void pass_note(struct ef_h2 *h, const char *fmt, ...)
{
	g_autofree char *note = NULL;
	va_list ap;

	va_start(ap, fmt);
	note = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	/* A name with several addresses tends to fail the same way on each. */
	if (strstr(h->reasons->str, note))
		return;
	if (h->reasons->len)
		g_string_append(h->reasons, "; ");
	g_string_append(h->reasons, note);
}

/* Creates the session and queues the preface and our SETTINGS. 0 or -errno. */
static int session_start(struct ef_h2 *h)
{
	nghttp2_session_callbacks *cbs = callbacks_new();
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
	};
	int rc = -ENOMEM;

	if (!cbs)
		goto out;
	if (nghttp2_session_client_new(&h->session, cbs, h) != 0)
		goto out;
	rc = nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, G_N_ELEMENTS(iv));
	if (rc == 0)
		rc = nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
							   H2_CONN_WINDOW);
	rc = rc ? h2_errno(rc) : 0;
out:
	nghttp2_session_callbacks_del(cbs);
	return rc;
}

/* The transport is up: start HTTP/2 and wait (bounded by the attempt) for
 * the server's SETTINGS. Returns 0, or -1 with the reason in why. */
/*
 * What etcd with --client-cert-auth does to a TLS 1.3 client that brought
 * no certificate (or one it does not like): the handshake completes on our
 * side, then the server closes the connection.
 */
static gboolean closed_after_tls(const struct ef_h2 *h, int err)
{
	return h->ssl && (err == -ECONNRESET || err == -EPIPE || err == 0) &&
	       (h->state == CONN_HANDSHAKE || h->state == CONN_TLS);
}

static const char *closed_after_tls_reason(struct ef_h2 *h)
{
	uint8_t junk[256];
	int rc;

	/* The server's alert that says why may wait, unread, in the socket
	 * (a write noticed the close first). */
	ERR_clear_error();
	rc = SSL_read(h->ssl, junk, sizeof(junk));
	if (rc <= 0 && SSL_get_error(h->ssl, rc) == SSL_ERROR_SSL) {
		tls_io_reason(h->tls, h->tls_err, sizeof(h->tls_err));
		return h->tls_err;
	}
	ERR_clear_error();
	return tls_has_client_cert(h->tls)
		       ? "the server closed the connection (does it refuse the client "
			 "certificate?)"
		       : "the server closed the connection: it may require a client "
			 "certificate (--cert, --key)";
}

static int http2_begin(struct ef_h2 *h, char *why, size_t len)
{
	int rc = session_start(h);

	if (rc == 0) {
		h->state = CONN_HANDSHAKE;
		rc = conn_flush(h);
	}
	if (rc < 0) {
		g_strlcpy(why, closed_after_tls(h, rc) ? closed_after_tls_reason(h)
						      : g_strerror(-rc), len);
		return -1;
	}
	return 0;
}

/* Advances the TLS handshake; once done, checks ALPN and starts HTTP/2.
 * Returns 0 (done or in progress), or -1 with the reason in why. */
static int tls_step(struct ef_h2 *h, char *why, size_t len)
{
	int rc, e;

	ERR_clear_error();
	errno = 0;
	h->tls_want_write = FALSE;
	rc = SSL_do_handshake(h->ssl);
	if (rc != 1) {
		e = SSL_get_error(h->ssl, rc);
		if (e == SSL_ERROR_WANT_READ)
			return 0;
		if (e == SSL_ERROR_WANT_WRITE) {
			h->tls_want_write = TRUE;
			return 0;
		}
		tls_handshake_reason(h->tls, h->ssl, e, why, len);
		return -1;
	}
	if (!tls_alpn_is_h2(h->ssl)) {
		g_strlcpy(why, "the server did not agree to HTTP/2 (ALPN h2)", len);
		return -1;
	}
	return http2_begin(h, why, len);
}

static int tls_begin(struct ef_h2 *h, char *why, size_t len)
{
	h->ssl = tls_session_new(h->tls, h->fd, h->eps[h->ep_idx].host, why, len);
	if (!h->ssl)
		return -1;
	h->state = CONN_TLS;
	return tls_step(h, why, len);
}

/* TCP is up. Returns 0, or -1 with the reason in why. */
static int conn_established(struct ef_h2 *h, char *why, size_t len)
{
	int one = 1;

	setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (h->eps[h->ep_idx].tls)
		return tls_begin(h, why, len);
	return http2_begin(h, why, len);
}

/* Starts a connect to one address. 0 when in progress, else -errno. */
static int conn_dial(struct ef_h2 *h, const struct addrinfo *ai)
{
	int rc;

	h->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       ai->ai_protocol);
	if (h->fd < 0)
		return -errno;
	h->attempt_deadline = g_get_monotonic_time() + h->dial_us;
	/* Even an immediate success goes through poll(), so that conn_event
	 * is the one place a connection comes up. */
	if (connect(h->fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
		h->state = CONN_CONNECTING;
		return 0;
	}
	rc = -errno;
	conn_close(h);
	return rc;
}

static void pass_end(struct ef_h2 *h)
{
	g_autofree char *reason = g_string_free(h->reasons, FALSE);
	struct ef_h2_stream *st;

	h->reasons = g_string_new(NULL);
	h->order_pos = 0;
	endpoints_apply_waiting(h);
	h->backoff_us = CLAMP(h->backoff_us * 2, H2_BACKOFF_MIN_US, H2_BACKOFF_MAX_US);
	h->backoff_until = g_get_monotonic_time() + h->backoff_us;
	g_debug("h2: %s", reason);
	waiters_finish(h, FALSE, reason);
	/* Streams queued after the pass began fail too: nothing was reachable. */
	while ((st = g_queue_peek_head(&h->pending)))
		stream_drop_pending(h, st, -ENOTCONN);
}

/* On to the next endpoint of the pass. */
static void pass_next(struct ef_h2 *h)
{
	g_clear_pointer(&h->ai_list, freeaddrinfo);
	h->ai_next = NULL;
	h->order_pos++;
}

/* Looks the endpoint's name up on the resolver's thread; CMD_RESOLVED
 * goes on. Returns 0, or -errno when the lookup could not start. */
static int lookup_start(struct ef_h2 *h, const struct ef_endpoint *ep)
{
	int rc = resolver_lookup(h->resolver, ep->host, ep->port, ++h->lookup_seq);

	if (rc == 0) {
		h->state = CONN_RESOLVING;
		h->attempt_deadline = g_get_monotonic_time() + h->dial_us;
	}
	return rc;
}

/* Tries the remaining addresses until one is connecting or being looked
 * up, else ends the pass. */
static void pass_continue(struct ef_h2 *h)
{
	while (h->order_pos < h->n_eps) {
		const struct ef_endpoint *ep = &h->eps[h->ep_idx = h->order[h->order_pos]];

		if (!h->ai_list) {
			int rc = endpoint_numeric(ep, &h->ai_list);

			if (rc == EAI_NONAME && lookup_start(h, ep) == 0)
				return;
			if (rc != 0) {
				pass_note(h, "cannot resolve %s: %s", ep->host,
					  rc == EAI_NONAME ? "no thread for the lookup"
							   : gai_strerror(rc));
				pass_next(h);
				continue;
			}
			h->ai_next = h->ai_list;
		}
		while (h->ai_next) {
			const struct addrinfo *ai = h->ai_next;
			int rc;

			h->ai_next = ai->ai_next;
			rc = conn_dial(h, ai);
			if (rc == 0)
				return;
			pass_note(h, "cannot connect to %s: %s", ep->name, g_strerror(-rc));
		}
		h->eps[h->ep_idx].avoid_until = g_get_monotonic_time() + H2_AVOID_US;
		pass_next(h);
	}
	pass_end(h);
}

/* A name lookup ended (on the I/O thread, from CMD_RESOLVED). */
static void lookup_done(struct ef_h2 *h, uint64_t seq, struct addrinfo *ai, int gai_rc)
{
	if (h->state != CONN_RESOLVING || seq != h->lookup_seq) {
		/* Given up on (timed out, or the pass ended). */
		if (ai)
			freeaddrinfo(ai);
		return;
	}
	h->state = CONN_IDLE;
	if (gai_rc != 0) {
		pass_note(h, "cannot resolve %s: %s", h->eps[h->ep_idx].host,
			  gai_rc == EAI_SYSTEM ? g_strerror(errno) : gai_strerror(gai_rc));
		h->eps[h->ep_idx].avoid_until = g_get_monotonic_time() + H2_AVOID_US;
		pass_next(h);
	} else {
		h->ai_list = h->ai_next = ai;
	}
	pass_continue(h);
}

static void pass_start(struct ef_h2 *h)
{
	g_string_truncate(h->reasons, 0);
	endpoint_order(h->eps, h->n_eps, h->next_start, g_get_monotonic_time(), h->order);
	h->order_pos = 0;
	pass_continue(h);
}

/* The current address failed (connect error, timeout, EOF, GOAWAY). */
static void attempt_fail(struct ef_h2 *h, const char *why)
{
	pass_note(h, "cannot connect to %s: %s", h->eps[h->ep_idx].name, why);
	conn_close(h);
	pass_continue(h);
}

/* The socket failed or closed under a HANDSHAKE or READY connection. */
static void conn_failed(struct ef_h2 *h, int err)
{
	const char *why = g_strerror(-err);

	if (h->goaway)
		why = "server sent GOAWAY";
	else if (err == -EPROTO && h->ssl && h->tls_err[0])
		why = h->tls_err;
	else if (closed_after_tls(h, err))
		why = closed_after_tls_reason(h);
	else if (err == -ECONNRESET)
		why = "connection closed by the server";

	if (h->state == CONN_HANDSHAKE)
		attempt_fail(h, why);
	else
		conn_lost(h, why);
}

static void conn_event(struct ef_h2 *h, short revents)
{
	int err = 0;
	socklen_t len = sizeof(err);
	char why[256];
	int rc;

	if (h->state == CONN_CONNECTING) {
		if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err)
			attempt_fail(h, g_strerror(err));
		else if (conn_established(h, why, sizeof(why)) < 0)
			attempt_fail(h, why);
		return;
	}
	if (h->state == CONN_TLS) {
		if (tls_step(h, why, sizeof(why)) < 0)
			attempt_fail(h, why);
		return;
	}
	if (!(revents & (POLLIN | POLLHUP | POLLERR)) && !(h->tls_want_write && (revents & POLLOUT)))
		return;
	rc = conn_read(h);
	if (rc == 0 && !nghttp2_session_want_read(h->session) &&
	    !nghttp2_session_want_write(h->session))
		rc = -ENOTCONN;
	if (rc < 0) {
		conn_failed(h, rc);
		return;
	}
	if (h->state == CONN_HANDSHAKE && h->got_settings)
		conn_ready(h);
}

/* ---- timers (I/O thread) ---- */

/*
 * Expires stream deadlines. Returns the nearest deadline still ahead
 * (G_MAXINT64 if none); *long_open says whether a no-deadline stream is open.
 */
static gint64 streams_expire(struct ef_h2 *h, gint64 now, gboolean *long_open)
{
	g_autoptr(GArray) expired = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	gboolean timed_out = FALSE;
	gint64 next = G_MAXINT64;
	GHashTableIter it;
	gpointer v;

	*long_open = FALSE;
	g_hash_table_iter_init(&it, h->streams);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct ef_h2_stream *st = v;

		if (st->done)
			continue;
		if (st->deadline == 0)
			*long_open |= st->sid > 0;
		else if (st->deadline <= now)
			g_array_append_val(expired, st->id);
		else
			next = MIN(next, st->deadline);
	}
	/* Looked up again: finishing one stream may free another. */
	for (guint i = 0; i < expired->len; i++) {
		struct ef_h2_stream *st = g_hash_table_lookup(h->streams,
							      &g_array_index(expired, uint64_t, i));

		if (!st || st->done)
			continue;
		if (st->sid < 0) {
			stream_drop_pending(h, st, -ETIMEDOUT);
		} else {
			stream_reset(h, st, -ETIMEDOUT);
			timed_out = TRUE;
		}
	}
	/* A silent server (stopped, partitioned) looks exactly like a slow one;
	 * the PING tells them apart. */
	if (timed_out && ping_allowed(h, now))
		ping_send(h, now);
	return next;
}

/*
 * While backing off, calls fail at once: a dead cluster answers quickly
 * instead of making every caller sit out the backoff. No-deadline streams
 * (Watch, LeaseKeepAlive) wait for its end instead, which also paces their
 * owners' reopen loops.
 */
static void backoff_drop(struct ef_h2 *h)
{
	GList *l = h->pending.head;

	while (l) {
		struct ef_h2_stream *st = l->data;

		l = l->next;
		if (st->deadline)
			stream_drop_pending(h, st, -ENOTCONN);
	}
}

/* Advances the connection's timers. Returns when it next needs attention. */
static gint64 conn_tick(struct ef_h2 *h, gint64 now, gboolean long_open)
{
	switch (h->state) {
	case CONN_RESOLVING:
		if (now < h->attempt_deadline)
			return h->attempt_deadline;
		pass_note(h, "cannot resolve %s: timed out", h->eps[h->ep_idx].host);
		h->state = CONN_IDLE;
		h->eps[h->ep_idx].avoid_until = now + H2_AVOID_US;
		pass_next(h);
		pass_continue(h);
		return now;
	case CONN_CONNECTING:
	case CONN_TLS:
	case CONN_HANDSHAKE:
		if (now < h->attempt_deadline)
			return h->attempt_deadline;
		attempt_fail(h, h->state == CONN_CONNECTING ? "connection timed out"
				: h->state == CONN_TLS	    ? "TLS handshake timed out"
							    : "no HTTP/2 SETTINGS from the server in time");
		return now;
	case CONN_READY:
		if (h->ping_pending) {
			if (now < h->ping_sent + h->dial_us)
				return h->ping_sent + h->dial_us;
			conn_lost(h, "PING not acknowledged");
			return now;
		}
		if (!long_open)
			return G_MAXINT64;
		if (ping_allowed(h, now))
			ping_send(h, now);
		if (h->ping_pending)
			return h->ping_sent + h->dial_us;
		return h->ping_sent + H2_PING_INTERVAL;
	case CONN_IDLE:
	default:
		if (!h->waiters && g_queue_is_empty(&h->pending))
			return G_MAXINT64;
		/* h2_connect is the mount-time check: it does not wait out a backoff. */
		if (h->waiters || now >= h->backoff_until) {
			pass_start(h);
			return now;
		}
		backoff_drop(h);
		return h->backoff_until;
	}
}

/* ---- the command queue ---- */

/* Ends every call (a stream with a deadline) that went out on this
 * connection, as lost; their server is told to cancel them. */
static void calls_abandon(struct ef_h2 *h, gint64 before)
{
	g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	GHashTableIter it;
	gpointer v;

	g_hash_table_iter_init(&it, h->streams);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct ef_h2_stream *st = v;

		if (st->sid > 0 && st->deadline && !st->done && (!before || st->sent_at < before))
			g_array_append_val(ids, st->id);
	}
	/* Looked up again: finishing one may free another. */
	for (guint i = 0; i < ids->len; i++) {
		struct ef_h2_stream *st = g_hash_table_lookup(h->streams,
							      &g_array_index(ids, uint64_t, i));

		if (st && !st->done)
			stream_reset(h, st, -ECONNRESET);
	}
}

static void cmd_write(struct ef_h2 *h, struct ef_h2_cmd *c)
{
	struct ef_h2_stream *st = g_hash_table_lookup(h->streams, &c->id);

	if (!st || st->done) {
		if (c->data)
			g_bytes_unref(c->data);
		return;
	}
	if (c->data)
		g_queue_push_tail(&st->out, c->data);
	st->out_eof |= c->end_stream;
	if (st->sid > 0)
		nghttp2_session_resume_data(h->session, st->sid);
}

static void cmd_run(struct ef_h2 *h, struct ef_h2_cmd *c)
{
	struct ef_h2_stream *st;

	switch (c->kind) {
	case CMD_SUBMIT:
		g_hash_table_insert(h->streams, &c->stream->id, c->stream);
		g_queue_push_tail(&h->pending, c->stream);
		break;
	case CMD_WRITE:
		cmd_write(h, c);
		break;
	case CMD_CANCEL:
		st = g_hash_table_lookup(h->streams, &c->id);
		if (!st || st->done)
			break;
		if (st->sid < 0)
			stream_drop_pending(h, st, -ECANCELED);
		else
			stream_reset(h, st, -ECANCELED);
		break;
	case CMD_CONNECT:
		if (h->state == CONN_READY)
			waiter_finish(c->waiter, TRUE, NULL);
		else
			h->waiters = g_slist_append(h->waiters, c->waiter);
		break;
	case CMD_LEAVE:
		/* With one endpoint there is nowhere to go: the connection
		 * stays, and its unanswered PING ends it. */
		if (h->state == CONN_READY && c->id == h->generation && h->n_eps > 1) {
			g_message("etcdfs: leaving %s: %s", h->eps[h->ep_idx].name, c->why);
			conn_abort(h, c->why);
		}
		g_free(c->why);
		break;
	case CMD_RESOLVED:
		lookup_done(h, c->id, c->ai, c->gai_rc);
		break;
	case CMD_ENDPOINTS:
		endpoints_set(h, c->eps, c->n_eps);
		break;
	case CMD_ABANDON:
		if (h->state == CONN_READY && c->id == h->generation)
			calls_abandon(h, c->before);
		break;
	}
}

/* Runs every queued command. Returns TRUE once h2_free has asked to stop. */
static gboolean cmds_drain(struct ef_h2 *h)
{
	struct ef_h2_cmd *c;
	gboolean stopping;
	GQueue q;

	g_mutex_lock(&h->lock);
	q = h->cmds;
	g_queue_init(&h->cmds);
	stopping = h->stopping;
	g_mutex_unlock(&h->lock);
	while ((c = g_queue_pop_head(&q))) {
		cmd_run(h, c);
		g_free(c);
	}
	return stopping;
}

/* Queues c (taking ownership) and wakes the I/O thread. For CMD_SUBMIT,
 * assigns the stream's id into *id. Returns 0 or -ENOTCONN when stopping. */
static int cmd_enqueue(struct ef_h2 *h, struct ef_h2_cmd *c, uint64_t *id)
{
	uint64_t one = 1;

	g_mutex_lock(&h->lock);
	if (h->stopping) {
		g_mutex_unlock(&h->lock);
		g_free(c);
		return -ENOTCONN;
	}
	if (c->kind == CMD_SUBMIT)
		*id = c->stream->id = ++h->next_id;
	g_queue_push_tail(&h->cmds, c);
	/* Under the lock, so h2_free cannot close the eventfd in between. A
	 * failed write only means the counter is already non-zero. */
	if (write(h->efd, &one, sizeof(one)) < 0)
		g_debug("h2: eventfd: %s", g_strerror(errno));
	g_mutex_unlock(&h->lock);
	return 0;
}

/* ---- the I/O thread ---- */

static int poll_timeout(gint64 next, gint64 now)
{
	if (next == G_MAXINT64)
		return -1;
	if (next <= now)
		return 0;
	return (int)MIN((next - now + 999) / 1000, G_MAXINT);
}

static void io_shutdown(struct ef_h2 *h)
{
	GHashTableIter it;
	gpointer v;

	g_hash_table_iter_init(&it, h->streams);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		stream_finish(v, -ENOTCONN);
		g_hash_table_iter_remove(&it);
		stream_free(v);
	}
	g_queue_clear(&h->pending);
	waiters_finish(h, FALSE, "shutting down");
	conn_close(h);
	g_clear_pointer(&h->ai_list, freeaddrinfo);
}

static gpointer io_main(gpointer data)
{
	struct ef_h2 *h = data;
	sigset_t pipe;

	/* OpenSSL writes with write(2), not send(MSG_NOSIGNAL): a peer that
	 * closed must cost an EPIPE, not the process. */
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, NULL);

	while (!cmds_drain(h)) {
		struct pollfd pfd[2] = { { .fd = h->efd, .events = POLLIN } };
		gint64 now = g_get_monotonic_time();
		gboolean long_open;
		gint64 next;
		nfds_t nfds = 1;
		uint64_t junk;

		next = streams_expire(h, now, &long_open);
		next = MIN(next, conn_tick(h, now, long_open));
		submit_pending(h);
		if (h->state == CONN_HANDSHAKE || h->state == CONN_READY) {
			int rc = conn_flush(h);

			if (rc < 0) {
				conn_failed(h, rc);
				continue;
			}
		}
		/* The server went away and everything it took has ended. */
		if (h->state == CONN_READY && h->goaway && !nghttp2_session_want_read(h->session) &&
		    !nghttp2_session_want_write(h->session)) {
			conn_lost(h, "server sent GOAWAY");
			continue;
		}
		if (h->fd >= 0) {
			pfd[1].fd = h->fd;
			pfd[1].events = h->state == CONN_CONNECTING ? POLLOUT : POLLIN;
			if (h->wbuf_off < h->wbuf->len || h->tls_want_write)
				pfd[1].events |= POLLOUT;
			nfds = 2;
		}
		if (poll(pfd, nfds, h->read_more ? 0 : poll_timeout(next, now)) < 0) {
			if (errno != EINTR)
				g_warning("h2: poll: %s", g_strerror(errno));
			continue;
		}
		if (pfd[0].revents && read(h->efd, &junk, sizeof(junk)) < 0 && errno != EAGAIN)
			g_warning("h2: eventfd: %s", g_strerror(errno));
		if (nfds == 2 && (pfd[1].revents || h->read_more))
			conn_event(h, pfd[1].revents | (h->read_more ? POLLIN : 0));
	}
	io_shutdown(h);
	return NULL;
}

/* ---- public API ---- */

static void h2_destroy(struct ef_h2 *h)
{
	resolver_free(h->resolver);
	g_free(h->order);
	endpoints_free(h->eps, h->n_eps);
	endpoints_free(h->next_eps, h->n_next_eps);
	g_strfreev(h->configured);
	if (h->efd >= 0)
		close(h->efd);
	tls_free(h->tls);
	g_mutex_clear(&h->lock);
	g_free(h->current);
	g_hash_table_destroy(h->streams);
	g_byte_array_unref(h->wbuf);
	g_string_free(h->reasons, TRUE);
	g_free(h);
}

/* Parses one endpoint; one without a scheme uses TLS when h says so. */
static int endpoint_parse_for(const struct ef_h2 *h, const char *s, struct ef_endpoint *ep)
{
	if (endpoint_parse(s, &ep->host, &ep->port, &ep->tls) < 0)
		return -EINVAL;
	if (!ep->tls && !strstr(s, "://"))
		ep->tls = h->tls_default;
	ep->name = endpoint_name(ep->host, ep->port);
	return 0;
}

/* TLS needs its files, and plain text must be allowed where TLS is used. */
static gboolean endpoint_usable(const struct ef_h2 *h, const struct ef_endpoint *ep)
{
	return ep->tls ? h->tls != NULL : !h->refuse_plain;
}

static gboolean plain_check(const struct ef_h2 *h, GError **err)
{
	for (size_t i = 0; i < h->n_eps; i++) {
		if (!endpoint_usable(h, &h->eps[i])) {
			g_set_error(err, h2_error_quark(), EINVAL,
				    "endpoint %s is plain text while TLS is in use "
				    "(use https://, or --insecure-transport to allow it)",
				    h->configured[i]);
			return FALSE;
		}
	}
	return TRUE;
}

static gboolean endpoints_parse(struct ef_h2 *h, const char *const *eps, GError **err)
{
	size_t n = eps ? g_strv_length((char **)eps) : 0;

	if (n == 0) {
		g_set_error_literal(err, h2_error_quark(), EINVAL, "no etcd endpoints given");
		return FALSE;
	}
	h->eps = g_new0(struct ef_endpoint, n);
	h->order = g_new0(size_t, n);
	for (size_t i = 0; i < n; i++) {
		struct ef_endpoint *ep = &h->eps[i];

		if (endpoint_parse_for(h, eps[i], ep) < 0) {
			g_set_error(err, h2_error_quark(), EINVAL,
				    "invalid endpoint \"%s\" (expected host:port, "
				    "http://host:port, https://host:port or [ipv6]:port)", eps[i]);
			return FALSE;
		}
		h->n_eps++;
	}
	return TRUE;
}

/* On a lookup's thread: hands the outcome to the I/O thread. */
static void on_resolved(void *ud, uint64_t seq, struct addrinfo *ai, int gai_rc)
{
	struct ef_h2 *h = ud;
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);

	c->kind = CMD_RESOLVED;
	c->id = seq;
	c->ai = ai;
	c->gai_rc = gai_rc;
	if (cmd_enqueue(h, c, NULL) < 0 && ai)
		freeaddrinfo(ai);
}

struct ef_h2 *h2_new(const struct ef_h2_config *cfg, GError **err)
{
	struct ef_h2 *h = g_new0(struct ef_h2, 1);

	h->fd = -1;
	g_mutex_init(&h->lock);
	g_queue_init(&h->cmds);
	g_queue_init(&h->pending);
	h->streams = g_hash_table_new(g_int64_hash, g_int64_equal);
	h->wbuf = g_byte_array_new();
	h->reasons = g_string_new(NULL);
	h->dial_us = (cfg->dial_timeout_ms > 0 ? cfg->dial_timeout_ms : H2_DEFAULT_DIAL_MS) *
		     G_TIME_SPAN_MILLISECOND;
	h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->efd < 0) {
		g_set_error(err, h2_error_quark(), errno, "eventfd: %s", g_strerror(errno));
		goto fail;
	}
	h->tls_default = cfg->tls_default;
	h->auth = cfg->auth;
	if (!endpoints_parse(h, cfg->endpoints, err))
		goto fail;
	h->refuse_plain = cfg->plain == EF_PLAIN_REFUSE;
	for (size_t i = 0; i < h->n_eps; i++)
		h->refuse_plain |= cfg->plain == EF_PLAIN_AUTO && h->eps[i].tls;
	h->configured = g_strdupv((char **)cfg->endpoints);
	h->resolver = resolver_new(on_resolved, h);
	for (size_t i = 0; i < h->n_eps; i++) {
		if (h->eps[i].tls) {
			h->tls = tls_new(&cfg->tls, err);
			if (!h->tls)
				goto fail;
			break;
		}
	}
	if (!plain_check(h, err))
		goto fail;
	h->thread = g_thread_try_new("etcdfs-h2", io_main, h, err);
	if (!h->thread)
		goto fail;
	return h;
fail:
	h2_destroy(h);
	return NULL;
}

void h2_free(struct ef_h2 *h)
{
	uint64_t one = 1;

	if (!h)
		return;
	g_mutex_lock(&h->lock);
	h->stopping = TRUE;
	if (write(h->efd, &one, sizeof(one)) < 0)
		g_debug("h2: eventfd: %s", g_strerror(errno));
	g_mutex_unlock(&h->lock);
	g_thread_join(h->thread);
	h2_destroy(h);
}

const char *h2_library_versions(void)
{
	static char buf[200];

	if (!buf[0])
		g_snprintf(buf, sizeof(buf), "nghttp2 %s, %s", nghttp2_version(0)->version_str,
			   OpenSSL_version(OPENSSL_VERSION));
	return buf;
}

gboolean h2_connect(struct ef_h2 *h, GError **err)
{
	struct ef_h2_waiter w = { 0 };
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);
	gboolean ok = FALSE;

	g_mutex_init(&w.lock);
	g_cond_init(&w.cond);
	c->kind = CMD_CONNECT;
	c->waiter = &w;
	if (cmd_enqueue(h, c, NULL) < 0) {
		g_set_error_literal(err, h2_error_quark(), ENOTCONN, "shutting down");
		goto out;
	}
	g_mutex_lock(&w.lock);
	while (!w.done)
		g_cond_wait(&w.cond, &w.lock);
	ok = w.ok;
	g_mutex_unlock(&w.lock);
	if (!ok)
		g_set_error_literal(err, h2_error_quark(), ENOTCONN, w.reason);
out:
	g_free(w.reason);
	g_cond_clear(&w.cond);
	g_mutex_clear(&w.lock);
	return ok;
}

uint64_t h2_generation(struct ef_h2 *h)
{
	uint64_t g;

	g_mutex_lock(&h->lock);
	g = h->generation;
	g_mutex_unlock(&h->lock);
	return g;
}

char *h2_current_endpoint(struct ef_h2 *h)
{
	char *s;

	g_mutex_lock(&h->lock);
	s = g_strdup(h->current);
	g_mutex_unlock(&h->lock);
	return s;
}

gboolean h2_on_io_thread(struct ef_h2 *h)
{
	return g_thread_self() == h->thread;
}

int h2_stream_submit(struct ef_h2 *h, const struct ef_h2_request *req,
		     const struct ef_h2_stream_ops *ops, void *ud, uint64_t *id)
{
	struct ef_h2_stream *st = g_new0(struct ef_h2_stream, 1);
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);
	int rc;

	st->sid = -1;
	st->deadline = req->deadline;
	st->generation = req->generation;
	st->anonymous = req->anonymous;
	st->path = g_strdup(req->path);
	st->hdrs = g_new0(char *, 2 * req->n_headers + 1);
	for (size_t i = 0; i < req->n_headers; i++) {
		st->hdrs[2 * i] = g_strdup(req->headers[i].name);
		st->hdrs[2 * i + 1] = g_strdup(req->headers[i].value);
	}
	st->ops = ops;
	st->ud = ud;
	g_queue_init(&st->out);
	if (req->body)
		g_queue_push_tail(&st->out, g_bytes_ref(req->body));
	st->out_eof = req->end_stream;
	if (req->body && req->end_stream)
		st->replay = g_bytes_ref(req->body);
	c->kind = CMD_SUBMIT;
	c->stream = st;
	rc = cmd_enqueue(h, c, id);
	if (rc < 0)
		stream_free(st);
	return rc;
}

int h2_stream_write(struct ef_h2 *h, uint64_t id, GBytes *data, gboolean end_stream)
{
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);
	int rc;

	c->kind = CMD_WRITE;
	c->id = id;
	c->data = data ? g_bytes_ref(data) : NULL;
	c->end_stream = end_stream;
	rc = cmd_enqueue(h, c, NULL);
	if (rc < 0 && data)
		g_bytes_unref(data);
	return rc;
}

void h2_leave(struct ef_h2 *h, uint64_t generation, const char *why)
{
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);
	char *w = g_strdup(why);

	c->kind = CMD_LEAVE;
	c->id = generation;
	c->why = w;
	if (cmd_enqueue(h, c, NULL) < 0)
		g_free(w);
}

void h2_abandon_calls(struct ef_h2 *h, uint64_t generation, gint64 before)
{
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);

	c->kind = CMD_ABANDON;
	c->id = generation;
	c->before = before;
	cmd_enqueue(h, c, NULL);
}

void h2_learn_endpoints(struct ef_h2 *h, const char *const *learned)
{
	size_t nc = g_strv_length(h->configured);
	size_t n = nc + (learned ? g_strv_length((char **)learned) : 0), k = 0;
	struct ef_h2_cmd *c;
	struct ef_endpoint *list = g_new0(struct ef_endpoint, n + 1);

	for (size_t i = 0; i < n; i++) {
		const char *s = i < nc ? h->configured[i] : learned[i - nc];
		struct ef_endpoint ep = { 0 };

		/* Unusable here: malformed, https without a TLS setup, or
		 * plain text where TLS is used. */
		if (endpoint_parse_for(h, s, &ep) < 0)
			continue;
		if (!endpoint_usable(h, &ep) || endpoint_find(list, k, ep.name) >= 0) {
			g_free(ep.host);
			g_free(ep.name);
			continue;
		}
		list[k++] = ep;
	}
	c = g_new0(struct ef_h2_cmd, 1);
	c->kind = CMD_ENDPOINTS;
	c->eps = list;
	c->n_eps = k;
	if (cmd_enqueue(h, c, NULL) < 0)
		endpoints_free(list, k);
}

void h2_stream_cancel(struct ef_h2 *h, uint64_t id)
{
	struct ef_h2_cmd *c = g_new0(struct ef_h2_cmd, 1);

	c->kind = CMD_CANCEL;
	c->id = id;
	cmd_enqueue(h, c, NULL);
}
