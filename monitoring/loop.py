"""The closed loop's decisions, pure: drift → retraining job → gate → canary → promote or roll back.

`retrain_trigger` says whether the monitor's news calls for a retraining (drift declared for the
champion, or its live accuracy over the last labelled rows below a floor, or for a regression model
its live RMSE above a ceiling). `advance` moves the
loop one tick: from what it sees (the trigger, the retraining job's status, the candidate the job
registered and its gate verdict, the canary's figures) to the next `LoopState`, the `Action`s to
carry out and the records to keep. Every input is data and every output is data: the monitor
actor gathers the inputs and carries out the actions through a port (`LoopPort` in loop_runner.py).

Replays are safe: a job's submission id is derived from (model, event, attempt), and canary,
promotion and rollback set a traffic policy, so carrying out the same actions twice changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from cluster.digest import stable_digest
from cluster.histograms import count_above
from monitoring.loop_config import LoopConfig
from monitoring.sequential import NOT_WORSE, WORSE, RateTest, compare_means, compare_rates

TERMINAL_OK, TERMINAL_BAD = {"SUCCEEDED"}, {"FAILED", "STOPPED"}
HANDLED_KEPT = 100


@dataclass(frozen=True)
class Trigger:
    """Why to retrain: a drift event, or live accuracy below the floor, or live RMSE above the ceiling
    (its own id)."""

    kind: str          # drift | accuracy | estimate | error
    event_id: str
    version: int
    reason: str


@dataclass(frozen=True)
class Candidate:
    """The version a retraining registered, with its gate verdict and scores."""

    version: int
    passed: bool
    scores: dict = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class VersionFigures:
    """One version's traffic since the canary started: requests, errors, p99 latency, labelled rows
    (for a regression model their absolute errors' sum and sum of squares, and the version's own test
    MAE: the scale of the effect worth acting on)."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    labelled: int = 0
    correct: int = 0
    abs_error_sum: float | None = None     # regression only
    abs_error_sq_sum: float | None = None
    test_mae: float | None = None
    latency_buckets: tuple[tuple[float, float], ...] = ()  # cumulative histogram (of the canary's period, once
    #                                                          `since_start` has taken the baseline off)

    @property
    def regression(self) -> bool:
        return self.abs_error_sum is not None

    @property
    def mae(self) -> float | None:
        return self.abs_error_sum / self.labelled if self.regression and self.labelled else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Action:
    """Something the port carries out: submit (attempt) / canary / promote / rollback (version)."""

    kind: str
    version: int | None = None
    event_id: str | None = None
    attempt: int = 0
    percent: float | None = None


@dataclass(frozen=True)
class LoopState:
    stage: str = "watching"        # watching | retraining | backoff | canary | awaiting_promotion
    event_id: str | None = None
    trigger: str | None = None
    champion: int | None = None
    attempt: int = 0
    job_id: str | None = None
    job_status: str | None = None    # as last seen
    submitted_at: float | None = None
    next_try_at: float | None = None
    candidate: int | None = None
    canary_since: float | None = None
    canary_baseline: dict | None = None  # requests and errors of each side when the canary started
    canary_evidence: dict | None = None  # the sequential tests' standing at the last tick
    last_finished_at: float | None = None
    handled: tuple = ()            # event ids the loop has acted on (the last HANDLED_KEPT)
    deferred: tuple = ()           # event ids recorded as deferred by the cooldown

    def to_json(self) -> dict:
        return {**asdict(self), "handled": list(self.handled), "deferred": list(self.deferred)}

    @classmethod
    def from_json(cls, value: dict | None) -> LoopState:
        if not value:
            return cls()
        return cls(**{**value, "handled": tuple(value.get("handled", ())), "deferred": tuple(value.get("deferred", ()))})


