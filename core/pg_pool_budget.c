/* pg_pool_budget.c — how the pools of a server spend its node-wide
 * connection budget without thrashing (the budget and the policy's rules are
 * in pg_budget.c): a pool waits for its own connections rather than open
 * more, room is made only for a pool that has none (a free unit, else an idle
 * connection evicted), a pool grows into free units nobody starving needs,
 * and connections rotate between pools only when the busy ones outnumber the
 * budget. */
#include "pg_pool_internal.h"
#include "clock.h"
#include "log.h"
#include "pg_budget.h"

#define COST_DEFAULT_S 0.01 /* a connect's cost until one is measured */

/* What the pools of one server need, here and in the other workers. */
struct demand {
    struct pg_pool *local; /* this worker's starving pool waiting longest, or NULL */
    int nlocal;            /* this worker's starving pools */
    struct pg_budget_others others; /* `older`: theirs that waited longer than local's */
    int fair;              /* each busy pool's share of the budget; 0: they rotate */
    double oldest;         /* arrival of the node's oldest starving waiter; 0: none */
};

static double connect_cost(const struct pg_server *srv)
{
    return srv->connect_cost > 0 ? srv->connect_cost : COST_DEFAULT_S;
}

static double linger_of(const struct pg_pool *p)
{
    return pg_policy_linger(p->gap, connect_cost(p->server));
}

/* How long a use of p's connections lasts: its average, or the server's
 * before p has one, and at least as long as its oldest use so far. */
static double hold_of(const struct pg_pool *p, double now)
{
    double h = p->hold > 0 ? p->hold : p->server->hold;
    const struct pconn *oldest = TAILQ_LAST(&p->conns[PC_ACTIVE], pconn_list);
    if (oldest && now - oldest->acquired_at > h)
        h = now - oldest->acquired_at;
    return h;
}

/* ---- demand ----------------------------------------------------------- */

/* A pool with waiters and no connection, that may connect and whose last
 * waiter would still be there when a connect ends (room spent on a pool whose
 * waiters all time out first is room lost to the others). The cost counted
 * is at most half the acquire timeout, so a fresh waiter always qualifies. */
static int starving(const struct pg_pool *p, double now)
{
    if (p->nwait == 0 || pool_total(p) > 0 || p->retired || now < p->refused_until)
        return 0;
    double cost = connect_cost(p->server), half = p->cl->s.acquire_timeout_s / 2;
    return TAILQ_LAST(&p->waiters, waiter_list)->deadline > now + (cost < half ? cost : half);
}

static double head_since(const struct pg_pool *p)
{
    return TAILQ_FIRST(&p->waiters)->since;
}

static void read_demand(struct pg_server *srv, double now, struct demand *d)
{
    d->local = NULL;
    d->nlocal = 0;
    struct pg_pool *p;
    TAILQ_FOREACH(p, &srv->waiting, by_waiting) {
        if (!starving(p, now))
            continue;
        d->nlocal++;
        if (d->local == NULL || head_since(p) < head_since(d->local))
            d->local = p;
    }
    double since = d->local ? head_since(d->local) : now;
    pg_budget_others(srv->slot, since, &d->others);
    d->fair = pg_policy_fair_share(pg_budget_cap(srv->slot), srv->busy + d->others.busy);
    d->oldest = d->local ? since : 0;
    if (d->others.oldest > 0 && (d->oldest == 0 || d->others.oldest < d->oldest))
        d->oldest = d->others.oldest;
}

static void publish(struct pg_server *srv, const struct demand *d)
{
    struct pg_budget_demand mine = {srv->busy, d->nlocal, d->local ? head_since(d->local) : 0};
    pg_budget_publish(srv->slot, &mine);
}

void server_publish(struct pg_server *srv, double now)
{
    struct demand d;
    read_demand(srv, now, &d);
    publish(srv, &d);
}

static int budget_free(const struct pg_server *srv)
{
    return pg_budget_cap(srv->slot) - pg_budget_used(srv->slot);
}

/* ---- the policy ------------------------------------------------------- */

/* The least recently used idle connection of the server that may be closed
 * to make room for a starving pool, or NULL. */
static struct pconn *find_victim(struct pg_server *srv, int fair, double now)
{
    struct pconn *pc;
    TAILQ_FOREACH(pc, &srv->idle, by_idle) {
        struct pg_pool *p = pc->pool;
        struct pg_victim v = {p->last_used, pool_total(p), pc->idle_since, linger_of(p)};
        if (p->retired || pg_policy_may_evict(&v, fair, now))
            return pc;
    }
    return NULL;
}

/* Room for d->local, the starving pool waiting longest here: a free unit of
 * the budget (unless other workers' pools have waited longer and need the free
 * units first), else an idle connection that may be evicted. Starts its
 * connect; returns 1, or 0 when there is no room. */
