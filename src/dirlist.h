/*
 * dirlist — turns the sorted keys under a directory prefix into directory
 * entries, one page at a time. Pure: the caller fetches pages from etcd.
 *
 * Paging: dirlist_range() says which key range to fetch next (a keys-only
 * Range with a limit); dirlist_feed() consumes the page. A subdirectory is
 * emitted once and its whole subtree is skipped by restarting the next range
 * at the subtree's prefix end, so cost follows the number of entries, not
 * the number of keys below them.
 *
 * A key that is both a file and a directory ("/d/b" and "/d/b/c") is listed
 * once, as a directory (its value is the directory's KEYMAP_SELF_NAME entry).
 * Because keys like "/d/b!" sort between "/d/b" and "/d/b/", a file entry is
 * held back until the keys seen prove no "b/" subtree exists.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

struct ef_dirlist;

struct ef_dirent {
	char *name;   /* encoded file name (keymap), NUL-terminated */
	bool is_dir;
	GBytes *key;  /* file: its key; directory: its prefix (ends in '/') */
};

/* New listing of directory prefix dir (borrowed: copied). */
struct ef_dirlist *dirlist_new(const char *dir, size_t dlen);
void dirlist_free(struct ef_dirlist *l);

/* The next range to fetch, [start, end): returns false once the listing is
 * complete. Pointers stay valid until the next dirlist_feed/free. */
bool dirlist_range(struct ef_dirlist *l, const char **start, size_t *slen,
		   const char **end, size_t *elen);

/* Feeds one page: n keys in ascending order (as etcd returns them), each
 * borrowed for the call, and `more` as etcd's RangeResponse.more. */
void dirlist_feed(struct ef_dirlist *l, const char *const *keys, const size_t *lens,
		  size_t n, bool more);

/* Entries emitted so far (stable indices, appended only). */
size_t dirlist_count(const struct ef_dirlist *l);
const struct ef_dirent *dirlist_get(const struct ef_dirlist *l, size_t i);

/* True when every entry has been emitted. */
bool dirlist_done(const struct ef_dirlist *l);

/*
 * Paging within a byte budget (pure): how many keys to ask for in each page
 * of a listing that carries values, so that a listing costs few pages (etcd
 * counts the whole remaining range on every page) and no response exceeds
 * max_bytes. Values stop being asked for once too few keys would fit.
 */
struct ef_paging {
	bool values;             /* pages carry values */
	int64_t limit;           /* keys to ask for next (0: all the rest) */
	int64_t left;            /* keys etcd counted after the last page */
	size_t max_bytes;        /* of a response */
};

/* The first page: first keys, with values if values. */
void paging_init(struct ef_paging *p, size_t max_bytes, bool values, int64_t first);

/* A page of n keys, bytes long, came back; etcd counted count keys in its
 * range (the page's included). */
void paging_after_page(struct ef_paging *p, size_t n, size_t bytes, int64_t count);

/* The page asked for was refused: it would have been need bytes long.
 * The next one asks for fewer keys, or for none of the values. */
void paging_too_big(struct ef_paging *p, size_t need);
