"""The closed loop's decisions (pure): every path from a trigger to a promotion, a rollback or a give-up."""

import json

import pytest

from monitoring.loop import Candidate, LoopState, Trigger, VersionFigures, advance, canary_verdict, retrain_trigger
from monitoring.loop_config import LoopConfig

CFG = LoopConfig.model_validate({"retrain": {"cooldown_s": 100, "max_attempts": 2, "backoff_s": 10},
                                 "canary": {"percent": 20, "min_requests": 100, "min_labels": 50}})
DRIFT = Trigger("drift", "drift-abc", 1, "drift declared on v1 (f1)")
GOOD = {"champion": VersionFigures(4000, 0, 10.0, 2000, 1200), "canary": VersionFigures(1000, 0, 11.0, 500, 450)}


def kinds(records):
    return [r["kind"] for r in records]


def test_drift_to_promotion_and_a_replayed_trigger_does_nothing():
    state, actions, records = advance(LoopState(), 0, CFG, trigger=DRIFT)
    assert state.stage == "retraining" and actions[0].kind == "submit" and actions[0].attempt == 0
    assert kinds(records) == ["retrain_submitted"] and records[0]["reason"] == DRIFT.reason
    state = LoopState.from_json(state.to_json())  # persisted and read back between ticks
    assert advance(state, 5, CFG, job_status="RUNNING") == (state, [], [])
    state, actions, records = advance(state, 60, CFG, job_status="SUCCEEDED",
                                      candidate=Candidate(2, True, {"recent": {"candidate": 0.9}}, "beats v1"))
    assert state.stage == "canary" and actions[0].kind == "canary" and actions[0].percent == 20
    assert kinds(records) == ["gate_passed", "canary_started"]
    short = {"champion": GOOD["champion"], "canary": VersionFigures(99, 0, 11.0, 60, 55)}
    assert advance(state, 70, CFG, figures=short)[1] == []  # 99 requests: still earning its traffic
    unlabelled = {"champion": GOOD["champion"], "canary": VersionFigures(1000, 0, 11.0, 0, 0)}
    assert advance(state, 75, CFG, figures=unlabelled)[1] == []  # no labels yet: never a pass
    unmeasured = {"champion": GOOD["champion"], "canary": VersionFigures(1000, 0, None, 500, 450)}
    assert advance(state, 76, CFG, figures=unmeasured)[1] == []  # its latency not exported yet: not a pass
    state, actions, records = advance(state, 80, CFG, figures=GOOD)
    assert [a.kind for a in actions] == ["promote"] and actions[0].version == 2 and kinds(records) == ["promoted"]
    assert state.stage == "watching" and "drift-abc" in state.handled and state.last_finished_at == 80
    assert advance(state, 1_000, CFG, trigger=DRIFT) == (state, [], [])  # the same event again: nothing


def test_a_new_trigger_in_the_cooldown_is_deferred_once_then_acted_on():
    state = LoopState(last_finished_at=100)
    later = Trigger("drift", "drift-def", 2, "drift declared on v2")
    state, actions, records = advance(state, 150, CFG, trigger=later)
    assert actions == [] and kinds(records) == ["retrain_deferred"] and "50 s more" in records[0]["reason"]
    assert advance(state, 160, CFG, trigger=later)[2] == []  # recorded once
    state, actions, _ = advance(state, 201, CFG, trigger=later)
    assert actions[0].kind == "submit" and state.event_id == "drift-def"


def test_a_failing_job_is_retried_after_a_backoff_then_given_up():
    state, _, _ = advance(LoopState(), 0, CFG, trigger=DRIFT)
    state, actions, records = advance(state, 30, CFG, job_status="FAILED")
    assert state.stage == "backoff" and state.next_try_at == 40 and kinds(records) == ["retrain_failed",
                                                                                      "retrain_retry_scheduled"]
    assert advance(state, 39, CFG)[1] == []
    state, actions, _ = advance(state, 40, CFG)
    assert actions[0].kind == "submit" and actions[0].attempt == 1 and state.stage == "retraining"
    state, actions, records = advance(state, 80, CFG, job_status="STOPPED")
    assert kinds(records) == ["retrain_failed", "retrain_abandoned"] and state.stage == "watching"
    assert "drift-abc" in state.handled


