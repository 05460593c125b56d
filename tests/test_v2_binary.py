"""The Open Inference Protocol's binary tensor extension, with Triton's own HTTP client.

tritonclient sends tensors as binary by default (a JSON header, then the tensors' bytes, with
``Inference-Header-Content-Length``) and asks for binary outputs when it names none. Each way, the
predictions are the in-process handler's for the same rows. KServe's ``InferenceRESTClient`` needs an
environment of its own: tests/test_kserve_client.py.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy
import pytest
from served import serving

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App

MODEL = "wine_quality"
INFER = f"/v2/models/{MODEL}/infer"
COLOR = ("color_red", "color_white")


@pytest.fixture(scope="module")
def app() -> App:
    return App.load(MODEL, log_stream=io.StringIO())


@pytest.fixture(scope="module")
def triton():
    import tritonclient.http as httpclient

    with serving() as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        yield client
        client.close()


def per_feature(rows: list[dict], dtype: str, binary: bool) -> list:
    import tritonclient.http as httpclient

    inputs = []
    for name in rows[0]:
        values = numpy.asarray([row[name] for row in rows], dtype=numpy.float32 if dtype == "FP32" else numpy.float64)
        tensor = httpclient.InferInput(name, [len(rows)], dtype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def matrix(rows: list[dict], dtype: str, binary: bool) -> list:
    import tritonclient.http as httpclient

    values = numpy.asarray([list(row.values()) for row in rows], dtype=numpy.float32 if dtype == "FP32" else "f8")
    tensor = httpclient.InferInput("input-0", list(values.shape), dtype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return [tensor]


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False, None], ids=["binary-out", "json-out", "default-out"])
@pytest.mark.parametrize("dtype", ["FP32", "FP64"])
@pytest.mark.parametrize("layout", [per_feature, matrix], ids=["per-feature", "matrix"])
def test_tritonclient_gets_the_in_process_predictions(
    triton, wine_rows, wine_expected, layout, dtype: str, binary_in: bool, binary_out: bool | None
) -> None:
    import tritonclient.http as httpclient

    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    outputs = None if binary_out is None else [httpclient.InferRequestedOutput("predictions", binary_data=binary_out)]
    result = triton.infer(MODEL, layout(wine_rows, dtype, binary_in), outputs=outputs)
    assert result.as_numpy("predictions").tolist() == wine_expected
    output = result.get_output("predictions")
    assert ("binary_data_size" in output.get("parameters", {})) is (binary_out is not False)


def test_tritonclient_reads_server_metadata_and_the_extension(triton) -> None:
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL)
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    assert triton.get_model_metadata(MODEL)["name"] == MODEL


def test_bool_int_and_bytes_tensors(app, wine_rows, wine_expected) -> None:
    """One-hot colours as BOOL or INT8, or the colour as a BYTES tensor of names: the same rows."""
    import tritonclient.http as httpclient

    numeric = [name for name in wine_rows[0] if name not in COLOR]
    for colour in ("BOOL", "INT8", "BYTES"):
        inputs = per_feature([{k: row[k] for k in numeric} for row in wine_rows], "FP64", True)
        if colour == "BYTES":
            names = numpy.asarray([b"red" if row["color_red"] else b"white" for row in wine_rows], dtype=object)
            tensor = httpclient.InferInput("color", [len(wine_rows)], "BYTES")
            tensor.set_data_from_numpy(names, binary_data=True)
            inputs.append(tensor)
        for name in COLOR if colour != "BYTES" else ():
            tensor = httpclient.InferInput(name, [len(wine_rows)], colour)
            dtype = numpy.bool_ if colour == "BOOL" else numpy.int8
            tensor.set_data_from_numpy(numpy.asarray([row[name] for row in wine_rows], dtype=dtype), binary_data=True)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput("predictions", binary_data=False)]
        body, length = httpclient.InferenceServerClient.generate_request_body(inputs, outputs)
        response = post_binary(app, body, length)
        assert response["statusCode"] == 200, (colour, response["body"])
        assert json.loads(response["body"])["outputs"][0]["data"] == wine_expected


def post_binary(app: App, body: bytes, header_length: int | str | None) -> dict:
    headers = [("content-type", "application/octet-stream")]
    if header_length is not None:
        headers.append(("inference-header-content-length", str(header_length)))
    return app(to_event("POST", INFER, headers, body))


def binary_body(rows: list[dict]) -> tuple[dict, bytes]:
    names = list(rows[0])
    header = {
        "inputs": [
            {"name": n, "shape": [len(rows)], "datatype": "FP32", "parameters": {"binary_data_size": 4 * len(rows)}}
            for n in names
        ]
    }
    data = b"".join(struct.pack(f"<{len(rows)}f", *[row[n] for row in rows]) for n in names)
    return header, data


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("header longer than the body", "the whole body has"),
        ("header length not a number", "must be the JSON header's length"),
        ("header not JSON", "inference header"),
        ("truncated data", "only"),
        ("extra data", "beyond what"),
        ("size not a whole number of values", "not a whole number"),
        ("size disagrees with the shape", "shape"),
        ("negative size", "number of bytes"),
        ("data and size", "both data and binary_data_size"),
        ("no header length", "Inference-Header-Content-Length"),
    ],
)
def test_malformed_binary_bodies_are_a_400_that_says_what_is_wrong(app, samples, case: str, says: str) -> None:
    header, data = binary_body(samples)
    first = header["inputs"][0]
    length: int | str | None = None
    if case == "size not a whole number of values":
        first["parameters"]["binary_data_size"] -= 1
        data = data[:-1]
    elif case == "size disagrees with the shape":
        first["parameters"]["binary_data_size"] += 4
        data += b"\0\0\0\0"
    elif case == "negative size":
        first["parameters"]["binary_data_size"] = -4
    elif case == "data and size":
        first["data"] = [1.0] * len(samples)
    text = json.dumps(header).encode()
    body = text + data
    length = len(text)
    if case == "header longer than the body":
        length = len(body) + 1
    elif case == "header length not a number":
        length = "12 bytes"
    elif case == "header not JSON":
        body, length = b"{nope" + body, len(text) + 5
    elif case == "truncated data":
        body = body[:-3]
    elif case == "extra data":
        body += b"\0" * 8
    elif case == "no header length":
        length = None
    response = post_binary(app, body, length)
    assert response["statusCode"] == 400, response["body"]
    answer = json.loads(response["body"])
    assert says in answer["error"]
    assert len(response["body"]) < 2048


def test_a_binary_answer_is_a_json_header_and_the_predictions_bytes(app, samples) -> None:
    expected = app(samples)["predictions"]
    header, data = binary_body(samples)
    header["parameters"] = {"binary_data_output": True}
    text = json.dumps(header).encode()
    response = post_binary(app, text + data, len(text))
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is True
    assert response["headers"]["content-type"] == "application/octet-stream"
    raw = base64.b64decode(response["body"])
    length = int(response["headers"]["inference-header-content-length"])
    answer = json.loads(raw[:length])
    output = answer["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 8 * len(samples)} and "data" not in output
    assert list(struct.unpack(f"<{len(samples)}d", raw[length:])) == expected


def test_invalid_binary_rows_get_the_same_422_details_as_json(app, samples) -> None:
    header, _ = binary_body(samples)
    bad = [dict(row) for row in samples]
    bad[1]["pH"] = -1.0  # below the schema's bound
    _, bad_data = binary_body(bad)
    text = json.dumps(header).encode()
    binary = post_binary(app, text + bad_data, len(text))
    as_json = app(
        to_event(
            "POST",
            INFER,
            [("content-type", "application/json")],
            json.dumps(
                {
                    "inputs": [
                        {"name": n, "shape": [len(bad)], "datatype": "FP32", "data": [row[n] for row in bad]}
                        for n in bad[0]
                    ]
                }
            ).encode(),
        )
    )
    assert binary["statusCode"] == as_json["statusCode"] == 422
    assert json.loads(binary["body"]) == json.loads(as_json["body"])
