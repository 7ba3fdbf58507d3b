/*
 * clusterfmt — etcdctl 3.4's text for member list, endpoint status and
 * endpoint health (see clusterfmt.h).
 *
 * Each form does what etcdctl's printer does with the same data:
 *  - simple: a table row's cells joined by ", " (health has sentences of
 *    its own, chosen by whether there is an error, as etcdctl chooses);
 *  - table: olekukonko/tablewriter as etcdctl configures it: headers
 *    centred, cells right-aligned, and a cell wider than 30 columns
 *    wrapped at its spaces;
 *  - json: Go's encoding/json of etcd's protobuf structs, whose fields are
 *    all omitempty: zero numbers, empty strings and lists and false are
 *    left out. The response header is always there, as etcd always sends
 *    one.
 * The one departure: etcdctl leaves out a member whose Status call failed
 * (saying so on stderr), while our files show every member. Such an entry
 * is a row of empty cells with the error in the ERRORS column, and in JSON
 * {"Endpoint":...,"Error":...} in place of {"Endpoint":...,"Status":...}.
 *
 * Strings may hold any bytes but NUL: the table measures invalid UTF-8 as
 * Go does (a column per bad byte) and JSON writes it as \ufffd.
 */
#include "clusterfmt.h"

#include <inttypes.h>
#include <math.h>

/* tablewriter's MAX_ROW_WIDTH: a cell wider than this wraps at spaces. */
#define TABLE_WRAP_WIDTH 30
#define TABLE_MAX_COLS 10
/* tablewriter's penalty for a line that overflows its width. */
#define WRAP_OVERFLOW_PENALTY 100000

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static const char *bool_str(bool b)
{
	return b ? "true" : "false";
}

/* v joined by sep; v may be NULL. Returns a new string. */
static char *join_strv(const char *const *v, const char *sep)
{
	GString *o = g_string_new(NULL);

	for (size_t i = 0; v && v[i]; i++) {
		if (i)
			g_string_append(o, sep);
		g_string_append(o, v[i]);
	}
	return g_string_free(o, FALSE);
}

/* ---- text width, as go-runewidth measures it ---- */

/*
 * Decodes the character at p as Go's utf8.DecodeRuneInString does: a byte
 * that does not start a well-formed sequence (overlong, surrogate, beyond
 * U+10FFFF, truncated) is U+FFFD of length 1. Never reads past the NUL,
 * which no continuation byte range admits.
 */
static size_t utf8_next(const char *p, gunichar *cp)
{
	const unsigned char *s = (const unsigned char *)p;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;
	gunichar c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		c = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		c = s[0] & 0x0f;
		lo = s[0] == 0xe0 ? 0xa0 : lo;
		hi = s[0] == 0xed ? 0x9f : hi;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		c = s[0] & 0x07;
		lo = s[0] == 0xf0 ? 0x90 : lo;
		hi = s[0] == 0xf4 ? 0x8f : hi;
	} else {
		goto bad;
	}
	for (size_t i = 1; i < n; i++) {
		if (s[i] < lo || s[i] > hi)
			goto bad;
		c = c << 6 | (s[i] & 0x3f);
		lo = 0x80;
		hi = 0xbf;
	}
	*cp = c;
	return n;
bad:
	*cp = 0xfffd;
	return 1;
}

/*
 * go-runewidth's width (the old release etcdctl 3.4 is built with) outside
 * East Asian locales: nothing for controls, marks and a few invisible
 * characters, two for wide and fullwidth ones, one for everything else,
 * unassigned code points and most format characters included. GLib's
 * Unicode data stands in for runewidth's tables; the characters in the
 * unit tests were measured against etcdctl itself.
 */
static int rune_width(gunichar c)
{
	static const gunichar zero[][2] = {
		{ 0x0000, 0x001f }, { 0x007f, 0x009f }, { 0x00ad, 0x00ad },
		{ 0x0600, 0x0605 }, { 0x070f, 0x070f }, { 0x180b, 0x180e },
		{ 0x200b, 0x200f }, { 0x2028, 0x202e }, { 0x206a, 0x206f },
		{ 0xfeff, 0xfeff }, { 0xfff9, 0xfffb },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(zero); i++)
		if (c >= zero[i][0] && c <= zero[i][1])
			return 0;
	if (g_unichar_ismark(c))
		return 0;
	return g_unichar_iswide(c) ? 2 : 1;
}

