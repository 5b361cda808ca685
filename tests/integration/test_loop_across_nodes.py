"""The closed loop across nodes, with every location in a bucket (ray.cluster_utils.Cluster, moto's S3).

A head and six worker nodes on this machine, each offering a custom resource that the config of one
of Handoff's parts asks for: two gateway nodes (a gateway replica each), two for the versions'
replicas, one for the monitor, one for the retraining jobs and their trials; the cluster runs with
token authentication in a process of its own (tests/integration/ray_nodes.py), and the test reaches
it as a team does: `handoff` commands, the jobs API and the dashboard's REST API. Tune results,
MLflow's artifacts, the training table, the live log, labels, the monitor's state and events, the
retraining's table and a batch run's output all lie in the bucket, nothing on a node's disk.

Checked: every part runs where its resources say; drift → retrain (its job and trials on the
training node) → gate → canary → promote with no failed request. Then, under load, a node holding
version replicas is taken away (as a machine fails): at most the requests in flight on it fail and
its replicas come back on a node that offers the resource; the monitor's node is taken away: the
monitor comes back on another and resumes from its state in the bucket (every window once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests.integration.conftest import free_port
from tests.integration.load import LoadLoop
from tests.integration.ray_nodes import RayNodes
from tests.integration.s3_server import s3_server
from tests.integration.test_closed_loop import API_KEY, FAST, FEATURES, KEYED, SMALL, drive, events, handoff, kinds

pytestmark = pytest.mark.integration

NAME = "across-nodes"
MONITOR = f"handoff-monitor-{NAME}"  # the monitor actor's name (monitoring/monitor.py actor_name)
PLACED = {"gateway": "handoff-gateway", "versions": "handoff-versions", "monitor": "handoff-monitor",
          "train": "handoff-train"}


def rest(nodes: RayNodes, path: str):
    """GET the dashboard's REST API with the cluster's token."""
    request = urllib.request.Request(f"{nodes.dashboard_url}{path}", headers={"Authorization": f"Bearer {nodes.token}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def replicas_by_app(nodes: RayNodes) -> dict[str, list[tuple[str, str]]]:
    """Each Serve application's running replicas as (actor id, node id)."""
    apps = rest(nodes, "/api/serve/applications/")["applications"]
    return {name: sorted((r["actor_id"], r["node_id"]) for d in app["deployments"].values() for r in d["replicas"]
                         if r.get("state") == "RUNNING") for name, app in apps.items()}


def actor_node(nodes: RayNodes, name: str) -> tuple[str, int] | None:
    """(node id, pid) of the alive actor named `name`, None while there is none."""
    found = rest(nodes, f"/api/v0/actors?detail=true&limit=10000&filter_keys=name&filter_predicates=%3D"
                        f"&filter_values={name}")["data"]["result"]["result"]
    alive = [a for a in found if a["state"] == "ALIVE"]
    return (alive[0]["node_id"], alive[0]["pid"]) if alive else None


