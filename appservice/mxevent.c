/*
 * mxevent.c - one pass over a transaction body: validate it as strict JSON
 * (RFC 8259, as jansson reads it) and copy out of each event the few members
 * Threshold decides on.  A goto state machine with the container kinds in a
 * bit stack: no recursion, no tree, depth checked as containers open.
 */
#include "mxevent.h"

#include <stdint.h>
#include <string.h>

#include "util.h"

/* What the value being read means to Threshold.  Only values whose parents
 * all lie on the path body -> "events" -> element -> "content" get a role. */
enum role {
	R_NONE,
	R_TOP,
	R_EVENTS,
	R_ELEMENT,
	R_EVENT_ID,
	R_ROOM_ID,
	R_TYPE,
	R_SENDER,
	R_STATE_KEY,
	R_CONTENT,
	R_MEMBERSHIP,
	R_BODY,
	R_MSGTYPE,
	R_IS_DIRECT,
};

/* Depths (open containers) of the interesting objects and arrays. */
#define D_TOP     1
#define D_EVENTS  2
#define D_ELEMENT 3
#define D_CONTENT 4

#define ONES ((uint64_t)0x0101010101010101)
#define HIGH ((uint64_t)0x8080808080808080)

/* Flags of a scanned string. */
#define S_ESC 1u /* has a backslash escape */
#define S_NUL 2u /* has \u0000 */

struct mxev_chunk {
	struct mxev_chunk *next;
	size_t used, cap;
	char data[];
};

#define CHUNK_MIN ((size_t)4096)
#define CHUNK_MAX ((size_t)1 << 20)

struct scan {
	const unsigned char *base, *end;
	struct mxev_batch *b;
	const unsigned char *err_at;
	const char *why;
};

/* Bytes that may stand for themselves in a string and need no further
 * look: printable ASCII except '"' and '\\'. */
static const unsigned char plain[256] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
        1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
};

/* 2^1024 - 2^970: the least decimal that strtod rounds to infinity (it lies
 * halfway between DBL_MAX and 2^1024 and ties go to the even significand). */
