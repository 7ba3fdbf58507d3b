/*
 * keymap — the bijection between etcd keys and paths. Pure: no I/O, no
 * locks, no globals.
 *
 * A directory is a key prefix D that ends in '/' (or the empty root prefix).
 * The entry named N in directory D is:
 *   - N == KEYMAP_SELF_NAME: the key D without its trailing '/', the value of
 *     a key that also has children (key "/a" when "/a/b" exists);
 *   - otherwise the component c = decode(N): file key D+c, directory D+c+"/".
 * Encoding of a component c (bytes, never containing '/') into a name:
 *   - c empty                -> "%"      (key "/a//b", trailing '/' in "/a/")
 *   - c == "." / ".."        -> "%2E" / "%2E%2E"
 *   - otherwise each '%' -> "%25" and each NUL -> "%00", other bytes as is.
 * Only these escapes are canonical: any other name containing '%' (like
 * "%41" or "%zz") decodes to -EINVAL, so every visible name maps to exactly
 * one key and back. Components whose name would exceed NAME_MAX are hidden.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

#define KEYMAP_SELF_NAME "%self"
#define KEYMAP_EMPTY_NAME "%"

/* Normalizes the --prefix option: "" stays "", anything else gets a trailing
 * '/' if it lacks one. Returns a new string. */
char *keymap_root_prefix(const char *opt);

/* Encodes component c (len bytes, no '/') into a new NUL-terminated name, or
 * returns NULL if the name would be longer than NAME_MAX. */
char *keymap_name_from_component(const char *c, size_t len);

/* Decodes a file name. Returns 0 and a new buffer *out (NUL-terminated for
 * convenience, *out_len excludes the NUL), or -EINVAL for a name that is not
 * a canonical encoding (KEYMAP_SELF_NAME included: callers test it first),
 * -ENAMETOOLONG above NAME_MAX. */
int keymap_component_from_name(const char *name, char **out, size_t *out_len);

/* Returns a new GBytes: dir + component [+ '/' when as_dir]. */
GBytes *keymap_child_key(GBytes *dir, const char *c, size_t clen, bool as_dir);

/* Length of dir's self key (dir minus its trailing '/'), or 0 when dir has
 * none (the empty root prefix, or the root prefix "/"). */
size_t keymap_self_len(const char *dir, size_t dlen);

/* etcd's prefix range end: p with its last byte below 0xff incremented and
 * everything after dropped. All-0xff or empty p -> the single byte "\0",
 * which etcd reads as "to the end of the keyspace". Returns a new GBytes. */
GBytes *keymap_prefix_end(const char *p, size_t len);

/* Splits a key found under dir D (key starts with D). rest = key[len(D):].
 * Returns KEYMAP_FILE if rest has no '/', with *comp_len = len(rest);
 * KEYMAP_DIR if it has, with *comp_len = bytes before the first '/'.
 * The component starts at key + dlen either way. */
enum keymap_kind { KEYMAP_FILE, KEYMAP_DIR };
enum keymap_kind keymap_split(const char *key, size_t klen, size_t dlen, size_t *comp_len);

/*
 * The name of file key's lock (etcd's lock service, `etcdctl lock NAME`):
 * prefix, then the key with each '%' as "%25" and each control byte (below
 * 0x20, and 0x7f) as "%XX", then a final '%'. Pure and one-to-one. etcd
 * makes a lock's owner keys NAME/<lease>: since '%' never comes before '/'
 * inside an escaped key, no lock name followed by '/' begins another's, so
 * one file's lock never waits for another file's owners; and the name
 * prints whole, to be passed on a command line. Returns a new GBytes.
 */
GBytes *keymap_lock_name(const char *prefix, size_t plen, const char *key, size_t klen);
