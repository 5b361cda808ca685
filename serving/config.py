"""Typed serving configuration: where HTTP listens, how each version is sized, the live log.

Declared by `handoff serve` (`configs/serving.yaml`, then `HANDOFF_SERVING__A__B` variables, then
`--set a.b=value` flags) and stored on the cluster as the config in force (serving/config_store.py),
which every later change reads (`ConfigSource`); no defaults are read anywhere else.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.config_layers import SERVING_ENV_PREFIX, ConfigError, load_layered
from cluster.placement import RESOURCES_HELP, Resources
from cluster.runtime_env import pip_env


class _Strict(BaseModel):
    """Unknown keys refused; defaults validated like given values, so a field holds one type
    however the config was made (`gpus: float = 0` is 0.0 from the defaults, from YAML and from a
    dump read back: deployment versions are digests of these values, and 0 and 0.0 digest apart)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Autoscaling(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")
        return self


class Batching(_Strict):
    """Requests to one version coalesced by the gateway into one call (serving/batcher.py);
    off when max_batch_size is 1. `max_in_flight` bounds calls per replica while batching.
    On by default: it adds no wait at low load and doubled throughput under load (docs/benchmarks.md, Serving)."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    max_in_flight: int = Field(2, ge=1, le=64)

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


class VersionDeployment(_Strict):
    """How one model version is deployed: replicas (or autoscaling), resources, batching."""

    replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    cpus: float = Field(0.25, gt=0)
    gpus: float = Field(0, ge=0)
    resources: Resources = Field(default_factory=dict, description="each replica's " + RESOURCES_HELP)
    max_ongoing_requests: int = Field(64, ge=1)
    batching: Batching = Field(default_factory=Batching)
    transport: Literal["direct", "handle"] = Field(
        "direct", description="how the gateway reaches the replicas: `direct` (a TCP connection per replica, "
        "the Serve handle as fallback) or `handle` (a Serve handle call per request or batch)")


class GatewayConfig(_Strict):
    """The front: HTTP and gRPC servers inside each gateway replica (Serve's proxy is not used)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int | None = Field(8001, ge=1, le=65535, description=(
        "the Open Inference Protocol over gRPC (inference.GRPCInferenceService, as Triton and KServe) on "
        "this port, same host, same API keys (metadata 'authorization: Bearer KEY' or 'x-api-key'); "
        "null: no gRPC"))
    replicas: int = Field(1, ge=1)
    cpus: float = Field(0.5, gt=0)
    resources: Resources = Field(default_factory=dict, description="each gateway replica's " + RESOURCES_HELP)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    api_keys: list[str] = Field(default_factory=list, description=(
        "keys clients send; held from here on only as 'sha256:HEX' digests (what the cluster stores, "
        "the gateway is given and its deployment version digests), so no key is kept or shown anywhere; "
        "a 'sha256:' entry is taken as such a digest (put digests, not keys, in a shared config file)"))
    allow_anonymous: bool = Field(False, description=(
        "serve without API keys on an address other machines reach (a network that admits only "
        "trusted clients); off: such a gateway is refused at start"))
    request_timeout_s: float = Field(5.0, gt=0, le=600, description=(
        "a live request's deadline: past it the caller gets 504 and the replica connection that held "
        "it is retired (a replica that stopped answering must not hold requests or memory)"))
    max_queued_per_version: int = Field(1000, ge=1, description=(
        "requests waiting for a version beyond those in flight to it; past it a 503 with Retry-After "
        "(what a version cannot keep up with is refused at once, not queued without bound)"))


    @model_validator(mode="after")
    def _fail_closed(self) -> "GatewayConfig":
        """A gateway other machines can reach needs API keys, or `allow_anonymous: true` said outright."""
        if not self.api_keys and not self.allow_anonymous and not is_loopback(self.host):
            raise ValueError(f"gateway.host {self.host!r} is reachable from other machines and gateway.api_keys is "
                             "empty: anyone who reaches it could query and label the models. Set gateway.api_keys "
                             "(clients send 'Authorization: Bearer KEY' or 'x-api-key: KEY'), bind to 127.0.0.1, "
                             "or set gateway.allow_anonymous: true on a network that admits only trusted clients")
        return self

    @field_validator("api_keys")
    @classmethod
    def _digests(cls, keys: list[str]) -> list[str]:
        """Each key as its digest (a digest given stays as it is), sorted: the same keys, the same config."""
        if any(not key or len(key) > 512 or not key.isascii() or not key.isprintable() or key != key.strip()
               for key in keys):
            raise ValueError("gateway.api_keys: each key is 1 to 512 printable ASCII characters, no edge spaces")
        bad = [k for k in keys if k.startswith(KEY_DIGEST) and not re.fullmatch(r"sha256:[0-9a-f]{64}", k)]
        if bad:
            raise ValueError("gateway.api_keys: an entry starting 'sha256:' is a digest: 64 lowercase hex digits")
        return sorted({key_digest(k) for k in keys})


KEY_DIGEST = "sha256:"