def test_a_job_that_registered_nothing_counts_as_failed():
    state, _, _ = advance(LoopState(), 0, CFG, trigger=DRIFT)
    _, _, records = advance(state, 30, CFG, job_status="SUCCEEDED", candidate=None)
    assert "registered no version" in records[0]["reason"]


def test_the_gate_stops_a_worse_candidate():
    state, _, _ = advance(LoopState(), 0, CFG, trigger=DRIFT)
    state, actions, records = advance(state, 30, CFG, job_status="SUCCEEDED",
                                      candidate=Candidate(2, False, {}, "0.81 on recent rows, the champion 0.84"))
    assert actions == [] and kinds(records) == ["gate_failed"] and state.stage == "watching"


@pytest.mark.parametrize("canary, why", [
    (VersionFigures(300, 30, 10.0, 0, 0), "canary errors more: error rate 10.00% vs 0.00%"),
    (VersionFigures(1000, 0, 50.0, 500, 450), "p99"),
    (VersionFigures(1000, 0, 11.0, 500, 200), "less accurate: error of predictions 60.00% vs 40.00%"),
])
def test_a_canary_that_errors_slows_or_loses_is_rolled_back(canary, why):
    state = LoopState(stage="canary", event_id="e", champion=1, candidate=2, canary_since=0)
    state, actions, records = advance(state, 10, CFG, figures={"champion": GOOD["champion"], "canary": canary})
    assert [a.kind for a in actions] == ["rollback"] and why in records[0]["reason"] and state.stage == "watching"


def test_a_canary_without_evidence_is_rolled_back_at_its_timeout():
    state = LoopState(stage="canary", event_id="e", champion=1, candidate=2, canary_since=0)
    assert advance(state, CFG.canary.timeout_s, CFG, figures={})[1] == []
    _, actions, records = advance(state, CFG.canary.timeout_s + 1, CFG, figures={})
    assert actions[0].kind == "rollback" and "not enough evidence" in records[0]["reason"]
    lenient = CFG.model_copy(update={"canary": CFG.canary.model_copy(update={"on_timeout": "promote"})})
    assert advance(state, CFG.canary.timeout_s + 1, lenient, figures={})[1][0].kind == "promote"


def test_manual_promotion_stops_at_the_canary_until_a_person_promotes():
    manual = CFG.model_copy(update={"promotion": "manual"})
    state = LoopState(stage="canary", event_id="e", champion=1, candidate=2, canary_since=0)
    state, actions, records = advance(state, 10, manual, figures=GOOD)
    assert actions == [] and state.stage == "awaiting_promotion" and "handoff promote" in records[0]["reason"]
    assert advance(state, 20, manual, champion=1) == (state, [], [])
    state, _, records = advance(state, 30, manual, champion=2)
    assert kinds(records) == ["promoted"] and records[0]["reason"] == "promoted by hand" and state.stage == "watching"


def test_triggers_drift_on_the_champion_or_accuracy_below_the_floor():
    events = [{"kind": "drift_declared", "event_id": "d1", "version": 3, "features": {"f1": {}}},
              {"kind": "drift_declared", "event_id": "d2", "version": 1, "features": {"f2": {}, "f3": {}}}]
    assert retrain_trigger("m", 1, events, None, CFG).event_id == "d2"  # v3 is not the champion
    assert retrain_trigger("m", None, events, None, CFG) is None
    floor = CFG.model_copy(update={"retrain": CFG.retrain.model_copy(update={"min_accuracy": 0.9,
                                                                               "accuracy_rows": 100})})
    low = retrain_trigger("m", 1, [], (200, 150), floor)
    assert low.kind == "accuracy" and "75.0%" in low.reason and low.event_id == retrain_trigger("m", 1, [], (250, 180),
                                                                                                floor).event_id
    assert retrain_trigger("m", 1, [], (200, 190), floor) is None and retrain_trigger("m", 1, [], (50, 10), floor) is None
    assert retrain_trigger("m", 1, events, None, CFG.model_copy(update={
        "retrain": CFG.retrain.model_copy(update={"on_drift": False})})) is None