/* runewidth.StringWidth: the columns s takes on a terminal. */
static int str_width(const char *s)
{
	int w = 0;
	gunichar c;

	while (*s) {
		s += utf8_next(s, &c);
		w += rune_width(c);
	}
	return w;
}

/*
 * The length of the colour escape at p, or 0. tablewriter leaves matches
 * of \033\[(?:[0-9]{1,3}(?:;[0-9]{1,3})*)?[m|K] out of a cell's width; the
 * '|' in the brackets is literal, as in the Go source.
 */
static size_t ansi_len(const char *p)
{
	const char *q = p + 2;

	if (p[0] != '\033' || p[1] != '[')
		return 0;
	if (g_ascii_isdigit(*q)) {
		for (;;) {
			size_t d = 0;

			while (g_ascii_isdigit(q[d]))
				d++;
			/* Four digits, or ';' with none after: the pattern cannot
			 * match however its groups are split. */
			if (d == 0 || d > 3)
				return 0;
			q += d;
			if (*q != ';')
				break;
			q++;
		}
	}
	if (*q != 'm' && *q != '|' && *q != 'K')
		return 0;
	return (size_t)(q - p) + 1;
}

/* tablewriter's DisplayWidth: the width once colour escapes are removed.
 * They are removed before decoding, as Go's regexp replace does. */
static int display_width(const char *s)
{
	g_autoptr(GString) plain = g_string_new(NULL);

	while (*s) {
		size_t n = ansi_len(s);

		if (n) {
			s += n;
			continue;
		}
		g_string_append_c(plain, *s++);
	}
	return str_width(plain->str);
}

/* ---- tables, as tablewriter draws them ---- */

struct cf_table {
	size_t ncols;
	const char *const *head;
	int width[TABLE_MAX_COLS];
	GPtrArray *rows;	/* of GPtrArray of cells, each a GPtrArray of lines */
};

static void table_init(struct cf_table *t, const char *const *head, size_t ncols)
{
	g_assert(ncols <= TABLE_MAX_COLS);
	t->ncols = ncols;
	t->head = head;
	for (size_t i = 0; i < ncols; i++)
		t->width[i] = MIN(display_width(head[i]), TABLE_WRAP_WIDTH);
	t->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);
}

static void table_clear(struct cf_table *t)
{
	g_ptr_array_unref(t->rows);
}

/* The width of words[i..j) set on one line, a space between each two. */
static int64_t span_width(const int64_t *prefix, size_t i, size_t j)
{
	return prefix[j] - prefix[i] + (int64_t)(j - i - 1);
}

/*
 * Chooses where lines break: brk[i] is the word after the line that starts
 * at word i. Minimal raggedness as tablewriter's WrapWords computes it: a
 * line's cost is the square of its shortfall from lim (plus a penalty when
 * it overflows), ties go to the earlier break, and the last line is free.
 */
static void wrap_breaks(const int64_t *prefix, size_t n, int64_t lim, size_t *brk)
{
	g_autofree int64_t *cost = g_new(int64_t, n);

	for (size_t i = n; i-- > 0;) {
		if (span_width(prefix, i, n) <= lim) {
			cost[i] = 0;
			brk[i] = n;
			continue;
		}
		/* WrapWords starts from MaxInt32; the fallback break only
		 * matters where its own loop would never end. */
		cost[i] = INT32_MAX;
		brk[i] = i + 1;
		for (size_t j = i + 1; j < n; j++) {
			int64_t len = span_width(prefix, i, j);
			int64_t d = lim - len;
			int64_t c = d * d + cost[j];

			if (len > lim)
				c += WRAP_OVERFLOW_PENALTY;
			if (c < cost[i]) {
				cost[i] = c;
				brk[i] = j;
			}
		}
	}
}

