/* watchdog.h — catches a handler that holds the event loop past its deadline.
 *
 * A request's deadline timer cannot fire while Lua code runs without
 * yielding, and a count hook on every coroutine would tax every instruction.
 * Instead a watchdog thread looks at the loop a few times a second: when the
 * code running now has passed its deadline it calls `overrun(arg)` once (the
 * host installs a Lua hook there, the one API Lua allows from outside the
 * running thread), and when it is still running `kill_after_s` later it
 * ends the process, so the master starts a fresh worker. */
#ifndef STEEPLE_WATCHDOG_H
#define STEEPLE_WATCHDOG_H

struct watchdog;

struct watchdog *watchdog_start(double period_s, double kill_after_s,
                                void (*overrun)(void *arg)) __attribute__((warn_unused_result));
/* Frees the watchdog after stopping its thread. */
void watchdog_stop(struct watchdog *wd);

/* Brackets code that may run long: arg is handed to overrun(). */
void watchdog_enter(struct watchdog *wd, void *arg, double deadline);
void watchdog_leave(struct watchdog *wd);

#endif
