"""A real Node.js client (tests/node/client.mjs: the AWS SDK's SigV4 signer, a chunked body) against `serve`.

Needs node and `npm ci --prefix tests/node`; skipped without them locally, failed under CI.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import pytest
from conftest import DATA, REPO
from served import serving
from test_client import expected_authorization, signed_header_names

from lambda_ml_serve.local.server import FunctionUrlServer

NODE_DIR = REPO / "tests" / "node"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIDNODE",
    "AWS_SECRET_ACCESS_KEY": "node-secret",
    "AWS_SESSION_TOKEN": "node-token",
}


def node_client() -> list[str]:
    node = shutil.which("node")
    missing = "node is not installed" if node is None else None
    if not (NODE_DIR / "node_modules" / "@smithy" / "signature-v4").is_dir():
        missing = missing or "the Node client's packages are missing (run `npm ci --prefix tests/node`)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return [node, str(NODE_DIR / "client.mjs")]


def run_node(url: str, body_file, **env: str) -> subprocess.CompletedProcess:
    """Run the Node client once; returns the finished process (stdout: the answer's body)."""
    environment = {**os.environ, **CREDENTIALS, **env}
    return subprocess.run(
        [*node_client(), url, str(body_file), "eu-west-1"], capture_output=True, text=True, timeout=60, env=environment
    )


def test_node_client_gets_the_predictions_from_serve(wine_app, samples_body):
    with serving() as url:
        result = run_node(f"{url}/", DATA / "samples.json")
    assert result.returncode == 0, result.stderr
    expected = wine_app({"instances": json.loads(samples_body)})["predictions"]
    assert json.loads(result.stdout)["predictions"] == expected


def test_node_client_sends_chunked_and_signs_valid_sigv4(samples_body):
    server = FunctionUrlServer(lambda event: {"statusCode": 200, "body": json.dumps(event)}, port=0).start()
    try:
        result = run_node(server.url + "predict?v=1", DATA / "samples.json")
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    headers = event["headers"]
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    assert body == samples_body
    authorization = headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDNODE/")
    assert "/eu-west-1/lambda/aws4_request" in authorization
    assert authorization == expected_authorization(
        "POST",
        event["rawPath"],
        event["rawQueryString"],
        headers,
        body,
        access_key="AKIDNODE",
        secret_key="node-secret",
        region="eu-west-1",
        service="lambda",
        signed=signed_header_names(authorization),
    )
