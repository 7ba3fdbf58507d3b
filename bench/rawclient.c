/*
 * rawclient — the raw-etcd side of bench/run: what etcd costs when spoken to
 * directly, through the same transport the daemon uses (src/h2.c + src/grpc.c,
 * one HTTP/2 connection), so that etcdfs's figures can be divided by them.
 *
 *   rawclient ENDPOINT put-seq PREFIX N            sequential 100-byte Puts
 *   rawclient ENDPOINT put-par PREFIX THREADS N    N Puts from THREADS threads
 *   rawclient ENDPOINT range PREFIX [PAGE]         keys-only Range, paged or not
 *   rawclient ENDPOINT range-values PREFIX [PAGE]  the same with values
 *   rawclient ENDPOINT fill PREFIX N PER_DIR VLEN  populate keys (16 threads)
 *   rawclient ENDPOINT get KEY                     value to stdout, raw
 *   rawclient ENDPOINT visible KEY PATH N          put -> visible on a mount
 *   rawclient ENDPOINT stream KEY N FILE...        put -> its line read from each FILE
 *   rawclient ENDPOINT lock-seq NAME N             uncontended Lock + Unlock
 *   rawclient ENDPOINT lock-handover NAME N PARK   Unlock -> the waiter's Lock
 *
 * Results go to stdout as bare numbers (documented per command below) for
 * bench/run to parse; diagnostics go to stderr. Any failed call exits 1.
 *
 * The protobuf messages are encoded and decoded by hand: only a handful of
 * fields are needed, and keeping protobuf-c out means the baseline pays no
 * (un)packing cost the daemon might avoid, nor the reverse. Field numbers are
 * etcd's (FACTS.md section 1).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>

#include <glib.h>

#include "grpc.h"
#include "h2.h"

#define CALL_TIMEOUT_MS 10000
#define RANGE_PAGE 1000          /* default page: as the daemon's DIR_PAGE */
#define VALUE_LEN 100
#define FILL_THREADS 16

static const char *endpoint;
static struct ef_h2 *conn;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

G_GNUC_NORETURN G_GNUC_PRINTF(1, 2)
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("rawclient: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* A new connection to ep, connected. */
static struct ef_h2 *connect_to(const char *ep)
{
	const char *eps[2] = { ep, NULL };
	struct ef_h2_config cfg = { .endpoints = eps, .dial_timeout_ms = 2000 };
	g_autoptr(GError) err = NULL;
	struct ef_h2 *h = h2_new(&cfg, &err);

	if (!h || !h2_connect(h, &err))
		die("%s: %s", ep, err ? err->message : "cannot connect");
	return h;
}

/* ---- a minimal protobuf writer and reader ---- */

static void pb_varint(GByteArray *b, uint64_t v)
{
	uint8_t tmp[10];
	guint n = 0;

	do {
		tmp[n] = v & 0x7f;
		v >>= 7;
		if (v)
			tmp[n] |= 0x80;
		n++;
	} while (v);
	g_byte_array_append(b, tmp, n);
}

static void pb_bytes(GByteArray *b, unsigned field, const void *data, size_t len)
{
	pb_varint(b, (uint64_t)field << 3 | 2);
	pb_varint(b, len);
	g_byte_array_append(b, data, len);
}

/* proto3 leaves zero scalars out, and so do we. */
static void pb_uint(GByteArray *b, unsigned field, uint64_t v)
{
	if (!v)
		return;
	pb_varint(b, (uint64_t)field << 3);
	pb_varint(b, v);
}

struct pb_field {
	unsigned num;
	unsigned type;            /* wire type */
	uint64_t v;               /* varint value (type 0) */
	const uint8_t *data;      /* payload (type 2) */
	size_t len;
};

static bool pb_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t c = *(*p)++;

		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return true;
	}
	return false;
}

/* Reads the next field at *p. Returns 1 and fills f, 0 at the end, -1 when
 * the bytes are not protobuf. Unknown fields are skipped by the caller
 * simply not looking at them. */
