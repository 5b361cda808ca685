"""Where a process runs on a cluster: the custom Ray resources it asks for (pure).

Ray places a task or actor only on a node that offers every resource it asks for, so a node started
with `--resources '{"handoff-serving": 100}'` (a `resources:` entry of a node type in cluster.yaml,
`ray.cluster_utils.Cluster.add_node(resources=...)` in a test) takes the processes that ask for a
little of `handoff-serving`, and no other node does; Ray's own `node:IP` resource pins one to a
node by address. Each of the gateway, the version replicas, the monitor, a retraining job and its
trials takes such a mapping (`resources:` in its config), so a team keeps model replicas off the
head, the monitor beside the state it reads, a retraining on the GPU nodes. The amounts are what
each process holds of the node's: 0.01 of 100 lets 10,000 share it, 1 of 2 lets two.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator

#: resources Ray accounts for itself, asked for through `cpus`/`gpus` (and memory never by Handoff), in any
#: case (Tune reads `cpu`/`gpu` of a trial's mapping as its CPUs and GPUs), and Tune's own key
RESERVED = frozenset({"cpu", "gpu", "memory", "object_store_memory", "custom_resources"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")


def checked_resources(resources: dict[str, float]) -> dict[str, float]:
    """The mapping with every amount a float, in name order (so that the same placement digests the
    same, and Serve does not restart replicas over a reordering); a name Ray accounts for itself, an
    odd name or an amount that is not a positive finite number is refused, naming it."""
    out = {}
    for name, amount in resources.items():
        if name.lower() in RESERVED:
            raise ValueError(f"resources: {name!r} is Ray's own; ask for CPUs and GPUs with `cpus`/`gpus`")
        if not _NAME.fullmatch(name):
            raise ValueError(f"resources: {name!r} is not a resource name (letters, digits, '_', '.', ':', '-'; "
                             "at most 128, starting with a letter or digit)")
        amount = float(amount)
        if not math.isfinite(amount) or amount <= 0 or amount > 1e9:
            raise ValueError(f"resources: {name!r} needs an amount above 0 (at most 1e9), not {amount!r}")
        out[name] = amount
    return dict(sorted(out.items()))


#: a config field: custom Ray resources a process asks for (see the module's docstring)
Resources = Annotated[dict[str, float], AfterValidator(checked_resources)]

RESOURCES_HELP = ("custom Ray resources it asks for, placing it on the nodes that offer them "
                  "(e.g. {handoff-serving: 0.01} on nodes started with that resource; node:IP pins one node)")


def unplaceable(asks: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why no node can hold one process that asks for `asks` (Ray's resource names: CPU, GPU, custom
    ones), given each live node's total resources; None when some node offers it all (it then waits
    for free capacity, or for a node the autoscaler adds, not for a node that cannot exist here)."""
    asks = {name: amount for name, amount in asks.items() if amount > 0}
    if any(all(node.get(name, 0.0) >= amount for name, amount in asks.items()) for node in nodes):
        return None
    missing = sorted(name for name in asks if not any(name in node for node in nodes))
    if missing:
        return f"no node offers {', '.join(missing)}"
    return f"no node offers all of {asks} at once (largest per resource: " + ", ".join(
        f"{name} {max(node.get(name, 0.0) for node in nodes):g}" for name in asks) + ")"
