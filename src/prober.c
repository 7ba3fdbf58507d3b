/*
 * prober — keeps watch over the member the mount talks to (see prober.h).
 */
#include "prober.h"

#include <errno.h>
#include <stdint.h>
#include <glib.h>

#include "etcd.h"

/* The member is probed this often, and given this long to answer: a member
 * that froze, or lost its leader, stops the caches within 1 s (a probe
 * period and a probe timeout, and the doubt's own work). */
#define PROBE_EVERY_US (250 * G_TIME_SPAN_MILLISECOND)
#define PROBE_TIMEOUT_MS 500
/* A member is left (for another, h2_leave) after this many probes in a row
 * went unanswered: one could be stuck behind a large response. */
#define MISSES_TO_LEAVE 2
/* ... or when it has had no leader this long: an election takes about one
 * election timeout (1 s by default), and a member cut off from the quorum
 * never gets one. */
#define LEADERLESS_LEAVE_US (1500 * G_TIME_SPAN_MILLISECOND)
/* When the member's leader changed, the calls in flight before the change
 * that are still unanswered this long after it are given up and resolved:
 * a proposal it forwarded to a leader that died is lost, while one the old
 * leader passed on to the new one before stepping down (a leadership
 * transfer) took one more hop, milliseconds, and has been committed by
 * then. */
#define ABANDON_AFTER_US (300 * G_TIME_SPAN_MILLISECOND)
/* The members' client URLs are learned this often, and on each new
 * connection: a member added or replaced becomes usable without remount. */
#define SYNC_EVERY_US (5 * G_USEC_PER_SEC)

enum { KICK = 1, STOP = 2 };

static struct {
	struct ef_etcd *etcd;
	void (*on_answer)(void);
	GThread *thread;
	GAsyncQueue *q;            /* GINT_TO_POINTER(KICK or STOP) */
} p;

/* What the prober knows of the connection it probes. */
struct seen {
	uint64_t gen;              /* the connection */
	uint64_t leader;           /* its member's leader at the last answer */
	int misses;                /* unanswered probes in a row */
	gint64 leaderless;         /* since when it has had no leader (0: it has) */
	gint64 changed;            /* when its leader changed (0: not pending) */
	uint64_t synced_gen;       /* the connection the endpoints were learned on */
	gint64 synced;
};

/* Acts on one probe's outcome: rc and, when answered, the leader. */
static void judge(struct seen *s, int rc, uint64_t leader)
{
	gint64 now = g_get_monotonic_time();

	if (rc == 0 && s->leader && leader != s->leader && !s->changed)
		s->changed = now;
	if (rc == 0)
		s->leader = leader;
	if (s->changed && now - s->changed >= ABANDON_AFTER_US) {
		etcd_conn_abandon_calls(p.etcd, s->gen, s->changed);
		s->changed = 0;
	}
	s->misses = rc == -ETIMEDOUT ? s->misses + 1 : 0;
	if (rc != -EAGAIN) {
		s->leaderless = 0;
	} else if (!s->leaderless) {
		s->leaderless = now;
		/* What the member forwarded to a leader that is gone is lost:
		 * its calls are resolved (writes read back, reads sent again)
		 * instead of waiting out their timeouts. A member with no
		 * leader forwards nothing new. */
		etcd_conn_abandon_calls(p.etcd, s->gen, 0);
	}
	if (s->misses >= MISSES_TO_LEAVE) {
		etcd_conn_leave(p.etcd, s->gen, "no answer to two status requests in a row");
		s->misses = 0;
	} else if (s->leaderless && now - s->leaderless >= LEADERLESS_LEAVE_US) {
		etcd_conn_leave(p.etcd, s->gen, "the member has had no leader for 1.5 s");
		s->leaderless = 0;
	}
}

static gpointer prober_main(gpointer unused)
{
	struct seen s = { 0 };

	for (;;) {
		gpointer cmd = g_async_queue_timeout_pop(p.q, PROBE_EVERY_US);
		uint64_t gen, leader = 0;
		int rc;

		if (GPOINTER_TO_INT(cmd) == STOP)
			return NULL;
		/* Asked twice meanwhile: one probe answers both. */
		while ((cmd = g_async_queue_try_pop(p.q)))
			if (GPOINTER_TO_INT(cmd) == STOP)
				return NULL;
		gen = etcd_conn_generation(p.etcd);
		if (gen != s.gen)
			s = (struct seen){ .gen = gen, .synced_gen = s.synced_gen,
					   .synced = s.synced };
		rc = etcd_probe(p.etcd, PROBE_TIMEOUT_MS, &leader);
		judge(&s, rc, leader);
		if (rc < 0)
			continue;
		p.on_answer();
		if ((s.gen != s.synced_gen || g_get_monotonic_time() - s.synced > SYNC_EVERY_US) &&
		    etcd_sync_endpoints(p.etcd) == 0) {
			s.synced_gen = s.gen;
			s.synced = g_get_monotonic_time();
		}
	}
}

void prober_init(void)
{
	p.q = g_async_queue_new();
}

void prober_start(struct ef_etcd *etcd, void (*on_answer)(void))
{
	p.etcd = etcd;
	p.on_answer = on_answer;
	p.thread = g_thread_new("probe", prober_main, NULL);
}

void prober_kick(void)
{
	g_async_queue_push(p.q, GINT_TO_POINTER(KICK));
}

void prober_stop(void)
{
	if (!p.thread)
		return;
	g_async_queue_push(p.q, GINT_TO_POINTER(STOP));
	g_thread_join(p.thread);
	p.thread = NULL;
}

void prober_fini(void)
{
	g_async_queue_unref(p.q);
	p.q = NULL;
}