static const char dbl_overflow[] =
        "1797693134862315807937289714053034150799341327100378269361737789804449682927"
        "6475094664901797758720709633028641669288791094655554785194040263065748867150"
        "5820681908902000708383676273854845817711531764475730270069855571366959622842"
        "914819860834936475292719074168444365510704342711559699508093042880177904174497792";

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The four hex digits at p, or -1. */
static long hex4(const unsigned char *p)
{
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hex_value(p[i]);
		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

/* Length of the well-formed UTF-8 sequence at p (no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
	if (n == 0 || (size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	}
	if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) || (c == 0xF0 && p[1] < 0x90) ||
	    (c == 0xF4 && p[1] > 0x8F))
		return 0;
	return n;
}

static const unsigned char *fail(struct scan *s, const unsigned char *at, const char *why)
{
	s->err_at = at;
	s->why = why;
	return NULL;
}

/*
 * A string's body, from just after its opening quote: checked for escapes,
 * control characters and UTF-8.  @return the byte after the closing quote,
 * or NULL.  *flags gets S_ESC / S_NUL.
 */
static const unsigned char *scan_string(struct scan *s, const unsigned char *p, unsigned *flags)
{
	const unsigned char *end = s->end;
	*flags = 0;
	for (;;) {
		/* Eight bytes at a time while none is a control character, '"',
		 * '\\' or non-ASCII.  Without such a byte no subtraction borrows
		 * and no high bit is set; with one, the lowest sets its high bit. */
		while (end - p >= 8) {
			uint64_t w;
			memcpy(&w, p, 8);
			uint64_t q = w ^ (ONES * '"'), e = w ^ (ONES * '\\');
			if (((w - ONES * 0x20) | (q - ONES) | (e - ONES) | w) & HIGH)
				break;
			p += 8;
		}
		while (p < end && plain[*p])
			p++;
		if (p == end)
			return fail(s, p, "unterminated string");
		unsigned c = *p;
		if (c == '"')
			return p + 1;
		if (c == '\\') {
			*flags |= S_ESC;
			if (end - p < 2)
				return fail(s, p, "unterminated string");
			switch (p[1]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				p += 2;
				continue;
			case 'u':
				break;
			default:
				return fail(s, p, "invalid escape");
			}
			long u = end - p >= 6 ? hex4(p + 2) : -1;
			if (u < 0)
				return fail(s, p, "invalid \\u escape");
			if (u == 0)
				*flags |= S_NUL;
			if (u >= 0xDC00 && u <= 0xDFFF)
				return fail(s, p, "lone low surrogate");
			if (u >= 0xD800 && u <= 0xDBFF) {
				long lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;
				if (lo < 0xDC00 || lo > 0xDFFF)
					return fail(s, p, "high surrogate without a low one");
				p += 6;
			}
			p += 6;
			continue;
		}
		if (c < 0x20)
			return fail(s, p, "control character in string");
		size_t n = utf8_len(p, end);
		if (!n)
			return fail(s, p, "invalid UTF-8");
		p += n;
	}
}

/* Decode the checked string body src[0..n) into dst (room for n bytes);
 * @return the decoded length. */
static size_t unescape(char *dst, const unsigned char *src, size_t n)
{
	const unsigned char *end = src + n;
	char *d = dst;
	while (src < end) {
		if (*src != '\\') {
			*d++ = (char)*src++;
			continue;
		}
		unsigned char e = src[1];
		src += 2;
		switch (e) {
		case 'b':
			*d++ = '\b';
			continue;
		case 'f':
			*d++ = '\f';
			continue;
		case 'n':
			*d++ = '\n';
			continue;
		case 'r':
			*d++ = '\r';
			continue;
		case 't':
			*d++ = '\t';
			continue;
		case 'u':
			break;
		default: /* '"', '\\', '/' */
			*d++ = (char)e;
			continue;
		}
		unsigned long u = (unsigned long)hex4(src);
		src += 4;
		if (u >= 0xD800 && u <= 0xDBFF) {
			u = 0x10000 + ((u - 0xD800) << 10) + ((unsigned long)hex4(src + 2) - 0xDC00);
			src += 6;
		}
		if (u < 0x80) {
			*d++ = (char)u;
		} else if (u < 0x800) {
			*d++ = (char)(0xC0 | u >> 6);
			*d++ = (char)(0x80 | (u & 0x3F));
		} else if (u < 0x10000) {
			*d++ = (char)(0xE0 | u >> 12);
			*d++ = (char)(0x80 | (u >> 6 & 0x3F));
			*d++ = (char)(0x80 | (u & 0x3F));
		} else {
			*d++ = (char)(0xF0 | u >> 18);
			*d++ = (char)(0x80 | (u >> 12 & 0x3F));
			*d++ = (char)(0x80 | (u >> 6 & 0x3F));
			*d++ = (char)(0x80 | (u & 0x3F));
		}
	}
	return (size_t)(d - dst);
}

/* jansson reads an integer (no fraction, no exponent) as a long long. */
static int int_overflows(const unsigned char *digits, size_t n, int neg)
{
	if (n != 19)
		return n > 19;
	return memcmp(digits, neg ? "9223372036854775808" : "9223372036854775807", 19) > 0;
}

/* Whether strtod would overflow on int_part[0..nint) "." frac[0..nfrac)
 * "e" exp: compare the significant digits with dbl_overflow. */
static int real_overflows(const unsigned char *ip, size_t nint, const unsigned char *fp, size_t nfrac,
                          int64_t exp)
{
	size_t i = 0;
	while (i < nint + nfrac && (i < nint ? ip[i] : fp[i - nint]) == '0')
		i++;
	if (i == nint + nfrac)
		return 0; /* zero */
	/* value = 0.DDD * 10^m, with D the digits from i on */
	int64_t m = (int64_t)nint - (int64_t)i + exp;
	int64_t limit = (int64_t)sizeof(dbl_overflow) - 1;
	if (m != limit)
		return m > limit;
	for (size_t k = 0;; k++, i++) {
		int d = i < nint + nfrac ? (i < nint ? ip[i] : fp[i - nint]) : '0';
		int t = k < (size_t)limit ? dbl_overflow[k] : '0';
		if (d != t)
			return d > t;
		if (i >= nint + nfrac && k >= (size_t)limit)
			return 1; /* equal: ties round to infinity */
	}
}

/* A number at p.  @return the byte after it, or NULL. */
static const unsigned char *scan_number(struct scan *s, const unsigned char *p)
{
	const unsigned char *end = s->end, *start = p;
	int neg = *p == '-';
	if (neg)
		p++;
	const unsigned char *ip = p;
	if (p < end && *p == '0') {
		p++;
		if (p < end && is_digit(*p))
			return fail(s, start, "leading zero");
	} else if (p < end && is_digit(*p)) {
		while (p < end && is_digit(*p))
			p++;
	} else {
		return fail(s, start, "invalid number");
	}
	size_t nint = (size_t)(p - ip);
	const unsigned char *fp = p;
	size_t nfrac = 0;
	int real = 0;
	if (p < end && *p == '.') {
		fp = ++p;
		while (p < end && is_digit(*p))
			p++;
		nfrac = (size_t)(p - fp);
		if (!nfrac)
			return fail(s, start, "invalid number");
		real = 1;
	}
	int64_t exp = 0;
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		int eneg = p < end && *p == '-';
		if (p < end && (*p == '-' || *p == '+'))
			p++;
		if (p == end || !is_digit(*p))
			return fail(s, start, "invalid number");
		while (p < end && is_digit(*p)) {
			if (exp < (int64_t)1 << 50) /* far past any double; saturate */
				exp = exp * 10 + (*p - '0');
			p++;
		}
		if (eneg)
			exp = -exp;
		real = 1;
	}
	if (real ? real_overflows(ip, nint, fp, nfrac, exp) : int_overflows(ip, nint, neg))
		return fail(s, start, "number out of range");
	return p;
}

