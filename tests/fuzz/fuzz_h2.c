/*
 * fuzz_h2 — the bytes an HTTP/2 server sends, fed to the client side:
 * nghttp2's session and h2.c's callbacks, streams, GOAWAY and deadline
 * handling, and grpc.c's header, trailer and deframing callbacks above them.
 *
 * h2.c is compiled into this file, so that the I/O thread's own steps
 * (conn_event, cmds_drain, streams_expire, submit_pending, conn_flush, ...)
 * run here, on this thread, one after the other as io_main runs them, with
 * a socketpair for the socket: no I/O thread, no poll(), no network. The
 * input is what the server says; it is read frame by frame (by the 9-byte
 * frame headers, so each read ends where a frame does) and each read is
 * followed by one turn of the loop. Then the connection ends (EOF), and
 * every call and stream must have been closed exactly once, with a result
 * grpc.h allows.
 * Input: [config u8][server bytes, from its SETTINGS frame on]. config:
 *   bits 0-1  unary calls (a Range each), opened first: streams 1, 3, ...
 *   bits 2-3  bidirectional streams (a Watch each), opened after them
 *   bits 4-5  frames per read: 1, 2, 4 or 8
 *   bit 6     the unary calls refuse responses over 1 KiB
 *   bit 7     every deadline passes before the connection ends
 */
#include "../../src/h2.c"

#include "fuzz.h"
#include "grpc.h"
#include "h2_seam.h"

#define MAX_CALLS 3
#define MAX_STREAMS 3

/* No server listens there: a pass that tried to connect would fail. */
static const char *const endpoints[] = { "127.0.0.1:1", NULL };

struct watcher {
	unsigned messages;
	unsigned closes;
	size_t bytes;
};

static void watcher_message(void *ud, const uint8_t *msg, size_t len)
{
	struct watcher *wt = ud;

	g_assert_cmpuint(wt->closes, ==, 0);
	wt->messages++;
	/* Every byte is read: ASan checks the whole message. */
	for (size_t i = 0; i < len; i++)
		wt->bytes += msg[i];
}

static void watcher_close(void *ud, int err, const struct ef_grpc_status *st)
{
	struct watcher *wt = ud;

	g_assert_cmpuint(wt->closes++, ==, 0);
	g_assert_cmpint(err, <=, 0);
	g_assert_nonnull(st);
	g_assert_true(err < 0 ? st->code == -1 : st->code >= 0);
}

static const struct ef_grpc_stream_ops watcher_ops = {
	.on_message = watcher_message,
	.on_close = watcher_close,
};

/* h2_new without its I/O thread and resolver: this file is the I/O thread. */
static struct ef_h2 *conn_new(int fd)
{
	struct ef_h2 *h = g_new0(struct ef_h2, 1);

	g_mutex_init(&h->lock);
	g_queue_init(&h->cmds);
	g_queue_init(&h->pending);
	h->streams = g_hash_table_new(g_int64_hash, g_int64_equal);
	h->wbuf = g_byte_array_new();
	h->reasons = g_string_new(NULL);
	h->dial_us = H2_DEFAULT_DIAL_MS * G_TIME_SPAN_MILLISECOND;
	h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	g_assert_cmpint(h->efd, >=, 0);
	g_assert_true(endpoints_parse(h, endpoints, NULL));
	h->configured = g_strdupv((char **)endpoints);
	/* This pass has tried every endpoint: a failed handshake ends it
	 * instead of dialling. */
	h->order_pos = h->n_eps;
	h->fd = fd;
	h->state = CONN_CONNECTING;
	return h;
}

/* What the client sent is of no interest here; only the buffer fills up. */
static void discard(int fd)
{
	uint8_t buf[16384];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* One turn of io_main's loop, without poll(). */
static void turn(struct ef_h2 *h, int peer, gint64 now)
{
	gboolean long_open;
	uint64_t junk;

	if (read(h->efd, &junk, sizeof(junk)) < 0 && errno != EAGAIN)
		g_error("eventfd: %s", g_strerror(errno));
	cmds_drain(h);
	streams_expire(h, now, &long_open);
	/* Idle, conn_tick would start a pass and dial: not here. */
	if (h->state == CONN_READY)
		conn_tick(h, now, long_open);
	submit_pending(h);
	if (h->state == CONN_HANDSHAKE || h->state == CONN_READY) {
		int rc = conn_flush(h);

		if (rc < 0)
			conn_failed(h, rc);
	}
	if (h->state == CONN_READY && h->goaway && !nghttp2_session_want_read(h->session) &&
	    !nghttp2_session_want_write(h->session))
		conn_lost(h, "server sent GOAWAY");
	discard(peer);
}

/* The length of the next n frames in p (or all of p, if it ends first). */
static size_t frames_len(const uint8_t *p, size_t len, unsigned n)
{
	size_t off = 0;

	while (n-- > 0 && len - off >= 9) {
		size_t flen = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];

		if (flen > len - off - 9)
			break;
		off += 9 + flen;
	}
	return off ? off : len;
}

/* The server says p: it arrives, and the client reads it. */
static void server_says(struct ef_h2 *h, int peer, const uint8_t *p, size_t len)
{
	while (len > 0 && h->fd >= 0) {
		ssize_t n = write(peer, p, len);

		if (n < 0 && errno != EAGAIN)
			g_error("socketpair: %s", g_strerror(errno));
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
		do
			conn_event(h, POLLIN);
		while (h->fd >= 0 && h->read_more);
		turn(h, peer, g_get_monotonic_time());
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fz_quiet_logs();
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t cfg = fz_u8(&in);
	unsigned n_calls = MIN(cfg & 3, MAX_CALLS), n_streams = MIN((cfg >> 2) & 3, MAX_STREAMS);
	unsigned per_read = 1u << ((cfg >> 4) & 3);
	struct seam_call *calls[MAX_CALLS];
	struct ef_grpc_stream *streams[MAX_STREAMS];
	struct watcher watchers[MAX_STREAMS] = { { 0 } };
	struct ef_h2 *h;
	int sv[2];

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
	h = conn_new(sv[0]);
	/* Connected: the preface and SETTINGS go out, HANDSHAKE begins. */
	conn_event(h, POLLOUT);
	for (unsigned i = 0; i < n_calls; i++)
		calls[i] = seam_unary_begin(h, cfg & 0x40);
	for (unsigned i = 0; i < n_streams; i++) {
		static const uint8_t create[] = { 0x0a, 0x05, 0x0a, 0x03, '/', 'r', '/' };

		streams[i] = seam_stream_begin(h, &watcher_ops, &watchers[i]);
		g_assert_cmpint(grpc_stream_send(streams[i], create, sizeof(create)), ==, 0);
	}
	turn(h, sv[1], g_get_monotonic_time());
	while (in.n > 0 && h->fd >= 0) {
		const uint8_t *p;
		size_t len = fz_bytes(&in, frames_len(in.p, in.n, per_read), &p);

		server_says(h, sv[1], p, len);
	}
	if ((cfg & 0x80) && h->fd >= 0)
		turn(h, sv[1], g_get_monotonic_time() + 3600 * G_TIME_SPAN_SECOND);
	/* The server closes the connection. */
	close(sv[1]);
	if (h->fd >= 0)
		conn_event(h, POLLIN);
	io_shutdown(h);

	for (unsigned i = 0; i < n_calls; i++)
		seam_unary_end(calls[i]);
	for (unsigned i = 0; i < n_streams; i++) {
		bool opened = seam_stream_end(streams[i]);

		g_assert_cmpuint(watchers[i].closes, ==, opened);
	}
	h2_destroy(h);
	return 0;
}