static int pb_next(const uint8_t **p, const uint8_t *end, struct pb_field *f)
{
	uint64_t tag;

	if (*p == end)
		return 0;
	if (!pb_read_varint(p, end, &tag))
		return -1;
	f->num = tag >> 3;
	f->type = tag & 7;
	switch (f->type) {
	case 0:
		return pb_read_varint(p, end, &f->v) ? 1 : -1;
	case 1:
	case 5: {
		size_t n = f->type == 1 ? 8 : 4;

		if ((size_t)(end - *p) < n)
			return -1;
		*p += n;
		return 1;
	}
	case 2:
		if (!pb_read_varint(p, end, &f->v) || f->v > (uint64_t)(end - *p))
			return -1;
		f->data = *p;
		f->len = f->v;
		*p += f->len;
		return 1;
	default:
		return -1;
	}
}

/* ---- calls ---- */

static void call_on(struct ef_h2 *h, const char *path, GByteArray *req, GBytes **resp)
{
	struct ef_grpc_status st = { 0 };
	GBytes *r = NULL;
	int rc = grpc_unary(h, path, req->data, req->len, CALL_TIMEOUT_MS, &r, &st);

	if (rc < 0)
		die("%s: %s (grpc status %d%s%s)", path, g_strerror(-rc), st.code,
		    st.message ? ": " : "", st.message ? st.message : "");
	grpc_status_clear(&st);
	if (resp)
		*resp = r;
	else
		g_bytes_unref(r);
}

static void call(const char *path, GByteArray *req, GBytes **resp)
{
	call_on(conn, path, req, resp);
}

static void put(const void *key, size_t klen, const void *val, size_t vlen)
{
	g_autoptr(GByteArray) req = g_byte_array_sized_new(klen + vlen + 16);

	pb_bytes(req, 1, key, klen);
	pb_bytes(req, 2, val, vlen);
	call("/etcdserverpb.KV/Put", req, NULL);
}

/* etcd's prefix range end: the last byte below 0xff incremented. */
static GByteArray *prefix_end(const char *p)
{
	GByteArray *e = g_byte_array_new();
	size_t n = strlen(p);

	g_byte_array_append(e, (const guint8 *)p, n);
	while (e->len && e->data[e->len - 1] == 0xff)
		g_byte_array_set_size(e, e->len - 1);
	if (e->len)
		e->data[e->len - 1]++;
	else
		g_byte_array_append(e, (const guint8 *)"", 1);
	return e;
}

/*
 * One keys-only Range over [start, end), of at most limit keys (0: no limit,
 * the whole range in one answer). Counts the keys into *n, copies the last
 * key into last, sets *more. The keys themselves are walked (KeyValue.key
 * located) so the baseline pays the decode a lister must.
 */
static void range_page(const GByteArray *start, const GByteArray *end, long limit, bool values,
		       GByteArray *last, size_t *n, bool *more)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	g_autoptr(GBytes) resp = NULL;
	const uint8_t *p, *e;
	struct pb_field f;
	gsize len;
	int r;

	pb_bytes(req, 1, start->data, start->len);
	pb_bytes(req, 2, end->data, end->len);
	if (limit > 0)
		pb_uint(req, 3, (uint64_t)limit);
	if (!values)
		pb_uint(req, 8, 1);
	call("/etcdserverpb.KV/Range", req, &resp);
	p = g_bytes_get_data(resp, &len);
	e = p + len;
	*more = false;
	while ((r = pb_next(&p, e, &f)) == 1) {
		if (f.num == 3 && f.type == 0) {
			*more = f.v != 0;
		} else if (f.num == 2 && f.type == 2) {
			const uint8_t *kp = f.data, *ke = f.data + f.len;
			struct pb_field kf;

			while ((r = pb_next(&kp, ke, &kf)) == 1)
				if (kf.num == 1 && kf.type == 2) {
					g_byte_array_set_size(last, 0);
					g_byte_array_append(last, kf.data, kf.len);
				}
			if (r < 0)
				die("malformed KeyValue in RangeResponse");
			(*n)++;
		}
	}
	if (r < 0)
		die("malformed RangeResponse");
}

/* ---- commands ---- */

