/*
 * cache — the daemon's copy of key-values, bounded in memory.
 *
 * Each file inode may hold its key's last known key-value (inode->kv). This
 * module is the only writer of that field: it keeps the newest revision when
 * reads, events and our own Puts race, and keeps the total size of cached
 * values under a cap by dropping the least recently used values (their
 * metadata stays, so stat needs no round trip).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct ef_inode;
struct ef_kv;

/* cap: bytes of values to keep (0: keep none). */
void cache_init(size_t cap);
void cache_fini(void);

/* The cap cache_init was given. */
size_t cache_capacity(void);

/* Stores kv in in (takes ownership) unless in already has a newer
 * revision. ok: the watch keeps kv current from now on (no event raced
 * with the read that produced it). Call with in->lock NOT held. */
void cache_store(struct ef_inode *in, struct ef_kv *kv, bool ok);

/* Same, with in->lock held (the LRU is updated after the caller unlocks
 * through cache_touch). */
void cache_store_locked(struct ef_inode *in, struct ef_kv *kv, bool ok);

/* Stores kv in in whatever in holds (takes ownership): in now stands for
 * another key (a rename), and what it held, however new, was about the
 * old one. Call with in->lock NOT held. */
void cache_replace(struct ef_inode *in, struct ef_kv *kv, bool ok);

/* The key is gone, or may have changed unseen: forget in's kv. */
void cache_drop(struct ef_inode *in);
void cache_drop_locked(struct ef_inode *in);

/* in's value was used or stored: mark it recently used and evict others
 * beyond the cap. Call with in->lock NOT held. */
void cache_touch(struct ef_inode *in);
