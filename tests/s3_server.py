"""A local S3 (moto server) for tests: no AWS account, no network beyond 127.0.0.1.

Import the fixture into a test module (`from s3_server import s3_location  # noqa: F401`).
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

BUCKET = "rayflow-test"
_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_EC2_METADATA_DISABLED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """(endpoint url, bucket): a moto server on a free port, with one empty bucket; the AWS_* variables point
    at it for the whole session (restored afterwards; subprocesses inherit them)."""
    pytest.importorskip("moto.server", reason="needs moto[server] (pip install -e .[dev])")
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in _ENV:
                mp.delenv(var, raising=False)
            mp.setenv("AWS_CONFIG_FILE", os.devnull)  # ignore the user's ~/.aws
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield endpoint, BUCKET
    finally:
        server.stop()


@pytest.fixture
def s3_location(s3_server) -> str:
    """A fresh s3://bucket/prefix per test, so tests never see each other's artifacts."""
    return f"s3://{s3_server[1]}/t-{uuid.uuid4().hex[:8]}"
