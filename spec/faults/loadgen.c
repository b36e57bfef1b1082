/* loadgen.c — closed-loop mixed HTTP load for the fault-injection suite.
 *
 *   loadgen --port N --seconds S --out DIR --churches FILE --seed SEED32
 *           [--tag TAG] [--logins C] [--reads C] [--webhooks C]
 *           [--timeout SECS] [--contacts N] [--webhook-attempts N]
 *           [--retry-delay SECS]
 *   loadgen --public-key --seed SEED32
 *       prints the base64 public key of the webhook signing key and exits.
 *
 * Drives a server at 127.0.0.1:PORT for S seconds (fractional allowed) with
 * three kinds of requests, each from its own number of virtual clients
 * (defaults: 1 login, 4 read, 8 webhook; 0 turns a kind off). A client is one
 * evhttp_connection (HTTP/1.1, kept alive) with at most one request in
 * flight: when the response or the failure arrives it sends its next
 * request. All clients share one event_base.
 *
 *   login    POST /api/auth/login {"email":..,"password":..}, round the
 *            churches.
 *   read     GET /api/conversations?limit=20, then (when the church has a
 *            conversation id) GET /api/conversations/ID/messages?limit=20,
 *            with "Authorization: Bearer TOKEN", round the churches.
 *   webhook  POST /api/webhooks/telnyx/messaging: a Telnyx message.received
 *            event with payload id fault-TAG-N (N counts new webhooks from 1),
 *            to church (N-1) % CHURCHES, from +1666 + the church's index (3
 *            digits) + N % CONTACTS (5 digits; --contacts, default 50),
 *            signed as Telnyx does: Ed25519 over "TIMESTAMP|BODY" with the key
 *            pair of --seed (exactly 32 bytes), base64 in
 *            telnyx-signature-ed25519, unix seconds in telnyx-timestamp.
 *            An attempt that gets no 2xx is sent again, same id, meta.attempt
 *            + 1, fresh timestamp and signature, after --retry-delay seconds
 *            (default 1), up to --webhook-attempts attempts (default 5); then
 *            the webhook is abandoned. A client waiting to retry sends
 *            nothing else.
 *
 * Each request is bounded by --timeout seconds (default 5, fractional
 * allowed) from the moment it is started. A request that fails without a
 * response is one of
 *   timeout  the timeout passed;
 *   refused  no connection could be made (ECONNREFUSED and the like);
 *   reset    the connection closed or was reset before a full response;
 *   error    anything else (a malformed response, ...).
 * A 503 without a Retry-After header (API.md promises one) is recorded as
 * the outcome 503bare rather than 503.
 * After a failure the client drops its connection and opens a new one for
 * its next request; after refused, reset or error it first waits 0.1 s.
 *
 * After S seconds, or on SIGTERM or SIGINT, nothing new is started (nor any
 * retry); the requests in flight are waited for, then the outputs are written
 * and loadgen exits 0. A second signal stops waiting: what is still in flight
 * is dropped unrecorded. Exit 2: bad arguments or churches file; 1: an
 * output could not be written (or memory ran out).
 *
 * Churches file: one church a line, tab-separated
 *   email<TAB>password<TAB>access_token<TAB>conversation_id<TAB>phone_number
 * conversation_id may be empty; blank lines are ignored; at most 1000.
 *
 * Outputs. stdout, at once: "started START". Written at exit into DIR (which
 * must exist):
 *   DIR/start         START: the start, unix seconds with milliseconds
 *                     (1764424103.512)
 *   DIR/timeline.tsv  SECOND<TAB>KIND<TAB>OUTCOME<TAB>COUNT: completed
 *                     requests by whole second since START (0-based), kind
 *                     (login|read|webhook) and outcome (the 3-digit status,
 *                     or timeout|refused|reset|error); non-zero counts only,
 *                     sorted by second, kind, outcome
 *   DIR/webhooks.tsv  ID<TAB>ATTEMPT<TAB>OUTCOME<TAB>RESULT<TAB>SECOND: one
 *                     line a completed webhook attempt, in completion order;
 *                     RESULT is the response's top-level "status" string, or
 *                     "-"; SECOND is since START, with milliseconds
 *   DIR/latency.tsv   KIND<TAB>COUNT<TAB>P50_MS<TAB>P99_MS<TAB>MAX_MS: the
 *                     latencies of 2xx responses (nearest rank; all 0 when
 *                     COUNT is 0)
 * and then on stdout, a line a kind and one for the webhooks:
 *   KIND requests=N 2xx=N non2xx=N failed=N rps=R
 *   webhooks acked=N abandoned=N
 * rps is completed requests / seconds from START to the end of the run (the
 * wait for requests in flight included); acked counts the webhook ids that
 * got a 2xx; a webhook cut short by the stop is neither acked nor abandoned.
 *
 *   cc -std=c11 -D_GNU_SOURCE -O2 -o loadgen loadgen.c \
 *       $(pkg-config --cflags --libs libevent libsodium) */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_CHURCHES 1000   /* the webhook's from number has 3 digits for it */
#define MAX_CONTACTS 100000 /* and 5 for the contact */
#define MAX_TAG 40
#define BACKOFF_S 0.1 /* after refused, reset or error: no spinning */

static const char USAGE[] =
    "usage: loadgen --port N --seconds S --out DIR --churches FILE --seed SEED32\n"
    "               [--tag TAG] [--logins C] [--reads C] [--webhooks C]\n"
    "               [--timeout SECS] [--contacts N] [--webhook-attempts N]\n"
    "               [--retry-delay SECS]\n"
    "       loadgen --public-key --seed SEED32\n";

