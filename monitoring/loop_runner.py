"""One tick of the closed loop inside the monitor actor: gather what `advance` needs, carry out its actions.

The loop's effects on the world (submitting a retraining job, reading the candidate's gate
verdict, moving traffic, reading the canary's figures) go through a `LoopPort`, which the
composing layer (handoff/loop_port.py) gives the monitor when it starts it: monitoring never
imports serving, and retraining crosses by job submission. The state is committed with the
records after the actions succeeded; a tick whose action fails changes nothing and is tried
again (every action is idempotent), so a monitor killed mid-tick neither loses a job nor
starts a second one.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

from cluster.histograms import quantile_upper_bound, since
from monitoring.loop import Candidate, LoopState, VersionFigures, advance, retrain_trigger
from monitoring.loop_config import LoopConfig


class LoopPort(Protocol):
    def champion(self, model: str) -> int | None: ...
    def submit_retrain(self, model: str, event_id: str, attempt: int) -> str: ...    # the job id
    def job_status(self, job_id: str) -> str: ...
    def job_message(self, job_id: str) -> str: ...  # why a job ended as it did (Ray's words: an installer's error)
    def stop_job(self, job_id: str) -> None: ...
    def candidate(self, model: str, event_id: str) -> Candidate | None: ...
    def canary(self, model: str, version: int, percent: float) -> None: ...
    def promote(self, model: str, version: int) -> None: ...
    def rollback(self, model: str, version: int, champion: int) -> None: ...
    def figures(self, model: str, champion: int, canary: int, since: float) -> dict[str, VersionFigures]: ...
    def test_errors(self, model: str, version: int) -> dict | None: ...  # a regression version's test rmse, mae


def recent_accuracy(labels: dict, rows: int) -> tuple | None:
    """(labelled, correct) over the newest windows of a version until `rows` labelled rows are
    covered; for a regression model's windows (labelled, squared error sum, "regression")."""
    labelled, correct, squared = 0, 0, 0.0
    regression = any("squared_error_sum" in w for w in labels.values())
    for _, w in sorted(labels.items(), key=lambda kv: -int(kv[0])):
        labelled += w["labelled"]
        if regression:
            squared += w.get("squared_error_sum", 0.0)
        else:
            correct += w["correct"]
        if labelled >= rows:
            break
    if not labelled:
        return None
    return (labelled, squared, "regression") if regression else (labelled, correct)


def since_start(figures: dict[str, VersionFigures], baseline: dict | None) -> dict[str, VersionFigures]:
    """Each side's requests and errors since the canary started, and p99 latency since its warm-up
    ended (`baseline["latency"]`, each side's histogram then; before it, no p99: the guard waits and
    so does a promotion that needs latency). The counters and the histogram are cumulative; labelled
    rows are read from the canary's start already: both sides over the same period. (The champion's
    p99 of the hours before would otherwise stand against the canary's minutes, and the canary's
    first seconds, through the Serve handle while the gateway connects, against the champion's warm
    path.)"""
    out = {}
    latency = (baseline or {}).get("latency")
    for role, f in figures.items():
        requests, errors = ((baseline or {}).get(role) or [0, 0])[:2]
        p99, period = f.p99_ms, f.latency_buckets
        if f.latency_buckets and baseline is not None:
            if latency is None:
                p99, period = None, ()
            else:
                period = tuple(since(list(f.latency_buckets), [tuple(b) for b in latency.get(role) or []]))
                p99 = quantile_upper_bound(list(period), 0.99)
        out[role] = replace(f, requests=max(f.requests - requests, 0), errors=max(f.errors - errors, 0), p99_ms=p99,
                            latency_buckets=period)
    return out


def baseline_of(start: dict[str, VersionFigures]) -> dict:
    """What `since_start` subtracts, as stored in the loop's state: each side's requests and errors."""
    return {role: [f.requests, f.errors] for role, f in start.items()}


def latency_baseline(figures: dict[str, VersionFigures]) -> dict:
    """Each side's latency histogram as read now: where the canary's latency period starts."""
    return {role: [list(b) for b in f.latency_buckets] for role, f in figures.items()}


def tick(model: str, state_json: dict | None, labels: dict, new_events: list[dict], cfg: LoopConfig,
         port: LoopPort, now: float | None = None, estimated: dict | None = None) -> tuple[dict, list[dict]]:
    """The loop's next state (as stored) and the records of this tick (events to append)."""
    now = time.time() if now is None else now
    state = LoopState.from_json(state_json)
    champion = port.champion(model)
    recent = recent_accuracy(labels.get(str(champion), {}), cfg.retrain.accuracy_rows) if champion else None
    mine = (estimated or {}).get(str(champion)) or {}
    test_rmse = None  # a regression champion's own test RMSE, only where a ceiling is relative to it
    if recent is not None and len(recent) == 3 and cfg.retrain.max_rmse_ratio is not None:
        test_rmse = (port.test_errors(model, champion) or {}).get("rmse")
    trigger = retrain_trigger(model, champion, new_events, recent, cfg, mine[max(mine, key=int)] if mine else None,
                              test_rmse)
    job_status = port.job_status(state.job_id) if state.stage == "retraining" and state.job_id else None
    candidate = port.candidate(model, state.event_id) if job_status == "SUCCEEDED" else None
    figures = None
    if state.stage == "canary":
        read = port.figures(model, state.champion, state.candidate, state.canary_since)
        if state.canary_baseline is not None and "latency" not in state.canary_baseline \
                and now >= (state.canary_since or 0) + cfg.canary.latency_warmup_s:  # warm: latency counts from here
            state = replace(state, canary_baseline={**state.canary_baseline, "latency": latency_baseline(read)})
        figures = since_start(read, state.canary_baseline)
    new_state, actions, records = advance(state, now, cfg, trigger=trigger, job_status=job_status,
                                          candidate=candidate, figures=figures, champion=champion)
    for action in actions:
        if action.kind == "submit":
            job_id = port.submit_retrain(model, action.event_id, action.attempt)
            new_state = replace(new_state, job_id=job_id)
            records = [{**r, "job_id": job_id} if r["kind"] == "retrain_submitted" else r for r in records]
        elif action.kind == "stop":
            port.stop_job(state.job_id)
        elif action.kind == "canary":
            start = port.figures(model, new_state.champion, action.version, now)  # before the switch
            port.canary(model, action.version, action.percent)
            new_state = replace(new_state, canary_baseline=baseline_of(start))
        elif action.kind == "promote":
            port.promote(model, action.version)
        elif action.kind == "rollback":
            port.rollback(model, action.version, state.champion)
    if job_status in ("FAILED", "STOPPED") and any(r["kind"] == "retrain_failed" for r in records):
        try:  # a runtime environment that did not install says so here
            why = port.job_message(state.job_id)[:1000]
        except Exception:  # noqa: BLE001 - the reason without Ray's words beats a lost tick
            why = ""
        records = [{**r, "reason": f"{r['reason']}: {why}"} if r["kind"] == "retrain_failed" and why else r
                   for r in records]
    if state.stage == "retraining" and job_status == "SUCCEEDED":
        records = [{"kind": "retrain_finished", "event_id": state.event_id, "job_id": state.job_id,
                    "version": candidate.version if candidate else None}] + records
    if job_status is not None:
        new_state = replace(new_state, job_status=job_status)
    return new_state.to_json(), records
