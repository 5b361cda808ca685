"""The drift monitor on a real local Ray, a real `mlflow server` and the real gateway writing the live log.

A version registered through the pipeline gets its reference profile at registration (stored in
MLflow); served, its monitor actor scores the live log in windows, declares drift when shifted rows
keep coming, survives being killed mid-stream (every row scored once), skips a corrupt file, and
counts the rows of a version without a profile.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from monitoring.config import MonitoringConfig
from monitoring.monitor import find, start, stop
from monitoring.profiles import load_profile, profile_from_training, save_profile
from monitoring.state_store import StateStore
from serving.config import load_serving_config
from serving.control import ServingControl
from training import Registry
from training.pipeline import tune_and_register

from .conftest import free_port, settings_for, small_config, write_parquet

pytestmark = pytest.mark.integration
NAME = "monitor-it"
FEATURES = [f"f{i}" for i in range(1, 10)]


def post(port: int, rows: np.ndarray, request_id: str | None = None) -> dict:
    body = json.dumps({"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.reshape(-1).tolist()}]}).encode()
    headers = {"content-type": "application/json", **({"x-request-id": request_id} if request_id else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{NAME}/infer", body, headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def send_labels(port: int, labels: list[dict]) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{NAME}/feedback",
                                 json.dumps({"labels": labels}).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(check, seconds: float, what: str, show=lambda: None):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}: {show()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def monitored(ray_local, mlflow_server, shuttle_frame, tmp_path_factory):
    home = tmp_path_factory.mktemp("monitor-home")
    data = write_parquet(shuttle_frame.iloc[:4000], home / "d.parquet")
    registry = Registry(mlflow_server)

    def record(view):
        save_profile(registry, view.name, view.version,
                     profile_from_training(view.x_train, view.features, view.proba_train, view.classes,
                                           view.fingerprint, view.seed))

    profiled = tune_and_register(small_config(str(data), NAME, "search.num_samples=1"), settings_for(home),
                                 mlflow_server, on_registered=record).version
    bare = tune_and_register(small_config(str(data), NAME, "search.num_samples=1", "seed=8"), settings_for(home),
                             mlflow_server).version  # registered without a profile
    port = free_port()
    cfg = load_serving_config(None, [f"gateway.port={port}", "live_log.flush_seconds=0.5", "version_defaults.cpus=0.1",
                                     "gateway.cpus=0.1", "version_defaults.batching.max_batch_size=1"], environ={})
    control = ServingControl(registry, cfg, str(home / "live"))
    control.traffic(NAME, {profiled: 100})
    mon = MonitoringConfig(window_rows=300, min_rows=50, window_seconds=600, persistence=2, poll_seconds=0.5)
    start(NAME, str(home / "live"), str(home / "monitor"), mlflow_server, mon)
    yield {"home": home, "port": port, "registry": registry, "control": control, "profiled": profiled,
           "bare": bare, "frame": shuttle_frame, "mon": mon, "tracking": mlflow_server}
    stop(NAME)
    control.unserve(NAME)


def monitor_run(client, version: int):
    """The monitor's MLflow run of NAME `version`, or None while the sink has logged nothing for it."""
    from monitoring.mlflow_sink import EXPERIMENT

    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = experiment and client.search_runs(
        [experiment.experiment_id], f"tags.`handoff.model` = '{NAME}' and tags.`handoff.version` = '{version}'")
    return runs[0] if runs else None


def status():
    import ray

    return ray.get(find(NAME).status.remote(), timeout=60)


def test_registration_stores_the_profile_and_older_versions_have_none(monitored):
    profile = load_profile(monitored["registry"], NAME, monitored["profiled"])
    assert profile is not None and list(profile.features) == FEATURES and profile.rows > 2000
    assert load_profile(monitored["registry"], NAME, monitored["bare"]) is None


