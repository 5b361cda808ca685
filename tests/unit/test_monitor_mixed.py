"""The monitor's core on live-log files of a mixed-type model, written by the gateway's own writer (no
Ray): categorical columns read from their dictionaries, a new category and a column arriving empty
declared as drift by name and in words, traffic like training's left alone, the report's shares."""

import re
import time

import numpy as np

from monitoring.core import DriftSettings, MonitorCore
from monitoring.reference import build_profile
from monitoring.report import write_report
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, parse_feedback
from serving.live_log import LiveLog

COLUMNS = ("tenure", "charges", "contract", "payment", "senior")
VALUE_TYPES = (None, None, "string", "string", "bool")
CONTRACTS, PAYMENTS = ["month", "year", "two_year"], ["card", "bank", "check"]


def draw(rng, n, *, crypto=0.0, charges_gap=0.02):
    """Rows as clients send them: `crypto` of the payments a value training never held, `charges_gap`
    of the charges left out."""
    payments = rng.choice(PAYMENTS, n, p=[0.5, 0.3, 0.2]).astype(object)
    payments[rng.random(n) < crypto] = "crypto"
    charges = rng.gamma(2.0, 30.0, n)
    return {"tenure": rng.integers(0, 72, n).astype(float).tolist(),
            "charges": [None if g else float(c) for c, g in zip(charges, rng.random(n) < charges_gap)],
            "contract": rng.choice(CONTRACTS, n, p=[0.55, 0.25, 0.2]).tolist(),
            "payment": payments.tolist(),
            "senior": (rng.random(n) < 0.15).tolist()}


def profile(rng, n=6_000):
    rows = draw(rng, n)
    x = np.array([rows["tenure"], [np.nan if v is None else v for v in rows["charges"]]], dtype=float).T
    return build_profile(x, ["tenure", "charges"], np.tile([0.5, 0.5], (n, 1)), [0, 1], "fp",
                         categories={c: rows[c] for c in ("contract", "payment", "senior")})


def write(root, batches, rng):
    log = LiveLog(str(root), flush_seconds=3600)
    for i, (rows, kw) in enumerate(batches):
        x = draw(rng, rows, **kw)
        log.append("m", COLUMNS, f"b{time.monotonic_ns()}-{i}", 1, None, x, np.zeros(rows, dtype=np.int64), 1.0,
                   value_types=VALUE_TYPES)
        log.flush()
        time.sleep(0.002)
    log.close()


def monitor(tmp_path, reference):
    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), {1: reference}.get,
                       WindowSpec(rows=1_000, seconds=3600, min_rows=100), DriftSettings(persistence=2),
                       clock=lambda: time.time() + 60)


def test_traffic_like_training_is_scored_on_every_figure_and_left_alone(tmp_path):
    rng = np.random.default_rng(3)
    core = monitor(tmp_path, profile(rng))
    write(tmp_path / "live", [(1_000, {})] * 6, rng)
    scored = [e for e in core.step() if e["kind"] == "window_scored"]
    assert len(scored) == 6 and not any(e["drifted"] for e in scored)
    scores = scored[0]["scores"]
    assert {"tenure", "charges", "charges.missing", "contract", "contract.unseen", "payment", "payment.unseen",
            "senior"} <= set(scores)
    assert core.features == ["tenure", "charges"] and core.categorical == ["contract", "payment", "senior"]


def test_a_new_category_and_a_column_arriving_empty_are_declared_by_name_and_in_words(tmp_path):
    rng = np.random.default_rng(4)
    reference = profile(rng)
    core = monitor(tmp_path, reference)
    write(tmp_path / "live", [(1_000, {})] * 2 + [(1_000, {"crypto": 0.14, "charges_gap": 0.4})] * 3, rng)
    events = core.step()
    declared = [e for e in events if e["kind"] == "drift_declared"]
    assert len(declared) == 1
    event = declared[0]
    assert {"payment.unseen", "charges.missing"} <= set(event["features"])
    assert re.fullmatch(r"'crypto' 1[2-6]% of rows, never seen in training", event["features"]["payment.unseen"]["detail"])
    assert "payment.unseen: 'crypto'" in event["reason"] and "charges.missing:" in event["reason"]
    assert "contract" not in event["features"] and "senior" not in event["features"]
    shares = event["category_shares"]["payment"]
    assert shares["buckets"][-2:] == ["<unseen>", "<missing>"]
    assert shares["reference"][-2] == 0.0 and 0.1 < shares["window"][-2] < 0.18
    page = write_report(event, StateStore(str(tmp_path / "state"), "m").events(), tmp_path / "report")
    text = page.read_text()
    assert "never seen in training" in text and (tmp_path / "report" / "report.png").stat().st_size > 10_000


