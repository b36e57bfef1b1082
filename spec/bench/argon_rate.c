/* argon_rate.c — the baseline of bench_auth.sh: how many argon2id verifies a
 * second this machine does with T threads, with the server's parameters
 * (auth.argon2_iterations = 2, auth.argon2_memory_kib = 19456 by default).
 *
 *   argon_rate T SECONDS [OPSLIMIT [MEMLIMIT_KIB]]    prints verifies/second over all threads */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char PASSWORD[] = "bench-password-123";
static char hash[crypto_pwhash_STRBYTES];
static double seconds;

struct worker {
    pthread_t thread;
    long verifies;
    int failed;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    double end = now() + seconds;
    while (now() < end) {
        if (crypto_pwhash_str_verify(hash, PASSWORD, strlen(PASSWORD)) != 0) {
            w->failed = 1;
            break;
        }
        w->verifies++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: argon_rate THREADS SECONDS [OPSLIMIT [MEMLIMIT_KIB]]\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    seconds = atof(argv[2]);
    unsigned long long ops = argc > 3 ? strtoull(argv[3], NULL, 10) : 2;
    size_t mem = (argc > 4 ? strtoull(argv[4], NULL, 10) : 19456) * 1024;
    if (threads < 1 || seconds <= 0) {
        fprintf(stderr, "argon_rate: THREADS >= 1 and SECONDS > 0\n");
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "argon_rate: sodium_init failed\n");
        return 1;
    }
    if (crypto_pwhash_str_alg(hash, PASSWORD, strlen(PASSWORD), ops, mem, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        fprintf(stderr, "argon_rate: hashing failed (out of memory?)\n");
        return 1;
    }
    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    if (ws == NULL) return 1;
    double a = now();
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&ws[i].thread, NULL, run, &ws[i]) != 0) {
            fprintf(stderr, "argon_rate: pthread_create failed\n");
            return 1;
        }
    }
    long total = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].thread, NULL);
        total += ws[i].verifies;
        failed |= ws[i].failed;
    }
    double b = now();
    if (failed) {
        fprintf(stderr, "argon_rate: a verify failed\n");
        return 1;
    }
    printf("%.2f\n", (double)total / (b - a));
    free(ws);
    return 0;
}
