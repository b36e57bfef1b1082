/* http_conn.h — a worker's client connections, read through an http_framer
 * before evhttp parses them (http_framer.h says why).
 *
 * evhttp makes each connection's socket bufferevent here (evhttp_set_bevcb).
 * An evbuffer callback on its input runs as a read adds bytes, before
 * evhttp's read callback: it moves them to the connection's own buffer and
 * puts back only what the framer hands over, one header block at a time.
 * Once evhttp has written the answer to a request (http_conns_answered), the
 * next request is framed from the bytes already read. A connection ends when
 * evhttp frees it: its close callback belongs to this module, which passes it
 * on to whoever watches the connection (http_conn_watch). Free of Lua. */
#ifndef STEEPLE_HTTP_CONN_H
#define STEEPLE_HTTP_CONN_H

#include "http_framer.h"

struct bufferevent;
struct event_base;
struct evbuffer;
struct evhttp_request;
struct http_conn;
struct http_conns;

/* The body limit for a request with a body, by method and path (the request
 * target's path, as evhttp will parse it); <= 0 means the default. */
typedef long (*http_path_limit_fn)(void *arg, const char *method, const char *path);

/* Returns an empty set of connections, or NULL when out of memory. limit may
 * be NULL (every body gets limits.body_bytes). */
struct http_conns *http_conns_new(struct event_base *base, long header_bytes, long body_bytes,
                                  http_path_limit_fn limit, void *arg)
    __attribute__((warn_unused_result));
/* Frees what is left: call after evhttp_free(), which ends the connections. */
void http_conns_free(struct http_conns *cs);

/* New limits, for the requests framed from now on. */
void http_conns_set_limits(struct http_conns *cs, long header_bytes, long body_bytes);

/* evhttp's bufferevent callback: a socket bufferevent whose input passes
 * through a framer, or NULL when out of memory (evhttp then makes its own,
 * and http_conns_find finds no connection for its requests). */
struct bufferevent *http_conns_bufferevent(struct http_conns *cs);

/* The connection of a request evhttp has handed over, or NULL. */
struct http_conn *http_conns_find(struct http_conns *cs, struct evhttp_request *req);

/* The answer to a request has been written (from its on-complete callback):
 * ends the connection's watch (http_conn_watch) and frames its next request. */
void http_conns_answered(struct http_conns *cs, struct evhttp_request *req);

/* For the request handed over: 0, or 400 / 413 when the framer refused it
 * (the answer must close the connection), and why. */
int http_conn_refused(const struct http_conn *c);
const char *http_conn_why(const struct http_conn *c);

/* The decoded body of the request handed over; the caller may drain it. */
struct evbuffer *http_conn_body(struct http_conn *c);

/* Calls on_close(arg) when evhttp frees the connection (the client went away
 * or the server closed it), after which the connection and its requests are
 * gone. NULL stops watching. */
void http_conn_watch(struct http_conn *c, void (*on_close)(void *arg), void *arg);

#endif
