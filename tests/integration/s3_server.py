"""A real S3 API for the object-storage tests: moto's standalone server on 127.0.0.1, one bucket.

The locations under test are plain `s3://BUCKET/...` URIs; the endpoint and the credentials reach
every client the usual way, through the AWS variables (pyarrow, boto3 and so MLflow read
`AWS_ENDPOINT_URL`), set in this process for the fixture's life and so in every process it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cluster.head_services import free_port
from cluster.mlflow_server import stop_process_group

BUCKET = "handoff-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    env: dict[str, str]

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{BUCKET}", *parts])

    def keys(self, prefix: str) -> list[str]:
        """Every object's key under `prefix` in the bucket (listed through boto3, not pyarrow)."""
        import boto3

        client = boto3.client("s3")
        keys, token = [], None
        while True:
            page = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]


@contextmanager
def s3_server(log_dir: Path):
    """moto's server on a free port of 127.0.0.1 with bucket `BUCKET`, the AWS variables pointing at it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(log_dir / "moto.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "handoff-test", "AWS_SECRET_ACCESS_KEY": "handoff-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {(log_dir / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.3)
        os.environ.update(env)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield S3Server(endpoint, env)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_process_group(proc.pid)
        log.close()
