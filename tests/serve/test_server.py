"""``rsnflow serve`` live on 127.0.0.1: both protocols answer right, every bad request gets a 4xx."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from kserve import InferInput, InferRequest

from gate import withheld
from rsnflow.atlas import load_taxonomy
from rsnflow.models import load_classifier
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE
from servers import v2_binary_request

NAME = "rsn-classifier"


def _nifti(volume: np.ndarray, affine: np.ndarray = MNI4_AFFINE, gz: bool = True) -> bytes:
    raw = nib.Nifti1Image(volume.astype(np.float32), affine).to_bytes()
    return gzip.compress(raw) if gz else raw


def _v1(url: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{NAME}:predict", json=body, timeout=60, **kw)


def _v2(url: str, body: object) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{NAME}/infer", json=body, timeout=60)


def _post_binary(url: str, inp: InferInput, request_id: str) -> list[float]:
    """Send one input with the V2 binary extension; return the ``probability`` output."""
    payload, json_length = InferRequest(model_name=NAME, infer_inputs=[inp], request_id=request_id).to_rest()
    headers = {
        "inference-header-content-length": str(json_length),
        "content-type": "application/octet-stream",
    }
    r = httpx.post(f"{url}/v2/models/{NAME}/infer", content=payload, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == request_id
    return next(o for o in r.json()["outputs"] if o["name"] == "probability")["data"]


def _classes(tiny_mlp: Path) -> list[str]:
    return load_classifier(tiny_mlp)[1]["classes"]


def test_health_and_metadata(served_mlp: str) -> None:
    assert httpx.get(f"{served_mlp}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{served_mlp}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{served_mlp}/v2/models/{NAME}/ready").json()["ready"] is True
    meta = httpx.get(f"{served_mlp}/v2/models/{NAME}").json()
    assert meta["name"] == NAME
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {"maps": [-1, 45, 54, 45], "nifti": [-1]}
    assert [o["name"] for o in meta["outputs"]][:3] == ["label", "network", "probability"]
    assert httpx.get(f"{served_mlp}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}


def test_v1_numbers_match_the_model_in_process(
    served_mlp: str, maps: np.ndarray, expected: np.ndarray, tiny_mlp: Path
) -> None:
    r = _v1(served_mlp, {"instances": maps.tolist()})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    classes = _classes(tiny_mlp)
    # Served with no --abstain-below: the model's calibrated threshold applies.
    threshold = json.loads((tiny_mlp / "model.json").read_text())["abstain_below"]
    assert 0 < threshold < 1
    taxonomy = load_taxonomy()
    parents = np.array([taxonomy.parent(c) for c in classes], dtype=object)
    best = expected.argmax(1)
    network_p = np.array([row[parents == parents[b]].sum() for row, b in zip(expected, best, strict=True)])
    # The label when it is sure, else its network when that is sure, else Unknown; and
    # Unknown for a network label the map is atypical of (the typicality gate).
    atypical = withheld(tiny_mlp, maps, expected.argmax(1))
    want = [
        "Unknown"
        if odd
        else classes[b]
        if row.max() >= threshold
        else parents[b]
        if q >= threshold
        else "Unknown"
        for row, b, q, odd in zip(expected, best, network_p, atypical, strict=True)
    ]
    assert [p["label"] for p in preds] == want
    np.testing.assert_allclose([p["probability"] for p in preds], expected.max(1), atol=1e-5)
    np.testing.assert_allclose([p["network_probability"] for p in preds], network_p, atol=1e-5)
    for p, row in zip(preds, expected, strict=True):
        assert len(p["top5"]) == 5 and p["top5"][0]["label"] in (p["label"], classes[row.argmax()])
        probs = [t["probability"] for t in p["top5"]]
        assert probs == sorted(probs, reverse=True)
        np.testing.assert_allclose(probs, np.sort(row)[::-1][:5], atol=1e-5)
        assert p["network"] == p["label"].split("-")[0].upper() or p["label"] in ("Noise", "Unknown")
    assert [p["abstained"] for p in preds] == list((network_p < threshold) | atypical)


def test_v2_json_binary_and_nifti_agree(
    served_mlp: str, maps: np.ndarray, expected: np.ndarray, tiny_mlp: Path
) -> None:
    # JSON, flat data
    body = {
        "inputs": [
            {"name": "maps", "datatype": "FP32", "shape": list(maps.shape), "data": maps.ravel().tolist()}
        ]
    }
    r = _v2(served_mlp, body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    np.testing.assert_allclose(out["probability"]["data"], expected.max(1), atol=1e-5)
    assert out["top_labels"]["shape"] == [len(maps), 5]
    atypical = withheld(tiny_mlp, maps, expected.argmax(1))
    assert out["label"]["data"] == [
        "Unknown" if odd else out["top_labels"]["data"][5 * i] for i, odd in enumerate(atypical)
    ]

    # JSON without a Content-Type header, as tritonclient's JSON mode sends it: still JSON, not binary
    r = httpx.post(f"{served_mlp}/v2/models/{NAME}/infer", content=json.dumps(body).encode(), timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        next(o for o in r.json()["outputs"] if o["name"] == "probability")["data"], expected.max(1), atol=1e-5
    )

    # binary tensor extension, built with kserve's own client types
    inp = InferInput("maps", list(maps.shape), "FP32")
    inp.set_data_from_numpy(maps, binary_data=True)
    np.testing.assert_allclose(_post_binary(served_mlp, inp, "b1"), expected.max(1), atol=1e-5)

    # BYTES with the binary extension: the NIfTI files themselves, length-prefixed
    nifti = InferInput("nifti", [2], "BYTES")
    nifti.set_data_from_numpy(np.array([_nifti(m) for m in maps[:2]], dtype=object), binary_data=True)
    np.testing.assert_allclose(_post_binary(served_mlp, nifti, "b2"), expected[:2].max(1), atol=1e-5)

    # BYTES: one gzipped NIfTI per map, base64 in JSON
    files = [base64.b64encode(_nifti(m)).decode() for m in maps[:3]]
    r = _v2(served_mlp, {"inputs": [{"name": "nifti", "datatype": "BYTES", "shape": [3], "data": files}]})
    assert r.status_code == 200, r.text
    probs = next(o for o in r.json()["outputs"] if o["name"] == "probability")["data"]
    np.testing.assert_allclose(probs, expected[:3].max(1), atol=1e-5)


def test_nifti_in_another_space_is_resampled(
    served_mlp: str, maps: np.ndarray, expected: np.ndarray, tiny_mlp: Path
) -> None:
    from nilearn.image import resample_img

    # The same maps on FSL's 2 mm MNI grid: the server resamples them back into the 4 mm grid.
    fine = np.diag([-2.0, 2.0, 2.0, 1.0])
    fine[:3, 3] = [90, -126, -72]
    classes = _classes(tiny_mlp)
    labels = []
    for m in maps:
        img = resample_img(
            nib.Nifti1Image(m, MNI4_AFFINE),
            fine,
            (91, 109, 91),
            interpolation="continuous",
            force_resample=True,
        )
        body = {"instances": [{"b64": base64.b64encode(_nifti(np.asarray(img.dataobj), fine)).decode()}]}
        r = _v1(served_mlp, body)
        assert r.status_code == 200, r.text
        labels.append(r.json()["predictions"][0]["label"])
    agree = np.mean([lab == classes[i] for lab, i in zip(labels, expected.argmax(1), strict=True)])
    assert agree >= 5 / 6, labels

    # the raw file as the body
    r = httpx.post(
        f"{served_mlp}/v1/models/{NAME}:predict",
        content=_nifti(maps[0], gz=False),
        headers={"content-type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == classes[expected[0].argmax()]


def _b64_instance(data: bytes) -> dict[str, list[dict[str, str]]]:
    return {"instances": [{"b64": base64.b64encode(data).decode()}]}


def _bad_requests(maps: np.ndarray) -> dict[str, tuple[str, dict[str, object]]]:
    """Each class of bad request: (v1 or v2, httpx keyword arguments)."""
    one = maps[0]
    gz = _nifti(one)
    with_nan = one.copy()
    with_nan[20, 20, 20] = np.nan
    with_inf = maps[:1].copy()
    with_inf[0, 1, 2, 3] = np.inf
    fp32 = {"name": "maps", "datatype": "FP32", "shape": [1, *MNI4_SHAPE], "data": one.ravel().tolist()}
    json_body = {"headers": {"content-type": "application/json"}}
    return {
        "wrong_shape_v1": ("v1", {"json": {"instances": [one[:, :, :40].tolist()]}}),
        "ragged_v1": ("v1", {"json": {"instances": [[[1.0, 2.0], [3.0]]]}}),
        "nan_in_json": ("v1", {"content": b'{"instances": [[[[NaN]]]]}', **json_body}),
        "nan_in_nifti": ("v1", {"json": _b64_instance(_nifti(with_nan))}),
        "no_instances": ("v1", {"json": {"inputs": []}}),
        "empty_batch": ("v1", {"json": {"instances": []}}),
        "too_many_maps_v1": ("v1", {"json": {"instances": [{"b64": "AAAA"}] * 9}}),
        "bad_base64": ("v1", {"json": {"instances": [{"b64": "not base64!"}]}}),
        "corrupt_nifti": ("v1", {"json": _b64_instance(b"\0" * 400)}),
        "truncated_nifti": ("v1", {"json": _b64_instance(gz[: len(gz) // 2])}),
        "nifti_4d": ("v1", {"json": _b64_instance(_nifti(maps[:2].transpose(1, 2, 3, 0)))}),
        "wrong_dtype_v2": ("v2", {"json": {"inputs": [{**fp32, "datatype": "INT32", "data": [1]}]}}),
        "wrong_shape_v2": ("v2", {"json": {"inputs": [{**fp32, "shape": [1, 45, 54]}]}}),
        "short_data_v2": ("v2", {"json": {"inputs": [{**fp32, "data": [1.0, 2.0]}]}}),
        "inf_v2_binary": ("v2", v2_binary_request(with_inf)),
        "too_many_maps_v2": ("v2", v2_binary_request(np.zeros((9, *MNI4_SHAPE), np.float32))),
        "two_inputs_v2": ("v2", {"json": {"inputs": [fp32, fp32]}}),
        "not_json": ("v2", {"content": b"{not json", **json_body}),
        "binary_without_header": (
            "v2",
            {"content": b"\0" * 64, "headers": {"content-type": "application/octet-stream"}},
        ),
        "binary_size_mismatch": ("v2", v2_binary_request(np.zeros(2, np.float32), declared=[1, *MNI4_SHAPE])),
        "binary_shape_not_ints": (
            "v2",
            v2_binary_request(np.zeros(2, np.float32), declared=["a", 45, 54, 45]),
        ),
    }


MESSAGES = {
    "wrong_shape_v1": "not a 45x54x45 map",
    "ragged_v1": "expected numbers",
    "nan_in_json": "Unrecognized request format",
    "nan_in_nifti": "NaN values",
    "no_instances": '\\"instances\\"',
    "empty_batch": "no maps",
    "too_many_maps_v1": "at most 8",
    "bad_base64": "not valid base64",
    "corrupt_nifti": "not a NIfTI image",
    "truncated_nifti": "gzip stream is truncated",
    "nifti_4d": "expected a 3D image",
    "wrong_dtype_v2": "datatype INT32 is not accepted",
    "wrong_shape_v2": "is not [N, 45, 54, 45]",
    "short_data_v2": "do not fill the declared shape",
    "inf_v2_binary": "NaN or infinite",
    "too_many_maps_v2": "at most 8",
    "two_inputs_v2": "exactly one input",
    "not_json": "JSON decode error",  # FastAPI's request validation, a 400 like every other client error
    "binary_without_header": "inference-header-content-length",
    "binary_size_mismatch": "do not fill the declared shape",
    "binary_shape_not_ints": "is not a list of integers",
}


@pytest.mark.parametrize("case", list(MESSAGES))
def test_bad_requests_get_400_with_a_clear_message(served_mlp: str, maps: np.ndarray, case: str) -> None:
    protocol, kw = _bad_requests(maps)[case]
    url = (
        f"{served_mlp}/v1/models/{NAME}:predict"
        if protocol == "v1"
        else f"{served_mlp}/v2/models/{NAME}/infer"
    )
    r = httpx.post(url, timeout=60, **kw)
    assert r.status_code == 400, (r.status_code, r.text)
    assert MESSAGES[case] in r.text, r.text


def test_oversize_bodies_get_413_and_the_server_stays_up(served_mlp: str, maps: np.ndarray) -> None:
    big = {"instances": np.concatenate([maps, maps]).tolist()}  # ~10.7 MB of JSON against an 8 MB limit
    r = _v1(served_mlp, big)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"0" * 100_000

    r = httpx.post(f"{served_mlp}/v1/models/{NAME}:predict", content=chunks(), timeout=60)
    assert r.status_code == 413
    assert _v1(served_mlp, {"instances": maps[:1].tolist()}).status_code == 200


def test_unknown_model_is_404(served_mlp: str, maps: np.ndarray) -> None:
    r = httpx.post(f"{served_mlp}/v1/models/nope:predict", json={"instances": []}, timeout=30)
    assert r.status_code == 404


def test_a_4d_stack_gets_one_answer_per_map(served_mlp: str, maps: np.ndarray, expected: np.ndarray) -> None:
    stack = _nifti(np.moveaxis(maps, 0, -1))  # a run's component maps as one 4D file
    # V2: one BYTES element holding the whole stack
    inp = InferInput("maps", [1], "BYTES")
    inp.set_data_from_numpy(np.array([stack], dtype=object), binary_data=True)
    np.testing.assert_allclose(_post_binary(served_mlp, inp, "stack"), expected.max(1), atol=1e-5)
    # V1: the file as the body
    r = httpx.post(f"{served_mlp}/v1/models/{NAME}:predict", content=stack, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        [p["probability"] for p in r.json()["predictions"]], expected.max(1), atol=1e-5
    )
    # A stack's volumes count against the batch limit (8 here), in either protocol
    twelve = _nifti(np.moveaxis(np.concatenate([maps, maps]), 0, -1))
    r = httpx.post(f"{served_mlp}/v1/models/{NAME}:predict", content=twelve, timeout=60)
    assert r.status_code == 400 and "request body: 12 maps, more than the 8" in r.text
    # Counted on the header, before resampling: 400 tiny volumes would become 400 maps on the grid
    tiny = gzip.compress(
        nib.Nifti1Image(np.random.default_rng(0).random((2, 2, 2, 400), np.float32), np.eye(4)).to_bytes()
    )
    r = httpx.post(f"{served_mlp}/v1/models/{NAME}:predict", content=tiny, timeout=60)
    assert r.status_code == 400 and "400 maps, more than the 8" in r.text
    two = InferInput("maps", [2], "BYTES")
    two.set_data_from_numpy(np.array([stack, stack], dtype=object), binary_data=True)
    payload, json_length = InferRequest(model_name=NAME, infer_inputs=[two]).to_rest()
    r = httpx.post(
        f"{served_mlp}/v2/models/{NAME}/infer",
        content=payload,
        headers={"inference-header-content-length": str(json_length)},
        timeout=60,
    )
    assert r.status_code == 400 and "[1]: 6 maps, more than the 2 this request may still hold" in r.text


def test_rsnflow_predict_labels_a_stack_as_classify_does(
    served_mlp: str,
    maps: np.ndarray,
    expected: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import pandas as pd

    from rsnflow.classify import COLUMNS
    from rsnflow.cli import EXIT_ERROR, EXIT_OK, main

    stack = tmp_path / "sub-01_desc-dr_components.nii.gz"
    stack.write_bytes(_nifti(np.moveaxis(maps, 0, -1)))
    out = tmp_path / "labels.tsv"
    assert main(["predict", str(stack), "--url", served_mlp, "--out", str(out)]) == EXIT_OK
    table = pd.read_csv(out, sep="\t")
    assert tuple(table.columns) == COLUMNS and list(table["component"]) == list(range(len(maps)))
    np.testing.assert_allclose(table["probability"], expected.max(1), atol=1e-4)
    assert main(["predict", str(stack), "--url", f"{served_mlp}/v2/models/{NAME}/infer"]) == EXIT_OK
    assert "network_probability" in capsys.readouterr().out  # the table on the terminal
    # Errors: one line naming the file or the server
    assert main(["predict", str(out), "--url", served_mlp]) == EXIT_ERROR
    assert "labels.tsv: not a NIfTI file" in capsys.readouterr().err
    flat = tmp_path / "flat.nii.gz"
    flat.write_bytes(_nifti(np.zeros((4, 4), dtype=np.float32)))
    assert main(["predict", str(flat), "--url", served_mlp]) == EXIT_ERROR
    assert f"flat.nii.gz: refused by {served_mlp}" in capsys.readouterr().err
    assert main(["predict", str(stack), "--url", "http://127.0.0.1:9"]) == EXIT_ERROR
    assert "cannot reach the server" in capsys.readouterr().err


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_in_both_modes(
    served_mlp: str, maps: np.ndarray, expected: np.ndarray, binary: bool
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(served_mlp.removeprefix("http://"), network_timeout=60)
    assert client.is_server_ready() and client.is_model_ready(NAME)
    inp = triton.InferInput("maps", list(maps.shape), "FP32")
    inp.set_data_from_numpy(maps, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probability")]
    result = client.infer(NAME, [inp], outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("probability"), expected.max(1), atol=1e-5)
    assert len(result.as_numpy("label")) == len(maps)
    # The NIfTI files themselves as BYTES, and a 4D stack in one element
    files = triton.InferInput("nifti", [1], "BYTES")
    stack = _nifti(np.moveaxis(maps, 0, -1))  # JSON carries BYTES as text: base64 there
    element = stack if binary else base64.b64encode(stack).decode()
    files.set_data_from_numpy(np.array([element], dtype=object), binary_data=binary)
    result = client.infer(NAME, [files])
    np.testing.assert_allclose(result.as_numpy("probability"), expected.max(1), atol=1e-5)
    client.close()


def test_the_kserve_sdk_rest_client(served_mlp: str, maps: np.ndarray, expected: np.ndarray) -> None:
    import asyncio

    from kserve import InferenceRESTClient, RESTConfig

    async def ask() -> object:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            inp = InferInput("maps", list(maps.shape), "FP32")
            inp.set_data_from_numpy(maps, binary_data=False)
            request = InferRequest(model_name=NAME, infer_inputs=[inp])
            assert await client.is_server_ready(served_mlp)
            return await client.infer(served_mlp, request, model_name=NAME)
        finally:
            await client.close()

    response = asyncio.run(ask())
    probs = next(o for o in response.outputs if o.name == "probability").as_numpy()
    np.testing.assert_allclose(probs, expected.max(1), atol=1e-5)
