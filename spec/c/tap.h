/* tap.h — a minimal TAP producer for the C test programs.
 *
 * Each test file has a table of cases; every case runs its checks with
 * CHECK(), and the program prints one "ok"/"not ok" line per case. */
#ifndef STEEPLE_TAP_H
#define STEEPLE_TAP_H

#include <stdio.h>

struct tap_case {
    const char *name;
    void (*fn)(void);
};

static int tap_case_failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);        \
            tap_case_failed = 1;                                                     \
        }                                                                            \
    } while (0)

static inline int tap_run(const struct tap_case *cases, int n)
{
    int failures = 0;
    printf("1..%d\n", n);
    for (int i = 0; i < n; i++) {
        tap_case_failed = 0;
        cases[i].fn();
        printf("%s %d - %s\n", tap_case_failed ? "not ok" : "ok", i + 1, cases[i].name);
        failures += tap_case_failed;
    }
    return failures ? 1 : 0;
}

#define TAP_MAIN(cases) \
    int main(void) { return tap_run(cases, (int)(sizeof cases / sizeof cases[0])); }

#endif
