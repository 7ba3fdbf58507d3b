/*
 * h2 — one HTTP/2 connection to an etcd cluster, owned by one I/O thread.
 *
 * The only module that includes nghttp2 (and, for TLS, OpenSSL) headers.
 * One connection at a time, to one member: a connection pass tries every
 * endpoint (endpoint.h says in which order), a dropped connection fails the
 * streams that went out on it and the next request connects again, to
 * another member first (bumping the generation counter).
 * Other threads talk to the I/O thread through a locked queue and an eventfd;
 * the I/O thread blocks on nothing but poll() (and, before a new TLS
 * connection, a stat of the certificate files and, when they changed, a
 * read of them: tls.h).
 */
#pragma once

#include <stdint.h>
#include <glib.h>

#include "tls.h"

struct ef_auth;

struct ef_h2;

struct ef_h2_config {
	/* "host:port", "http://host:port", "https://host:port", "[v6]:port".
	 * NULL-terminated; copied by h2_new. */
	const char *const *endpoints;
	int dial_timeout_ms;
	/* TLS, for "https://" endpoints and, with tls_default, for the ones
	 * without a scheme; the files are loaded by h2_new. */
	struct ef_tls_config tls;
	gboolean tls_default;
	/* "http://" endpoints, given or learned from the member list:
	 * EF_PLAIN_AUTO refuses them once a given endpoint uses TLS (what
	 * goes over TLS, the auth token and password among it, must not
	 * cross in plain text to another member); the others say so. */
	enum ef_plain { EF_PLAIN_AUTO, EF_PLAIN_REFUSE, EF_PLAIN_ALLOW } plain;
	/* etcd auth: its current token is sent with every request. Borrowed:
	 * must outlive the connection. NULL: no token. */
	struct ef_auth *auth;
};

/* Creates the connection and starts its I/O thread. Does not connect yet.
 * Returns NULL and sets err on a bad endpoint list. */
struct ef_h2 *h2_new(const struct ef_h2_config *cfg, GError **err);

/* Connects now (for the mount-time check): returns TRUE when an endpoint
 * accepted the HTTP/2 preface, else FALSE with a one-line reason in err. */
gboolean h2_connect(struct ef_h2 *h, GError **err);

/* Stops the I/O thread, fails anything pending with -ENOTCONN, frees h. */
void h2_free(struct ef_h2 *h);

/* Bumped each time a new connection is established. */
uint64_t h2_generation(struct ef_h2 *h);

/* "host:port" of the endpoint currently connected, or NULL (new string). */
char *h2_current_endpoint(struct ef_h2 *h);

/*
 * Drops the connection if it is still the one of this generation, and tries
 * its member last for a while: the next request goes to another member.
 * For failure detectors above HTTP/2 (a member that stopped answering, or
 * has no leader). Its streams end as if the connection was lost. Ignored
 * when there is only one endpoint.
 */
void h2_leave(struct ef_h2 *h, uint64_t generation, const char *why);

/*
 * The endpoints to use are the ones h2_new was given and, after them, the
 * learned ones (every member's client URLs from MemberList: members added
 * or replaced while mounted). The next connection pass uses the new list;
 * a connection to a member no longer listed is kept until it fails.
 * Endpoints that do not parse, duplicates, and https ones when h2_new set
 * up no TLS are left out.
 */
void h2_learn_endpoints(struct ef_h2 *h, const char *const *learned);

/*
 * Ends the calls (streams with a deadline) in flight on the connection of
 * this generation that went out before the monotonic time before (0: all)
 * with -ECONNRESET, as if their answers were lost, and
 * tells the server to cancel them; the connection and its long streams
 * stay. For a member that has lost its leader: a write it forwarded to a
 * leader that died will never be answered, and only a read-back can tell
 * what became of it.
 */
void h2_abandon_calls(struct ef_h2 *h, uint64_t generation, gint64 before);

/* "nghttp2 X.Y.Z, OpenSSL ...": the libraries in use at run time (static). */
const char *h2_library_versions(void);

