"""A second process that changes one model's traffic many times (the serving lock's integration test).

    python -m tests.integration.traffic_writer GCS_ADDRESS TRACKING_URI MODEL ROUNDS FINAL_WEIGHT_OF_V1 START PERIOD

Joins the running cluster, then sets MODEL's weights between versions 1 and 2 `ROUNDS` times with the
serving config in force, ending at v1 = FINAL_WEIGHT_OF_V1 %. Round i starts at START + i·PERIOD
(epoch seconds) or as soon as the one before ends, so two writers given the same START change at the
same moments, each reading the routing table while the other changes it; one line per change.
Before each change it reads the gateway's table: MODEL must still have the weights this process set
last (nobody else changes MODEL); a line `lost: …` says when another writer's table undid them.
"""

from __future__ import annotations

import sys
import time


def main(address: str, tracking_uri: str, model: str, rounds: str, final: str, start: str, period: str) -> int:
    import ray

    from serving import ServingControl, TrafficPolicy
    from training import Registry

    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    control = ServingControl(Registry(tracking_uri))
    weights = [10 * (i % 9 + 1) for i in range(int(rounds) - 1)] + [float(final)]
    last = None
    for i, w in enumerate(weights + [None]):
        time.sleep(max(0.0, float(start) + i * float(period) - time.time()))
        shares = TrafficPolicy.from_json(control.describe()["gateway"]["models"][model]["policy"]).shares()
        if last is not None and abs(shares.get(1, 0.0) - last / 100) > 1e-9:
            print(f"lost: {model} set to v1 {last:g}%, then found at {shares}", flush=True)
        if w is not None:
            control.traffic(model, {1: w, 2: 100 - w})
            print(f"{model}: v1 {w:g}%", flush=True)
            last = w
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:8]))