enum kind { K_LOGIN, K_READ, K_WEBHOOK, NKINDS };
static const char *const KIND_NAMES[NKINDS] = {"login", "read", "webhook"};

/* An outcome: an HTTP status (100..999), or one of these. */
enum { OUT_TIMEOUT = -1, OUT_REFUSED = -2, OUT_RESET = -3, OUT_ERROR = -4 };
#define OUT_503_BARE 1503 /* a 503 without Retry-After: a response, not a failure to get one */

struct options {
    int port;
    double seconds, timeout, retry_delay;
    const char *out, *churches, *seed, *tag;
    int counts[NKINDS];
    long contacts;
    int attempts;
    int public_key;
};

struct church {
    char *login_body; /* {"email":"..","password":".."} */
    char *auth;       /* Bearer TOKEN */
    char *messages;   /* the messages path, or NULL without a conversation */
    char *phone;
};

struct dvec {
    double *v;
    size_t n, cap;
};

struct cell { /* one (kind, outcome) count of a second */
    int kind, outcome;
    unsigned long count;
};

struct second {
    struct cell *cells;
    size_t n, cap;
};

struct kind_stats {
    unsigned long ok, non2xx, failed;
    struct dvec latency_ms; /* of 2xx responses */
};

struct client {
    struct loadgen *lg;
    int kind;
    struct evhttp_connection *evcon; /* NULL until needed */
    struct event *wake;              /* sends the next request */
    struct event *deadline;          /* the request's timeout */
    int inflight;
    int dead;     /* the connection failed: replace it */
    int up;       /* evhttp had the connection established (close callback) */
    int ev_error; /* the request's error callback code, or -1 */
    double t0;          /* when the request started (monotonic) */
    unsigned long wh_n; /* the webhook being delivered, or 0 */
    int wh_attempt;
};

struct loadgen {
    struct options opt;
    struct church *churches;
    size_t nchurches;
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char host[32]; /* the Host header */
    struct event_base *base;
    struct event *stop_timer, *sigterm, *sigint;
    struct client *clients;
    size_t nclients, inflight;
    struct timespec start_wall;
    double start, end; /* monotonic */
    int stopping, failed;
    unsigned long login_seq, read_seq, wh_seq, acked, abandoned;
    struct kind_stats stats[NKINDS];
    struct second *seconds;
    size_t nseconds;
    struct evbuffer *wh_log; /* the lines of webhooks.tsv */
};

/* ---- small helpers -------------------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0; /* cannot happen on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval to_timeval(double s)
{
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    return tv;
}

static void outcome_name(int outcome, char buf[8])
{
    static const char *const names[] = {"timeout", "refused", "reset", "error"};
    if (outcome < 0)
        snprintf(buf, 8, "%s", names[-outcome - 1]);
    else if (outcome == OUT_503_BARE)
        snprintf(buf, 8, "503bare");
    else
        snprintf(buf, 8, "%03d", outcome % 1000);
}

static int is_2xx(int outcome)
{
    return outcome >= 200 && outcome <= 299;
}

static int dvec_push(struct dvec *d, double x)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        double *v = realloc(d->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    return 0;
}

/* A copy of the evbuffer's text, NUL-terminated, or NULL. Drains it. */
static char *buffer_string(struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    char *s = malloc(len + 1);
    if (s == NULL || evbuffer_remove(b, s, len) != (int)len) {
        free(s);
        return NULL;
    }
    s[len] = '\0';
    return s;
}

