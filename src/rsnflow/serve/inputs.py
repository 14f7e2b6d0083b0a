"""Request payloads to a batch of component maps on the grid, with every check a client needs.

Two encodings are accepted in both protocols:

* maps already on the 45x54x45 grid as FP32 numbers (V1: an instance is a
  nested list ``[45][54][45]``; V2: an ``FP32`` input of shape
  ``[N, 45, 54, 45]``, flat or nested ``data``, or the binary extension);
* NIfTI files in any space with a valid affine (``.nii`` or ``.nii.gz``
  bytes), resampled into the grid: V1 ``{"b64": "..."}`` instances (the
  KServe convention for binary instances) of one 3D map each, or the file
  itself as the request body; V2 a ``BYTES`` input of shape ``[N]`` whose
  elements are base64 strings in JSON or raw bytes with the binary
  extension. A file sent as the body or as a V2 element may be a 4D stack
  (a run's dual-regression components): each volume is a map and gets its
  own answer, in order.

Every problem is raised as :class:`kserve.errors.InvalidInput` (HTTP 400)
whose message names the input and the problem.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from numpy.typing import NDArray

from rsnflow.io import InvalidInputError, nifti_class, nifti_from_bytes
from rsnflow.space import MNI4_SHAPE, grid_data

__all__ = [
    "InflateBudget",
    "decode_v1",
    "decode_v2",
    "looks_like_nifti",
    "maps_from_nifti",
    "maps_from_numbers",
]

_GRID = "x".join(str(s) for s in MNI4_SHAPE)


def maps_from_numbers(values: Any, where: str, shape: list[int] | None = None) -> NDArray[np.float32]:
    """Numbers (nested lists or an array) to finite float32 maps ``(N, 45, 54, 45)``.

    ``shape`` is the declared shape of a V2 tensor (its data may be flat);
    without it the numbers must nest as ``[45][54][45]`` (one map) or
    ``[N][45][54][45]``.

    Parameters
    ----------
    values : array-like
        The numbers: nested lists, a flat list (with ``shape``) or an array.
    where : str
        The input named in error messages (``instances[0]``, say).
    shape : list of int or None, default=None
        The declared shape ``[N, 45, 54, 45]`` of a V2 tensor.

    Returns
    -------
    numpy.ndarray
        float32 maps of shape ``(N, 45, 54, 45)``, copied when ``values`` was a read-only buffer.

    Raises
    ------
    kserve.errors.InvalidInput
        Values that are not numbers, a shape that is not ``[N, 45, 54, 45]`` or that the values
        do not fill, or NaN or infinite values.
    """
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{where}: expected numbers nested as [N][45][54][45] ({exc})") from exc
    if shape is not None:
        if len(shape) != 4 or tuple(shape[1:]) != MNI4_SHAPE or shape[0] < 1:
            raise InvalidInput(f"{where}: shape {shape} is not [N, {', '.join(map(str, MNI4_SHAPE))}]")
        if arr.size != int(np.prod(shape)):
            raise InvalidInput(f"{where}: {arr.size} values do not fill the declared shape {shape}")
        arr = arr.reshape(shape)
    elif arr.shape == MNI4_SHAPE:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != MNI4_SHAPE:
        raise InvalidInput(f"{where}: shape {list(arr.shape)} is not a {_GRID} map on the MNI 4 mm grid")
    if not arr.flags.writeable:  # a view of the request body
        arr = arr.copy()
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InvalidInput(f"{where}: {int(bad.sum())} values are NaN or infinite")
    return arr


class InflateBudget:
    """What is left of a request's allowance of uncompressed NIfTI bytes, over all its files.

    Each file is inflated with at most what is left, so 64 gzip bombs in one
    small body cost no more than one allowance (not 64 of them).

    Parameters
    ----------
    max_bytes : int
        The request's allowance in bytes.

    Attributes
    ----------
    max_bytes : int
        The allowance, as given.
    left : int
        What is left of it; zero or below once spent.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.left = max_bytes

    def spend(self, img: Any) -> None:
        """Take a read image's size from what is left: its data's bytes and 352 for the header.

        Parameters
        ----------
        img : nibabel.Nifti1Image
            The image read from one of the request's files.
        """
        self.left -= int(np.prod(img.shape)) * img.header.get_data_dtype().itemsize + 352