/*
 * tablewriter's WrapString: s split at every space (a newline counts as one,
 * and runs of spaces leave empty words), lines no wider than lim unless a
 * word is. Returns the lines, a new GPtrArray of new strings.
 */
static GPtrArray *wrap_cell(const char *s, int lim)
{
	GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *flat = g_strdup(s);
	g_auto(GStrv) words = NULL;
	g_autofree int64_t *prefix = NULL;
	g_autofree size_t *brk = NULL;
	size_t n;

	g_strdelimit(flat, "\n", ' ');
	/* g_strsplit makes no words of "", where Go's Split makes one. */
	if (!*flat) {
		g_ptr_array_add(lines, g_strdup(""));
		return lines;
	}
	words = g_strsplit(flat, " ", -1);
	n = g_strv_length(words);
	prefix = g_new(int64_t, n + 1);
	prefix[0] = 0;
	for (size_t i = 0; i < n; i++) {
		int w = str_width(words[i]);

		prefix[i + 1] = prefix[i] + w;
		lim = MAX(lim, w);
	}
	brk = g_new(size_t, n);
	wrap_breaks(prefix, n, lim, brk);
	for (size_t i = 0; i < n; i = brk[i]) {
		GString *line = g_string_new(words[i]);

		for (size_t j = i + 1; j < brk[i]; j++)
			g_string_append_printf(line, " %s", words[j]);
		g_ptr_array_add(lines, g_string_free(line, FALSE));
	}
	return lines;
}

/*
 * Adds a row of t->ncols cells, widening columns as tablewriter's
 * parseDimension does: a cell claims its own width up to 30 and wraps at
 * that width (not the column's, which earlier rows may have widened), then
 * its widest line (a long word) may widen the column further.
 */
static void table_add(struct cf_table *t, const char *const *cells)
{
	GPtrArray *row = g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);

	for (size_t i = 0; i < t->ncols; i++) {
		const char *s = str_or_empty(cells[i]);
		int w = MIN(display_width(s), TABLE_WRAP_WIDTH);
		GPtrArray *lines;

		t->width[i] = MAX(t->width[i], w);
		lines = wrap_cell(s, w);
		for (guint l = 0; l < lines->len; l++)
			t->width[i] = MAX(t->width[i], display_width(lines->pdata[l]));
		g_ptr_array_add(row, lines);
	}
	g_ptr_array_add(t->rows, row);
}

static void append_spaces(GString *o, int n)
{
	for (int i = 0; i < n; i++)
		g_string_append_c(o, ' ');
}

static void table_rule(const struct cf_table *t, GString *o)
{
	g_string_append_c(o, '+');
	for (size_t i = 0; i < t->ncols; i++) {
		for (int k = 0; k < t->width[i] + 2; k++)
			g_string_append_c(o, '-');
		g_string_append_c(o, '+');
	}
	g_string_append_c(o, '\n');
}

static void table_head(const struct cf_table *t, GString *o)
{
	g_string_append_c(o, '|');
	for (size_t i = 0; i < t->ncols; i++) {
		int gap = MAX(t->width[i] - display_width(t->head[i]), 0);

		/* Centred with the odd space on the right. */
		g_string_append_c(o, ' ');
		append_spaces(o, gap / 2);
		g_string_append(o, t->head[i]);
		append_spaces(o, gap - gap / 2);
		g_string_append(o, " |");
	}
	g_string_append_c(o, '\n');
}

/* A row is as tall as its tallest cell; shorter cells are blank below. */
static void table_row(const struct cf_table *t, GPtrArray *row, GString *o)
{
	guint height = 0;

	for (guint i = 0; i < row->len; i++)
		height = MAX(height, ((GPtrArray *)row->pdata[i])->len);
	for (guint l = 0; l < height; l++) {
		g_string_append_c(o, '|');
		for (guint i = 0; i < row->len; i++) {
			GPtrArray *lines = row->pdata[i];
			const char *s = l < lines->len ? lines->pdata[l] : "";

			g_string_append_c(o, ' ');
			append_spaces(o, t->width[i] - display_width(s));
			g_string_append(o, s);
			g_string_append(o, " |");
		}
		g_string_append_c(o, '\n');
	}
}