/* ---- arguments ----------------------------------------------------------- */

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "loadgen: %s%s%s\n%s", what, arg ? ": " : "", arg ? arg : "", USAGE);
    return -1;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_int(const char *s, long min, long max, int *out)
{
    long v;
    if (parse_long(s, min, max, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* min excluded when open is set; NaN never passes */
static int parse_seconds(const char *s, double min, int open, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || !(v >= min && v <= 1e6) ||
        (open && v == min))
        return -1;
    *out = v;
    return 0;
}

static int tag_valid(const char *tag)
{
    size_t n = strlen(tag);
    if (n == 0 || n > MAX_TAG)
        return 0;
    for (const char *p = tag; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

/* Sets the option name to value. Returns 0, or -1 for a bad value. */
static int set_option(struct options *o, const char *name, const char *value)
{
    if (strcmp(name, "--port") == 0)
        return parse_int(value, 1, 65535, &o->port);
    if (strcmp(name, "--seconds") == 0)
        return parse_seconds(value, 0, 1, &o->seconds);
    if (strcmp(name, "--timeout") == 0)
        return parse_seconds(value, 0, 1, &o->timeout);
    if (strcmp(name, "--retry-delay") == 0)
        return parse_seconds(value, 0, 0, &o->retry_delay);
    if (strcmp(name, "--logins") == 0)
        return parse_int(value, 0, 10000, &o->counts[K_LOGIN]);
    if (strcmp(name, "--reads") == 0)
        return parse_int(value, 0, 10000, &o->counts[K_READ]);
    if (strcmp(name, "--webhooks") == 0)
        return parse_int(value, 0, 10000, &o->counts[K_WEBHOOK]);
    if (strcmp(name, "--contacts") == 0)
        return parse_long(value, 1, MAX_CONTACTS, &o->contacts);
    if (strcmp(name, "--webhook-attempts") == 0)
        return parse_int(value, 1, 1000, &o->attempts);
    const char **str = strcmp(name, "--out") == 0        ? &o->out
                       : strcmp(name, "--churches") == 0 ? &o->churches
                       : strcmp(name, "--seed") == 0     ? &o->seed
                       : strcmp(name, "--tag") == 0      ? &o->tag
                                                         : NULL;
    if (str == NULL)
        return -1;
    *str = value;
    return 0;
}

static int known_option(const char *name)
{
    static const char *const names[] = {
        "--port",   "--seconds",  "--timeout", "--retry-delay", "--logins",
        "--reads",  "--webhooks", "--contacts", "--webhook-attempts",
        "--out",    "--churches", "--seed",    "--tag",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return 1;
    return 0;
}

static int check_options(const struct options *o)
{
    if (!o->public_key &&
        (o->port == 0 || o->seconds == 0 || o->out == NULL || o->churches == NULL))
        return usage_error("--port, --seconds, --out, --churches and --seed are required", NULL);
    if (o->seed == NULL)
        return usage_error("missing --seed", NULL);
    if (strlen(o->seed) != crypto_sign_SEEDBYTES)
        return usage_error("--seed must be exactly 32 bytes", NULL);
    if (o->public_key)
        return 0;
    if (!tag_valid(o->tag))
        return usage_error("--tag must be 1 to 40 of A-Z a-z 0-9 - _ .", o->tag);
    struct stat st;
    if (stat(o->out, &st) != 0 || !S_ISDIR(st.st_mode))
        return usage_error("--out is not a directory", o->out);
    return 0;
}

/* Returns 0, or -1 after a message. */
static int parse_args(int argc, char **argv, struct options *o)
{
    *o = (struct options){.tag = "t", .counts = {1, 4, 8}, .timeout = 5, .contacts = 50,
                          .attempts = 5, .retry_delay = 1.0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--public-key") == 0) {
            o->public_key = 1;
            continue;
        }
        if (!known_option(argv[i]))
            return usage_error("unknown argument", argv[i]);
        if (i + 1 >= argc)
            return usage_error("missing value for", argv[i]);
        if (set_option(o, argv[i], argv[i + 1]) != 0)
            return usage_error("bad value for", argv[i]);
        i++;
    }
    return check_options(o);
}

/* ---- the churches file ----------------------------------------------------- */

static int chars_in(const char *s, const char *extra, int alnum)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int an = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
        if (!(alnum && an) && strchr(extra, *p) == NULL)
            return 0;
    }
    return 1;
}

static int printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

/* E.164-ish: an optional +, then 1 to 31 digits */
static int phone_valid(const char *s)
{
    const char *digits = *s == '+' ? s + 1 : s;
    size_t n = strlen(digits);
    return n >= 1 && n <= 31 && strspn(digits, "0123456789") == n;
}

static int json_string(struct evbuffer *b, const char *s)
{
    if (evbuffer_add(b, "\"", 1) != 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc = *p == '"' || *p == '\\' ? evbuffer_add_printf(b, "\\%c", *p)
                 : *p < 0x20             ? evbuffer_add_printf(b, "\\u%04x", *p)
                                         : evbuffer_add(b, p, 1);
        if (rc < 0)
            return -1;
    }
    return evbuffer_add(b, "\"", 1);
}

static char *login_body(const char *email, const char *password)
{
    struct evbuffer *b = evbuffer_new();
    char *s = NULL;
    if (b != NULL && evbuffer_add_printf(b, "{\"email\":") >= 0 && json_string(b, email) == 0 &&
        evbuffer_add_printf(b, ",\"password\":") >= 0 && json_string(b, password) == 0 &&
        evbuffer_add_printf(b, "}") >= 0)
        s = buffer_string(b);
    if (b != NULL)
        evbuffer_free(b);
    return s;
}

static char *format_string(const char *prefix, const char *s, const char *suffix)
{
    size_t n = strlen(prefix) + strlen(s) + strlen(suffix) + 1;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s%s%s", prefix, s, suffix);
    return out;
}

static void church_free(struct church *c)
{
    free(c->login_body);
    free(c->auth);
    free(c->messages);
    free(c->phone);
}

/* Splits line at tabs into exactly 5 fields. Returns 0, or -1. */
static int split_fields(char *line, char *f[5])
{
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p; p++)
        if (*p == '\t') {
            if (n == 5)
                return -1;
            *p = '\0';
            f[n++] = p + 1;
        }
    return n == 5 ? 0 : -1;
}

/* Fills c from one line. Returns 0, 1 when malformed, -1 out of memory. */
static int parse_church(char *line, struct church *c)
{
    char *f[5]; /* email, password, token, conversation, phone */
    if (split_fields(line, f) != 0 || *f[0] == '\0' || *f[1] == '\0' || *f[2] == '\0' ||
        *f[4] == '\0' || !printable(f[0]) || !printable(f[1]) ||
        !chars_in(f[2], "!#$%&'*+-./:;<=>?@[]^_`{|}~", 1) || strlen(f[2]) > 8192 ||
        !chars_in(f[3], "-._~", 1) || strlen(f[3]) > 200 || !phone_valid(f[4]))
        return 1;
    memset(c, 0, sizeof *c);
    c->login_body = login_body(f[0], f[1]);
    c->auth = format_string("Bearer ", f[2], "");
    c->messages = *f[3] ? format_string("/api/conversations/", f[3], "/messages?limit=20") : NULL;
    c->phone = strdup(f[4]);
    if (c->login_body == NULL || c->auth == NULL || (*f[3] && c->messages == NULL) ||
        c->phone == NULL) {
        church_free(c);
        return -1;
    }
    return 0;
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            return 0;
    return 1;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* Returns 0; 2 for a bad file (after a message); 1 out of memory. */
static int read_lines(struct loadgen *lg, FILE *f, const char *path)
{
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        chomp(line);
        if (blank(line))
            continue;
        if (lg->nchurches == MAX_CHURCHES) {
            fprintf(stderr, "loadgen: %s:%ld: more than %d churches\n", path, lineno, MAX_CHURCHES);
            rc = 2;
            break;
        }
        int r = parse_church(line, &lg->churches[lg->nchurches]);
        if (r == 1)
            fprintf(stderr,
                    "loadgen: %s:%ld: malformed line (want email, password, access token, "
                    "conversation id or nothing, phone number, tab-separated)\n",
                    path, lineno);
        rc = r == 1 ? 2 : r == -1 ? 1 : 0;
        if (r == 0)
            lg->nchurches++;
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "loadgen: %s: read error\n", path);
        rc = 2;
    }
    free(line);
    return rc;
}