def retrain_trigger(model: str, champion: int | None, new_events: list[dict], recent: tuple | None,
                    cfg: LoopConfig, estimated: float | None = None, test_rmse: float | None = None) -> Trigger | None:
    """A drift declared for the champion (when `on_drift`), else the champion's live accuracy over its
    last labelled rows (`recent`: labelled, correct) below `min_accuracy`, else the accuracy its last
    window's probabilities expect (`estimated`) below `min_estimated_accuracy`; for a regression
    model (`recent`: labelled, squared error sum, "regression") its live RMSE above `max_rmse` or above
    `max_rmse_ratio` × its own test RMSE (`test_rmse`); None otherwise."""
    policy = cfg.retrain
    if champion is None:
        return None
    if policy.on_drift:
        for e in new_events:
            if e.get("kind") == "drift_declared" and e.get("version") == champion:
                moved = ", ".join(list(e.get("features", {}))[:5])
                return Trigger("drift", e["event_id"], champion, f"drift declared on v{champion} ({moved})")
    if recent is not None and len(recent) == 3:  # regression: live RMSE against its ceilings
        labelled, squared, _ = recent
        ceilings = [c for c in (policy.max_rmse, policy.max_rmse_ratio * test_rmse
                                if policy.max_rmse_ratio is not None and test_rmse else None) if c is not None]
        rmse = (squared / labelled) ** 0.5 if labelled else 0.0
        if ceilings and labelled >= policy.accuracy_rows and rmse > min(ceilings):
            event_id = f"error-{stable_digest(model, champion, labelled // policy.accuracy_rows)}"
            return Trigger("error", event_id, champion,
                           f"live RMSE of v{champion} {rmse:.5g} over {labelled} labelled rows, above "
                           f"{min(ceilings):.5g}" + (f" ({policy.max_rmse_ratio:g}× its test RMSE {test_rmse:.5g})"
                                                      if policy.max_rmse_ratio is not None and test_rmse else ""))
        recent = None
    if policy.min_accuracy is not None and recent is not None:
        labelled, correct = recent
        if labelled >= policy.accuracy_rows and correct / labelled < policy.min_accuracy:
            event_id = f"accuracy-{stable_digest(model, champion, labelled // policy.accuracy_rows)}"
            return Trigger("accuracy", event_id, champion,
                           f"live accuracy of v{champion} {correct / labelled:.1%} over {labelled} labelled rows, "
                           f"below {policy.min_accuracy:.1%}")
    if policy.min_estimated_accuracy is not None and estimated is not None and estimated < policy.min_estimated_accuracy:
        return Trigger("estimate", f"estimate-{stable_digest(model, champion)}", champion,
                       f"estimated accuracy of v{champion} {estimated:.1%} (before labels), below "
                       f"{policy.min_estimated_accuracy:.1%}")
    return None


def _record(kind: str, **fields) -> dict:
    return {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}


def _finish(state: LoopState, now: float) -> LoopState:
    handled = (state.handled + ((state.event_id,) if state.event_id else ()))[-HANDLED_KEPT:]
    return LoopState(last_finished_at=now, handled=handled, deferred=state.deferred, champion=state.champion)


def canary_tests(champion: VersionFigures, canary: VersionFigures, cfg: LoopConfig) -> dict[str, RateTest]:
    """The canary's two always-valid tests against the champion over the same period: error rate, and
    the error of its predictions where labels arrive (a classifier's wrong predictions; a regression
    model's mean absolute error, worse by `min_effect_mae_ratio` × the champion's test MAE)."""
    c = cfg.canary
    errors = compare_rates(canary.errors, canary.requests, champion.errors, champion.requests,
                           delta=c.min_effect_errors, alpha=c.alpha, min_samples=c.min_requests)
    if champion.regression and canary.regression:
        if not champion.test_mae:
            raise ValueError("a regression canary needs the champion's test MAE (its registered test_mae metric) "
                             "to size the effect worth acting on")
        return {"errors": errors,
                "accuracy": compare_means(canary.abs_error_sum, canary.abs_error_sq_sum, canary.labelled,
                                          champion.abs_error_sum, champion.abs_error_sq_sum, champion.labelled,
                                          delta=c.min_effect_mae_ratio * champion.test_mae, alpha=c.alpha,
                                          min_samples=c.min_labels)}
    return {"errors": errors,
            "accuracy": compare_rates(canary.labelled - canary.correct, canary.labelled,
                                      champion.labelled - champion.correct, champion.labelled,
                                      delta=c.min_effect_accuracy, alpha=c.alpha, min_samples=c.min_labels)}