/* True when called on h's I/O thread (where blocking calls would deadlock). */
gboolean h2_on_io_thread(struct ef_h2 *h);

/*
 * ---- Stream level, for grpc.c only ----
 *
 * A stream is one HTTP/2 request. It waits for a ready connection (connecting
 * one if needed), is submitted, and ends with exactly one on_close. Streams
 * are named by a 64-bit id that is never reused, so a write or cancel that
 * races with the stream's end is harmless: the I/O thread ignores ids it no
 * longer knows.
 */

/* One request header (lowercase name); copied by h2_stream_submit. */
struct ef_h2_header {
	const char *name;
	const char *value;
};

/*
 * Stream callbacks. They run on the I/O thread, must only record and return,
 * and may call no h2_* function except h2_stream_write and h2_stream_cancel.
 */
struct ef_h2_stream_ops {
	/* The request was submitted on a ready connection. May be NULL. */
	void (*on_open)(void *ud);
	/* One response header field (bytes valid only during the call).
	 * end_stream is TRUE when its header block ends the stream: trailers, or
	 * a trailers-only response. */
	void (*on_header)(void *ud, const char *name, size_t name_len, const char *value,
			  size_t value_len, gboolean end_stream);
	/* Response body bytes, valid only during the call. Returning -errno
	 * resets the stream (RST_STREAM CANCEL) and closes it with that error. */
	int (*on_data)(void *ud, const uint8_t *data, size_t len);
	/* Called exactly once, last; ud is never touched after it returns.
	 * err is 0 when the server ended the stream, else:
	 *   -ETIMEDOUT  the deadline passed (the stream was reset),
	 *   -ENOTCONN   the request never reached a server: no endpoint was
	 *               reachable, or h2_free ran, or (a stream without
	 *               deadline) the server is going away (GOAWAY),
	 *   -ECONNRESET the request went out but the connection was lost
	 *               before the stream ended: the server may have acted
	 *               on it. (A whole request refused unseen by a server
	 *               going away is sent again, on the next connection.)
	 *   -ECANCELED  h2_stream_cancel,
	 *   -EAGAIN     the server refused the stream (REFUSED_STREAM etc.),
	 *   -EPROTO     the server reset the stream or broke the protocol,
	 *   -ENOMEM     nghttp2 ran out of memory,
	 *   -ESRCH      the request asked for a connection that is gone
	 *               (ef_h2_request.generation); it was not sent. */
	void (*on_close)(void *ud, int err);
};

struct ef_h2_request {
	const char *path;                   /* :path; copied */
	const struct ef_h2_header *headers; /* after the pseudo-headers; copied */
	size_t n_headers;
	GBytes *body;          /* first body bytes or NULL; h2 takes its own ref */
	gboolean end_stream;   /* TRUE: body is the whole request body */
	gint64 deadline;       /* g_get_monotonic_time() microseconds; 0: none */
	uint64_t generation;   /* non-zero: only over that connection, else the
				* stream ends unsent with -ESRCH */
	gboolean anonymous;    /* without the auth token (etcd refuses to log
				* in with a token it forgot) */
};

/*
 * Queues a request (h2 adds :method POST, :scheme, :authority). ops and ud are
 * borrowed until on_close has returned; on_close may run before this returns.
 * Returns 0 and the stream's id in *id, or -ENOTCONN if h is shutting down
 * (then no callback runs). Callable from any thread.
 */
int h2_stream_submit(struct ef_h2 *h, const struct ef_h2_request *req,
		     const struct ef_h2_stream_ops *ops, void *ud, uint64_t *id);

/* Queues more body bytes (h2 takes a ref on data, which may be NULL when only
 * ending the stream). Ignored once the stream has closed. Returns 0, or
 * -ENOTCONN if h is shutting down. Callable from any thread. */
int h2_stream_write(struct ef_h2 *h, uint64_t id, GBytes *data, gboolean end_stream);

/* Resets the stream (RST_STREAM CANCEL) and closes it with -ECANCELED, unless
 * it already closed. Asynchronous: wait for on_close. Callable from any thread. */
void h2_stream_cancel(struct ef_h2 *h, uint64_t id);
