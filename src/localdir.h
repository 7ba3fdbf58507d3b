/*
 * localdir — directories made by mkdir that no key backs yet.
 *
 * etcd has no directories: mkdir records the prefix here, in this mount's
 * memory only, until a key is written under it (then the keys make it
 * visible everywhere) or it is removed. Prefixes end in '/'.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

void localdir_init(void);
void localdir_fini(void);

void localdir_add(GBytes *prefix);
bool localdir_remove(GBytes *prefix);

/* True if prefix is a local directory or one lies below it: either way
 * the directory exists for this mount. */
bool localdir_holds(GBytes *prefix);

/* True if a local directory lies strictly below prefix. */
bool localdir_has_below(GBytes *prefix);

/* The directories directly below prefix that local directories make exist
 * (themselves, or on the way to one deeper down): a new array of new GBytes
 * prefixes, each once. */
GPtrArray *localdir_children(GBytes *prefix);

/* A key was written: its ancestors are now backed by keys. */
void localdir_backed(GBytes *key);

/* A directory moved: every local prefix under from now lies under to. */
void localdir_rename(GBytes *from, GBytes *to);