static const unsigned char *scan_literal(struct scan *s, const unsigned char *p)
{
	static const char *const words[] = {"true", "false", "null"};
	const char *w = words[*p == 't' ? 0 : *p == 'f' ? 1 : 2];
	size_t n = strlen(w);
	if ((size_t)(s->end - p) < n || memcmp(p, w, n) != 0)
		return fail(s, p, "invalid literal");
	return p + n;
}

/* The role of member @p key (raw bytes, escaped if @p flags has S_ESC) of
 * the interesting object at @p depth. */
static enum role key_role(unsigned depth, const unsigned char *key, size_t n, unsigned flags)
{
	char buf[64];
	if (flags & S_ESC) {
		/* Ten ASCII characters, each at most six bytes escaped. */
		if (n > sizeof(buf))
			return R_NONE;
		n = unescape(buf, key, n);
		key = (const unsigned char *)buf;
	}
#define IS(name) (n == sizeof(name) - 1 && memcmp(key, name, n) == 0)
	switch (depth) {
	case D_TOP:
		return IS("events") ? R_EVENTS : R_NONE;
	case D_ELEMENT:
		switch (n) {
		case 4:
			return IS("type") ? R_TYPE : R_NONE;
		case 6:
			return IS("sender") ? R_SENDER : R_NONE;
		case 7:
			return IS("room_id") ? R_ROOM_ID : IS("content") ? R_CONTENT : R_NONE;
		case 8:
			return IS("event_id") ? R_EVENT_ID : R_NONE;
		case 9:
			return IS("state_key") ? R_STATE_KEY : R_NONE;
		default:
			return R_NONE;
		}
	case D_CONTENT:
		switch (n) {
		case 4:
			return IS("body") ? R_BODY : R_NONE;
		case 7:
			return IS("msgtype") ? R_MSGTYPE : R_NONE;
		case 9:
			return IS("is_direct") ? R_IS_DIRECT : R_NONE;
		case 10:
			return IS("membership") ? R_MEMBERSHIP : R_NONE;
		default:
			return R_NONE;
		}
	default:
		return R_NONE;
	}
#undef IS
}

static char *arena_alloc(struct mxev_batch *b, size_t n)
{
	struct mxev_chunk *c = b->arena;
	if (!c || c->cap - c->used < n) {
		size_t cap = c ? (c->cap < CHUNK_MAX ? c->cap * 2 : CHUNK_MAX) : CHUNK_MIN;
		if (cap < n)
			cap = n;
		c = xmalloc(sizeof(*c) + cap);
		c->next = b->arena;
		c->used = 0;
		c->cap = cap;
		b->arena = c;
	}
	char *r = c->data + c->used;
	c->used += n;
	return r;
}

static const char **string_field(struct mxev *ev, enum role r)
{
	switch (r) {
	case R_EVENT_ID:
		return &ev->event_id;
	case R_ROOM_ID:
		return &ev->room_id;
	case R_TYPE:
		return &ev->type;
	case R_SENDER:
		return &ev->sender;
	case R_STATE_KEY:
		return &ev->state_key;
	case R_MEMBERSHIP:
		return &ev->membership;
	case R_BODY:
		return &ev->body;
	case R_MSGTYPE:
		return &ev->msgtype;
	default:
		return NULL;
	}
}

/* A value with role r starts at p.  Every start resets what an earlier
 * value of the same member set: the last of repeated keys wins. */
