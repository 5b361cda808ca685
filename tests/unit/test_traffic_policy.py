"""The traffic policy: weighted split, sticky keys that move only when they must, shadow mirroring."""

import math
import random

import pytest

from serving.policy import PolicyError, TrafficPolicy, parse_weights


def within_binomial(observed: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_random_split_matches_the_weights():
    policy, rng, n = TrafficPolicy({2: 90, 3: 10}), random.Random(1), 20_000
    picks = [policy.choose(None, rng) for _ in range(n)]
    assert within_binomial(picks.count(3), n, 0.10)


def test_three_way_split_matches_the_weights():
    policy, rng, n = TrafficPolicy({1: 50, 2: 30, 3: 20}), random.Random(2), 30_000
    picks = [policy.choose(None, rng) for _ in range(n)]
    for v, p in ((1, 0.5), (2, 0.3), (3, 0.2)):
        assert within_binomial(picks.count(v), n, p)


def test_sticky_split_matches_the_weights_and_a_key_keeps_its_version():
    policy, n = TrafficPolicy({2: 90, 3: 10}), 20_000
    first = {f"user-{i}": policy.choose(f"user-{i}", random.Random(i)) for i in range(n)}
    assert within_binomial(sum(v == 3 for v in first.values()), n, 0.10)
    assert all(policy.choose(k, random.Random(99)) == v for k, v in list(first.items())[:2000])


def test_a_weight_change_moves_only_the_keys_it_must():
    keys = [f"k{i}" for i in range(20_000)]
    before = {k: TrafficPolicy({2: 90, 3: 10}).choose(k, random.Random()) for k in keys}
    after = {k: TrafficPolicy({2: 80, 3: 20}).choose(k, random.Random()) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == 2 and after[k] == 3 for k in moved)  # only 2 → 3, never back
    assert within_binomial(len(moved), len(keys), 0.10)  # the 10% that must move, no more


def test_adding_a_version_moves_keys_only_to_it_and_removing_one_moves_only_its_keys():
    keys = [f"k{i}" for i in range(10_000)]
    two = TrafficPolicy({1: 50, 2: 50})
    three = TrafficPolicy({1: 50, 2: 50, 3: 50})
    before = {k: two.choose(k, random.Random()) for k in keys}
    after = {k: three.choose(k, random.Random()) for k in keys}
    assert all(after[k] in (before[k], 3) for k in keys)
    back = {k: three.without(3).choose(k, random.Random()) for k in keys}
    assert all(back[k] == after[k] for k in keys if after[k] != 3)


def test_shadow_mirrors_its_percentage_and_is_never_live():
    policy, rng, n = TrafficPolicy({2: 100}, {3: 25}), random.Random(3), 20_000
    assert within_binomial(sum(3 in policy.mirrors(rng) for _ in range(n)), n, 0.25)
    assert all(policy.choose(None, rng) == 2 for _ in range(1000))
    assert TrafficPolicy({2: 100}, {3: 100}).mirrors(rng) == [3]


def test_canary_keeps_the_other_versions_proportions():
    policy = TrafficPolicy({1: 60, 2: 40}).with_canary(3, 10)
    assert policy.shares() == pytest.approx({1: 0.54, 2: 0.36, 3: 0.10})


def test_promoting_a_shadow_to_live_drops_the_shadow_and_versions_lists_everything_deployed():
    policy = TrafficPolicy({2: 100}).with_shadow(3, 50)
    assert policy.versions == [2, 3] and policy.live_versions == [2]
    live = policy.with_weights({2: 50, 3: 50})
    assert live.shadow == {} and live.live_versions == [2, 3]


@pytest.mark.parametrize("weights, shadow, message", [
    ({}, {}, "at least one version"),
    ({1: 0}, {}, "sum to 0"),
    ({1: -5}, {}, "version 1: weight must be"),
    ({1: float("nan")}, {}, "version 1: weight must be"),
    ({1: 100}, {2: 0}, "shadow version 2: percent"),
    ({1: 100}, {2: 101}, "shadow version 2: percent"),
    ({1: 100, 2: 10}, {2: 50}, "version 2 cannot be both live"),
])
def test_invalid_policies_name_the_problem(weights, shadow, message):
    with pytest.raises(PolicyError, match=message):
        TrafficPolicy(weights, shadow)


def test_edits_that_would_leave_no_live_traffic_are_refused():
    with pytest.raises(PolicyError, match="carries all live traffic"):
        TrafficPolicy({2: 100}).without(2)
    with pytest.raises(PolicyError, match="only live version"):
        TrafficPolicy({2: 100}).with_canary(2, 10)
    with pytest.raises(PolicyError, match="between 0 and 100"):
        TrafficPolicy({2: 100}).with_canary(3, 100)
    with pytest.raises(PolicyError, match="is live"):
        TrafficPolicy({2: 90, 3: 10}).with_shadow(3, 50)


def test_json_round_trip_and_unreadable_json():
    policy = TrafficPolicy({2: 90, 3: 10}, {4: 100})
    assert TrafficPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(PolicyError, match="unreadable traffic policy"):
        TrafficPolicy.from_json('{"weights": 3}')


def test_parse_weights_names_the_bad_pair():
    assert parse_weights(["3=10", "2=90"]) == {3: 10.0, 2: 90.0}
    for bad, message in ((["3"], "'3': expected"), (["x=1"], "'x=1'"), (["3=1", "3=2"], "given twice"), ([], "at least")):
        with pytest.raises(PolicyError, match=message):
            parse_weights(bad)


@pytest.mark.parametrize("percent", [-5, -0.1, 100.5, float("nan"), float("inf"), float("-inf")])
def test_a_shadow_percent_outside_0_to_100_is_refused_not_read_as_stop(percent):
    policy = TrafficPolicy({2: 100}, {3: 50})
    with pytest.raises(PolicyError, match="shadow percent must be in"):
        policy.with_shadow(3, percent)
    assert policy.with_shadow(3, 0).shadow == {} and policy.with_shadow(3, 100).shadow == {3: 100.0}


@pytest.mark.parametrize("weights", [{1: float("inf")}, {1: 50, 2: float("inf")}, {1: 50, 2: float("-inf")}])
def test_a_weight_that_is_not_finite_is_refused(weights):
    with pytest.raises(PolicyError, match="weight must be a finite number"):
        TrafficPolicy({1: 100}).with_weights(weights)


@pytest.mark.parametrize("pair", ["1=inf", "1=-inf", "1=nan", "1=-5", "1=1e999"])
def test_parse_weights_refuses_a_weight_that_is_not_finite_or_negative(pair):
    with pytest.raises(PolicyError, match=f"'{pair}': a weight is a finite number >= 0"):
        parse_weights([pair, "2=10"])