/* put-seq PREFIX N: prints the mean microseconds per Put. */
static int cmd_put_seq(const char *prefix, long n)
{
	char key[512], val[VALUE_LEN];
	double t0;

	memset(val, 'v', sizeof(val));
	/* One Put first so the connection and etcd's first-write path are warm,
	 * as the mount's are by the time it is measured. */
	snprintf(key, sizeof(key), "%swarm", prefix);
	put(key, strlen(key), val, sizeof(val));
	t0 = now_s();
	for (long i = 0; i < n; i++) {
		int kl = snprintf(key, sizeof(key), "%sf%06ld", prefix, i);

		put(key, kl, val, sizeof(val));
	}
	printf("%.2f\n", (now_s() - t0) * 1e6 / n);
	return 0;
}

struct par_job {
	const char *prefix;
	unsigned tid;
	long first, count;          /* key indices [first, first + count) */
	long per_dir;               /* fill: keys per subdirectory, 0: flat */
	size_t vlen;
	GMutex *lock;               /* start gate */
	GCond *cond;
	bool *go;                   /* protected by lock */
};

static void job_key(const struct par_job *j, long i, char *key, size_t size, int *kl)
{
	if (j->per_dir > 0)
		*kl = snprintf(key, size, "%sd%04ld/f%06ld", j->prefix, i / j->per_dir, i);
	else if (j->per_dir == 0)
		*kl = snprintf(key, size, "%sf%06ld", j->prefix, i);
	else
		*kl = snprintf(key, size, "%st%02u-%06ld", j->prefix, j->tid, i);
}

static gpointer par_thread(gpointer arg)
{
	struct par_job *j = arg;
	g_autofree char *val = g_malloc(j->vlen);
	char key[512];
	int kl;

	memset(val, 'p', j->vlen);
	g_mutex_lock(j->lock);
	while (!*j->go)
		g_cond_wait(j->cond, j->lock);
	g_mutex_unlock(j->lock);
	for (long i = j->first; i < j->first + j->count; i++) {
		job_key(j, i, key, sizeof(key), &kl);
		put(key, kl, val, j->vlen);
	}
	return NULL;
}

/* Runs n Puts split over nthreads threads; returns the seconds from the
 * start gate opening to the last Put's answer. */
static double run_parallel(const char *prefix, unsigned nthreads, long n, long per_dir,
			   size_t vlen)
{
	g_autofree struct par_job *jobs = g_new0(struct par_job, nthreads);
	g_autofree GThread **th = g_new0(GThread *, nthreads);
	GMutex lock;
	GCond cond;
	bool go = false;
	double t0;
	long next = 0;

	g_mutex_init(&lock);
	g_cond_init(&cond);
	for (unsigned t = 0; t < nthreads; t++) {
		long share = n / nthreads + (t < n % nthreads ? 1 : 0);

		jobs[t] = (struct par_job){ .prefix = prefix, .tid = t, .first = next,
					    .count = share, .per_dir = per_dir, .vlen = vlen,
					    .lock = &lock, .cond = &cond, .go = &go };
		next += share;
		th[t] = g_thread_new("put", par_thread, &jobs[t]);
	}
	/* Threads are created before the clock starts, so the figure is Puts,
	 * not thread start-up. */
	g_usleep(20000);
	g_mutex_lock(&lock);
	go = true;
	t0 = now_s();
	g_cond_broadcast(&cond);
	g_mutex_unlock(&lock);
	for (unsigned t = 0; t < nthreads; t++)
		g_thread_join(th[t]);
	t0 = now_s() - t0;
	g_mutex_clear(&lock);
	g_cond_clear(&cond);
	return t0;
}

/* put-par PREFIX THREADS N: prints Puts per second. */
static int cmd_put_par(const char *prefix, long nthreads, long n)
{
	char key[512];
	char val[VALUE_LEN];

	if (nthreads < 1 || nthreads > 1024)
		die("bad thread count");
	memset(val, 'v', sizeof(val));
	snprintf(key, sizeof(key), "%swarm", prefix);
	put(key, strlen(key), val, sizeof(val));
	printf("%.1f\n", n / run_parallel(prefix, nthreads, n, -1, VALUE_LEN));
	return 0;
}

/* fill PREFIX N PER_DIR VLEN: prints the seconds taken. */
static int cmd_fill(const char *prefix, long n, long per_dir, long vlen)
{
	if (vlen > 1 << 20)
		die("bad fill arguments");
	printf("%.3f\n", run_parallel(prefix, FILL_THREADS, n, per_dir, vlen));
	return 0;
}

