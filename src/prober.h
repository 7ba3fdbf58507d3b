/*
 * prober — keeps watch over the member the mount talks to.
 *
 * Every 250 ms, or at once when asked, a Maintenance Status call that the
 * member must answer within 500 ms, with a leader. A failure doubts the
 * watch (etcd's doubt hook); an answer is reported to on_answer, after
 * which the watch may trust its stream again. The prober also acts on what
 * it sees: it leaves a member that stays silent or leaderless for another
 * (h2_leave), gives up the calls a member took before losing its leader
 * (h2_abandon_calls), and hands the member list's client URLs to the
 * connection (etcd_sync_endpoints).
 */
#pragma once

struct ef_etcd;

/* Makes the prober's queue: prober_kick may be called from then on. */
void prober_init(void);

/* Starts the prober's thread; on_answer runs on it after each answer. */
void prober_start(struct ef_etcd *etcd, void (*on_answer)(void));

/* Probes now (several calls meanwhile: one probe). */
void prober_kick(void);

/* Stops the thread; on_answer is not called after this returns.
 * prober_kick may still be called, until prober_fini. */
void prober_stop(void);
void prober_fini(void);
