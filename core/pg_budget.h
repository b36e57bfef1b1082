/* pg_budget.h — the connection budget of each database server, shared by the
 * workers of a node, and the pure rules of the pool policy that spends it.
 * Free of Lua and of libevent.
 *
 * The master maps one shared table before forking (as ratelimit.c does) and
 * registers every configured server in it with its cap
 * (db.server_max_connections). A worker reserves one unit of a server's
 * budget with a compare-and-swap before it starts a connect, and gives it back
 * when that connection closes: the connections of all workers to a server,
 * open or connecting, never exceed its cap, however the workers race.
 *
 * Each worker also publishes, in a row of its own per server, what the others
 * need to share the budget fairly: the units it holds, its busy pools, its
 * starving pools (waiters and no connection) and when the oldest of their
 * waiters arrived. A restarted worker takes over its predecessor's row and
 * returns the units it held: those connections died with it.
 *
 * A process that never called pg_budget_init (a command-line task, a test)
 * gets a private table for one worker on first use. */
#ifndef STEEPLE_PG_BUDGET_H
#define STEEPLE_PG_BUDGET_H

#define PG_BUDGET_MAX_SERVERS 64
#define PG_BUDGET_MAX_WORKERS 256
#define PG_BUDGET_KEY_LEN 96

/* A pool used this recently is busy; a pool that gave up a connection for
 * another does not open one more for this long, so no connection is closed
 * and opened again for the same pool within it. Seconds. */
#define PG_HYSTERESIS_S 1.0

/* Maps the shared table for `workers` rows (1..PG_BUDGET_MAX_WORKERS). Call it
 * in the master before fork; replaces any table this process had. Returns 0,
 * or -1 (bad count, mmap or mutex failure). */
int pg_budget_init(int workers) __attribute__((warn_unused_result));

/* Unmaps this process's view (other processes keep theirs). */
void pg_budget_shutdown(void);

/* This process is worker `worker` (0-based): its row is the worker's, and the
 * units a predecessor in that row held are given back. */
void pg_budget_attach(int worker);

/* The slot of server `key`, registered with `cap` (>= 1) when absent; a
 * registered server keeps its first cap. Returns the slot (>= 0), or -1 when
 * the table is full, the key too long, or no table can be made. */
int pg_budget_server(const char *key, int cap) __attribute__((warn_unused_result));

/* Takes one unit of the slot's budget: 1, or 0 when the node is at the cap
 * (nothing taken). Every unit taken is given back with pg_budget_release. */
int pg_budget_reserve(int slot) __attribute__((warn_unused_result));
void pg_budget_release(int slot);

/* The cap, and the units in use over all workers (a snapshot). */
int pg_budget_cap(int slot);
int pg_budget_used(int slot);
/* The units this worker holds. */
int pg_budget_held(int slot);

/* What a worker needs, published for one server. */
struct pg_budget_demand {
    int busy;      /* pools used within PG_HYSTERESIS_S */
    int starving;  /* pools with waiters and no connection, free to connect */
    double oldest; /* arrival (clock_mono) of their oldest waiter; 0: none */
};

/* Replaces this worker's published demand for the slot. */
void pg_budget_publish(int slot, const struct pg_budget_demand *d);

/* The other workers' demand for a slot: sums of busy and starving pools, the
 * earliest oldest (0: none), and `older`: the starving pools of workers whose
 * oldest waiter arrived before `since`. */
struct pg_budget_others {
    int busy;
    int starving;
    int older;
    double oldest;
};
void pg_budget_others(int slot, double since, struct pg_budget_others *o);

/* ---- the policy's rules: pure functions of what they are given ---------- */

/* Connections each busy pool may count on: cap / busy (cap when none is
 * busy). 0 means the busy pools outnumber the budget: connections rotate
 * between them. */
int pg_policy_fair_share(int cap, int busy);

/* Whether a pool that has connections should open one more for its waiters:
 * only for waiters that no idle, connecting or busy connection serves before
 * a new connection would be ready. Meanwhile each busy connection serves
 * connect_cost / hold waiters, and each connecting one that many after its
 * first. hold and connect_cost are seconds; a hold of 0 (not known yet)
 * counts only the idle and connecting connections. */
int pg_policy_should_grow(int nwait, int idle, int connecting, int active, double hold,
                          double connect_cost);

/* How long a pool's idle connection is kept from rotating to another pool:
 * when the pool's uses come closer together (gap, a moving average) than two
 * connects take, its next use probably comes within that time and would need
 * a connect of its own. Otherwise 0. Seconds. */
double pg_policy_linger(double gap, double connect_cost);

/* An idle connection of another pool, offered as a victim. */
struct pg_victim {
    double pool_last_used; /* its pool's last acquire or release */
    int pool_conns;        /* its pool's connections, this one included */
    double idle_since;
    double linger;         /* pg_policy_linger of its pool */
};

/* Whether that idle connection may be closed to make room for a pool that has
 * none: its pool is not busy (unused for PG_HYSTERESIS_S), or holds more than
 * its fair share, or connections rotate (fair == 0: its pool has no waiters,
 * or the connection would not be idle) and it has been idle for its linger. */
int pg_policy_may_evict(const struct pg_victim *v, int fair, double now);

/* A connection coming back to a pool while other pools starve and the budget
 * is spent. */
struct pg_return {
    int pool_conns;        /* this one included */
    int pool_waiters;
    double oldest_waiting; /* arrival of the oldest starving waiter */
    double linger;         /* pg_policy_linger of its pool */
};

/* Whether it should be given up to make room: when its pool holds more than
 * its fair share (its other connections serve its waiters); when connections
 * rotate, also once its pool has no waiters left and no linger (a church's
 * queued requests are served before the connection moves on; a lingering one
 * stays idle and may be evicted later), or when the oldest starving waiter
 * has waited preempt_s. */
int pg_policy_give_up(const struct pg_return *r, int fair, double preempt_s, double now);

#endif