def test_a_disabled_loop_only_reports():
    off = CFG.model_copy(update={"enabled": False})
    assert advance(LoopState(), 0, off, trigger=DRIFT) == (LoopState(), [], [])


def test_the_verdict_waits_for_labels_on_both_sides():
    c = VersionFigures(500, 0, 9.0, 10, 10)
    assert canary_verdict(GOOD["champion"], c, CFG) is None  # 10 labels of 50
    no_labels = CFG.model_copy(update={"canary": CFG.canary.model_copy(update={"require_labels": False,
                                                                               "require_latency": False})})
    verdict = canary_verdict(VersionFigures(4000, 0, 10.0), VersionFigures(1000, 0, None), no_labels)
    assert verdict[0] == "promote" and "error rate 0.00% vs 0.00%" in verdict[1]


def test_a_job_that_never_finishes_is_stopped_at_its_timeout_and_counted_failed():
    state, _, _ = advance(LoopState(), 0, CFG, trigger=DRIFT)
    state = LoopState.from_json({**state.to_json(), "job_id": "handoff-retrain-x"})
    assert advance(state, CFG.retrain.job_timeout_s, CFG, job_status="PENDING")[1] == []
    state, actions, records = advance(state, CFG.retrain.job_timeout_s + 1, CFG, job_status="PENDING")
    assert [a.kind for a in actions] == ["stop"] and kinds(records) == ["retrain_failed", "retrain_retry_scheduled"]
    assert "still PENDING after 1800 s: stopped" in records[0]["reason"] and state.stage == "backoff"


def test_both_sides_are_compared_over_the_canarys_period():
    from monitoring.loop_runner import since_start

    now = {"champion": VersionFigures(5000, 12, 10.0, 300, 290), "canary": VersionFigures(800, 1, 11.0, 90, 88)}
    assert since_start(now, {"champion": [4000, 10], "canary": [0, 0]}) == {
        "champion": VersionFigures(1000, 2, 10.0, 300, 290), "canary": VersionFigures(800, 1, 11.0, 90, 88)}
    assert since_start(now, None) == now


def test_the_p99_guard_compares_both_sides_over_the_canarys_period_not_the_champions_history():
    """The champion served 10,000 requests at ≤5 ms before the canary; since, both ~200 ms (a slow
    node): cumulatively the champion's p99 would read 5 ms and the canary be rolled back for 40×."""
    from monitoring.loop_runner import baseline_of, latency_baseline, since_start

    inf = float("inf")
    before = {"champion": VersionFigures(10_000, 0, 5.0, latency_buckets=((5.0, 10_000), (200.0, 10_000), (inf, 10_000))),
              "canary": VersionFigures(0, 0, None)}
    warming = since_start(before, baseline_of(before))  # before the warm-up ends: no p99 on either side
    assert warming["champion"].p99_ms is None and warming["canary"].p99_ms is None
    baseline = json.loads(json.dumps({**baseline_of(before), "latency": latency_baseline(before)}))  # as stored
    now = {"champion": VersionFigures(10_800, 0, 5.0, latency_buckets=((5.0, 10_000), (200.0, 10_800), (inf, 10_800))),
           "canary": VersionFigures(200, 0, 200.0, latency_buckets=((5.0, 0), (200.0, 200), (inf, 200)))}
    period = since_start(now, baseline)
    assert period["champion"].p99_ms == 200.0 and period["canary"].p99_ms == 200.0
    assert period["champion"].requests == 800
    restarted = {**now, "champion": VersionFigures(300, 0, 200.0, latency_buckets=((5.0, 0), (200.0, 300), (inf, 300)))}
    assert since_start(restarted, baseline)["champion"].p99_ms == 200.0  # counters restarted: all of it is newer
    assert since_start(now, None) == now  # no baseline: the figures as read