/* range PREFIX PAGE: prints "milliseconds keys" for the whole listing, in
 * Ranges of PAGE keys, or in one unpaged Range when PAGE is 0. */
static int cmd_range(const char *prefix, long page, bool values)
{
	g_autoptr(GByteArray) start = g_byte_array_new();
	g_autoptr(GByteArray) end = prefix_end(prefix);
	g_autoptr(GByteArray) last = g_byte_array_new();
	size_t n = 0;
	bool more = true;
	double t0;

	g_byte_array_append(start, (const guint8 *)prefix, strlen(prefix));
	t0 = now_s();
	while (more) {
		size_t before = n;

		range_page(start, end, page, values, last, &n, &more);
		if (n == before)
			break;
		/* Continue just after the last key, as the daemon pages. */
		g_byte_array_set_size(start, 0);
		g_byte_array_append(start, last->data, last->len);
		g_byte_array_append(start, (const guint8 *)"", 1);
	}
	printf("%.3f %zu\n", (now_s() - t0) * 1e3, n);
	return 0;
}

/* The first field num (wire type t) of message msg, or false. */
static bool pb_find(GBytes *msg, unsigned num, unsigned t, struct pb_field *f)
{
	gsize len;
	const uint8_t *p = g_bytes_get_data(msg, &len), *e = p + len;

	while (pb_next(&p, e, f) == 1)
		if (f->num == num && f->type == t)
			return true;
	return false;
}

/* A new lease on h, of the TTL `etcdctl lock` asks for. */
static uint64_t lease_grant(struct ef_h2 *h)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	g_autoptr(GBytes) resp = NULL;
	struct pb_field f;

	pb_uint(req, 1, 60);
	call_on(h, "/etcdserverpb.Lease/LeaseGrant", req, &resp);
	if (!pb_find(resp, 2, 0, &f) || !f.v)
		die("LeaseGrant: no lease ID");
	return f.v;
}

/* etcd's Lock of name on lease, over h: returns once it is granted, with
 * the owner key etcd made (new). */
static GBytes *lock_on(struct ef_h2 *h, const char *name, uint64_t lease)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	g_autoptr(GBytes) resp = NULL;
	struct pb_field f;

	pb_bytes(req, 1, name, strlen(name));
	pb_uint(req, 2, lease);
	call_on(h, "/v3lockpb.Lock/Lock", req, &resp);
	if (!pb_find(resp, 2, 2, &f))
		die("LockResponse: no key");
	return g_bytes_new(f.data, f.len);
}

static void unlock_on(struct ef_h2 *h, GBytes *key)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	gsize len;
	const void *k = g_bytes_get_data(key, &len);

	pb_bytes(req, 1, k, len);
	call_on(h, "/v3lockpb.Lock/Unlock", req, NULL);
}

/* etcd's lock service as `etcdctl lock` uses it: a lease, then n
 * uncontended Lock + Unlock pairs on name. Prints microseconds per pair. */
static int cmd_lock_seq(const char *name, long n)
{
	uint64_t lease = lease_grant(conn);
	double t0 = 0;

	/* One pair first, as the mount's first lock is not measured either. */
	for (long i = -1; i < n; i++) {
		g_autoptr(GBytes) key = NULL;

		if (i == 0)
			t0 = now_s();
		key = lock_on(conn, name, lease);
		unlock_on(conn, key);
	}
	printf("%.2f\n", (now_s() - t0) * 1e6 / n);
	return 0;
}

/* get KEY: writes the value, raw, to stdout; exit 1 if absent. */
static int cmd_get(const char *key)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	g_autoptr(GBytes) resp = NULL;
	const uint8_t *p, *e;
	struct pb_field f;
	gsize len;
	int r;

	pb_bytes(req, 1, key, strlen(key));
	call("/etcdserverpb.KV/Range", req, &resp);
	p = g_bytes_get_data(resp, &len);
	e = p + len;
	while ((r = pb_next(&p, e, &f)) == 1) {
		const uint8_t *kp, *ke;
		struct pb_field kf;

		if (f.num != 2 || f.type != 2)
			continue;
		kp = f.data;
		ke = f.data + f.len;
		while (pb_next(&kp, ke, &kf) == 1)
			if (kf.num == 5 && kf.type == 2)
				return fwrite(kf.data, 1, kf.len, stdout) == kf.len ? 0 : 1;
		return 0;   /* present with an empty value */
	}
	if (r < 0)
		die("malformed RangeResponse");
	return 1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* One fresh read of path: 1 if it holds exactly want, 0 if not (yet),
 * -errno when the mount itself is failing. */
