/* test_watchdog.c — the watchdog calls overrun() once for code past its deadline. */
#include "clock.h"
#include "tap.h"
#include "watchdog.h"

#include <unistd.h>

static int calls;
static void *seen;

static void overrun(void *arg)
{
    calls++;
    seen = arg;
}

static void fires_once_past_the_deadline(void)
{
    struct watchdog *wd = watchdog_start(0.01, 60, overrun);
    CHECK(wd != NULL);
    int token;
    calls = 0;
    watchdog_enter(wd, &token, clock_mono() + 0.05);
    usleep(20000);
    CHECK(calls == 0); /* not yet due */
    usleep(150000);
    CHECK(calls == 1);
    CHECK(seen == &token);
    usleep(50000);
    CHECK(calls == 1); /* once per entry */
    watchdog_leave(wd);
    watchdog_stop(wd);
}

static void quiet_when_nothing_runs(void)
{
    struct watchdog *wd = watchdog_start(0.01, 60, overrun);
    int token;
    calls = 0;
    watchdog_enter(wd, &token, clock_mono() - 1);
    watchdog_leave(wd); /* left before the watchdog looked */
    usleep(50000);
    CHECK(calls == 0);
    watchdog_stop(wd);
}

static const struct tap_case cases[] = {
    {"fires once for code past its deadline", fires_once_past_the_deadline},
    {"stays quiet when nothing runs", quiet_when_nothing_runs},
};

TAP_MAIN(cases)
