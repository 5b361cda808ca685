"""A search on a three-node Ray cluster (ray.cluster_utils.Cluster): trials land on several nodes and
every result, checkpoint and the registered model live on storage all nodes reach."""

from __future__ import annotations

import pytest

from training.pipeline import tune_and_register

from .conftest import REPO, settings_for, small_config, write_parquet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three_nodes():
    """A head and two workers of one CPU each: a search of four trials must spread over them."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield cluster, [cluster.head_node.node_id, *(w.node_id for w in workers)]
    ray.shutdown()
    cluster.shutdown()


def test_trials_land_on_more_than_one_node_with_shared_storage(three_nodes, mlflow_server, shuttle_frame,
                                                                 tmp_path):
    _, node_ids = three_nodes
    shared = tmp_path / "shared"  # stands for the NFS/S3 URI a real cluster sets in config
    data = write_parquet(shuttle_frame.iloc[:4000], shared / "data" / "shuttle.parquet")
    cfg = small_config(str(data), "multinode-it", "search.num_samples=4", f"storage_path={shared / 'tune'}")
    result = tune_and_register(cfg, settings_for(tmp_path / "home"), mlflow_server)
    ran_on = {t["node_id"] for t in result.trials}
    assert len(ran_on) >= 2 and ran_on <= set(node_ids), (ran_on, node_ids)
    assert result.experiment_path.startswith(str(shared / "tune"))
    # every trial's checkpoints went to the shared storage, not to the node that ran it
    trial_dirs = [d for d in (shared / "tune").glob("multinode-it-*/*") if d.is_dir() and list(d.glob("checkpoint_*"))]
    assert len(trial_dirs) == 4
    assert result.version == 1
