"""A client of a served classifier: a NIfTI file of maps in, one label row per map out.

``rsnflow predict MAPS.nii.gz --url URL`` sends the file as it is on disk
(a 3D map, or a 4D stack such as a run's dual-regression components) in one
Open Inference Protocol request, a ``BYTES`` input with the binary tensor
extension (no base64, no JSON numbers), to ``rsnflow serve`` or a KServe
InferenceService, and gets one answer per map: the table of
``rsnflow classify``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from rsnflow.classify import label_table
from rsnflow.io import InvalidInputError
from rsnflow.serve.inputs import looks_like_nifti

__all__ = ["infer_url", "predict_file"]

#: The outputs asked for, as JSON (the label table is made from them).
_OUTPUTS = (
    "label", "network", "probability", "network_probability", "abstained", "top_labels", "top_probabilities",
)  # fmt: skip


def infer_url(url: str, model: str) -> str:
    """The V2 inference endpoint of ``model`` at ``url`` (a server's base URL, or the endpoint itself).

    Parameters
    ----------
    url : str
        ``http://HOST:PORT`` (``rsnflow serve``, or an InferenceService's URL), or a full
        ``.../v2/models/NAME/infer`` URL, taken as is.
    model : str
        The model's name on the server.

    Returns
    -------
    str
        The URL to POST requests to.
    """
    if url.rstrip("/").endswith("/infer"):
        return url.rstrip("/")
    return f"{url.rstrip('/')}/v2/models/{model}/infer"


def _request(data: bytes) -> tuple[bytes, int]:
    """A V2 request with one BYTES element (the file), binary extension; returns the body and JSON length."""
    element = struct.pack("<I", len(data)) + data  # the extension's BYTES encoding: length, then bytes
    head = {
        "inputs": [
            {
                "name": "maps",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(element)},
            }
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": False}} for name in _OUTPUTS],
    }
    text = json.dumps(head).encode()
    return text + element, len(text)


def predict_file(
    path: str | os.PathLike[str], url: str, model: str = "rsn-classifier", timeout: float = 300.0
) -> pd.DataFrame:
    """Label every map of a NIfTI file with a served classifier, in one request.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` of one 3D map or a 4D stack of maps, in any space with a valid
        affine (the server resamples into its grid).
    url : str
        The server (:func:`infer_url`).
    model : str, default="rsn-classifier"
        The model's name on the server.
    timeout : float, default=300.0
        Seconds to wait for the answer.

    Returns
    -------
    pandas.DataFrame
        One row per map, in volume order, with the columns of :data:`rsnflow.classify.COLUMNS`.

    Raises
    ------
    InvalidInputError
        The file is missing or not NIfTI, or the server refused it (its message is kept).
    ConnectionError
        The server cannot be reached, or answered with an error of its own.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidInputError(file, f"cannot read ({exc.strerror})") from exc
    if not looks_like_nifti(data):
        raise InvalidInputError(file, "not a NIfTI file (.nii or .nii.gz)")
    body, json_length = _request(data)
    target = infer_url(url, model)
    headers = {
        "Inference-Header-Content-Length": str(json_length),
        "Content-Type": "application/octet-stream",
    }
    try:
        r = httpx.post(target, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"{target}: cannot reach the server ({exc})") from exc
    if r.status_code in (400, 413):
        raise InvalidInputError(file, f"refused by {target}: {_message(r)}")
    if r.status_code != 200:
        raise ConnectionError(f"{target}: HTTP {r.status_code}: {_message(r)}")
    try:
        return label_table(_ranked(r.json()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConnectionError(f"{target}: not an rsnflow answer ({type(exc).__name__}: {exc})") from exc


def _message(r: httpx.Response) -> str:
    """The server's error in one line (an ingress may answer with a whole HTML page)."""
    try:
        text = str(r.json().get("error", r.text))
    except (ValueError, AttributeError):
        text = r.text
    return " ".join(text.split())[:300]


def _ranked(answer: dict) -> dict[str, np.ndarray]:
    """The V2 answer's outputs as arrays, ``top_*`` as one row per map."""
    out = {}
    for o in answer["outputs"]:
        arr = np.asarray(o["data"], dtype=object if o["datatype"] in ("BYTES", "BOOL") else np.float32)
        out[o["name"]] = arr.reshape(o["shape"])
    missing = set(_OUTPUTS) - set(out)
    if missing:
        raise ConnectionError(f"the server's answer lacks {', '.join(sorted(missing))} (not rsnflow serve?)")
    out["abstained"] = out["abstained"].astype(bool)
    return out