static int read_matches(const char *path, const char *want, size_t wlen)
{
	char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	n = read(fd, buf, sizeof(buf));
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return (int)n;
	return (size_t)n == wlen && memcmp(buf, want, wlen) == 0;
}

#define VISIBLE_GIVE_UP_S 3.0
#define VISIBLE_MAX_MISSES 5

/*
 * visible KEY PATH N: N times, Put a new value and poll PATH (open, read,
 * close: a fresh read each time) until it shows that value. Prints
 * "p50_ms p99_ms max_ms misses": latency from the Put's answer to the first
 * read that saw the value. A value not seen within VISIBLE_GIVE_UP_S counts
 * as a miss at that latency; after VISIBLE_MAX_MISSES misses the run stops
 * early rather than spend minutes proving a broken cache.
 */
static int cmd_visible(const char *key, const char *path, long n)
{
	g_autofree double *lat = g_new(double, n);
	const struct timespec pause = { 0, 20000 };
	char val[64];
	long done = 0, misses = 0;

	/* Poll every ~20 us: fine enough against a 2 ms target, without a
	 * spinning poller taking a whole core from etcd and the daemon. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	snprintf(val, sizeof(val), "visible update %010d\n", -1);
	put(key, strlen(key), val, strlen(val));
	for (int tries = 0; read_matches(path, val, strlen(val)) != 1; tries++) {
		if (tries > 500)
			die("%s never showed the initial value", path);
		g_usleep(10000);
	}
	for (long i = 0; i < n; i++) {
		double t0, t;
		int r;

		/* Same length every time: a cache that only notices size changes
		 * must not pass. */
		snprintf(val, sizeof(val), "visible update %010ld\n", i);
		put(key, strlen(key), val, strlen(val));
		t0 = now_s();
		while ((r = read_matches(path, val, strlen(val))) == 0) {
			if (now_s() - t0 > VISIBLE_GIVE_UP_S)
				break;
			nanosleep(&pause, NULL);
		}
		if (r < 0)
			die("%s: %s", path, g_strerror(-r));
		t = now_s() - t0;
		lat[done++] = t;
		if (r == 0 && ++misses >= VISIBLE_MAX_MISSES)
			break;
	}
	qsort(lat, done, sizeof(*lat), cmp_double);
	printf("%.3f %.3f %.3f %ld\n", lat[(done - 1) / 2] * 1e3,
	       lat[(size_t)((done - 1) * 0.99 + 0.5)] * 1e3, lat[done - 1] * 1e3,
	       misses + (n - done));
	return 0;
}

/* ---- put -> a line on a stream ---- */

#define STREAM_MARK "stream-latency "
#define STREAM_GIVE_UP_S 5.0

/* One stream read by a thread of its own: a %watch file, or a FIFO that
 * etcdctl watch writes to. */
struct reader {
	int fd;
	long n;
	double *seen;               /* per put: when its line arrived, or 0 */
	GMutex *lock;
	GCond *cond;
};

/* Finds every mark in p[0, len) and stamps its put. */
static void stamp_marks(struct reader *r, const char *p, size_t len, double t)
{
	size_t ml = strlen(STREAM_MARK);

	for (const char *q = p; (q = g_strstr_len(q, (gssize)(p + len - q), STREAM_MARK));) {
		long i;

		q += ml;
		if (p + len - q < 10)
			break;
		i = strtol(q, NULL, 10);
		g_mutex_lock(r->lock);
		if (i >= 0 && i < r->n && r->seen[i] == 0) {
			r->seen[i] = t;
			g_cond_broadcast(r->cond);
		}
		g_mutex_unlock(r->lock);
	}
}

static gpointer reader_main(gpointer p)
{
	struct reader *r = p;
	char buf[65536 + 64];
	size_t carry = 0;

	for (;;) {
		ssize_t got = read(r->fd, buf + carry, sizeof(buf) - 64 - carry);
		double t = now_s();

		if (got <= 0)
			return NULL;
		size_t total = carry + (size_t)got;

		stamp_marks(r, buf, total, t);
		/* A mark cut in two by the read is found whole next time (one
		 * found twice is stamped once). */
		carry = MIN(total, (size_t)40);
		memmove(buf, buf + total - carry, carry);
	}
}

