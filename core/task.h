/* task.h — the Lua a worker runs besides requests, as background tasks of
 * its request set (request.h: request_spawn) on the current scripts. */
#ifndef STEEPLE_TASK_H
#define STEEPLE_TASK_H

struct request_set;

/* Starts app.tick() as a task; *exit_code gets its result. Returns 0, 1 when
 * the scripts have no tick, or -1 if it could not start. */
int task_tick(struct request_set *rs, int *exit_code);

/* Starts app.stop() as a task on the current scripts, ended after `seconds`
 * wherever it waits (request_spawn_until). Returns 0, 1 when the scripts
 * have no stop, or -1 if it could not start. */
int task_stop(struct request_set *rs, double seconds);

/* Starts require(module).main(args) as a task (a command-line command);
 * *exit_code gets its result. Returns 0, or -1 (logged) if it could not
 * start. */
int task_command(struct request_set *rs, const char *module, int argc, char **argv,
                 int *exit_code);

#endif
