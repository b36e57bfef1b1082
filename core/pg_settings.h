/* pg_settings.h — the settings of a worker's database pools (db.* and
 * tenants.* in the configuration), read by the pools, their servers and the
 * operations on them. Free of Lua. */
#ifndef STEEPLE_PG_SETTINGS_H
#define STEEPLE_PG_SETTINGS_H

struct pg_settings {
    int pool_max;               /* connections per pool */
    int min_idle;               /* idle connections a pool keeps */
    double acquire_timeout_s;   /* waiting for a connection */
    double connect_timeout_s;
    double statement_timeout_s; /* also sent as the server's statement_timeout */
    double idle_timeout_s;      /* idle connections beyond min_idle close after this */
    int breaker_failures;
    double breaker_open_s;
    int capacity;               /* pools kept open */
    double pool_idle_s;         /* a pool unused this long is closed */
    int prepared_max;           /* statements prepared per connection; 0: none
                                 * (db.prepared_statements = false) */
};

#endif
