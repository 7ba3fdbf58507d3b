/*
 * watchfmt — the lines of a %watch stream: one JSON object per line (see
 * etcdfs(1), WATCH STREAMS).
 *
 * Keys and values are bytes: one that is valid UTF-8 with no NUL is a JSON
 * string (field "key", "value"), any other the base64 of its bytes (field
 * "key_base64", "value_base64"), so every line is valid JSON and loses
 * nothing. Pure: no I/O, locks or globals.
 */
#pragma once

#include <stdint.h>
#include <glib.h>

struct ef_watch_event;

/* The first line: every event after it has mod_revision > rev. */
GString *watchfmt_start(int64_t rev);

/* One event's line: PUT with the key's value and metadata, or DELETE. */
GString *watchfmt_event(const struct ef_watch_event *ev);

/* The last line of a stream that lost events: error is a word
 * ("compacted", "overflow", "refused"); compact_revision is shown when
 * > 0, message when not NULL. */
GString *watchfmt_error(const char *error, int64_t compact_revision, const char *message);