def key_digest(key: str) -> str:
    """How an API key is held: 'sha256:' and its SHA-256 in hex (a digest given is returned as it is).
    A key is a random secret, not a password: an unsalted fast hash is the right test for it."""
    if key.startswith(KEY_DIGEST):
        return key
    return KEY_DIGEST + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def is_loopback(host: str) -> bool:
    """An address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class LiveLogConfig(_Strict):
    """The live log written by the gateway: a file per model and date every `flush_seconds`, or as
    soon as `max_rows` rows or `max_requests` requests are buffered. Rows bound the file size of
    batch traffic (5,000-row files cost the gateway ~10% of its CPU in Parquet writers at 256 rows a
    request); requests bound the writer's per-request work in one go (20,000 one-row requests at a
    time showed as ~90 ms p99 latency, 5,000 as ~16 ms)."""

    enabled: bool = True
    root: str | None = None  # default: HANDOFF_HOME/live
    sample_percent: float = Field(100, ge=0, le=100)
    flush_seconds: float = Field(2.0, gt=0)
    max_rows: int = Field(50_000, ge=1)
    max_requests: int = Field(5_000, ge=1)
    max_buffered_rows: int = Field(500_000, ge=1, description=(
        "rows held in memory while the live log cannot be written (storage down); past it the oldest "
        "are dropped and counted (handoff_live_log_rows_dropped_total), answering goes on"))


class ServingConfig(_Strict):
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    version_defaults: VersionDeployment = Field(default_factory=VersionDeployment)
    versions: dict[str, VersionDeployment] = Field(
        default_factory=dict, description="per-version sizing, keyed 'MODEL/VERSION'")
    live_log: LiveLogConfig = Field(default_factory=LiveLogConfig)
    deploy_timeout_s: float = Field(600.0, gt=0, le=86_400, description=(
        "how long a serving change waits for a version's or the gateway's replicas to run; past it the "
        "change is refused naming what Serve waits for (resources no node has, say), a new version is "
        "taken down again and the cluster's serving lock is free for the next change"))

    def deployment_for(self, model: str, version: int) -> VersionDeployment:
        return self.versions.get(f"{model}/{version}", self.version_defaults)


#: every replica's runtime environment, named so that Serve adds nothing of the caller's: Serve gives a
#: deployment without one the runtime environment of the process that deploys it (a Ray job's
#: `working_dir` and variables, say), which would make the same change from a job and from the
#: monitor actor two deployment versions, and restart the replicas. `working_dir: None` keeps a
#: caller's working_dir out too (Serve only fills one in where the key is absent); replicas run the
#: cluster's installed Handoff.
REPLICA_RUNTIME_ENV: dict = {"working_dir": None}


def actor_options(cpus: float, gpus: float = 0.0, resources: Mapping[str, float] | None = None,
                  packages: Sequence[str] = ()) -> dict:
    """A replica's Ray actor options: Serve restarts replicas when these change, compared as JSON, so
    the numbers are always floats, the resources in name order and the runtime environment always
    the same (a version's `packages`, what it needs beyond the cluster, in the order it recorded
    them); none of a key that is not asked for."""
    options = {"num_cpus": float(cpus), "runtime_env": {**REPLICA_RUNTIME_ENV, **pip_env(packages)}}
    if gpus:
        options["num_gpus"] = float(gpus)
    if resources:
        options["resources"] = {k: float(v) for k, v in sorted(resources.items())}
    return options


class VersionRouting(BaseModel):
    """How the gateway calls one served version (derived from its `VersionDeployment`): the transport,
    and the coalescing that bounds calls in flight to its replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["direct", "handle"] = "direct"
    max_batch_size: int = Field(32, ge=1)
    max_in_flight: int = Field(2, ge=1)
    replicas: int = Field(1, ge=1, description="replicas (the autoscaling maximum): calls in flight scale with it")

    @classmethod
    def of(cls, sizing: VersionDeployment) -> VersionRouting:
        return cls(transport=sizing.transport, max_batch_size=sizing.batching.max_batch_size,
                   max_in_flight=sizing.batching.max_in_flight,
                   replicas=sizing.autoscaling.max_replicas if sizing.autoscaling else sizing.replicas)


class ModelRouting(_Strict):
    """One served model in the gateway's table: its traffic policy (JSON, as stored on the
    registered model) and how to call each version it names."""

    policy: str
    versions: dict[int, VersionRouting]


class RoutingTable(_Strict):
    """The gateway's `user_config`: every served model. A change reaches the running gateway
    replicas' `reconfigure` without a restart (Serve passes it as JSON: `to_user_config`)."""

    models: dict[str, ModelRouting] = Field(default_factory=dict)

    def to_user_config(self) -> dict:
        return self.model_dump(mode="json")


def load_serving_config(path: Path | None, overrides: list[str] = (), environ=None,
                        base: ServingConfig | None = None) -> ServingConfig:
    """`configs/serving.yaml` (optional; else `base`, a config in force) → `HANDOFF_SERVING__A__B=v`
    variables → `--set a.b=v`."""
    return load_layered(ServingConfig, path, overrides, environ, env_prefix=SERVING_ENV_PREFIX,
                        base=base.model_dump(mode="json") if base is not None else None)


@dataclass(frozen=True)
class ConfigSource:
    """Which serving config a change uses, decided under the cluster's serving lock (pure).

    `declared` replaces the config in force (`handoff serve`, or a command given a config file);
    otherwise the config in force is used, with `overrides` (`--set a.b=v`) and the `environ`'s
    `HANDOFF_SERVING__*` variables applied to it; `fallback` stands in for it on a cluster where
    nothing was served yet. With neither stored nor a fallback, the change is refused."""

    declared: ServingConfig | None = None
    overrides: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict)
    fallback: ServingConfig | None = None

    def resolve(self, stored: ServingConfig | None) -> ServingConfig:
        if self.declared is not None:
            return self.declared
        base = stored or self.fallback
        if base is None:
            raise ConfigError("no serving config is in force on this cluster (nothing was served on it): "
                              "serve the model with `handoff serve NAME` first")
        if not self.overrides and not any(k.startswith(SERVING_ENV_PREFIX) for k in self.environ):
            return base
        return load_serving_config(None, list(self.overrides), self.environ, base=base)