static void table_render(const struct cf_table *t, GString *o)
{
	table_rule(t, o);
	table_head(t, o);
	table_rule(t, o);
	for (guint r = 0; r < t->rows->len; r++)
		table_row(t, t->rows->pdata[r], o);
	table_rule(t, o);
}

/* ---- JSON, as Go's encoding/json writes it ---- */

/* A string with Go's escapes, HTML characters included (json.Marshal
 * escapes them); invalid UTF-8 becomes \ufffd, byte by byte. */
static void json_str(GString *o, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	g_string_append_c(o, '"');
	while (*s) {
		unsigned char b = (unsigned char)*s;
		gunichar c;
		size_t n;

		if (b < 0x80) {
			s++;
			if (b == '"' || b == '\\')
				g_string_append_printf(o, "\\%c", b);
			else if (b == '\n')
				g_string_append(o, "\\n");
			else if (b == '\r')
				g_string_append(o, "\\r");
			else if (b == '\t')
				g_string_append(o, "\\t");
			else if (b < 0x20 || b == '<' || b == '>' || b == '&')
				g_string_append_printf(o, "\\u00%c%c", hex[b >> 4], hex[b & 0xf]);
			else
				g_string_append_c(o, (char)b);
			continue;
		}
		n = utf8_next(s, &c);
		if (c == 0xfffd && n == 1)
			g_string_append(o, "\\ufffd");
		else if (c == 0x2028 || c == 0x2029)
			g_string_append_printf(o, "\\u%04x", c);
		else
			g_string_append_len(o, s, (gssize)n);
		s += n;
	}
	g_string_append_c(o, '"');
}

/* Starts the next field of an object; *first is true until one is written. */
static void json_key(GString *o, bool *first, const char *key)
{
	if (!*first)
		g_string_append_c(o, ',');
	*first = false;
	g_string_append_printf(o, "\"%s\":", key);
}

/* The field writers below leave out zero values, as omitempty does. */
static void json_u64(GString *o, bool *first, const char *key, uint64_t v)
{
	if (!v)
		return;
	json_key(o, first, key);
	g_string_append_printf(o, "%" PRIu64, v);
}

static void json_i64(GString *o, bool *first, const char *key, int64_t v)
{
	if (!v)
		return;
	json_key(o, first, key);
	g_string_append_printf(o, "%" PRId64, v);
}

static void json_string_field(GString *o, bool *first, const char *key, const char *v)
{
	if (!v || !*v)
		return;
	json_key(o, first, key);
	json_str(o, v);
}

static void json_strv_field(GString *o, bool *first, const char *key, const char *const *v)
{
	if (!v || !v[0])
		return;
	json_key(o, first, key);
	g_string_append_c(o, '[');
	for (size_t i = 0; v[i]; i++) {
		if (i)
			g_string_append_c(o, ',');
		json_str(o, v[i]);
	}
	g_string_append_c(o, ']');
}

static void json_true_field(GString *o, bool *first, const char *key, bool v)
{
	if (!v)
		return;
	json_key(o, first, key);
	g_string_append(o, "true");
}

/* etcd always sends a header, so it is never left out, though it may be {}. */
static void json_header(GString *o, bool *first, const struct ef_header *h)
{
	bool hfirst = true;

	json_key(o, first, "header");
	g_string_append_c(o, '{');
	json_u64(o, &hfirst, "cluster_id", h->cluster_id);
	json_u64(o, &hfirst, "member_id", h->member_id);
	json_i64(o, &hfirst, "revision", h->revision);
	json_u64(o, &hfirst, "raft_term", h->raft_term);
	g_string_append_c(o, '}');
}

/* ---- member list ---- */

#define MEMBER_COLS 6

static const char *const member_head[MEMBER_COLS] = {
	"ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER",
};