def test_the_p99_guard_rolls_back_a_canary_slow_throughout_not_one_whose_cold_start_made_a_few_slow_answers():
    """Over the canary's period: the champion ≤10 ms at p99; the guard counts the canary's requests
    surely slower than 2× that (buckets above 20 ms) and rolls back only when that many could not
    come from a canary whose p99 is within 2×."""
    from monitoring.loop import p99_guard

    c = LoopConfig().canary
    inf = float("inf")
    champion = VersionFigures(2000, 0, 10.0, latency_buckets=((5.0, 1500), (10.0, 1990), (20.0, 2000), (50.0, 2000),
                                                              (inf, 2000)))

    def canary(fast: int, slow: int) -> VersionFigures:  # `slow` requests in (20, 50] ms, the rest ≤ 10 ms
        n = fast + slow
        return VersionFigures(n, 0, 50.0 if slow > 0.01 * n else 10.0,
                              latency_buckets=((5.0, fast // 2), (10.0, fast), (20.0, fast), (50.0, n), (inf, n)))

    assert p99_guard(champion, canary(297, 3), c) is None  # a cold start: its p99 reads 50 ms, on 3 answers
    assert p99_guard(champion, canary(990, 10), c) is None  # 1%: within the ratio
    reason = p99_guard(champion, canary(180, 60), c)
    assert reason and "60 of its 240 requests slower than 20 ms" in reason
    assert p99_guard(champion, canary(900, 100), c) is not None
    # figures without a histogram (read before buckets were kept): the p99s compared as they are
    assert p99_guard(VersionFigures(2000, 0, 10.0), VersionFigures(300, 0, 50.0), c) is not None


def test_a_running_canary_shows_its_evidence():
    from monitoring.loop import stage_in_words as loop_stage

    state = LoopState(stage="canary", event_id="e", champion=1, candidate=2, canary_since=0)
    state, _, _ = advance(state, 5, CFG, figures={"champion": GOOD["champion"],
                                                   "canary": VersionFigures(120, 0, 11.0, 40, 36)})
    evidence = state.canary_evidence
    assert evidence["errors"]["samples"] == [120, 4000] and evidence["accuracy"]["verdict"] == "collecting"
    shown = loop_stage(LoopState.from_json(state.to_json()).to_json())
    assert shown.startswith("canary v2 against champion v1 (errors 0.00% vs 0.00% on 120/4000") and "of 3.0" in shown


def test_the_estimate_triggers_before_labels_arrive_when_asked_to():
    floor = CFG.model_copy(update={"retrain": CFG.retrain.model_copy(update={"min_estimated_accuracy": 0.9})})
    trigger = retrain_trigger("m", 1, [], None, floor, estimated=0.85)
    assert trigger.kind == "estimate" and "85.0% (before labels)" in trigger.reason
    assert retrain_trigger("m", 1, [], None, floor, estimated=0.95) is None
    assert retrain_trigger("m", 1, [], None, CFG, estimated=0.5) is None  # not asked to


def test_the_demo_names_the_causes_of_its_failed_requests(tmp_path, capsys):
    """The summary shows the first few failures and a count per status; the log gets every one."""
    import io

    from rich.console import Console

    from handoff.demo_loop import print_failures

    screen = io.StringIO()
    failures = [f"request {i}: 503 version 1 failed: connection reset" for i in range(7)] + \
               ["request 9: 599 timed out", "labels: 500 boom"]
    print_failures(Console(file=screen, width=120), failures, tmp_path / "demo.log")
    shown = screen.getvalue()
    assert "7 × 503, 1 × 599, 1 × 500" in shown  # most first, then as they came
    assert "request 0: 503 version 1 failed" in shown and "request 5:" not in shown
    assert f"all 9 in {tmp_path / 'demo.log'}" in shown
    logged = capsys.readouterr().out  # the demo's stdout is its log file
    assert logged.count("\nrequest ") == 8 and "labels: 500 boom" in logged
    screen = io.StringIO()
    print_failures(Console(file=screen), [], tmp_path / "demo.log")
    assert screen.getvalue() == ""


class CanaryReadings:
    """The loop's port during a canary: cumulative figures as the gateways export them (pure)."""

    def __init__(self):
        self.readings = []

    def champion(self, model):
        return 1

    def test_errors(self, model, version):
        return None

    def figures(self, model, champion, canary, since):
        return self.readings.pop(0)


def test_the_canarys_latency_counts_only_after_its_warm_up():
    """Its first seconds (answered through the Serve handle while the gateway connects to the new
    replica) are slow; from `latency_warmup_s` on, both sides' latency counts from a fresh baseline."""
    from monitoring.loop_runner import tick

    inf = float("inf")
    cold = {"champion": VersionFigures(500, 0, 10.0, 100, 99, latency_buckets=((10.0, 500), (50.0, 500), (inf, 500))),
            "canary": VersionFigures(100, 0, 50.0, 20, 20, latency_buckets=((10.0, 0), (50.0, 100), (inf, 100)))}
    warm = {"champion": VersionFigures(1500, 0, 10.0, 300, 297, latency_buckets=((10.0, 1500), (50.0, 1500), (inf, 1500))),
            "canary": VersionFigures(400, 0, 50.0, 120, 119, latency_buckets=((10.0, 300), (50.0, 400), (inf, 400)))}
    port = CanaryReadings()
    port.readings = [cold, cold, warm]
    state = LoopState(stage="canary", event_id="e", champion=1, candidate=2, canary_since=100.0,
                      canary_baseline={"champion": [0, 0], "canary": [0, 0]}).to_json()
    cfg = LoopConfig.model_validate({"canary": {"min_requests": 50, "min_labels": 10}})
    state, records = tick("m", state, {}, [], cfg, port, now=105.0)  # warming: no p99, no rollback
    assert "latency" not in state["canary_baseline"] and not [r for r in records if r["kind"] == "rolled_back"]
    state, records = tick("m", state, {}, [], cfg, port, now=116.0)  # warm: the baseline taken now
    assert state["canary_baseline"]["latency"]["canary"] == [[10.0, 0], [50.0, 100], [inf, 100]]
    state, records = tick("m", state, {}, [], cfg, port, now=130.0)  # since then: every canary request ≤ 10 ms
    assert not [r for r in records if r["kind"] == "rolled_back"], records


class FailedJobPort:
    """A cluster whose retraining job failed setting up its environment (what Ray's job info says)."""

    def champion(self, model):
        return 1

    def job_status(self, job_id):
        return "FAILED"

    def job_message(self, job_id):
        return "runtime_env setup failed: ERROR: Could not install requirement mylib @ file:///nowhere/mylib.whl"

    def candidate(self, model, event_id):
        return None


def test_a_failed_retraining_job_is_recorded_with_why_it_failed():
    from monitoring.loop_runner import tick

    retraining = LoopState(stage="retraining", event_id="drift-abc", champion=1, job_id="job-1", submitted_at=0.0)
    state, records = tick("m", retraining.to_json(), {}, [], CFG, FailedJobPort(), now=30.0)
    failed = next(r for r in records if r["kind"] == "retrain_failed")
    assert failed["reason"] == ("job job-1 FAILED: runtime_env setup failed: ERROR: Could not install requirement "
                                "mylib @ file:///nowhere/mylib.whl")
    assert LoopState.from_json(state).stage == "backoff"