def canary_evidence(tests: dict[str, RateTest]) -> dict:
    """What the canary's tests stand on now (for `handoff status` and the events): per rate, both
    sides' rates and samples, the log mixture ratios against the boundary, and the verdict."""
    return {name: {"verdict": t.verdict, "canary": t.canary_rate, "champion": t.champion_rate, "samples": list(t.samples),
                   "log_lr_worse": round(t.log_lr_worse, 3), "log_lr_not_worse": round(t.log_lr_not_worse, 3),
                   "boundary": round(t.boundary, 3)} for name, t in tests.items()}


def canary_verdict(champion: VersionFigures, canary: VersionFigures, cfg: LoopConfig,
                   tests: dict[str, RateTest] | None = None) -> tuple[str, str] | None:
    """("promote" | "rollback", why) from always-valid tests of the canary against the champion over the
    same period (error rate; live accuracy where labels arrive) and the p99 guard; None while collecting.
    `tests`: `canary_tests` of the same figures, when the caller has them already."""
    c = cfg.canary
    tests = tests or canary_tests(champion, canary, cfg)
    errors, accuracy = tests["errors"], tests["accuracy"]

    def said(name: str, t) -> str:
        shown = (f"MAE {t.canary_rate:.5g} vs {t.champion_rate:.5g}" if name == "error of predictions"
                 and champion.regression else f"{t.canary_rate:.2%} vs {t.champion_rate:.2%}")
        return (f"{name} {shown} (log-LR {max(t.log_lr_worse, t.log_lr_not_worse):.1f}"
                f" / {t.boundary:.1f}, n {t.samples[0]}/{t.samples[1]})")

    if errors.verdict == WORSE:
        return "rollback", f"canary errors more: {said('error rate', errors)}"
    if accuracy.verdict == WORSE:
        return "rollback", f"canary is less accurate: {said('error of predictions', accuracy)}"
    slow = p99_guard(champion, canary, c)
    if slow is not None:
        return "rollback", slow
    labels_settled = accuracy.verdict == NOT_WORSE or (not c.require_labels and canary.labelled == 0)
    latency_known = not c.require_latency or (canary.p99_ms is not None and champion.p99_ms is not None)
    if errors.verdict == NOT_WORSE and labels_settled and latency_known:
        return "promote", f"canary not worse: {said('error rate', errors)}; {said('error of predictions', accuracy)}"
    return None


#: the guard's own error rate: a canary as fast as it may be is rolled back for latency at most this often
LATENCY_ALPHA = 0.001


def p99_guard(champion: VersionFigures, canary: VersionFigures, c) -> str | None:
    """Why the canary is rolled back for latency, or None. Its p99 is above `max_p99_ratio` × the
    champion's (over the same period) when more than 1% of its requests are slower than that: the
    guard counts the canary's requests surely above the line (histogram buckets wholly above it) and
    rolls back only when so many would come from a canary at 1% with probability below
    `LATENCY_ALPHA` (binomial). A p99 read off 150 requests is their second slowest: a cold start's
    first few slow answers must not decide, a canary slow throughout does."""
    from scipy.stats import binom

    if canary.requests < c.min_requests or not champion.p99_ms or canary.p99_ms is None:
        return None
    line = c.max_p99_ratio * champion.p99_ms
    if not canary.latency_buckets:  # figures without a histogram: the p99s as read
        return (f"canary p99 {canary.p99_ms:g} ms above {c.max_p99_ratio:g}× the champion's {champion.p99_ms:g} ms"
                if canary.p99_ms > line else None)
    n = int(max(count for _, count in canary.latency_buckets))
    slow = count_above(list(canary.latency_buckets), line)
    if n and slow and binom.sf(slow - 1, n, 0.01) < LATENCY_ALPHA:
        return (f"canary p99 above {c.max_p99_ratio:g}× the champion's (≤ {champion.p99_ms:g} ms): {slow} of its "
                f"{n} requests slower than {line:g} ms, where a canary within the ratio has at most 1%")
    return None