def monitor_status() -> dict:
    shown = handoff("monitor", NAME, "status", "--json")
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-3000:]
    return json.loads(shown.stdout)


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, shuttle_frame):
    """The bucket, MLflow (artifacts in the bucket), the nodes; every location set for every process
    through the environment the nodes and the `handoff` commands inherit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.mlflow_server import start_mlflow_server, stop_process_group
    from cluster.storage import filesystem

    tmp = tmp_path_factory.mktemp("across-nodes")
    with s3_server(tmp) as s3:
        home, mlflow_port = tmp / "home", free_port()
        mlflow = start_mlflow_server(f"sqlite:///{tmp}/mlflow.db", s3.uri("nodes", "mlflow"), port=mlflow_port,
                                     log_path=tmp / "mlflow.log")
        env = {"HANDOFF_HOME": str(home), "HANDOFF_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
               "HANDOFF_PYTHON": sys.executable,  # a job's interpreter, as `handoff up` and the ray up configs export it
               "HANDOFF_SERVING__LIVE_LOG__ROOT": s3.uri("nodes", "live"),
               "HANDOFF_MONITORING__STATE_ROOT": s3.uri("nodes", "monitor"),
               "HANDOFF_MONITORING__LOOP__DATA__ROOT": s3.uri("nodes", "retrain")}
        nodes = RayNodes(env, tmp)
        saved = {k: os.environ.get(k) for k in [*env, "HANDOFF_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE"]}
        try:
            for name, cpus, resources in [("gw-a", 1, {PLACED["gateway"]: 1}), ("gw-b", 1, {PLACED["gateway"]: 1}),
                                          ("versions-a", 1, {PLACED["versions"]: 2}),
                                          ("versions-b", 1, {PLACED["versions"]: 2}),
                                          ("monitor", 1, {PLACED["monitor"]: 1}), ("train", 2, {PLACED["train"]: 4})]:
                nodes.add(name, cpus, resources)
            os.environ.update({**env, "HANDOFF_ADDRESS": nodes.address, "RAY_AUTH_TOKEN": nodes.token,
                               "RAY_AUTH_MODE": "token"})
            data = s3.uri("nodes", "data", "train.parquet")
            fs, inside = filesystem(data)
            pq.write_table(pa.Table.from_pandas(shuttle_frame.iloc[:6000], preserve_index=False), inside, filesystem=fs)
            replay = shuttle_frame.iloc[20000:32000]
            yield {"s3": s3, "nodes": nodes, "home": home, "gateway": free_port(), "data": data,
                   "dashboard_url": nodes.dashboard_url, "x": replay[FEATURES].to_numpy(np.float32),
                   "y": replay["anomaly"].astype(int).tolist()}
        finally:
            try:  # served things stopped gracefully first; the cluster is torn down whatever that does
                handoff("unserve", NAME, timeout=60)
            except subprocess.TimeoutExpired as exc:  # (a serving change of the loop still under way)
                print(f"unserve did not finish in 60 s: {(exc.stderr or b'')[-500:]!r}", file=sys.stderr)
            finally:  # the environment put back before anything else can fail: later modules start their own Ray
                for key, value in saved.items():
                    os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
                try:
                    nodes.close()
                finally:
                    stop_process_group(mlflow.pid)


def test_the_loop_runs_across_nodes_and_survives_losing_a_versions_node_and_the_monitors(cluster):
    head, nodes, s3 = cluster, cluster["nodes"], cluster["s3"]
    node = {v: k for k, v in nodes.nodes.items()}  # node id → name
    tuned = handoff("tune", "configs/shuttle.yaml", "--json",
                    *[a for s in [*SMALL, f"name={NAME}", f"dataset.uri={head['data']}", "search.num_samples=1",
                                  f"storage_path={s3.uri('nodes', 'tune')}",
                                  f"resources.custom={{{PLACED['train']}: 1}}"] for a in ("--set", s)])
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    champion = json.loads(tuned.stdout)["version"]
    served = handoff("serve", NAME, "--set", f"gateway.port={head['gateway']}", "--set", f"gateway.api_keys=[{API_KEY}]",
                     "--set", "gateway.replicas=2", "--set", f"gateway.resources={{{PLACED['gateway']}: 1}}",
                     "--set", "gateway.cpus=0.2", "--set", "version_defaults.cpus=0.2",
                     "--set", "version_defaults.replicas=2",
                     "--set", f"version_defaults.resources={{{PLACED['versions']}: 1}}",
                     "--set", "live_log.flush_seconds=0.5",
                     *[a for s in [*FAST, f"resources={{{PLACED['monitor']}: 1}}",
                                   f"loop.retrain.job_resources={{{PLACED['train']}: 1}}"] for a in ("--monitoring-set", s)])
    assert served.returncode == 0, served.stderr[-3000:]

    # --- every part where its resources say ---------------------------------------------------------
    apps = replicas_by_app(nodes)
    gateway_app = next(a for a in apps if "gateway" in a)
    version_app = f"{NAME}-v{champion}"
    assert sorted(node[n] for _, n in apps[gateway_app]) == ["gw-a", "gw-b"], apps
    assert {node[n] for _, n in apps[version_app]} <= {"versions-a", "versions-b"}, apps
    assert node[wait_for(lambda: actor_node(nodes, MONITOR), 60, "the monitor actor")[0]] == "monitor"

    # --- drift → retrain → gate → canary → promote, no request failed --------------------------------
    replay = drive(head, NAME, lambda found: {"promoted", "rolled_back", "retrain_abandoned"} & set(kinds(found)),
                   seconds=540)
    steps = kinds(replay.found)
    assert replay.before.failed == replay.after.failed == 0, replay.errors[:5]
    assert "promoted" in steps, "\n".join(f"{e['kind']}: {e.get('reason')}" for e in replay.found
                                           if e["kind"] in steps and e["kind"] != "concept_drift_suspected")
    promoted = next(e for e in replay.found if e["kind"] == "promoted")["version"]
    jobs = [j for j in rest(nodes, "/api/jobs/") if (j.get("metadata") or {}).get("handoff.kind") == "retrain"]
    assert jobs and all(node[j["driver_node_id"]] == "train" for j in jobs), jobs
    apps = replicas_by_app(nodes)
    promoted_app = f"{NAME}-v{promoted}"
    assert {node[n] for _, n in apps[promoted_app]} <= {"versions-a", "versions-b"}, apps

    # --- a node holding version replicas fails under load ---------------------------------------------
    nodes.add("spare", 1, {PLACED["versions"]: 2, PLACED["monitor"]: 1})
    node = {v: k for k, v in nodes.nodes.items()}
    on_a = [a for a, n in apps[promoted_app] if node.get(n) == "versions-a"]
    lost = "versions-a" if on_a else "versions-b"
    threads = 3
    with LoadLoop(head["gateway"], NAME, threads=threads, max_requests=100_000, max_seconds=240, headers=KEYED) as load:
        wait_for(lambda: load.ok > 200, 60, "answers before the node fails")
        nodes.remove(lost)
        removed_at, sent = time.monotonic(), load.ok + load.failed
        back = wait_for(lambda: (lambda r: len(r) == 2 and all(n in nodes.nodes.values() for _, n in r) and r)(
            replicas_by_app(nodes).get(promoted_app, [])), 180, "the lost replicas back on a node that is up")
        sent = load.ok + load.failed
        wait_for(lambda: load.ok + load.failed > sent + 300, 90, "answers once the replicas are back")
    assert {node[n] for _, n in back} <= {"versions-a", "versions-b", "spare"} - {lost}, back
    after = [round(t - removed_at, 2) for t in load.failed_at]
    # each load thread has one request in flight at a time: the lost replicas held at most that many
    assert load.failed <= threads, f"{load.failed} failed, at {after} s after the node went: {load.failures[:6]}"

    # --- the monitor's node fails: it comes back on another and resumes from the bucket ------------------
    before = monitor_status()
    nodes.remove("monitor")
    moved = wait_for(lambda: (lambda a: a and a[0] != before.get("node_id") and nodes.nodes.get("spare") == a[0] and a)(
        actor_node(nodes, MONITOR)), 180, "the monitor restarted on the spare node")
    with LoadLoop(head["gateway"], NAME, threads=2, max_requests=3_000, max_seconds=90, headers=KEYED) as load:
        wait_for(lambda: load.ok >= 1_500, 90, "traffic for the restarted monitor")
    assert load.failed == 0, load.failures[:5]

    def settled():
        """The restarted actor's status (not its saved state) once two whole passes scored nothing
        more (a status shows the last pass committed; a pass on S3 takes seconds)."""
        first = monitor_status()
        time.sleep(3)
        again = monitor_status()
        answered = again.get("pid") == moved[1] and first.get("pid") == moved[1]
        idle = answered and again["passes"] >= first["passes"] + 2 and first["rows_scored"] == again["rows_scored"]
        return again if idle else None

    status = wait_for(settled, 180, "the restarted monitor to score what was sent")
    found = events(head, NAME)
    assert monitor_status()["rows_scored"] == status["rows_scored"]  # nothing scored while the events were read
    for version in {str(champion), str(promoted)}:
        windows = [e for e in found if e["kind"] == "window_scored" and str(e["version"]) == version]
        assert [w["window"] for w in windows] == list(range(len(windows))), version  # none twice, none skipped
        assert status["rows_scored"][version] == sum(w["rows"] for w in windows)
    assert status["rows_scored"][str(promoted)] > before["rows_scored"].get(str(promoted), 0)

    # --- what a team does next, with everything in the bucket -----------------------------------------
    again = handoff("reproduce", NAME, str(promoted), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["identical"], again.stderr[-2000:]
    batch = handoff("predict", NAME, "--input", head["data"], "--output", s3.uri("nodes", "batch"))
    assert batch.returncode == 0, batch.stderr[-2000:]
    keys = s3.keys("nodes/")
    for where in ("tune/", "mlflow/", f"live/model={NAME}/", f"live/_feedback/model={NAME}/",
                  f"monitor/model={NAME}/events/seg-", f"monitor/model={NAME}/window_rows/", f"retrain/{NAME}/",
                  "batch/"):
        assert any(k.startswith(f"nodes/{where}") for k in keys), (where, sorted({k.split("/")[1] for k in keys}))
    local = [p for d in ("live", "monitor", "tune", "mlartifacts", "retrain") for p in (head["home"] / d).rglob("*")
             if p.is_file()]
    assert local == []  # nothing of it on a node's disk
