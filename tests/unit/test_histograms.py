"""Latency from cumulative histogram buckets (cluster/histograms.py): quantile bounds, the count
surely above a line, and a period's buckets as the difference of two readings."""

import math

from cluster.histograms import count_above, quantile_upper_bound, since

# cumulative (le, count): 50 ≤ 10 ms, 940 in (10, 25], 10 in (25, 50]
READING = [(5.0, 0), (10.0, 50), (25.0, 990), (50.0, 1000), (math.inf, 1000)]


def test_a_bucket_that_straddles_the_line_is_not_counted_above_it():
    assert count_above(READING, 30.0) == 0      # (25, 50] may lie under 30 ms: not surely above
    assert count_above(READING, 25.0) == 10     # (25, 50] lies wholly above 25 ms
    assert count_above(READING, 7.0) == 950     # (5, 10] straddles 7 ms: only (10, ∞) counted
    assert count_above(READING, 0.0) == 1000
    assert count_above(READING, 60.0) == 0 and count_above([], 1.0) == 0


def test_quantiles_are_the_upper_bound_of_their_bucket():
    assert quantile_upper_bound(READING, 0.5) == 25.0 and quantile_upper_bound(READING, 0.999) == 50.0
    assert quantile_upper_bound(READING, 0.01) == 10.0 and quantile_upper_bound([], 0.99) is None


def test_a_period_is_the_difference_of_two_readings_and_a_restart_makes_all_of_it_new():
    baseline = [(5.0, 0), (10.0, 40), (25.0, 500), (50.0, 500), (math.inf, 500)]
    assert since(READING, baseline) == [(5.0, 0), (10.0, 10), (25.0, 490), (50.0, 500), (math.inf, 500)]
    restarted = [(5.0, 0), (10.0, 5), (25.0, 8), (50.0, 9), (math.inf, 9)]  # counters lower: they started again
    assert since(restarted, baseline) == restarted and since(READING, None) == READING