static void value_begin(struct mxev_batch *b, enum role r, const unsigned char *p, int *events_kind)
{
	struct mxev *ev = b->n ? &b->events[b->n - 1] : NULL;
	switch (r) {
	case R_NONE:
	case R_TOP:
		return;
	case R_EVENTS:
		*events_kind = *p == '[' ? 1 : 2;
		b->n = 0; /* a repeated "events": only the last one counts */
		return;
	case R_ELEMENT:
		if (b->n == b->cap) {
			b->cap = b->cap ? b->cap * 2 : 16;
			b->events = xrealloc(b->events, b->cap * sizeof(*b->events));
		}
		ev = &b->events[b->n++];
		memset(ev, 0, sizeof(*ev));
		ev->json.ptr = (const char *)p;
		ev->is_object = *p == '{';
		return;
	case R_CONTENT:
		ev->content.ptr = (const char *)p;
		ev->content.len = 0;
		ev->content_is_object = *p == '{';
		ev->membership = ev->body = ev->msgtype = NULL;
		ev->is_direct = false;
		return;
	case R_IS_DIRECT:
		ev->is_direct = *p == 't';
		return;
	default:
		*string_field(ev, r) = NULL;
		return;
	}
}

/* The value with role r ended just before p. */
static void value_end(struct mxev_batch *b, enum role r, const unsigned char *p)
{
	if (r == R_ELEMENT) {
		struct mxev *ev = &b->events[b->n - 1];
		ev->json.len = (size_t)((const char *)p - ev->json.ptr);
	} else if (r == R_CONTENT) {
		struct mxev *ev = &b->events[b->n - 1];
		ev->content.len = (size_t)((const char *)p - ev->content.ptr);
	}
}

static void string_value(struct mxev_batch *b, enum role r, const unsigned char *body, size_t n,
                         unsigned flags)
{
	const char **field = string_field(&b->events[b->n - 1], r);
	if (!field || (flags & S_NUL))
		return; /* \u0000: present, but no C string can carry it */
	char *d = arena_alloc(b, n + 1);
	if (flags & S_ESC) {
		n = unescape(d, body, n);
	} else {
		memcpy(d, body, n);
	}
	d[n] = '\0';
	*field = d;
}

#define BIT_WORDS ((MXEV_DEPTH_LIMIT + 64) / 64)

static enum mxev_status scan_body(struct scan *s, unsigned max_depth)
{
	const unsigned char *p = s->base, *end = s->end, *q;
	struct mxev_batch *b = s->b;
	uint64_t is_array[BIT_WORDS] = {0}; /* bit d: the container at depth d is an array */
	enum role roles[D_CONTENT + 1];     /* roles[d]: the value read under depth d */
	unsigned depth = 0;                 /* open containers */
	unsigned path = 0;                  /* containers 1..path are the interesting ones */
	int events_kind = 0;                /* 0 absent, 1 array, 2 something else */
	enum role role = R_TOP;
	unsigned flags;

