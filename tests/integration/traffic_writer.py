"""A second process that changes one model's traffic many times (the serving lock's integration test).

    python -m tests.integration.traffic_writer GCS_ADDRESS TRACKING_URI MODEL ROUNDS FINAL_WEIGHT_OF_V1

Joins the running cluster, then sets MODEL's weights between versions 1 and 2 `ROUNDS` times with the
serving config in force, ending at v1 = FINAL_WEIGHT_OF_V1 %; prints one line per change.
"""

from __future__ import annotations

import sys


def main(address: str, tracking_uri: str, model: str, rounds: str, final: str) -> int:
    import ray

    from serving import ServingControl
    from training import Registry

    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    control = ServingControl(Registry(tracking_uri))
    weights = [10 * (i % 9 + 1) for i in range(int(rounds) - 1)] + [float(final)]
    for w in weights:
        control.traffic(model, {1: w, 2: 100 - w})
        print(f"{model}: v1 {w:g}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