/* The cells of etcdctl's makeMemberListTable; a new NULL-terminated vector. */
static char **member_cells(const struct ef_member *m)
{
	const char *name = str_or_empty(m->name);
	char **c = g_new0(char *, MEMBER_COLS + 1);

	c[0] = g_strdup_printf("%" PRIx64, m->id);
	/* etcd learns a member's name only when it first starts. */
	c[1] = g_strdup(*name ? "started" : "unstarted");
	c[2] = g_strdup(name);
	c[3] = join_strv(m->peer_urls, ",");
	c[4] = join_strv(m->client_urls, ",");
	c[5] = g_strdup(bool_str(m->learner));
	return c;
}

static void member_json(GString *o, const struct ef_member *m)
{
	bool first = true;

	g_string_append_c(o, '{');
	json_u64(o, &first, "ID", m->id);
	json_string_field(o, &first, "name", m->name);
	json_strv_field(o, &first, "peerURLs", m->peer_urls);
	json_strv_field(o, &first, "clientURLs", m->client_urls);
	json_true_field(o, &first, "isLearner", m->learner);
	g_string_append_c(o, '}');
}

static void members_json(GString *o, const struct ef_header *h, const struct ef_member *m,
			 size_t n)
{
	bool first = true;

	g_string_append_c(o, '{');
	json_header(o, &first, h);
	if (n) {
		json_key(o, &first, "members");
		g_string_append_c(o, '[');
		for (size_t i = 0; i < n; i++) {
			if (i)
				g_string_append_c(o, ',');
			member_json(o, &m[i]);
		}
		g_string_append_c(o, ']');
	}
	g_string_append(o, "}\n");
}

/* The table form of n rows; cells() makes row i's cells. */
static void table_out(GString *o, const char *const *head, size_t ncols, size_t n,
		      char **(*cells)(const void *rows, size_t i), const void *rows)
{
	struct cf_table t;

	table_init(&t, head, ncols);
	for (size_t i = 0; i < n; i++) {
		g_auto(GStrv) c = cells(rows, i);

		table_add(&t, (const char *const *)c);
	}
	table_render(&t, o);
	table_clear(&t);
}

/* The simple form: as in etcdctl, a table row's cells joined by ", ". */
static void simple_out(GString *o, size_t ncols, size_t n,
		       char **(*cells)(const void *rows, size_t i), const void *rows)
{
	for (size_t i = 0; i < n; i++) {
		g_auto(GStrv) c = cells(rows, i);

		for (size_t k = 0; k < ncols; k++)
			g_string_append_printf(o, k ? ", %s" : "%s", c[k]);
		g_string_append_c(o, '\n');
	}
}

static char **member_row(const void *rows, size_t i)
{
	return member_cells((const struct ef_member *)rows + i);
}

GString *clusterfmt_members(const struct ef_header *h, const struct ef_member *m, size_t n,
			    enum ef_fmt fmt)
{
	GString *o = g_string_new(NULL);

	switch (fmt) {
	case EF_FMT_SIMPLE:
		simple_out(o, MEMBER_COLS, n, member_row, m);
		break;
	case EF_FMT_TABLE:
		table_out(o, member_head, MEMBER_COLS, n, member_row, m);
		break;
	case EF_FMT_JSON:
		members_json(o, h, m, n);
		break;
	}
	return o;
}

/* ---- endpoint status ---- */

#define STATUS_COLS 10

static const char *const status_head[STATUS_COLS] = {
	"ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER",
	"RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS",
};

/* The cells of etcdctl's makeEndpointStatusTable; a failed call keeps only
 * the endpoint and puts its error where the member's errors would be. */
static char **status_cells(const struct ef_member_status *s)
{
	char **c = g_new0(char *, STATUS_COLS + 1);

	c[0] = g_strdup(str_or_empty(s->endpoint));
	if (s->error) {
		for (size_t k = 1; k < STATUS_COLS - 1; k++)
			c[k] = g_strdup("");
		c[STATUS_COLS - 1] = g_strdup(s->error);
		return c;
	}
	c[1] = g_strdup_printf("%" PRIx64, s->header.member_id);
	c[2] = g_strdup(str_or_empty(s->version));
	c[3] = clusterfmt_bytes((uint64_t)s->db_size);
	c[4] = g_strdup(bool_str(s->leader == s->header.member_id));
	c[5] = g_strdup(bool_str(s->learner));
	c[6] = g_strdup_printf("%" PRIu64, s->raft_term);
	c[7] = g_strdup_printf("%" PRIu64, s->raft_index);
	c[8] = g_strdup_printf("%" PRIu64, s->raft_applied_index);
	c[9] = join_strv(s->errors, ", ");
	return c;
}

