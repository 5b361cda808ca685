"""A three-node Ray cluster (ray.cluster_utils.Cluster): a search's trials land on several nodes and
every result, checkpoint and the registered model live on storage all nodes reach; the built-in
dataset (on the driver's disk only) is read without Ray's deprecated `local://`; batch inference
scores a table on several nodes."""

from __future__ import annotations

import warnings

import numpy as np
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


@pytest.fixture(scope="module")
def searched(three_nodes, mlflow_server, tmp_path_factory):
    """A search of four trials on the built-in dataset, which lies on the driver's disk only: the driver
    reads it and hands Ray Data the table, so no node needs the file; Ray's deprecated `local://`
    (removed after January 2027) would warn, and here a warning fails the read."""
    from ray.util.annotations import RayDeprecationWarning

    shared = tmp_path_factory.mktemp("multinode") / "shared"  # stands for the NFS/S3 URI of a real cluster
    cfg = small_config("builtin://shuttle", "multinode-it", "search.num_samples=4", "dataset.max_rows=4000",
                       f"storage_path={shared / 'tune'}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RayDeprecationWarning)
        result = tune_and_register(cfg, settings_for(shared.parent / "home"), mlflow_server)
    return shared, result


def test_trials_land_on_more_than_one_node_with_shared_storage(three_nodes, searched):
    _, node_ids = three_nodes
    shared, result = searched
    ran_on = {t["node_id"] for t in result.trials}
    assert len(ran_on) >= 2 and ran_on <= set(node_ids), (ran_on, node_ids)
    assert result.experiment_path.startswith(str(shared / "tune"))
    # every trial's checkpoints went to the shared storage, not to the node that ran it
    trial_dirs = [d for d in (shared / "tune").glob("multinode-it-*/*") if d.is_dir() and list(d.glob("checkpoint_*"))]
    assert len(trial_dirs) == 4
    assert result.version == 1


def test_batch_inference_scores_a_table_on_more_than_one_node(three_nodes, searched, mlflow_server, shuttle_frame):
    from serving import BatchConfig, predict_table
    from training import Registry

    _, node_ids = three_nodes
    shared, registered = searched
    table = shuttle_frame.drop(columns=["anomaly"]).iloc[:24_000].reset_index(drop=True)
    table.insert(0, "row", np.arange(len(table)))
    for k, part in enumerate(np.array_split(np.arange(len(table)), 3)):
        write_parquet(table.iloc[part], shared / "tonight" / f"part-{k}.parquet")
    # An actor scores these 24,000 rows in a few ms, often before a second one has started: Ray Data
    # is told to start the whole pool before it hands out blocks (its own setting), so both get work.
    import ray.data

    context = ray.data.DataContext.get_current()
    waited, context.wait_for_min_actors_s = context.wait_for_min_actors_s, 300
    try:
        result = predict_table(Registry(mlflow_server), registered.name, str(shared / "tonight"),
                               str(shared / "scored"), progress=False,
                               config=BatchConfig(actors=2, cpus_per_actor=0.5, batch_size=500))
    finally:
        context.wait_for_min_actors_s = waited
    assert result.rows_out == len(table) and result.rows_rejected == 0 and result.version == registered.version
    # every output file names the node whose actor predicted its rows (the pool's actors are spread)
    assert len(result.nodes) >= 2 and set(result.nodes) <= set(node_ids), (result.nodes, node_ids)