static bool all_seen(struct reader *rs, int nr, long i)
{
	for (int k = 0; k < nr; k++)
		if (rs[k].seen[i] == 0)
			return false;
	return true;
}

/*
 * stream KEY N FILE...: N Puts of KEY, one at a time, each after every
 * FILE has shown the line of the one before. Prints, per FILE, "p50_ms
 * p99_ms max_ms misses": the time from the Put's answer to the arrival of
 * its line (negative when the line came first; a line not seen within
 * STREAM_GIVE_UP_S is a miss).
 */
static int cmd_stream(const char *key, long n, char **files, int nr)
{
	g_autofree struct reader *rs = g_new0(struct reader, nr);
	g_autofree double *sent = g_new0(double, n);
	g_autofree double *lat = g_new(double, n);
	GMutex lock;
	GCond cond;

	g_mutex_init(&lock);
	g_cond_init(&cond);
	for (int k = 0; k < nr; k++) {
		rs[k] = (struct reader){ .n = n, .seen = g_new0(double, n), .lock = &lock,
					 .cond = &cond };
		rs[k].fd = open(files[k], O_RDONLY);
		if (rs[k].fd < 0)
			die("%s: %s", files[k], g_strerror(errno));
		g_thread_unref(g_thread_new("reader", reader_main, &rs[k]));
	}
	for (long i = 0; i < n; i++) {
		char val[64];
		gint64 deadline;

		snprintf(val, sizeof(val), STREAM_MARK "%010ld", i);
		put(key, strlen(key), val, strlen(val));
		g_mutex_lock(&lock);
		sent[i] = now_s();
		deadline = g_get_monotonic_time() + (gint64)(STREAM_GIVE_UP_S * G_USEC_PER_SEC);
		while (!all_seen(rs, nr, i))
			if (!g_cond_wait_until(&cond, &lock, deadline))
				break;
		g_mutex_unlock(&lock);
	}
	g_mutex_lock(&lock);
	for (int k = 0; k < nr; k++) {
		long misses = 0;

		for (long i = 0; i < n; i++) {
			misses += rs[k].seen[i] == 0;
			lat[i] = rs[k].seen[i] ? rs[k].seen[i] - sent[i] : STREAM_GIVE_UP_S;
		}
		qsort(lat, n, sizeof(*lat), cmp_double);
		printf("%.3f %.3f %.3f %ld\n", lat[(n - 1) / 2] * 1e3,
		       lat[(size_t)((n - 1) * 0.99 + 0.5)] * 1e3, lat[n - 1] * 1e3, misses);
	}
	g_mutex_unlock(&lock);
	/* The readers block in read: the process ends them. */
	return 0;
}

/* ---- lock handover ---- */

#define WAITING_GIVE_UP_S 10.0

/* The keys under prefix now, counted by etcd (a count-only Range on h). */
static int64_t count_prefix(struct ef_h2 *h, const char *prefix)
{
	g_autoptr(GByteArray) req = g_byte_array_new();
	g_autoptr(GByteArray) end = prefix_end(prefix);
	g_autoptr(GBytes) resp = NULL;
	struct pb_field f;

	pb_bytes(req, 1, prefix, strlen(prefix));
	pb_bytes(req, 2, end->data, end->len);
	pb_uint(req, 9, 1);
	call_on(h, "/etcdserverpb.KV/Range", req, &resp);
	return pb_find(resp, 4, 0, &f) ? (int64_t)f.v : 0;
}

/* One lock handed back and forth between two clients, each on a
 * connection and a lease of its own. */
struct handover {
	const char *name;
	char *waiting;              /* name + "/": where etcd puts the keys */
	long n;                     /* handovers */
	long park_ms;               /* how long the waiter has waited in etcd when
				     * the holder lets go */
	double *t_unlock, *t_grant; /* per handover: Unlock sent, Lock answered */
	GMutex lock;
	GCond cond;
	long announced;             /* the last handover whose waiter is calling
				     * Lock; protected by lock */
	long granted;               /* the last handover whose waiter has the
				     * lock; protected by lock */
};