def advance(state: LoopState, now: float, cfg: LoopConfig, *, trigger: Trigger | None = None,
            job_status: str | None = None, candidate: Candidate | None = None,
            figures: dict[str, VersionFigures] | None = None,
            champion: int | None = None) -> tuple[LoopState, list[Action], list[dict]]:
    """One tick of the loop: the next state, the actions to carry out, the records to keep.
    `figures` has "champion" and "canary" while a canary runs; `champion` is the version serving now."""
    if not cfg.enabled:
        return state, [], []
    if state.stage == "watching":
        if trigger is None or trigger.event_id in state.handled:
            return state, [], []
        if state.last_finished_at is not None and now - state.last_finished_at < cfg.retrain.cooldown_s:
            if trigger.event_id in state.deferred:
                return state, [], []
            left = cfg.retrain.cooldown_s - (now - state.last_finished_at)
            return (replace(state, deferred=(state.deferred + (trigger.event_id,))[-HANDLED_KEPT:]), [],
                    [_record("retrain_deferred", event_id=trigger.event_id, version=trigger.version,
                             reason=f"{trigger.reason}; cooling down {left:.0f} s more after the last retraining")])
        state = replace(state, stage="retraining", event_id=trigger.event_id, trigger=trigger.reason,
                        champion=trigger.version, attempt=0, job_id=None, submitted_at=now)
        return (state, [Action("submit", event_id=trigger.event_id, attempt=0)],
                [_record("retrain_submitted", event_id=trigger.event_id, version=trigger.version, attempt=0,
                         reason=trigger.reason)])
    if state.stage == "backoff":
        if now < (state.next_try_at or 0):
            return state, [], []
        state = replace(state, stage="retraining", job_id=None, next_try_at=None, submitted_at=now)
        return (state, [Action("submit", event_id=state.event_id, attempt=state.attempt)],
                [_record("retrain_submitted", event_id=state.event_id, version=state.champion, attempt=state.attempt,
                         reason=f"retry {state.attempt + 1} of {cfg.retrain.max_attempts}")])
    if state.stage == "retraining":
        stop: list[Action] = []
        running = job_status not in TERMINAL_OK | TERMINAL_BAD
        if running and state.submitted_at is not None and now - state.submitted_at > cfg.retrain.job_timeout_s:
            stop = [Action("stop", event_id=state.event_id)]
        if stop or job_status in TERMINAL_BAD or (job_status in TERMINAL_OK and candidate is None):
            why = (f"job {state.job_id} still {job_status or 'pending'} after {cfg.retrain.job_timeout_s:.0f} s: "
                   "stopped" if stop else f"job {state.job_id} {job_status}" if job_status in TERMINAL_BAD
                   else f"job {state.job_id} succeeded but registered no version for {state.event_id}")
            failed = _record("retrain_failed", event_id=state.event_id, version=state.champion,
                             attempt=state.attempt, job_id=state.job_id, reason=why)
            if state.attempt + 1 >= cfg.retrain.max_attempts:
                return (_finish(state, now), stop,
                        [failed, _record("retrain_abandoned", event_id=state.event_id, version=state.champion,
                                         reason=f"{cfg.retrain.max_attempts} attempt(s) failed; the champion serves on")])
            wait = cfg.retrain.backoff_s * 2 ** state.attempt
            return (replace(state, stage="backoff", attempt=state.attempt + 1, next_try_at=now + wait), stop,
                    [failed, _record("retrain_retry_scheduled", event_id=state.event_id, attempt=state.attempt + 1,
                                     reason=f"retrying in {wait:.0f} s")])
        if job_status not in TERMINAL_OK:
            return state, [], []
        verdict = _record("gate_passed" if candidate.passed else "gate_failed", event_id=state.event_id,
                          version=candidate.version, champion=state.champion, scores=candidate.scores,
                          reason=candidate.reason)
        if not candidate.passed:
            return _finish(replace(state, candidate=candidate.version), now), [], [verdict]
        state = replace(state, stage="canary", candidate=candidate.version, canary_since=now)
        return (state, [Action("canary", version=candidate.version, percent=cfg.canary.percent)],
                [verdict, _record("canary_started", event_id=state.event_id, version=candidate.version,
                                  champion=state.champion, reason=f"{cfg.canary.percent:g}% of traffic")])
    if state.stage in ("canary", "awaiting_promotion"):
        if champion == state.candidate and state.stage == "awaiting_promotion":  # a person promoted it
            return _finish(state, now), [], [_record("promoted", event_id=state.event_id, version=state.candidate,
                                                     reason="promoted by hand")]
        if state.stage == "awaiting_promotion":
            return state, [], []
        figures = figures or {}
        champion_f, canary_f = figures.get("champion", VersionFigures()), figures.get("canary", VersionFigures())
        tests = canary_tests(champion_f, canary_f, cfg)
        verdict = canary_verdict(champion_f, canary_f, cfg, tests)
        state = replace(state, canary_evidence=canary_evidence(tests))
        since = state.canary_since if state.canary_since is not None else now
        if verdict is None and now - since > cfg.canary.timeout_s:
            verdict = (cfg.canary.on_timeout, f"no decision in {cfg.canary.timeout_s:.0f} s (not enough evidence); "
                                              f"on_timeout: {cfg.canary.on_timeout}")
        if verdict is None:
            return state, [], []
        decision, why = verdict
        if decision == "promote" and cfg.promotion == "manual":
            return (replace(state, stage="awaiting_promotion"), [],
                    [_record("canary_ready", event_id=state.event_id, version=state.candidate,
                             reason=f"{why}; promotion is manual: `handoff promote` finishes it")])
        record = _record("promoted" if decision == "promote" else "rolled_back", event_id=state.event_id,
                         version=state.candidate, champion=state.champion, reason=why)
        return _finish(state, now), [Action(decision, version=state.candidate)], [record]
    return state, [], []


