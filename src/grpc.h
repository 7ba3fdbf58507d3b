/*
 * grpc — gRPC calls over one HTTP/2 connection (see h2.h).
 *
 * Framing (1-byte compressed flag, 4-byte big-endian length, message), request
 * headers, trailers, and the project's single gRPC status -> errno table.
 * Callers block on their own call only; the connection's I/O thread does all
 * network work, so no caller lock is ever held across a round trip by us.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

struct ef_h2;

/* gRPC status codes (grpc/status.h), the subset we name. */
enum {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};

/* Outcome of a call. code is a gRPC status, or -1 when the call failed in the
 * transport before any status arrived. message is owned by the struct (g_free
 * via grpc_status_clear), may be NULL. */
struct ef_grpc_status {
	int code;
	char *message;
};

void grpc_status_clear(struct ef_grpc_status *st);

/*
 * The one gRPC status -> errno table (documented in man/etcdfs.1).
 * message refines a few codes (e.g. code 3 "request is too large" -> EFBIG).
 * Returns a positive errno; 0 for GRPC_OK.
 */
int grpc_status_errno(int code, const char *message);

/*
 * Unary call: send one request message to `path` (e.g.
 * "/etcdserverpb.KV/Range") and wait for the response.
 *
 * req/req_len: the serialized protobuf message (unframed), borrowed for the
 * duration of the call. timeout_ms bounds the whole call, connecting
 * included; it is also sent as grpc-timeout.
 *
 * Returns 0 on gRPC OK with *resp a new GBytes holding the (unframed)
 * response message (caller unrefs). Otherwise returns -errno:
 *   -ETIMEDOUT  the deadline passed (the stream is reset),
 *   -ENOTCONN   no endpoint could be reached, or the connection dropped,
 *   -EPROTO     malformed response: not :status 200, no gRPC
 *               content-type, no or a garbled grpc-status, a compressed
 *               or over-long message, one cut short, or not exactly one
 *               (one warning line, limited per kind of fault, says which),
 *   -EFBIG      the request is larger than a gRPC frame may carry,
 *   -grpc_status_errno(code, message) for a non-OK gRPC status.
 * If st is non-NULL it receives the status (code -1 for transport errors);
 * the caller clears it with grpc_status_clear().
 * Must not be called from the connection's I/O thread.
 */
int grpc_unary(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
	       int timeout_ms, GBytes **resp, struct ef_grpc_status *st);

/*
 * grpc_unary for a response that may be too big to want: one whose message
 * is longer than max_resp bytes is not received (the stream is reset as
 * soon as its length arrives) and the call returns -EMSGSIZE with *need
 * set to that length. grpc_unary's own cap (above which a response is a
 * protocol error) is the most max_resp can be.
 */
int grpc_unary_capped(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
		      int timeout_ms, size_t max_resp, GBytes **resp, struct ef_grpc_status *st,
		      size_t *need);

/* grpc_unary, asking etcd to refuse the call at once (-EAGAIN, "no leader")
 * when the member has no leader: etcd's "hasleader" metadata. */
int grpc_unary_leader(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
		      int timeout_ms, GBytes **resp, struct ef_grpc_status *st);

/* grpc_unary, sent only over the connection of generation gen
 * (h2_generation): when the connection is another one by the time the
 * request would go out, it is not sent and the call returns -ESRCH. For
 * writes that may only go to a member checked beforehand. */
int grpc_unary_on(struct ef_h2 *h, uint64_t gen, const char *path, const void *req,
		  size_t req_len, int timeout_ms, GBytes **resp, struct ef_grpc_status *st);

/* grpc_unary without the auth token of ef_h2_config.auth (Authenticate:
 * etcd refuses a login that carries a token it has forgotten). */
int grpc_unary_anonymous(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
			 int timeout_ms, GBytes **resp, struct ef_grpc_status *st);

/* ---- streaming calls (Watch, LeaseKeepAlive) ---- */

struct ef_grpc_stream;

/* Callbacks run on the I/O thread. They must only record and return: no
 * blocking, no calls back into grpc_* or h2_* except grpc_stream_send(). */
struct ef_grpc_stream_ops {
	/* One complete response message; msg is valid only during the call. */
	void (*on_message)(void *ud, const uint8_t *msg, size_t len);
	/* The stream ended: err is 0 with st->code the gRPC status, or -errno
	 * for transport failures (st->code == -1); -EPROTO for a response
	 * malformed as for grpc_unary. Called exactly once; no callback
	 * follows it. st is borrowed for the call. */
	void (*on_close)(void *ud, int err, const struct ef_grpc_status *st);
};

/*
 * Opens a bidirectional stream to `path` with no deadline. ops/ud are
 * borrowed until on_close has run. Returns 0 and *out, or -errno
 * (-ENOTCONN when no endpoint answers within the dial timeout).
 */
int grpc_stream_open(struct ef_h2 *h, const char *path, const struct ef_grpc_stream_ops *ops,
		     void *ud, struct ef_grpc_stream **out);

/* Queues one message (copied) on the stream. Returns 0 or -errno (-EPIPE
 * if the stream has closed). Safe from any thread, including callbacks. */
int grpc_stream_send(struct ef_grpc_stream *s, const void *msg, size_t len);

/* grpc_stream_send, and the request side ends with it (END_STREAM): a
 * unary call whose answer may take as long as it takes (a lock). */
int grpc_stream_send_last(struct ef_grpc_stream *s, const void *msg, size_t len);

/* Cancels the stream (RST_STREAM CANCEL) if still open, waits until
 * on_close has run, and frees s. Not callable from the I/O thread. */
void grpc_stream_free(struct ef_grpc_stream *s);

/* ---- framing (pure; exposed for unit tests) ---- */

#define GRPC_FRAME_HEADER 5

/* Writes the 5-byte header for a message of len bytes into out. */
void grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER], size_t len);

/*
 * Incremental deframer: feed arbitrary chunks of a response body, get
 * complete messages out. max_len caps a single message (larger -> error).
 */
struct ef_grpc_deframer {
	GByteArray *buf;
	size_t max_len;
	size_t too_long;   /* the announced length of a message over max_len */
};

void grpc_deframer_init(struct ef_grpc_deframer *d, size_t max_len);
void grpc_deframer_clear(struct ef_grpc_deframer *d);
/* Appends data (copied). Returns 0, -EPROTO on a compressed flag other
 * than 0, or -EMSGSIZE (too_long set) on a length above max_len. */
int grpc_deframer_feed(struct ef_grpc_deframer *d, const uint8_t *data, size_t len);
/* Pops the next complete message: returns 1 and a new GBytes in *msg, 0 if
 * no complete message is buffered. */
int grpc_deframer_next(struct ef_grpc_deframer *d, GBytes **msg);
/* True if bytes of an incomplete message remain buffered. */
gboolean grpc_deframer_partial(const struct ef_grpc_deframer *d);

/* Formats a grpc-timeout header value ("<=8 digits><unit>") into out (>= 10 bytes). */
void grpc_timeout_format(char *out, size_t outlen, int timeout_ms);

/* Decodes a grpc-message value (percent-encoded, "%XX" -> byte; malformed
 * escapes are kept literally). Returns a new NUL-terminated string. */
char *grpc_percent_decode(const char *s, size_t len);