struct ho_side {
	struct handover *ho;
	int id;                     /* side 0 lets go at the even handovers */
	struct ef_h2 *h;
	uint64_t lease;
	GBytes *key;                /* the owner key while this side holds */
};

/* Sets *at to k and wakes the other side. */
static void ho_say(struct handover *ho, long *at, long k)
{
	g_mutex_lock(&ho->lock);
	*at = k;
	g_cond_broadcast(&ho->cond);
	g_mutex_unlock(&ho->lock);
}

/* Waits until *at has reached k. */
static void ho_hear(struct handover *ho, const long *at, long k)
{
	g_mutex_lock(&ho->lock);
	while (*at < k)
		g_cond_wait(&ho->cond, &ho->lock);
	g_mutex_unlock(&ho->lock);
}

static void ho_wait_waiter(struct ho_side *s, long k)
{
	struct handover *ho = s->ho;
	double t0 = now_s();
	int64_t keys;

	ho_hear(ho, &ho->announced, k);
	/* About to call Lock is not waiting yet: the Lock is parked in etcd
	 * once its key is under the name beside ours. */
	while ((keys = count_prefix(s->h, ho->waiting)) < 2) {
		if (now_s() - t0 > WAITING_GIVE_UP_S)
			die("handover %ld: the waiter's Lock made no key in %.0f s", k,
			    WAITING_GIVE_UP_S);
		g_usleep(200);
	}
	if (keys > 2)
		die("handover %ld: %" G_GINT64_FORMAT " keys under %s, not 2", k, keys, ho->waiting);
}

static gpointer ho_thread(gpointer arg)
{
	struct ho_side *s = arg;
	struct handover *ho = s->ho;

	for (long k = 0; k < ho->n; k++) {
		if (k % 2 == s->id) {
			ho_wait_waiter(s, k);
			g_usleep(ho->park_ms * 1000);
			ho->t_unlock[k] = now_s();
			unlock_on(s->h, s->key);
			g_clear_pointer(&s->key, g_bytes_unref);
			/* As fsbench handover: the next Lock only once the
			 * waiter has had this one. */
			ho_hear(ho, &ho->granted, k);
		} else {
			ho_say(ho, &ho->announced, k);
			s->key = lock_on(s->h, ho->name, s->lease);
			ho->t_grant[k] = now_s();
			ho_say(ho, &ho->granted, k);
		}
	}
	/* The last one to get the lock lets go, so no key is left. */
	if (s->key)
		unlock_on(s->h, s->key);
	g_clear_pointer(&s->key, g_bytes_unref);
	return NULL;
}

/* The p-th quantile of the n values at v (sorted in place). */
static double quantile(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(size_t)((n - 1) * p + 0.5)];
}

/*
 * lock-handover NAME N PARK_MS: etcd's lock handed over 2 N times between
 * two clients (two connections, two leases, one thread each), alternately
 * one way and the other. A waiter calls Lock once the handover before has
 * completed. Before each Unlock its Lock is waiting in etcd (its key is
 * there) and has been for PARK_MS more, as fsbench handover waits. Prints one line per handover, in order: the microseconds
 * from sending the holder's Unlock to the waiter's Lock answer (two more
 * handovers come first and are not printed, as fsbench's are not).
 */