static int room_for_starving(const struct demand *d, double now)
{
    struct pg_pool *q = d->local;
    struct pg_server *srv = q->server;
    if (budget_free(srv) > d->others.older && pg_budget_reserve(srv->slot))
        return pool_connect(q, OPEN_FREE) == 0;
    struct pconn *victim = find_victim(srv, d->fair, now);
    if (victim == NULL)
        return 0;
    pconn_close(victim, CLOSE_EVICT, 1);
    return pool_connect(q, OPEN_EVICT) == 0;
}

/* One more connect for a pool that has connections, when its waiters need
 * it, into a free unit that no starving pool of the node needs. */
static void maybe_grow(struct pg_pool *p, const struct demand *d, double now)
{
    struct pg_server *srv = p->server;
    const struct pg_settings *s = &p->cl->s;
    if (p->retired || p->nwait == 0 || pool_total(p) == 0 || pool_total(p) >= s->pool_max ||
        now - p->gave_up_at < PG_HYSTERESIS_S)
        return;
    if (!pg_policy_should_grow(p->nwait, p->n[PC_IDLE], p->n[PC_CONNECTING], p->n[PC_ACTIVE],
                               hold_of(p, now), connect_cost(srv)))
        return;
    if (budget_free(srv) <= d->nlocal + d->others.starving || !pg_budget_reserve(srv->slot))
        return;
    if (pool_connect(p, OPEN_FREE) != 0)
        log_warn("cannot start a connect to %s/%s: out of memory", srv->name, p->dbname);
}

/* Arms the cluster's poll (every POLL_S while a pool starves) unless it is
 * armed. */
static void arm_poll(struct pg_cluster *cl)
{
    if (evtimer_pending(cl->poll, NULL))
        return;
    struct timeval tv = {0, (suseconds_t)(POLL_S * 1e6)};
    evtimer_add(cl->poll, &tv);
}

void server_offer(struct pg_server *srv, struct pg_cluster *cl)
{
    double now = clock_mono();
    struct demand d;
    read_demand(srv, now, &d);
    while (d.local && server_may_connect(srv, &cl->s) && room_for_starving(&d, now))
        read_demand(srv, now, &d);
    if (server_may_connect(srv, &cl->s)) {
        struct pg_pool *p;
        TAILQ_FOREACH(p, &srv->waiting, by_waiting)
            maybe_grow(p, &d, now);
    }
    publish(srv, &d);
    if (d.local)
        arm_poll(cl);
}

/* Whether a connection coming back (or just opened with nobody left to take
 * it) should make room for a starving pool. If so it is closed, and its unit
 * goes to the starving waiter that came first: to its pool at once when that
 * is here, else back to the node for the other worker. Returns 1 when pc was
 * closed. */
int pool_give_up(struct pconn *pc, double now)
{
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    if (budget_free(srv) > 0)
        return 0; /* starving pools take free units themselves */
    struct demand d;
    read_demand(srv, now, &d);
    if (d.others.starving == 0 && (d.local == NULL || !server_may_connect(srv, &p->cl->s)))
        return 0; /* nobody it could go to now */
    struct pg_return r = {pool_total(p), p->nwait, d.oldest, linger_of(p)};
    if (!pg_policy_give_up(&r, d.fair, p->cl->s.acquire_timeout_s / 4, now))
        return 0;
    p->gave_up_at = now;
    if (d.local && d.others.older == 0 && server_may_connect(srv, &p->cl->s)) {
        pconn_close(pc, CLOSE_HANDOVER, 1);
        if (pool_connect(d.local, OPEN_HANDOVER) != 0)
            log_warn("cannot start a connect to %s/%s: out of memory", srv->name, d.local->dbname);
    } else {
        pconn_close(pc, CLOSE_SHED, 0);
    }
    server_offer(srv, p->cl);
    return 1;
}

/* Idle connections closed for other workers' starving pools, when this one
 * has none starving and the budget is spent. */
void server_shed(struct pg_server *srv, double now)
{
    struct demand d;
    read_demand(srv, now, &d);
    if (d.local || budget_free(srv) > 0)
        return;
    for (int n = d.others.starving; n > 0; n--) {
        struct pconn *victim = find_victim(srv, d.fair, now);
        if (victim == NULL)
            return;
        pconn_close(victim, CLOSE_SHED, 0);
    }
}

void pool_need(struct pg_pool *p)
{
    if (p->nwait == 0 || p->retired)
        return;
    struct pg_server *srv = p->server;
    if (pool_total(p) == 0) {
        server_offer(srv, p->cl); /* starving: served in order of arrival */
        return;
    }
    if (!server_may_connect(srv, &p->cl->s))
        return;
    double now = clock_mono();
    struct demand d;
    read_demand(srv, now, &d);
    maybe_grow(p, &d, now);
}