def stage_in_words(loop: dict | None) -> str:
    """Where the closed loop stands, in words."""
    loop = loop or {}
    stage = loop.get("stage", "watching")
    if stage == "retraining":
        return f"retraining for {loop.get('event_id')} (job {loop.get('job_id')}, {loop.get('job_status') or 'submitted'})"
    if stage == "backoff":
        return f"retraining failed; retry {loop.get('attempt', 0) + 1} at {loop.get('next_try_at', 0):.0f}"
    if stage == "canary":
        said = []
        for name, t in (loop.get("canary_evidence") or {}).items():
            said.append(f"{name} {t['canary']:.2%} vs {t['champion']:.2%} on {t['samples'][0]}/{t['samples'][1]}, "
                        f"log-LR {max(t['log_lr_worse'], t['log_lr_not_worse']):.1f} of {t['boundary']:.1f}: "
                        f"{t['verdict'].replace('_', ' ')}")
        return (f"canary v{loop.get('candidate')} against champion v{loop.get('champion')}"
                + (f" ({'; '.join(said)})" if said else " (collecting)"))
    if stage == "awaiting_promotion":
        return f"v{loop.get('candidate')} ready: `handoff promote` finishes it (promotion: manual)"
    return "watching" + (f" (last acted on {loop['handled'][-1]})" if loop.get("handled") else "")