static int load_churches(struct loadgen *lg)
{
    const char *path = lg->opt.churches;
    lg->churches = calloc(MAX_CHURCHES, sizeof *lg->churches);
    if (lg->churches == NULL)
        return 1;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
        return 2;
    }
    int rc = read_lines(lg, f, path);
    if (fclose(f) != 0 && rc == 0)
        rc = 2;
    if (rc == 0 && lg->nchurches == 0) {
        fprintf(stderr, "loadgen: %s: no church\n", path);
        rc = 2;
    }
    return rc;
}

/* ---- recording -------------------------------------------------------------- */

static struct second *second_at(struct loadgen *lg, size_t sec)
{
    if (sec >= lg->nseconds) {
        size_t n = sec + 16;
        struct second *s = realloc(lg->seconds, n * sizeof *s);
        if (s == NULL)
            return NULL;
        memset(s + lg->nseconds, 0, (n - lg->nseconds) * sizeof *s);
        lg->seconds = s;
        lg->nseconds = n;
    }
    return &lg->seconds[sec];
}

static int timeline_add(struct loadgen *lg, size_t sec, int kind, int outcome)
{
    struct second *s = second_at(lg, sec);
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < s->n; i++)
        if (s->cells[i].kind == kind && s->cells[i].outcome == outcome) {
            s->cells[i].count++;
            return 0;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct cell *c = realloc(s->cells, cap * sizeof *c);
        if (c == NULL)
            return -1;
        s->cells = c;
        s->cap = cap;
    }
    s->cells[s->n++] = (struct cell){kind, outcome, 1};
    return 0;
}

/* Counts one completed request. Returns 0, or -1 out of memory. */
static int record(struct loadgen *lg, int kind, int outcome, double latency, double since)
{
    struct kind_stats *st = &lg->stats[kind];
    if (outcome < 0)
        st->failed++;
    else if (is_2xx(outcome)) {
        st->ok++;
        if (dvec_push(&st->latency_ms, latency * 1000) != 0)
            return -1;
    } else
        st->non2xx++;
    return timeline_add(lg, since > 0 ? (size_t)since : 0, kind, outcome);
}

static size_t skip_space(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* The top-level "status" string of a JSON object into out (sanitised for a
 * TSV field), or "-". A plain scan: strings are skipped, depth counted. */
static void json_status(const char *s, size_t len, char *out, size_t outlen)
{
    int depth = 0, key_pos = 0;
    snprintf(out, outlen, "-");
    for (size_t i = 0; s != NULL && i < len; i++) {
        char ch = s[i];
        if (ch == '{' || ch == '[') {
            depth++;
            key_pos = ch == '{';
        } else if (ch == '}' || ch == ']') {
            depth--;
            key_pos = 0;
        } else if (ch == ',') {
            key_pos = 1;
        } else if (ch == '"') {
            size_t start = ++i;
            while (i < len && s[i] != '"')
                i += s[i] == '\\' ? 2 : 1;
            if (i >= len)
                return;
            int is_status = depth == 1 && key_pos && i - start == 6 &&
                            memcmp(s + start, "status", 6) == 0;
            key_pos = 0;
            if (!is_status)
                continue;
            size_t j = skip_space(s, len, i + 1);
            if (j >= len || s[j] != ':')
                return; /* not a key after all */
            j = skip_space(s, len, j + 1);
            if (j >= len || s[j] != '"')
                return; /* not a string */
            size_t k = 0;
            for (j++; j < len && s[j] != '"' && k + 1 < outlen; j++)
                out[k++] = (unsigned char)s[j] < 0x21 || s[j] == 0x7f ? '_' : s[j];
            out[k] = '\0';
            if (k == 0)
                snprintf(out, outlen, "-");
            return;
        }
    }
}

/* ---- requests --------------------------------------------------------------- */

static void on_response(struct evhttp_request *req, void *arg);
static void schedule(struct client *c, double delay);

static void on_error(enum evhttp_request_error error, void *arg)
{
    struct client *c = arg;
    if (c->ev_error < 0)
        c->ev_error = (int)error;
}

/* evhttp calls it when a connection it had established closes. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct client *c = arg;
    c->up = 1;
}

static int open_connection(struct client *c)
{
    struct loadgen *lg = c->lg;
    c->evcon = evhttp_connection_base_new(lg->base, NULL, "127.0.0.1", (unsigned short)lg->opt.port);
    if (c->evcon == NULL)
        return -1;
    /* evhttp's own timers (connect, read, write) are a backstop behind our
     * deadline, which bounds the whole request */
    struct timeval tv = to_timeval(lg->opt.timeout + 1);
    evhttp_connection_set_timeout_tv(c->evcon, &tv);
    evhttp_connection_set_retries(c->evcon, 0);
    evhttp_connection_set_closecb(c->evcon, on_close, c);
    return 0;
}