static int cmd_lock_handover(const char *name, long n, long park_ms)
{
	struct handover ho = { .name = name, .n = 2 * n + 2, .park_ms = park_ms, .announced = -1,
			       .granted = -1 };
	struct ho_side sides[2] = { { .ho = &ho, .id = 0, .h = conn },
				    { .ho = &ho, .id = 1, .h = connect_to(endpoint) } };
	g_autofree double *there = g_new(double, n);
	g_autofree double *back = g_new(double, n);
	GThread *th[2];

	ho.waiting = g_strdup_printf("%s/", name);
	ho.t_unlock = g_new0(double, ho.n);
	ho.t_grant = g_new0(double, ho.n);
	g_mutex_init(&ho.lock);
	g_cond_init(&ho.cond);
	if (count_prefix(conn, ho.waiting) != 0)
		die("keys under %s before the first lock", ho.waiting);
	for (int i = 0; i < 2; i++)
		sides[i].lease = lease_grant(sides[i].h);
	/* Side 0 holds first, untimed. */
	sides[0].key = lock_on(conn, name, sides[0].lease);
	for (int i = 0; i < 2; i++)
		th[i] = g_thread_new("handover", ho_thread, &sides[i]);
	for (int i = 0; i < 2; i++)
		g_thread_join(th[i]);
	for (long k = 2; k < ho.n; k++) {
		double t = ho.t_grant[k] - ho.t_unlock[k];

		if (t <= 0)
			die("handover %ld: granted before the holder let go", k);
		printf("%.1f\n", t * 1e6);
		(k % 2 ? back : there)[k / 2 - 1] = t * 1e6;
	}
	fprintf(stderr, "rawclient lock-handover: 0->1 p50 %.1f p99 %.1f us, 1->0 p50 %.1f p99 %.1f us\n",
		quantile(there, n, 0.5), quantile(there, n, 0.99), quantile(back, n, 0.5),
		quantile(back, n, 0.99));
	h2_free(sides[1].h);
	g_mutex_clear(&ho.lock);
	g_cond_clear(&ho.cond);
	g_free(ho.waiting);
	g_free(ho.t_unlock);
	g_free(ho.t_grant);
	return 0;
}

static long arg_long(const char *s, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < min)
		die("not a count >= %ld: '%s'", min, s);
	return v;
}

static void usage(void)
{
	fputs("usage: rawclient ENDPOINT put-seq PREFIX N\n"
	      "       rawclient ENDPOINT put-par PREFIX THREADS N\n"
	      "       rawclient ENDPOINT range PREFIX [PAGE]\n"
	      "       rawclient ENDPOINT range-values PREFIX [PAGE]\n"
	      "       rawclient ENDPOINT fill PREFIX N PER_DIR VLEN\n"
	      "       rawclient ENDPOINT get KEY\n"
	      "       rawclient ENDPOINT lock-seq NAME N\n"
	      "       rawclient ENDPOINT lock-handover NAME N PARK_MS\n"
	      "       rawclient ENDPOINT visible KEY PATH N\n"
	      "       rawclient ENDPOINT stream KEY N FILE...\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *cmd;
	int rc;

	if (argc < 4)
		usage();
	endpoint = argv[1];
	cmd = argv[2];
	conn = connect_to(endpoint);
	if (strcmp(cmd, "put-seq") == 0 && argc == 5)
		rc = cmd_put_seq(argv[3], arg_long(argv[4], 1));
	else if (strcmp(cmd, "put-par") == 0 && argc == 6)
		rc = cmd_put_par(argv[3], arg_long(argv[4], 1), arg_long(argv[5], 1));
	else if (strcmp(cmd, "range") == 0 && (argc == 4 || argc == 5))
		rc = cmd_range(argv[3], argc == 5 ? arg_long(argv[4], 0) : RANGE_PAGE, false);
	else if (strcmp(cmd, "range-values") == 0 && (argc == 4 || argc == 5))
		rc = cmd_range(argv[3], argc == 5 ? arg_long(argv[4], 0) : RANGE_PAGE, true);
	else if (strcmp(cmd, "fill") == 0 && argc == 7)
		rc = cmd_fill(argv[3], arg_long(argv[4], 1), arg_long(argv[5], 0),
			      arg_long(argv[6], 0));
	else if (strcmp(cmd, "lock-seq") == 0 && argc == 5)
		rc = cmd_lock_seq(argv[3], arg_long(argv[4], 1));
	else if (strcmp(cmd, "lock-handover") == 0 && argc == 6)
		rc = cmd_lock_handover(argv[3], arg_long(argv[4], 1), arg_long(argv[5], 0));
	else if (strcmp(cmd, "get") == 0 && argc == 4)
		rc = cmd_get(argv[3]);
	else if (strcmp(cmd, "visible") == 0 && argc == 6)
		rc = cmd_visible(argv[3], argv[4], arg_long(argv[5], 1));
	else if (strcmp(cmd, "stream") == 0 && argc >= 6)
		rc = cmd_stream(argv[3], arg_long(argv[4], 1), argv + 5, argc - 5);
	else
		usage();
	fflush(stdout);
	h2_free(conn);
	return rc;
}