def maps_from_nifti(
    data: bytes, where: str, budget: InflateBudget | int, stack: bool = True, max_maps: int | None = None
) -> NDArray[np.float32]:
    """A NIfTI file's bytes to its maps on the grid (resampled when its grid differs).

    A 3D image is one map; a 4D image is a stack of maps, one per volume (a
    run's dual-regression components, say), answered one by one.
    ``budget`` bounds the uncompressed size: a number for this file alone, or
    the request's :class:`InflateBudget`, which this file's size is taken from.

    Parameters
    ----------
    data : bytes
        The file: a ``.nii`` or ``.nii.gz`` of one 3D map or a 4D stack of maps.
    where : str
        The input named in error messages.
    budget : InflateBudget or int
        The bound on the uncompressed size, in bytes or as the request's budget.
    stack : bool, default=True
        Accept a 4D stack; when False the file must hold one map (a 4D image of one volume is one).
    max_maps : int or None, default=None
        Most maps this file may hold (what is left of the request's ``serve.max_batch``), checked
        on the header before anything is resampled or converted.

    Returns
    -------
    numpy.ndarray
        float32 maps of shape ``(N, 45, 54, 45)`` on the MNI 4 mm grid, in volume order.

    Raises
    ------
    kserve.errors.InvalidInput
        The request's budget is spent, the file is not a valid NIfTI image of the accepted
        dimensionality (:func:`rsnflow.io.nifti_from_bytes`), or it holds more than ``max_maps``.
    """
    if isinstance(budget, int):
        budget = InflateBudget(budget)
    if budget.left <= 0:
        raise InvalidInput(
            f"{where}: the request's NIfTI files inflate to more than {budget.max_bytes:,} bytes in total "
            "(serve.max_request_mb)"
        )
    try:
        img = nifti_from_bytes(data, where, ndim=None if stack else 3, max_bytes=budget.left)
    except InvalidInputError as exc:
        if budget.left < budget.max_bytes and exc.problem.startswith(
            ("NIfTI image inflates", "header claims")
        ):
            raise InvalidInput(
                f"{where}: the request's NIfTI files inflate to more than {budget.max_bytes:,} bytes "
                "in total (serve.max_request_mb)"
            ) from exc
        raise InvalidInput(str(exc)) from exc
    budget.spend(img)
    n_maps = img.shape[3] if len(img.shape) == 4 else 1
    if max_maps is not None and n_maps > max_maps:
        # Before resampling: a tiny low-resolution stack would otherwise grow to n x 45x54x45 floats.
        raise InvalidInput(
            f"{where}: {n_maps} maps, more than the {max_maps} this request may still hold (serve.max_batch)"
        )
    arr = grid_data(img)  # by the affine: a RAS stack on the grid's centres is reoriented exactly
    return arr.reshape(*MNI4_SHAPE, -1).transpose(3, 0, 1, 2)  # volumes first, as the model takes them


def looks_like_nifti(data: bytes) -> bool:
    """A gzip stream or a NIfTI-1/2 header: a file sent as the body, not JSON.

    Parameters
    ----------
    data : bytes
        A request body.

    Returns
    -------
    bool
        Whether ``data`` starts with the gzip magic bytes or a NIfTI header size.
    """
    return data[:2] == b"\x1f\x8b" or nifti_class(data) is not None


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where}: not valid base64 ({exc})") from exc


def _check_batch(n: int, max_batch: int) -> None:
    if n == 0:
        raise InvalidInput("the request holds no maps")
    if n > max_batch:
        raise InvalidInput(f"the request holds {n} maps; at most {max_batch} per request (serve.max_batch)")