static void status_json_one(GString *o, const struct ef_member_status *s)
{
	bool first = true;
	bool sfirst = true;

	g_string_append_c(o, '{');
	json_key(o, &first, "Endpoint");
	json_str(o, str_or_empty(s->endpoint));
	if (s->error) {
		json_key(o, &first, "Error");
		json_str(o, s->error);
		g_string_append_c(o, '}');
		return;
	}
	json_key(o, &first, "Status");
	g_string_append_c(o, '{');
	json_header(o, &sfirst, &s->header);
	json_string_field(o, &sfirst, "version", s->version);
	json_i64(o, &sfirst, "dbSize", s->db_size);
	json_u64(o, &sfirst, "leader", s->leader);
	json_u64(o, &sfirst, "raftIndex", s->raft_index);
	json_u64(o, &sfirst, "raftTerm", s->raft_term);
	json_u64(o, &sfirst, "raftAppliedIndex", s->raft_applied_index);
	json_strv_field(o, &sfirst, "errors", s->errors);
	json_i64(o, &sfirst, "dbSizeInUse", s->db_size_in_use);
	json_true_field(o, &sfirst, "isLearner", s->learner);
	g_string_append(o, "}}");
}

static char **status_row(const void *rows, size_t i)
{
	return status_cells((const struct ef_member_status *)rows + i);
}

GString *clusterfmt_status(const struct ef_member_status *s, size_t n, enum ef_fmt fmt)
{
	GString *o = g_string_new(NULL);

	if (fmt == EF_FMT_SIMPLE) {
		simple_out(o, STATUS_COLS, n, status_row, s);
		return o;
	}
	if (fmt == EF_FMT_TABLE) {
		table_out(o, status_head, STATUS_COLS, n, status_row, s);
		return o;
	}
	g_string_append_c(o, '[');
	for (size_t i = 0; i < n; i++) {
		if (i)
			g_string_append_c(o, ',');
		status_json_one(o, &s[i]);
	}
	g_string_append(o, "]\n");
	return o;
}

/* ---- endpoint health ---- */

#define HEALTH_COLS 4

static const char *const health_head[HEALTH_COLS] = {
	"ENDPOINT", "HEALTH", "TOOK", "ERROR",
};

static char **health_cells(const struct ef_member_health *h)
{
	char **c = g_new0(char *, HEALTH_COLS + 1);

	c[0] = g_strdup(str_or_empty(h->endpoint));
	c[1] = g_strdup(bool_str(h->healthy));
	c[2] = clusterfmt_duration(h->took_ns);
	c[3] = g_strdup(str_or_empty(h->error));
	return c;
}

static char **health_row(const void *rows, size_t i)
{
	return health_cells((const struct ef_member_health *)rows + i);
}

static void health_json_one(GString *o, const struct ef_member_health *h)
{
	g_autofree char *took = clusterfmt_duration(h->took_ns);
	bool first = true;

	g_string_append_c(o, '{');
	json_key(o, &first, "endpoint");
	json_str(o, str_or_empty(h->endpoint));
	json_key(o, &first, "health");
	g_string_append(o, bool_str(h->healthy));
	json_key(o, &first, "took");
	json_str(o, took);
	json_string_field(o, &first, "error", h->error);
	g_string_append_c(o, '}');
}

/* etcdctl picks the sentence by whether there is an error, not by the
 * health flag; the two agree in everything it and we produce. */