def test_live_rows_are_scored_in_windows_and_a_lasting_shift_is_declared(monitored, tmp_path):
    port, frame = monitored["port"], monitored["frame"]
    rows = frame.iloc[-900:][FEATURES].to_numpy(dtype=np.float32)
    for chunk in np.array_split(rows, 90):
        post(port, chunk)
    wait_for(lambda: status()["windows"].get(str(monitored["profiled"]), 0) >= 3, 120, "three windows scored",
             status)
    clean = StateStore(str(monitored["home"] / "monitor"), NAME).events()
    assert not [e for e in clean if e["kind"] == "drift_declared"]
    scored = [e for e in clean if e["kind"] == "window_scored"]
    assert all(0.5 <= e["estimated_accuracy"] <= 1 for e in scored)  # from the logged probabilities, before labels
    assert all(e["scores"]["f1"]["tolerance"] >= 0.1 for e in scored)  # calibrated at 300 rows, above the floor
    shifted = rows.copy()
    shifted[:, 0] += 4 * frame["f1"].std()  # a large, lasting shift of one sensor
    for chunk in np.array_split(shifted, 90):
        post(port, chunk)
    declared = wait_for(lambda: [e for e in StateStore(str(monitored["home"] / "monitor"), NAME).events()
                                 if e["kind"] == "drift_declared"], 120, "drift declared", status)
    assert declared[0]["version"] == monitored["profiled"] and "f1" in declared[0]["features"]

    from serving.metrics_read import scrape

    def detected() -> list[str]:  # the agent exports gauges every few seconds: wait for the 1
        lines = [line for line in "\n".join(scrape()).splitlines()
                 if line.startswith(("ray_handoff_drift_detected", "handoff_drift_detected")) and NAME in line]
        return lines if any(line.rstrip().endswith(" 1.0") for line in lines) else []

    assert wait_for(detected, 90, "handoff_drift_detected = 1 in Prometheus")
    assert any("handoff_drift_score" in text and NAME in text for text in scrape())

    from mlflow import MlflowClient

    client = MlflowClient(monitored["tracking"])

    def reported():  # the sink logs the declaration and its report after the monitor commits the event
        run = monitor_run(client, declared[0]["version"])
        return run and run.data.metrics.get("drift_declared") == 1.0 \
            and client.list_artifacts(run.info.run_id, "drift-reports") and run

    run = wait_for(reported, 60, "the declaration and its report in MLflow")
    reports = client.list_artifacts(run.info.run_id, "drift-reports")
    assert len(reports) == 1 and {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, reports[0].path)} \
        == {"report.html", "report.png"}
    drawn = subprocess.run([str(Path(sys.executable).with_name("handoff")), "report", NAME, "--home",
                            str(monitored["home"]), "--out", str(tmp_path / "report"), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0 and json.loads(drawn.stdout)["event_id"] == reports[0].path.rsplit("/", 1)[-1], \
        drawn.stderr
    assert "f1" in (tmp_path / "report" / "report.html").read_text()


def test_labels_sent_back_become_live_accuracy_in_status_mlflow_and_prometheus(monitored, tmp_path):
    from mlflow import MlflowClient

    from serving.metrics_read import scrape

    port, frame, version = monitored["port"], monitored["frame"], monitored["profiled"]
    sample = frame.iloc[-1400:-1000]
    answers = [post(port, row[None], f"fb-{i}")["outputs"] for i, row in
               enumerate(sample[FEATURES].to_numpy(dtype=np.float32))]
    predicted = [next(o for o in a if o["name"] == "label")["data"][0] for a in answers]
    truth = sample["anomaly"].tolist()
    labels = [{"request_id": f"fb-{i}", "label": int(t)} for i, t in enumerate(truth)]
    assert send_labels(port, labels[:200]) == (200, {"model": NAME, "accepted": 200})
    assert send_labels(port, labels[:200])[0] == 200  # sent twice: one label per id
    status_code, refused = send_labels(port, [{"request_id": "fb-0", "label": 7}, {"request_id": "", "label": 1}])
    assert status_code == 422 and "label 7 is not one of the model's classes [0, 1]" in refused["error"]
    csv = tmp_path / "labels.csv"
    csv.write_text("request_id,label\n" + "".join(f"{d['request_id']},{d['label']}\n" for d in labels[200:]))
    sent = subprocess.run([str(Path(sys.executable).with_name("handoff")), "feedback", NAME, str(csv),
                           "--url", f"http://127.0.0.1:{port}", "--json"], capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0 and json.loads(sent.stdout)["accepted"] == 200, sent.stderr
    for chunk in np.array_split(frame.iloc[-1000:-400][FEATURES].to_numpy(dtype=np.float32), 20):
        post(port, chunk)  # unlabelled rows after them: every labelled row ends up in a scored window
    expected = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
    live = wait_for(lambda: (status()["live"].get(str(version)) or {}).get("labelled") == 400
                    and status()["live"][str(version)], 120, "400 labelled rows joined", status)
    assert live["accuracy"] == pytest.approx(expected) and live["log_loss"] > 0

    client = MlflowClient(monitored["tracking"])

    def accuracy_logged():  # the sink logs to MLflow after the monitor commits the window
        run = monitor_run(client, version)
        return run and "live_accuracy" in run.data.metrics and run

    run = wait_for(accuracy_logged, 60, "live accuracy logged to MLflow")
    history = client.get_metric_history(run.info.run_id, "f1.psi")  # one step per window scored, none lost
    assert len(history) >= 3 and sorted(m.step for m in history) == list(range(len(history)))

    def accuracy_exported() -> bool:
        lines = [line for line in "\n".join(scrape()).splitlines() if NAME in line]
        return all(any(line.startswith((f"ray_{gauge}", gauge)) for line in lines)
                   for gauge in ("handoff_live_accuracy", "handoff_estimated_accuracy"))

    assert wait_for(accuracy_exported, 90, "handoff_live_accuracy and handoff_estimated_accuracy in Prometheus")


def test_a_killed_monitor_resumes_and_scores_every_row_once(monitored):
    import ray

    port, frame = monitored["port"], monitored["frame"]
    rows = frame.iloc[-2000:-1400][FEATURES].to_numpy(dtype=np.float32)
    for chunk in np.array_split(rows, 60):
        post(port, chunk)
    ray.kill(find(NAME), no_restart=False)  # Ray restarts it (max_restarts=-1) from its committed state
    for chunk in np.array_split(rows, 60):
        post(port, chunk)
    monitored["control"].unserve(NAME)  # the gateway writes what it buffered
    live = ds.dataset(str(monitored["home"] / "live"), partitioning="hive").to_table().to_pandas()
    expected = int((~live["shadow"]).sum())

    def all_accounted():
        s = status()
        return sum(s["rows_scored"].values()) + sum(s["rows_unprofiled"].values()) + s["rows_buffered"] == expected

    wait_for(all_accounted, 120, f"all {expected} live rows scored or buffered once", status)
    windows = [e for e in StateStore(str(monitored["home"] / "monitor"), NAME).events() if e["kind"] == "window_scored"]
    numbers = [e["window"] for e in windows if e["version"] == monitored["profiled"]]
    assert numbers == list(range(len(numbers)))  # none twice, none missing, across the restart
    monitored["control"].traffic(NAME, {monitored["profiled"]: 100})


def test_a_corrupt_file_is_skipped_and_a_version_without_profile_is_counted(monitored):
    home, port, frame = monitored["home"], monitored["port"], monitored["frame"]
    day = next((home / "live" / f"model={NAME}").iterdir())
    (day / "part-0-truncated.parquet").write_bytes(b"PAR1\x00\x01 truncated")
    monitored["control"].traffic(NAME, {monitored["bare"]: 100})
    rows = frame.iloc[-700:][FEATURES].to_numpy(dtype=np.float32)
    for chunk in np.array_split(rows, 35):
        post(port, chunk)
    wait_for(lambda: status()["rows_unprofiled"].get(str(monitored["bare"]), 0) >= 300, 120,
             "rows of the version without a profile counted", status)
    events = StateStore(str(home / "monitor"), NAME).events()
    skipped = [e for e in events if e["kind"] == "file_skipped"]
    assert any("truncated" in e["file"] for e in skipped)
    assert status()["last_error"] is None  # the monitor went on


def test_a_model_unserved_and_served_again_resumes_its_monitor_from_its_state(monitored):
    home, port, frame, version = monitored["home"], monitored["port"], monitored["frame"], monitored["profiled"]
    v = str(version)
    stop(NAME)
    monitored["control"].unserve(NAME)
    before = StateStore(str(home / "monitor"), NAME).read_state()
    monitored["control"].traffic(NAME, {version: 100})
    start(NAME, str(home / "live"), str(home / "monitor"), monitored["tracking"], monitored["mon"])
    resumed = status()
    assert resumed["windows"][v] == before["windows"][v] and resumed["rows_scored"][v] == before["rows_scored"][v]
    for chunk in np.array_split(frame.iloc[-600:][FEATURES].to_numpy(dtype=np.float32), 20):
        post(port, chunk)
    wait_for(lambda: status()["windows"][v] >= before["windows"][v] + 2, 120, "two more windows", status)
    numbers = [e["window"] for e in StateStore(str(home / "monitor"), NAME).events()
               if e["kind"] == "window_scored" and e["version"] == version]
    assert numbers == list(range(len(numbers)))  # continued, none repeated
