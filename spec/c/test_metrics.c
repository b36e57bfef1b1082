/* test_metrics.c — the shared metrics table, across processes too. */
#include "metrics.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *render(void)
{
    size_t len;
    char *text = metrics_render(&len);
    return text;
}

static void counters_sum_over_workers(void)
{
    CHECK(metrics_init(3) == 0);
    for (int w = 0; w < 3; w++) {
        pid_t pid = fork();
        if (pid == 0) {
            metrics_attach_worker(w);
            for (int i = 0; i <= w; i++)
                metrics_count("t_requests_total", "route=\"/x\"", 1);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    char *text = render();
    CHECK(text && strstr(text, "# TYPE t_requests_total counter\n") != NULL);
    CHECK(text && strstr(text, "t_requests_total{route=\"/x\"} 6\n") != NULL);
    free(text);
    metrics_shutdown();
}

static void same_series_resolves_to_same_slot(void)
{
    CHECK(metrics_init(1) == 0);
    int a = metrics_series("f", "", "a=\"1\"", METRIC_COUNTER);
    int b = metrics_series("f", "", "a=\"1\"", METRIC_COUNTER);
    int c = metrics_series("f", "", "a=\"2\"", METRIC_COUNTER);
    CHECK(a >= 0 && a == b && c != a);
    metrics_shutdown();
}

static void histogram_buckets_are_cumulative(void)
{
    CHECK(metrics_init(1) == 0);
    metrics_attach_worker(0);
    struct metrics_histogram h;
    CHECK(metrics_histogram_init(&h, "t_seconds", "") == 0);
    metrics_observe(&h, 0.003);
    metrics_observe(&h, 0.2);
    metrics_observe(&h, 30);
    char *text = render();
    CHECK(text && strstr(text, "# TYPE t_seconds histogram\n") != NULL);
    CHECK(text && strstr(text, "t_seconds_bucket{le=\"0.001\"} 0\n") != NULL);
    CHECK(text && strstr(text, "t_seconds_bucket{le=\"0.005\"} 1\n") != NULL);
    CHECK(text && strstr(text, "t_seconds_bucket{le=\"0.25\"} 2\n") != NULL);
    CHECK(text && strstr(text, "t_seconds_bucket{le=\"+Inf\"} 3\n") != NULL);
    CHECK(text && strstr(text, "t_seconds_count 3\n") != NULL);
    CHECK(text && strstr(text, "t_seconds_sum 30.203000\n") != NULL);
    /* buckets come out in order, before sum and count */
    CHECK(text && strstr(text, "le=\"0.001\"") < strstr(text, "le=\"10\"") &&
          strstr(text, "le=\"10\"") < strstr(text, "t_seconds_sum"));
    free(text);
    metrics_shutdown();
}

static void restarted_worker_zeroes_its_gauges_only(void)
{
    CHECK(metrics_init(1) == 0);
    metrics_attach_worker(0);
    metrics_gauge("t_pools", "", 7);
    metrics_count("t_total", "", 5);
    metrics_attach_worker(0); /* as a restarted worker does */
    char *text = render();
    CHECK(text && strstr(text, "t_pools 0\n") != NULL);
    CHECK(text && strstr(text, "t_total 5\n") != NULL);
    free(text);
    metrics_shutdown();
}

static void full_table_drops_updates(void)
{
    CHECK(metrics_init(1) == 0);
    metrics_attach_worker(0);
    char labels[32];
    int last = 0;
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        snprintf(labels, sizeof labels, "i=\"%d\"", i);
        last = metrics_series("t_many", "", labels, METRIC_COUNTER);
    }
    CHECK(last == -1);
    metrics_add(-1, 1); /* a dropped update is harmless */
    CHECK(metrics_series(
              "a_family_name_that_is_far_too_long_to_fit_in_the_table_slot_at_all_xx", "", "",
              METRIC_COUNTER) == -1);
    metrics_shutdown();
}

static void declared_families_show_before_any_sample(void)
{
    CHECK(metrics_init(1) == 0);
    metrics_attach_worker(0);
    CHECK(metrics_describe("t_b_total", METRIC_COUNTER, "Bees.\nBack\\slash") == 0);
    CHECK(metrics_describe("t_b_total", METRIC_GAUGE, "ignored: the first wins") == 0);
    CHECK(metrics_describe("t_a", METRIC_GAUGE, "A gauge.") == 0);
    metrics_count("t_c_total", "", 2); /* counted, never declared */
    metrics_gauge("t_a", "x=\"1\"", 4);
    char *text = render();
    CHECK(text && strcmp(text, "# HELP t_a A gauge.\n"
                               "# TYPE t_a gauge\n"
                               "t_a{x=\"1\"} 4\n"
                               "# HELP t_b_total Bees.\\nBack\\\\slash\n"
                               "# TYPE t_b_total counter\n"
                               "# TYPE t_c_total counter\n"
                               "t_c_total 2\n") == 0);
    free(text);
    CHECK(metrics_describe("t_long", METRIC_GAUGE,
                           "a help text far longer than any family should need: it goes on and on "
                           "and on, past every line a person would read in a scrape, and then some "
                           "more, until it no longer fits") == -1);
    metrics_shutdown();
    CHECK(metrics_describe("t_no_region", METRIC_GAUGE, "harmless without metrics_init") == 0);
}

static void label_values_are_escaped(void)
{
    char out[64];
    metrics_escape_label(out, sizeof out, "a\"b\\c\nd");
    CHECK(strcmp(out, "a\\\"b\\\\c\\nd") == 0);
}

static const struct tap_case cases[] = {
    {"counters sum over worker processes", counters_sum_over_workers},
    {"the same series resolves to the same slot", same_series_resolves_to_same_slot},
    {"histogram buckets are cumulative and ordered", histogram_buckets_are_cumulative},
    {"a restarted worker zeroes its gauges, not its counters",
     restarted_worker_zeroes_its_gauges_only},
    {"a full table drops updates instead of failing", full_table_drops_updates},
    {"declared families show HELP and TYPE before any sample",
     declared_families_show_before_any_sample},
    {"label values are escaped", label_values_are_escaped},
};

TAP_MAIN(cases)
