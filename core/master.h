/* master.h — the master process: forks the workers, restarts those that die,
 * forwards SIGHUP, and stops them all on SIGTERM/SIGINT. */
#ifndef STEEPLE_MASTER_H
#define STEEPLE_MASTER_H

#include "config.h"

/* Serves until told to stop; returns the process exit status. With `watch`,
 * changes under lua_dir or to the config file reload the workers. */
int master_main(const struct config *cfg, const char *lua_dir, const char *config_path,
                int watch);

#endif