def decode_v1(payload: Any, max_batch: int, max_bytes: int) -> NDArray[np.float32]:
    """``{"instances": [map | {"b64": nifti}, ...]}``, or a raw NIfTI body, to maps ``(N, 45, 54, 45)``.

    A NIfTI file sent as the body (any content type) reaches here as bytes
    and is read as its maps (one, or a 4D stack's volumes).

    Parameters
    ----------
    payload : dict or bytes
        The decoded JSON body, or the raw body when it is a NIfTI file.
    max_batch : int
        Most maps accepted in one request.
    max_bytes : int
        Most uncompressed NIfTI bytes accepted in one request, over all its files.

    Returns
    -------
    numpy.ndarray
        float32 maps of shape ``(N, 45, 54, 45)``, in the order of the instances.

    Raises
    ------
    kserve.errors.InvalidInput
        A payload that is not ``{"instances": [...]}``, no instances or more than ``max_batch``,
        or an instance that is not one valid map.
    """
    if isinstance(payload, bytes | bytearray):
        return maps_from_nifti(bytes(payload), "request body", max_bytes, max_maps=max_batch)
    budget = InflateBudget(max_bytes)
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('expected a JSON object with an "instances" list')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list')
    _check_batch(len(instances), max_batch)
    maps = []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(inst, dict):
            if set(inst) != {"b64"}:
                raise InvalidInput(f'{where}: an object instance must be {{"b64": NIfTI bytes in base64}}')
            maps.append(maps_from_nifti(_b64(inst["b64"], where), where, budget, stack=False)[0])
        else:
            arr = maps_from_numbers(inst, where)
            if arr.shape[0] != 1:
                raise InvalidInput(f"{where}: an instance is one map [45][54][45], got {arr.shape[0]}")
            maps.append(arr[0])
    return np.stack(maps)


def decode_v2(request: Any, max_batch: int, max_bytes: int) -> NDArray[np.float32]:
    """An Open Inference Protocol request (one FP32 or BYTES input) to maps ``(N, 45, 54, 45)``.

    Parameters
    ----------
    request : kserve.InferRequest
        The request; binary-extension tensors keep their bytes in ``_raw_data``
        (:func:`rsnflow.serve.server.binary_request`).
    max_batch : int
        Most maps accepted in one request.
    max_bytes : int
        Most uncompressed NIfTI bytes accepted in one request, over all its files.

    Returns
    -------
    numpy.ndarray
        float32 maps of shape ``(N, 45, 54, 45)``.

    Raises
    ------
    kserve.errors.InvalidInput
        Not exactly one input, a datatype other than FP32 or BYTES, a shape that does not match
        the data, no maps or more than ``max_batch``, or a map that is not valid.
    """
    inputs = list(request.inputs)
    if len(inputs) != 1:
        raise InvalidInput(f"expected exactly one input tensor, got {len(inputs)}")
    inp = inputs[0]
    where = f"input {inp.name!r}"
    try:
        shape = [int(s) for s in inp.shape]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}: shape {inp.shape!r} is not a list of integers") from exc
    raw = getattr(inp, "_raw_data", None)  # binary extension: bytes as they came
    if inp.datatype == "FP32":
        if len(shape) == 4:
            _check_batch(shape[0], max_batch)
        if raw is None:
            values = _tensor_data(inp)
        elif len(raw) % 4:
            raise InvalidInput(f"{where}: {len(raw)} bytes are not a whole number of FP32 values")
        else:
            values = np.frombuffer(raw, dtype="<f4")
        return maps_from_numbers(values, where, shape)
    if inp.datatype == "BYTES":
        if len(shape) != 1:
            raise InvalidInput(f"{where}: BYTES input must have shape [N] (one NIfTI file each), got {shape}")
        _check_batch(shape[0], max_batch)
        try:
            items = list(inp.as_numpy().ravel()) if raw is not None else _tensor_data(inp)
        except (ValueError, IndexError) as exc:
            raise InvalidInput(f"{where}: BYTES data does not match the shape {shape} ({exc})") from exc
        if len(items) != shape[0]:
            raise InvalidInput(f"{where}: {len(items)} elements for the declared shape {shape}")
        out: list[NDArray[np.float32]] = []
        budget = InflateBudget(max_bytes)
        for i, item in enumerate(items):
            data = item if isinstance(item, bytes) else _b64(item, f"{where}[{i}]")
            left = max_batch - sum(len(m) for m in out)  # a 4D file counts its volumes
            out.append(maps_from_nifti(data, f"{where}[{i}]", budget, max_maps=left))
        return np.concatenate(out)
    raise InvalidInput(
        f"{where}: datatype {inp.datatype} is not accepted; send FP32 maps [N, 45, 54, 45] "
        "or BYTES NIfTI files [N]"
    )


def _tensor_data(inp: Any) -> Any:
    data = inp.data
    if data is None:
        raise InvalidInput(f"input {inp.name!r}: no data")
    return data