static void drop_connection(struct client *c)
{
    if (c->evcon != NULL)
        evhttp_connection_free(c->evcon); /* and its request, without callbacks */
    c->evcon = NULL;
    c->dead = 0;
}

static int add_header(struct evhttp_request *req, const char *name, const char *value)
{
    return evhttp_add_header(evhttp_request_get_output_headers(req), name, value);
}

static int add_body(struct evhttp_request *req, const char *body, size_t len)
{
    if (add_header(req, "Content-Type", "application/json") != 0)
        return -1;
    return evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
}

static int build_login(struct client *c, struct evhttp_request *req, const char **uri)
{
    struct loadgen *lg = c->lg;
    const struct church *ch = &lg->churches[lg->login_seq++ % lg->nchurches];
    *uri = "/api/auth/login";
    return add_body(req, ch->login_body, strlen(ch->login_body));
}

/* Read i: church i/2, its conversation list for even i, its messages for odd
 * i (the list again without a conversation). */
static int build_read(struct client *c, struct evhttp_request *req, const char **uri)
{
    struct loadgen *lg = c->lg;
    unsigned long i = lg->read_seq++;
    const struct church *ch = &lg->churches[(i / 2) % lg->nchurches];
    *uri = i % 2 == 1 && ch->messages != NULL ? ch->messages : "/api/conversations?limit=20";
    return add_header(req, "Authorization", ch->auth);
}

static int webhook_body(const struct client *c, char *buf, size_t n)
{
    const struct loadgen *lg = c->lg;
    unsigned long id = c->wh_n;
    size_t church = (size_t)((id - 1) % lg->nchurches);
    const char *tag = lg->opt.tag;
    int len = snprintf(buf, n,
        "{\"data\":{\"id\":\"ev-fault-%s-%lu\",\"event_type\":\"message.received\","
        "\"occurred_at\":\"2026-11-29T12:00:00Z\",\"payload\":{\"id\":\"fault-%s-%lu\","
        "\"from\":{\"phone_number\":\"+1666%03zu%05lu\"},\"to\":[{\"phone_number\":\"%s\"}],"
        "\"text\":\"Fault load message fault-%s-%lu\",\"media\":[]}},\"meta\":{\"attempt\":%d}}",
        tag, id, tag, id, church, id % (unsigned long)lg->opt.contacts,
        lg->churches[church].phone, tag, id, c->wh_attempt);
    return len < 0 || (size_t)len >= n ? -1 : len;
}

