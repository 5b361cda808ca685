"""Several Ray nodes on this machine (ray.cluster_utils.Cluster) in a process of their own, for the
tests that place Handoff's processes on nodes and take nodes away under load.

The cluster lives in a child process so that its Ray settings are its own: token authentication on
(as on a `ray up` cluster) and the environment every node's workers, actors and job drivers inherit
(the state locations, MLflow, the S3 endpoint), while the pytest process, which imported Ray long
before, never joins it; the test reaches it as users do, through `handoff` commands, the jobs API
and the dashboard's REST API. Commands go to the child's stdin and answers come back on its stdout,
one JSON line each:

    {"op": "add", "name": "gw-a", "num_cpus": 1, "resources": {"handoff-gateway": 1}} → {"node_id": …}
    {"op": "remove", "name": "gw-a"}                                                 → {"removed": "gw-a"}
    {"op": "stop"}
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.head_services import free_port

READY_S = 180.0


class RayNodes:
    """The child process's cluster: its GCS `address`, `dashboard_url`, `token`, and node ids by name."""

    def __init__(self, env: dict[str, str], log_dir: Path, head_cpus: float = 1):
        self.token = secrets.token_hex(16)
        self.dashboard_port = free_port()
        self.env = {**os.environ, **env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.log = open(log_dir / "ray-nodes.log", "wb")  # noqa: SIM115 - the child's stderr for its life
        spec = {"dashboard_port": self.dashboard_port, "head_cpus": head_cpus}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.ray_nodes", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=self.env, cwd=Path(__file__).resolve().parents[2], text=True,
                                     start_new_session=True)
        started = self._answer(READY_S)
        self.address, self.dashboard_url = started["address"], f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes = {"head": started["node_id"]}

    def _answer(self, timeout_s: float) -> dict:
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.log.flush()
            raise RuntimeError(f"the Ray nodes' process gave no answer in {timeout_s:.0f} s; see {self.log.name}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the Ray nodes' process: {answer['error']}")
        return answer

    def _send(self, command: dict, timeout_s: float = READY_S) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout_s)

    def add(self, name: str, num_cpus: float, resources: dict[str, float]) -> str:
        """Start a worker node offering `resources`; its node id (it is up when this returns)."""
        self.nodes[name] = self._send({"op": "add", "name": name, "num_cpus": num_cpus, "resources": resources})["node_id"]
        return self.nodes[name]

    def remove(self, name: str) -> None:
        """Take node `name` away at once, as a machine that fails does (its processes killed)."""
        self._send({"op": "remove", "name": name})
        self.nodes.pop(name)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=120)
        except Exception:  # noqa: BLE001 - killed below
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
            self.log.close()


def main(spec: dict) -> None:
    """The child: a head with its dashboard (jobs API) on 127.0.0.1, then commands from stdin."""
    from ray.cluster_utils import Cluster

    def say(answer: dict) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": spec["head_cpus"], "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": spec["dashboard_port"]})
    nodes, temps = {"head": cluster.head_node}, []
    try:
        say({"address": cluster.address, "node_id": cluster.head_node.node_id})
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if command["op"] == "add":
                    # a temp dir of its own, as on another machine: the runtime-env agents of nodes that share
                    # one delete each other's jobs' working_dirs (short: Ray's socket paths fit 107 bytes)
                    temp = tempfile.mkdtemp(prefix="hn", dir="/tmp")
                    temps.append(temp)
                    node = cluster.add_node(num_cpus=command["num_cpus"], resources=command["resources"],
                                            temp_dir=temp)
                    cluster.wait_for_nodes()
                    nodes[command["name"]] = node
                    say({"node_id": node.node_id})
                elif command["op"] == "remove":
                    cluster.remove_node(nodes.pop(command["name"]), allow_graceful=False)
                    say({"removed": command["name"]})
                elif command["op"] == "stop":
                    break
            except Exception as exc:  # noqa: BLE001 - told to the test, which fails naming it
                say({"error": f"{command}: {type(exc).__name__}: {exc}"})
    finally:
        cluster.shutdown()
        time.sleep(0.5)
        if not os.environ.get("HANDOFF_KEEP_NODE_LOGS"):  # set it to read the nodes' Ray logs after a failure
            for temp in temps:
                shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
