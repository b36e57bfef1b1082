/* shm.c — shared mappings and robust mutexes (shm.h). */
#include "shm.h"

#include <errno.h>
#include <sys/mman.h>

void *shm_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p; /* the kernel zero-fills it */
}

void shm_unmap(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, size);
}

int shm_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        return -1;
    int rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
             pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0 ||
             pthread_mutex_init(m, &attr) != 0;
    pthread_mutexattr_destroy(&attr);
    return rc ? -1 : 0;
}

int shm_mutex_lock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    if (rc == EOWNERDEAD)
        rc = pthread_mutex_consistent(m);
    return rc == 0 ? 0 : -1;
}