/* Telnyx's signature: Ed25519 over "TIMESTAMP|BODY", base64 (original). */
static int sign(const struct loadgen *lg, const char *ts, const char *body, size_t len,
                char *b64, size_t b64len)
{
    char msg[1200];
    size_t tslen = strlen(ts);
    if (tslen + 1 + len > sizeof msg)
        return -1;
    memcpy(msg, ts, tslen);
    msg[tslen] = '|';
    memcpy(msg + tslen + 1, body, len);
    unsigned char sig[crypto_sign_BYTES];
    if (crypto_sign_detached(sig, NULL, (const unsigned char *)msg, tslen + 1 + len, lg->sk) != 0)
        return -1;
    sodium_bin2base64(b64, b64len, sig, sizeof sig, sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

static int build_webhook(struct client *c, struct evhttp_request *req, const char **uri)
{
    struct loadgen *lg = c->lg;
    char body[1024], ts[24];
    char b64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    if (c->wh_n == 0) { /* a new webhook */
        c->wh_n = ++lg->wh_seq;
        c->wh_attempt = 1;
    }
    int len = webhook_body(c, body, sizeof body);
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    if (len < 0 || sign(lg, ts, body, (size_t)len, b64, sizeof b64) != 0)
        return -1;
    *uri = "/api/webhooks/telnyx/messaging";
    if (add_header(req, "telnyx-timestamp", ts) != 0 ||
        add_header(req, "telnyx-signature-ed25519", b64) != 0)
        return -1;
    return add_body(req, body, (size_t)len);
}

static int build_request(struct client *c, struct evhttp_request *req, const char **uri,
                         enum evhttp_cmd_type *type)
{
    if (add_header(req, "Host", c->lg->host) != 0)
        return -1;
    *type = c->kind == K_READ ? EVHTTP_REQ_GET : EVHTTP_REQ_POST;
    if (c->kind == K_LOGIN)
        return build_login(c, req, uri);
    if (c->kind == K_READ)
        return build_read(c, req, uri);
    return build_webhook(c, req, uri);
}

static void fail_run(struct loadgen *lg, const char *why)
{
    fprintf(stderr, "loadgen: %s\n", why);
    lg->failed = 1;
    event_base_loopbreak(lg->base);
}

/* The end of the run: nothing in flight after the stop. */
static void maybe_done(struct loadgen *lg)
{
    if (lg->stopping && lg->inflight == 0)
        event_base_loopbreak(lg->base);
}

/* A webhook attempt completed: logs it, decides on a retry. Returns the
 * delay before the client's next request (at least min_delay). */
static double webhook_done(struct client *c, int outcome, const char *body, size_t len,
                           double since, double min_delay)
{
    struct loadgen *lg = c->lg;
    char name[8], result[64];
    outcome_name(outcome, name);
    json_status(body, len, result, sizeof result);
    if (evbuffer_add_printf(lg->wh_log, "fault-%s-%lu\t%d\t%s\t%s\t%.3f\n", lg->opt.tag,
                            c->wh_n, c->wh_attempt, name, result, since) < 0)
        fail_run(lg, "out of memory");
    if (is_2xx(outcome) || c->wh_attempt >= lg->opt.attempts) {
        if (is_2xx(outcome))
            lg->acked++;
        else
            lg->abandoned++;
        c->wh_n = 0;
        return min_delay;
    }
    c->wh_attempt++;
    return lg->opt.retry_delay > min_delay ? lg->opt.retry_delay : min_delay;
}

/* The request of c ended with outcome (body: the response's, if any). */
static void finish(struct client *c, int outcome, const char *body, size_t len)
{
    struct loadgen *lg = c->lg;
    double now = now_mono(), since = now - lg->start;
    double delay = outcome < 0 && outcome != OUT_TIMEOUT ? BACKOFF_S : 0;
    if (event_del(c->deadline) != 0)
        fail_run(lg, "cannot cancel a timer");
    c->inflight = 0;
    lg->inflight--;
    if (outcome < 0)
        c->dead = 1;
    if (record(lg, c->kind, outcome, now - c->t0, since) != 0)
        fail_run(lg, "out of memory");
    if (c->kind == K_WEBHOOK)
        delay = webhook_done(c, outcome, body, len, since, delay);
    if (lg->stopping)
        maybe_done(lg);
    else
        schedule(c, delay);
}

/* A request that ended without a response. libevent 2.1.12 ends it in one
 * of two shapes:
 *  - a refused connect (ECONNREFUSED; also evhttp's own connect timeout,
 *    which our deadline always beats): the request callback with req and
 *    status 0, no error callback, and errno already overwritten (ENOTCONN
 *    by experiment), so it cannot tell;
 *  - anything else: the error callback (EVREQ_HTTP_EOF for a close or a
 *    reset, EVREQ_HTTP_INVALID_HEADER for a bad response, ...), then the
 *    request callback with NULL.
 * Whether the connection was ever up tells "could not connect" apart: evhttp
 * runs the close callback only for a connection it had established, and
 * before the request's callbacks. */
static int classify_failure(const struct client *c)
{
    if (c->ev_error == EVREQ_HTTP_TIMEOUT)
        return OUT_TIMEOUT;
    if (!c->up)
        return OUT_REFUSED;
    if (c->ev_error == EVREQ_HTTP_EOF || c->ev_error < 0)
        return OUT_RESET;
    return OUT_ERROR;
}

/* evhttp's request callback: a response (status > 0), or a failure (see
 * classify_failure). Nothing here may free the connection: evhttp still
 * uses it when this returns. */
static void on_response(struct evhttp_request *req, void *arg)
{
    struct client *c = arg;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    if (!c->inflight)
        return;
    if (code == 0) {
        finish(c, classify_failure(c), NULL, 0);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len > 0 ? (const char *)evbuffer_pullup(in, -1) : NULL;
    int outcome = code >= 100 && code <= 999 ? code : OUT_ERROR;
    if (code == 503 && evhttp_find_header(evhttp_request_get_input_headers(req), "Retry-After") == NULL)
        outcome = OUT_503_BARE;
    finish(c, outcome, body, body ? len : 0);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct client *c = arg;
    if (!c->inflight)
        return;
    drop_connection(c); /* frees the request too; no evhttp callback follows */
    finish(c, OUT_TIMEOUT, NULL, 0);
}

/* Starts c's next request. Returns 0 (a failure to start is reported as the
 * request's outcome), or -1 out of memory. */
static int start_request(struct client *c)
{
    struct loadgen *lg = c->lg;
    const char *uri = NULL;
    enum evhttp_cmd_type type;
    if (c->evcon == NULL && open_connection(c) != 0)
        return -1;
    struct evhttp_request *req = evhttp_request_new(on_response, c);
    if (req == NULL)
        return -1;
    evhttp_request_set_error_cb(req, on_error);
    if (build_request(c, req, &uri, &type) != 0) {
        evhttp_request_free(req);
        return -1;
    }
    struct timeval tv = to_timeval(lg->opt.timeout);
    if (evtimer_add(c->deadline, &tv) != 0) {
        evhttp_request_free(req);
        return -1;
    }
    c->inflight = 1;
    c->up = 0;
    c->ev_error = -1;
    c->t0 = now_mono();
    lg->inflight++;
    /* from here evhttp owns req, and may even call on_response before it
     * returns; on -1 it does not call it (and may or may not have freed req:
     * that is out of our hands) */
    if (evhttp_make_request(c->evcon, req, type, uri) != 0 && c->inflight)
        finish(c, OUT_ERROR, NULL, 0);
    return 0;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct client *c = arg;
    if (c->dead)
        drop_connection(c);
    if (c->lg->stopping || c->inflight)
        return;
    if (start_request(c) != 0)
        fail_run(c->lg, "cannot start a request (out of memory?)");
}

/* Runs on_wake from the loop after delay seconds (0: the next iteration). */
static void schedule(struct client *c, double delay)
{
    struct timeval tv = to_timeval(delay);
    if (evtimer_add(c->wake, &tv) != 0)
        fail_run(c->lg, "cannot add a timer");
}

/* ---- start and stop ---------------------------------------------------------- */

static void begin_stop(struct loadgen *lg)
{
    if (lg->stopping)
        return;
    lg->stopping = 1;
    for (size_t i = 0; i < lg->nclients; i++)
        if (event_del(lg->clients[i].wake) != 0)
            fail_run(lg, "cannot cancel a timer");
    maybe_done(lg);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    begin_stop(arg);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loadgen *lg = arg;
    if (lg->stopping)
        event_base_loopbreak(lg->base); /* the second one: stop waiting */
    else
        begin_stop(lg);
}

static int setup_clients(struct loadgen *lg)
{
    size_t n = 0;
    for (int k = 0; k < NKINDS; k++)
        n += (size_t)lg->opt.counts[k];
    lg->clients = calloc(n ? n : 1, sizeof *lg->clients);
    if (lg->clients == NULL)
        return -1;
    for (int k = 0; k < NKINDS; k++)
        for (int i = 0; i < lg->opt.counts[k]; i++) {
            struct client *c = &lg->clients[lg->nclients++];
            c->lg = lg;
            c->kind = k;
            c->ev_error = -1;
            c->wake = evtimer_new(lg->base, on_wake, c);
            c->deadline = evtimer_new(lg->base, on_deadline, c);
            if (c->wake == NULL || c->deadline == NULL)
                return -1;
        }
    return 0;
}

static int setup(struct loadgen *lg)
{
    snprintf(lg->host, sizeof lg->host, "127.0.0.1:%d", lg->opt.port);
    lg->base = event_base_new();
    if (lg->base == NULL)
        return -1;
    lg->wh_log = evbuffer_new();
    lg->stop_timer = evtimer_new(lg->base, on_stop_timer, lg);
    lg->sigterm = evsignal_new(lg->base, SIGTERM, on_signal, lg);
    lg->sigint = evsignal_new(lg->base, SIGINT, on_signal, lg);
    if (lg->wh_log == NULL || lg->stop_timer == NULL || lg->sigterm == NULL ||
        lg->sigint == NULL || evsignal_add(lg->sigterm, NULL) != 0 ||
        evsignal_add(lg->sigint, NULL) != 0)
        return -1;
    return setup_clients(lg);
}

/* Prints "started START" and starts every client and the stop timer. */
static int start_run(struct loadgen *lg)
{
    if (clock_gettime(CLOCK_REALTIME, &lg->start_wall) != 0)
        return -1;
    lg->start = now_mono();
    if (printf("started %lld.%03ld\n", (long long)lg->start_wall.tv_sec,
               lg->start_wall.tv_nsec / 1000000) < 0 ||
        fflush(stdout) != 0)
        return -1;
    struct timeval tv = to_timeval(lg->opt.seconds);
    if (evtimer_add(lg->stop_timer, &tv) != 0)
        return -1;
    for (size_t i = 0; i < lg->nclients; i++)
        schedule(&lg->clients[i], 0);
    return lg->failed ? -1 : 0;
}

/* ---- outputs ------------------------------------------------------------------ */

struct row {
    size_t second;
    int kind;
    char outcome[8];
    unsigned long count;
};

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    if (x->second != y->second)
        return x->second < y->second ? -1 : 1;
    int k = strcmp(KIND_NAMES[x->kind], KIND_NAMES[y->kind]);
    return k != 0 ? k : strcmp(x->outcome, y->outcome);
}

static FILE *open_output(const struct loadgen *lg, const char *name, char *path, size_t n)
{
    int len = snprintf(path, n, "%s/%s", lg->opt.out, name);
    if (len < 0 || (size_t)len >= n)
        return NULL;
    FILE *f = fopen(path, "w");
    if (f == NULL)
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
    return f;
}

/* Closes f; rc: whether every write went well (0). Returns 0, or -1. */
static int close_output(FILE *f, const char *path, int rc)
{
    if (ferror(f))
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    if (rc != 0)
        fprintf(stderr, "loadgen: cannot write %s\n", path);
    return rc;
}

static int write_start(const struct loadgen *lg)
{
    char path[4096];
    FILE *f = open_output(lg, "start", path, sizeof path);
    if (f == NULL)
        return -1;
    int rc = fprintf(f, "%lld.%03ld\n", (long long)lg->start_wall.tv_sec,
                     lg->start_wall.tv_nsec / 1000000) < 0 ? -1 : 0;
    return close_output(f, path, rc);
}

static struct row *timeline_rows(const struct loadgen *lg, size_t *n)
{
    size_t total = 0;
    for (size_t s = 0; s < lg->nseconds; s++)
        total += lg->seconds[s].n;
    struct row *rows = malloc((total ? total : 1) * sizeof *rows);
    if (rows == NULL)
        return NULL;
    *n = 0;
    for (size_t s = 0; s < lg->nseconds; s++)
        for (size_t i = 0; i < lg->seconds[s].n; i++) {
            const struct cell *c = &lg->seconds[s].cells[i];
            struct row *r = &rows[(*n)++];
            r->second = s;
            r->kind = c->kind;
            r->count = c->count;
            outcome_name(c->outcome, r->outcome);
        }
    qsort(rows, *n, sizeof *rows, row_cmp);
    return rows;
}

static int write_timeline(const struct loadgen *lg)
{
    char path[4096];
    size_t n = 0;
    struct row *rows = timeline_rows(lg, &n);
    if (rows == NULL)
        return -1;
    FILE *f = open_output(lg, "timeline.tsv", path, sizeof path);
    int rc = 0;
    for (size_t i = 0; f != NULL && rc == 0 && i < n; i++)
        if (fprintf(f, "%zu\t%s\t%s\t%lu\n", rows[i].second, KIND_NAMES[rows[i].kind],
                    rows[i].outcome, rows[i].count) < 0)
            rc = -1;
    free(rows);
    return f != NULL ? close_output(f, path, rc) : -1;
}

static int write_webhooks(const struct loadgen *lg)
{
    char path[4096];
    FILE *f = open_output(lg, "webhooks.tsv", path, sizeof path);
    if (f == NULL)
        return -1;
    size_t len = evbuffer_get_length(lg->wh_log);
    const unsigned char *text = len > 0 ? evbuffer_pullup(lg->wh_log, -1) : NULL;
    int rc = len > 0 && (text == NULL || fwrite(text, 1, len, f) != len) ? -1 : 0;
    return close_output(f, path, rc);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The nearest-rank percentile p of the sorted v[0..n-1], n > 0. */
static double percentile(const double *v, size_t n, double p)
{
    size_t rank = (size_t)(p * (double)n);
    if ((double)rank < p * (double)n)
        rank++;
    return v[rank > 0 ? rank - 1 : 0];
}

static int write_latency(struct loadgen *lg)
{
    char path[4096];
    FILE *f = open_output(lg, "latency.tsv", path, sizeof path);
    if (f == NULL)
        return -1;
    int rc = 0;
    for (int k = 0; k < NKINDS && rc == 0; k++) {
        struct dvec *d = &lg->stats[k].latency_ms;
        if (d->n == 0) {
            rc = fprintf(f, "%s\t0\t0\t0\t0\n", KIND_NAMES[k]) < 0 ? -1 : 0;
            continue;
        }
        qsort(d->v, d->n, sizeof *d->v, cmp_double);
        rc = fprintf(f, "%s\t%zu\t%.3f\t%.3f\t%.3f\n", KIND_NAMES[k], d->n,
                     percentile(d->v, d->n, 0.50), percentile(d->v, d->n, 0.99),
                     d->v[d->n - 1]) < 0 ? -1 : 0;
    }
    return close_output(f, path, rc);
}

static int print_summary(const struct loadgen *lg)
{
    double elapsed = lg->end - lg->start;
    for (int k = 0; k < NKINDS; k++) {
        const struct kind_stats *st = &lg->stats[k];
        unsigned long total = st->ok + st->non2xx + st->failed;
        if (printf("%s requests=%lu 2xx=%lu non2xx=%lu failed=%lu rps=%.2f\n", KIND_NAMES[k],
                   total, st->ok, st->non2xx, st->failed,
                   elapsed > 0 ? (double)total / elapsed : 0.0) < 0)
            return -1;
    }
    if (printf("webhooks acked=%lu abandoned=%lu\n", lg->acked, lg->abandoned) < 0)
        return -1;
    return fflush(stdout) == 0 ? 0 : -1;
}

static int write_outputs(struct loadgen *lg)
{
    int rc = 0;
    if (write_start(lg) != 0)
        rc = -1;
    if (write_timeline(lg) != 0)
        rc = -1;
    if (write_webhooks(lg) != 0)
        rc = -1;
    if (write_latency(lg) != 0)
        rc = -1;
    if (print_summary(lg) != 0)
        rc = -1;
    return rc;
}

/* ---- cleanup and main -------------------------------------------------------- */

static void free_event(struct event *ev)
{
    if (ev != NULL)
        event_free(ev);
}

static void cleanup(struct loadgen *lg)
{
    for (size_t i = 0; i < lg->nclients; i++) {
        struct client *c = &lg->clients[i];
        drop_connection(c); /* before the client: its close callback runs */
        free_event(c->wake);
        free_event(c->deadline);
    }
    free(lg->clients);
    free_event(lg->stop_timer);
    free_event(lg->sigterm);
    free_event(lg->sigint);
    if (lg->wh_log != NULL)
        evbuffer_free(lg->wh_log);
    if (lg->base != NULL)
        event_base_free(lg->base);
    for (size_t s = 0; s < lg->nseconds; s++)
        free(lg->seconds[s].cells);
    free(lg->seconds);
    for (int k = 0; k < NKINDS; k++)
        free(lg->stats[k].latency_ms.v);
    for (size_t i = 0; i < lg->nchurches; i++)
        church_free(&lg->churches[i]);
    free(lg->churches);
    sodium_memzero(lg->sk, sizeof lg->sk);
}

static int print_public_key(const struct loadgen *lg)
{
    char b64[sodium_base64_ENCODED_LEN(crypto_sign_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, lg->pk, sizeof lg->pk, sodium_base64_VARIANT_ORIGINAL);
    return puts(b64) < 0 || fflush(stdout) != 0 ? 1 : 0;
}

static int run(struct loadgen *lg)
{
    int rc = load_churches(lg);
    if (rc != 0)
        return rc;
    if (setup(lg) != 0 || start_run(lg) != 0) {
        fprintf(stderr, "loadgen: cannot set up the run\n");
        return 1;
    }
    if (event_base_dispatch(lg->base) < 0)
        lg->failed = 1;
    lg->end = now_mono();
    if (write_outputs(lg) != 0 || lg->failed)
        return 1;
    return 0;
}

int main(int argc, char **argv)
{
    struct loadgen lg;
    memset(&lg, 0, sizeof lg);
    if (parse_args(argc, argv, &lg.opt) != 0)
        return 2;
    if (sodium_init() < 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "loadgen: cannot initialise\n");
        return 1;
    }
    if (crypto_sign_seed_keypair(lg.pk, lg.sk, (const unsigned char *)lg.opt.seed) != 0)
        return 1;
    int rc = lg.opt.public_key ? print_public_key(&lg) : run(&lg);
    cleanup(&lg);
    libevent_global_shutdown();
    return rc;
}