static void health_simple_one(GString *o, const struct ef_member_health *h)
{
	const char *ep = str_or_empty(h->endpoint);

	if (h->error && *h->error) {
		g_string_append_printf(o, "%s is unhealthy: failed to commit proposal: %s\n", ep,
				       h->error);
	} else {
		g_autofree char *took = clusterfmt_duration(h->took_ns);

		g_string_append_printf(o, "%s is healthy: successfully committed proposal: took = %s\n",
				       ep, took);
	}
}

GString *clusterfmt_health(const struct ef_member_health *s, size_t n, enum ef_fmt fmt)
{
	GString *o = g_string_new(NULL);

	switch (fmt) {
	case EF_FMT_TABLE:
		table_out(o, health_head, HEALTH_COLS, n, health_row, s);
		break;
	case EF_FMT_JSON:
		g_string_append_c(o, '[');
		for (size_t i = 0; i < n; i++) {
			if (i)
				g_string_append_c(o, ',');
			health_json_one(o, &s[i]);
		}
		g_string_append(o, "]\n");
		break;
	case EF_FMT_SIMPLE:
		for (size_t i = 0; i < n; i++)
			health_simple_one(o, &s[i]);
		break;
	}
	return o;
}

/* ---- numbers ---- */

char *clusterfmt_bytes(uint64_t n)
{
	static const char *const unit[] = { "B", "kB", "MB", "GB", "TB", "PB", "EB" };
	uint64_t scale = 1;
	size_t e = 0;
	double val;

	if (n < 10)
		return g_strdup_printf("%" PRIu64 " B", n);
	/*
	 * go-humanize takes the unit from floor(log(n) / log(1000)); counting
	 * powers exactly agrees with it everywhere but possibly at exact powers
	 * of 1000, where a rounded logarithm could fall a hair short. Powers of
	 * 1000 up to 10^18 are exact in a double, so scale is too.
	 */
	while (e + 1 < G_N_ELEMENTS(unit) && n / scale >= 1000) {
		scale *= 1000;
		e++;
	}
	val = floor((double)n / (double)scale * 10 + 0.5) / 10;
	return g_strdup_printf(val < 10 ? "%.1f %s" : "%.0f %s", val, unit[e]);
}

/* v / 10^prec with the fraction's trailing zeros (and a bare point) dropped,
 * as Go's fmtFrac and fmtInt print it. */
static void append_fixed(GString *o, uint64_t v, int prec)
{
	uint64_t div = 1;
	uint64_t frac;
	char digits[20];
	int nd;

	for (int i = 0; i < prec; i++)
		div *= 10;
	frac = v % div;
	g_string_append_printf(o, "%" PRIu64, v / div);
	if (!frac)
		return;
	g_snprintf(digits, sizeof(digits), "%0*" PRIu64, prec, frac);
	for (nd = prec; digits[nd - 1] == '0'; nd--)
		;
	g_string_append_c(o, '.');
	g_string_append_len(o, digits, nd);
}

char *clusterfmt_duration(int64_t ns)
{
	GString *o = g_string_new(NULL);
	/* Negating in unsigned arithmetic keeps INT64_MIN representable. */
	uint64_t u = ns < 0 ? 0 - (uint64_t)ns : (uint64_t)ns;
	uint64_t secs;

	if (ns < 0)
		g_string_append_c(o, '-');
	if (u == 0) {
		g_string_append(o, "0s");
	} else if (u < 1000) {
		g_string_append_printf(o, "%" PRIu64 "ns", u);
	} else if (u < 1000000) {
		append_fixed(o, u, 3);
		g_string_append(o, "\xc2\xb5s");	/* U+00B5 MICRO SIGN */
	} else if (u < 1000000000) {
		append_fixed(o, u, 6);
		g_string_append(o, "ms");
	} else {
		/* Go stops at hours: days have no fixed length. */
		secs = u / 1000000000;
		if (secs >= 3600)
			g_string_append_printf(o, "%" PRIu64 "h", secs / 3600);
		if (secs >= 60)
			g_string_append_printf(o, "%" PRIu64 "m", secs / 60 % 60);
		append_fixed(o, secs % 60 * 1000000000 + u % 1000000000, 9);
		g_string_append_c(o, 's');
	}
	return g_string_free(o, FALSE);
}