	p = skip_ws(p, end);
	if (p == end || (*p != '{' && *p != '['))
		goto bad_top;

value: /* p: the first byte of a value (or end); role: what it means */
	if (p == end) {
		fail(s, p, "value expected");
		return MXEV_NOT_JSON;
	}
	if (depth <= D_CONTENT)
		roles[depth] = role;
	if (role != R_NONE)
		value_begin(b, role, p, &events_kind);
	switch (*p) {
	case '{':
	case '[':
		if (depth >= max_depth) {
			fail(s, p, "nested too deeply");
			return MXEV_TOO_DEEP;
		}
		if ((role == R_TOP && *p == '{') || (role == R_EVENTS && *p == '[') ||
		    (role == R_ELEMENT && *p == '{') || (role == R_CONTENT && *p == '{'))
			path = depth + 1;
		depth++;
		if (*p == '[') {
			is_array[depth / 64] |= (uint64_t)1 << (depth % 64);
			p = skip_ws(p + 1, end);
			if (p < end && *p == ']') {
				p++;
				goto closed;
			}
			role = path == D_EVENTS && depth == D_EVENTS ? R_ELEMENT : R_NONE;
			goto value;
		}
		is_array[depth / 64] &= ~((uint64_t)1 << (depth % 64));
		p = skip_ws(p + 1, end);
		if (p < end && *p == '}') {
			p++;
			goto closed;
		}
		goto key;
	case '"':
		q = scan_string(s, p + 1, &flags);
		if (!q)
			return MXEV_NOT_JSON;
		if (role > R_ELEMENT)
			string_value(b, role, p + 1, (size_t)(q - p - 2), flags);
		p = q;
		goto after;
	case 't':
	case 'f':
	case 'n':
		if (!(p = scan_literal(s, p)))
			return MXEV_NOT_JSON;
		goto after;
	default:
		if (*p != '-' && !is_digit(*p)) {
			fail(s, p, "invalid token");
			return MXEV_NOT_JSON;
		}
		if (!(p = scan_number(s, p)))
			return MXEV_NOT_JSON;
		goto after;
	}

key: /* p: where a member's key should start, inside the object at depth */
	if (p == end || *p != '"') {
		fail(s, p, "string or '}' expected");
		return MXEV_NOT_JSON;
	}
	if (!(q = scan_string(s, p + 1, &flags)))
		return MXEV_NOT_JSON;
	if (flags & S_NUL) {
		/* jansson refuses NUL in keys, whatever its flags */
		fail(s, p, "\\u0000 in an object key");
		return MXEV_NOT_JSON;
	}
	role = R_NONE;
	if (path == depth && depth != D_EVENTS)
		role = key_role(depth, p + 1, (size_t)(q - p - 2), flags);
	p = skip_ws(q, end);
	if (p == end || *p != ':') {
		fail(s, p, "':' expected");
		return MXEV_NOT_JSON;
	}
	p = skip_ws(p + 1, end);
	goto value;

after: /* a value under depth just ended before p */
	if (depth == 0) {
		p = skip_ws(p, end);
		if (p != end) {
			fail(s, p, "end of input expected");
			return MXEV_NOT_JSON;
		}
		goto done;
	}
	if (depth <= D_CONTENT && roles[depth] != R_NONE)
		value_end(b, roles[depth], p);
	p = skip_ws(p, end);
	if (p == end) {
		fail(s, p, "premature end of input");
		return MXEV_NOT_JSON;
	}
	if (is_array[depth / 64] >> (depth % 64) & 1) {
		if (*p == ',') {
			p = skip_ws(p + 1, end);
			role = path == D_EVENTS && depth == D_EVENTS ? R_ELEMENT : R_NONE;
			goto value;
		}
		if (*p == ']') {
			p++;
			goto closed;
		}
		fail(s, p, "',' or ']' expected");
		return MXEV_NOT_JSON;
	}
	if (*p == ',') {
		p = skip_ws(p + 1, end);
		goto key;
	}
	if (*p == '}') {
		p++;
		goto closed;
	}
	fail(s, p, "',' or '}' expected");
	return MXEV_NOT_JSON;

closed: /* the container at depth ended before p */
	if (path == depth)
		path--;
	depth--;
	goto after;

done:
	if (*skip_ws(s->base, end) != '{')
		return MXEV_NOT_OBJECT;
	if (events_kind == 2)
		return MXEV_EVENTS_NOT_ARRAY;
	return MXEV_OK;

bad_top:
	fail(s, p, "'{' or '[' expected");
	return MXEV_NOT_JSON;
}

enum mxev_status mxev_parse(struct mxev_batch *b, const char *buf, size_t len, unsigned max_depth,
                            struct mxev_error *err)
{
	mxev_batch_free(b);
	if (max_depth > MXEV_DEPTH_LIMIT)
		max_depth = MXEV_DEPTH_LIMIT;
	const unsigned char *base = (const unsigned char *)(buf ? buf : "");
	struct scan s = {.base = base, .end = base + (buf ? len : 0), .b = b, .err_at = base, .why = ""};
	enum mxev_status st = scan_body(&s, max_depth);
	if (st != MXEV_OK) {
		mxev_batch_free(b);
		if (err) {
			err->offset = (size_t)(s.err_at - base);
			err->text = st == MXEV_NOT_OBJECT         ? "not an object"
			            : st == MXEV_EVENTS_NOT_ARRAY ? "\"events\" is not an array"
			                                          : s.why;
		}
	}
	return st;
}

void mxev_batch_free(struct mxev_batch *b)
{
	struct mxev_chunk *c = b->arena;
	while (c) {
		struct mxev_chunk *next = c->next;
		free(c);
		c = next;
	}
	free(b->events);
	memset(b, 0, sizeof(*b));
}

int mxev_content_json(const struct mxev *ev, json_t **out)
{
	if (!ev->content.ptr)
		return TH_ENOTFOUND;
	/* The scan already accepted these bytes, so jansson does too. */
	json_t *j = json_loadb(ev->content.ptr, ev->content.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (!j)
		return TH_EINVAL;
	*out = j;
	return TH_OK;
}

const char *mxev_strerror(enum mxev_status status)
{
	switch (status) {
	case MXEV_OK:
		return "ok";
	case MXEV_NOT_JSON:
		return "not JSON";
	case MXEV_TOO_DEEP:
		return "nested too deeply";
	case MXEV_NOT_OBJECT:
		return "not a JSON object";
	case MXEV_EVENTS_NOT_ARRAY:
		return "\"events\" is not an array";
	}
	return "unknown";
}