def test_status_and_prometheus_carry_the_share_figures(tmp_path):
    from monitoring.metrics import gauge_values
    from monitoring.monitor import status_of

    rng = np.random.default_rng(5)
    core = monitor(tmp_path, profile(rng))
    write(tmp_path / "live", [(1_000, {"crypto": 0.2, "charges_gap": 0.3})], rng)
    core.step()
    columns = status_of("m", core.state, running=False)["columns"]
    assert 0.15 < columns["payment.unseen"]["share"] < 0.25 and columns["payment.unseen"]["reference_share"] == 0.0
    assert columns["payment.unseen"]["drifted"] and "never seen in training" in columns["payment.unseen"]["detail"]
    assert 0.25 < columns["charges.missing"]["share"] < 0.35 and 0.0 < columns["charges.missing"]["reference_share"] < 0.05
    assert columns["contract"]["share"] is None and not columns["contract"]["drifted"]
    gauges = {(tags["feature"], tags["statistic"]): value for gauge, value, tags in
              gauge_values("m", core.state["last_window"], {}, {}, {}) if gauge == "score"}
    assert gauges[("payment.unseen", "share")] == columns["payment.unseen"]["share"]
    assert ("contract", "effect") in gauges and ("tenure", "wasserstein") in gauges
    from handoff.monitor_commands import verdict

    shown, _ = verdict(status_of("m", core.state, running=False), 1)
    assert shown.startswith("window 0: drifted (") and "payment.unseen" in shown and "charges.missing" in shown


def test_labelled_rows_of_a_mixed_model_come_back_as_clients_sent_them(tmp_path):
    from monitoring.labelled import labelled_rows

    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    x = {"tenure": [1.0, 2.0], "charges": [None, 5.5], "contract": ["month", None], "payment": ["crypto", "card"],
         "senior": [True, None]}
    log.append("m", COLUMNS, "r", 1, None, x, np.array([0, 1]), 1.0, value_types=VALUE_TYPES)
    log.close()
    FeedbackLog(str(tmp_path / "live")).write("m", parse_feedback(
        [{"request_id": "r", "label": 1}, {"request_id": "r#1", "label": 0}], (0, 1)))
    rows = labelled_rows(str(tmp_path / "live"), "m")
    assert rows.y.tolist() == [1, 0]
    assert rows.frame["contract"].tolist() == ["month", None] and rows.frame["senior"].tolist() == [True, None]
    assert rows.frame["payment"].tolist() == ["crypto", "card"] and np.isnan(rows.frame["charges"][0])


def test_an_integer_code_stays_categorical_through_parquet_and_compaction(tmp_path):
    """Parquet gives a dictionary of integers back as plain integers: the file's metadata names the
    categorical columns, so the monitor and the retraining still read the code as a category."""
    from monitoring.compaction import merge_files
    from monitoring.labelled import labelled_rows
    from monitoring.live_reader import list_files, read_rows

    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    for i in range(2):
        log.append("m", ("amount", "zipcode"), f"r{i}", 1, None, {"amount": [1.5, None], "zipcode": [3, None]},
                   np.array([0, 1]), 1.0, value_types=(None, "integer"))
        log.flush()
    log.close()
    keys = list_files(str(tmp_path / "live"), "m")
    rows, numeric = read_rows(str(tmp_path / "live"), "m", keys[0], 0)
    assert numeric == ["amount"] and rows.categories["zipcode"].tolist() == [3, None]
    merge_files(str(tmp_path / "live"), "m", keys, "merged.parquet")
    merged, numeric = read_rows(str(tmp_path / "live"), "m", "merged.parquet", 1)
    assert numeric == ["amount"] and merged.categories["zipcode"].tolist() == [3, None, 3, None]
    FeedbackLog(str(tmp_path / "live")).write("m", parse_feedback([{"request_id": "r0", "label": 1}], (0, 1)))
    frame = labelled_rows(str(tmp_path / "live"), "m").frame
    assert frame["zipcode"].tolist()[0] == 3 and isinstance(frame["zipcode"].tolist()[0], int)


def test_a_column_constant_in_training_and_one_it_held_no_value_of_are_scored_in_finite_words(tmp_path):
    """Training: `tenure` always 5, `contract` always a gap (added to the table later). Live rows fill
    both. The window was refused (chi-squared on no training counts: every pass failed, every column
    unmonitored) and the constant's shift was `inf` in the state; now both drift, said in words."""
    import json

    rng = np.random.default_rng(5)
    rows = draw(rng, 6_000)
    x = np.array([np.full(6_000, 5.0), [np.nan if v is None else v for v in rows["charges"]]], dtype=float).T
    reference = build_profile(x, ["tenure", "charges"], np.tile([0.5, 0.5], (6_000, 1)), [0, 1], "fp",
                              categories={"contract": [None] * 6_000, "payment": rows["payment"],
                                          "senior": rows["senior"]})
    core = monitor(tmp_path, reference)
    write(tmp_path / "live", [(1_000, {})] * 2, rng)
    events = core.step()
    json.dumps(events, allow_nan=False)  # every figure finite (refuses inf and NaN)
    json.dumps(core.state, allow_nan=False)
    (event,) = [e for e in events if e["kind"] == "drift_declared"]
    assert set(event["features"]) == {"tenure", "contract.missing"}
    assert re.search(r"tenure: constant in training \(5\): shifted [\d.]+ in its own unit", event["reason"])
    assert "contract.missing: 0% of rows empty, 100% in training" in event["reason"]
    assert "contract" not in core.state["last_window"]["scores"]  # no training shares to compare with
