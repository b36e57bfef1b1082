/* conn_guard.h — per-worker connection cap and slow-client reaper.
 *
 * libevent 2.1's evhttp neither caps connections nor bounds the time a client
 * may take to send a request (its timeout is per read, so one byte a second
 * keeps a connection alive forever). The guard counts this worker's client
 * connections by asking the kernel (the sockets whose local port is ours),
 * stops accepting at the cap and resumes below it, and shuts down any
 * connection that has been waiting for a request longer than the read
 * timeout: idle keep-alive connections and tricklers alike. At the cap it
 * also sheds the connections that have waited longest for a request (at
 * least SHED_IDLE_S), down to 90% of the cap, so that idle keep-alive
 * connections cannot lock out new clients; a connection whose request is
 * being handled is never shed. One client address may hold at most
 * per_address connections. evhttp then sees end-of-file and frees the
 * connection itself. */
#ifndef STEEPLE_CONN_GUARD_H
#define STEEPLE_CONN_GUARD_H

struct event_base;
struct evconnlistener;
struct conn_guard;

/* per_address: connections one client address may hold (0: any); past it,
 * the newest idle ones of that address are shut down at the next sweep. */
struct conn_guard *conn_guard_new(struct event_base *base, struct evconnlistener *listener,
                                  int port, int max_connections, int per_address,
                                  double read_timeout_s) __attribute__((warn_unused_result));
void conn_guard_free(struct conn_guard *g);

void conn_guard_set_limits(struct conn_guard *g, int max_connections, int per_address,
                           double read_timeout_s);

/* A connection was accepted (called from evhttp's bufferevent callback). */
void conn_guard_accepted(struct conn_guard *g);
/* A request on fd is now in the server's hands / has been answered. */
void conn_guard_busy(struct conn_guard *g, int fd);
void conn_guard_idle(struct conn_guard *g, int fd);

/* Client connections counted at the last sweep plus those accepted since. */
int conn_guard_count(const struct conn_guard *g);
/* Recounts now and reaps expired connections; returns the count. */
int conn_guard_sweep(struct conn_guard *g);
/* Stops accepting for good (shutdown). */
void conn_guard_stop_accepting(struct conn_guard *g);

#endif
