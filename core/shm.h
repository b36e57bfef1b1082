/* shm.h — memory the master shares with the workers it forks: an anonymous
 * shared mapping made before fork, and the robust process-shared mutex that
 * guards what is in it (a worker that dies holding it does not wedge the
 * others). Used by the auth rate limiter and the connection budget. Free of
 * Lua and of libevent. */
#ifndef STEEPLE_SHM_H
#define STEEPLE_SHM_H

#include <pthread.h>
#include <stddef.h>

/* A zero-filled shared mapping of size bytes, or NULL. */
void *shm_map(size_t size) __attribute__((warn_unused_result));
void shm_unmap(void *p, size_t size);

/* Makes *m process-shared and robust. Returns 0, or -1. */
int shm_mutex_init(pthread_mutex_t *m) __attribute__((warn_unused_result));

/* Locks *m, taking it over from a process that died holding it (what it
 * guards must stay usable half-written). Returns 0, or -1 when unusable. */
int shm_mutex_lock(pthread_mutex_t *m) __attribute__((warn_unused_result));

#endif
