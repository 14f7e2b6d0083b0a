"""The model server around :class:`RSNPredictor`: bind address, request size limit, 4xx for bad bodies.

``kserve.ModelServer`` always binds 0.0.0.0, answers an undecodable V2
binary body with HTTP 500, and turns binary tensors into Python lists.
:class:`RSNModelServer` binds the host it is given (127.0.0.1 by default,
0.0.0.0 in a pod), keeps binary tensors as bytes, turns decoding errors into
HTTP 400, and refuses bodies over ``max_request_bytes`` with HTTP 413 before
they reach the model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import InferInput, InferRequest, ModelServer
from kserve.constants.constants import (
    FASTAPI_APP_IMPORT_STRING,
    INFERENCE_CONTENT_LENGTH_HEADER,
    PredictorProtocol,
)
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from rsnflow.log import get_logger
from rsnflow.serve.inputs import looks_like_nifti
from rsnflow.serve.predictor import RSNPredictor

__all__ = ["BodyLimit", "RSNModelServer", "binary_request", "serve"]

log = get_logger(__name__)

Scope = dict[str, Any]


class BodyLimit:
    """ASGI middleware: HTTP 413 for request bodies larger than ``max_bytes``.

    The declared ``Content-Length`` is checked first; a chunked body is
    counted as it arrives and held (at most ``max_bytes``) so that the
    application only ever sees a complete body within the limit.

    Parameters
    ----------
    app : ASGI application
        The application wrapped.
    max_bytes : int
        Largest request body accepted, in bytes.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any, size: str) -> None:
        problem = f"request body {size} exceeds the limit of {self.max_bytes} bytes (serve.max_request_mb)"
        body = json.dumps({"error": problem}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"of {int(declared)} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send, f"of more than {size} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def binary_request(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """A V2 request with the binary tensor extension, its tensors left as bytes.

    kserve's own parser turns every binary tensor into a Python list of
    floats (seconds for a batch of maps); here the bytes stay as they came
    and become an array without a copy.

    Parameters
    ----------
    body : bytes
        The whole request body: the JSON header, then the binary tensors in the order of its
        ``inputs``.
    json_length : int
        Length in bytes of the JSON part (the ``Inference-Header-Content-Length`` header).
    model_name : str
        The model the request is for.

    Returns
    -------
    kserve.InferRequest
        The request; a binary tensor's bytes are in its input's ``_raw_data``.

    Raises
    ------
    kserve.errors.InvalidInput
        The JSON part is not valid JSON, or a tensor's ``binary_data_size`` is missing or reaches
        beyond the body.
    """
    try:
        head = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Unrecognized request format: {exc}") from exc
    inputs = []
    offset = json_length
    for spec in head["inputs"]:
        inp = InferInput(spec["name"], spec["shape"], spec["datatype"], parameters=spec.get("parameters"))
        if spec.get("data") is not None:
            inp.data = spec["data"]
        else:
            size = int((spec.get("parameters") or {}).get("binary_data_size", -1))
            if size < 0 or offset + size > len(body):
                raise InvalidInput(
                    f"input {spec['name']!r}: binary_data_size missing or beyond the end of the body"
                )
            inp._raw_data = body[offset : offset + size]  # kserve's own slot for binary data
            offset += size
        inputs.append(inp)
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in head.get("outputs") or []]
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=head.get("id"),
        parameters=head.get("parameters"),
        request_outputs=outputs or None,
    )


def _header_length(value: str, body_size: int) -> int:
    """The binary extension's JSON length header as an int within the body, or a 400."""
    text = str(value).strip()
    if not text.isdigit() or int(text) > body_size:
        raise InvalidInput(
            f"{INFERENCE_CONTENT_LENGTH_HEADER} must be the length of the JSON part of the body "
            f"(0 to {body_size} bytes), got {value!r}"
        )
    return int(text)


class _CheckedDataPlane(DataPlane):
    """A body that cannot be decoded is the client's error (400), whatever exception the decoder raised."""

    def decode_inference_request(self, body: Any, headers: dict[str, str], model_name: str) -> InferRequest:
        json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        if isinstance(body, bytes) and json_length is not None:
            return binary_request(body, _header_length(json_length, len(body)), model_name)
        if isinstance(body, bytes):
            # Without the binary extension's header the body is JSON, whatever its Content-Type:
            # tritonclient's JSON mode sends none, and kserve took such a body for binary (400).
            from pydantic import ValidationError

            try:
                body = InferenceRequest.model_validate_json(body)
            except ValidationError as exc:
                raise InvalidInput(
                    f"the body is not a V2 JSON request (and no {INFERENCE_CONTENT_LENGTH_HEADER} header "
                    f"announces binary tensors): {exc.errors()[0]['msg']}"
                ) from exc
        return super().decode_inference_request(body, headers, model_name)

    def decode(self, body: Any, headers: Any, *args: Any, **kwargs: Any) -> Any:
        # kserve reads application/octet-stream as JSON; a NIfTI file as a V1 body goes to the model as is.
        protocol = kwargs.get("protocol_version", args[0] if args else PredictorProtocol.REST_V1.value)
        if protocol == PredictorProtocol.REST_V1.value and isinstance(body, bytes) and looks_like_nifti(body):
            return body, {}
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise InvalidInput(f"cannot decode the request body: {type(exc).__name__}: {exc}") from exc


class _RESTServer(RESTServer):
    def __init__(self, *args: Any, host: str, max_request_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.max_request_bytes = max_request_bytes

    def _add_middlewares(self, app: Any) -> None:
        super()._add_middlewares(app)
        app.add_middleware(BodyLimit, max_bytes=self.max_request_bytes)

    def _add_exception_handlers(self, app: Any) -> None:
        super()._add_exception_handlers(app)
        # A client's bad request is a warning line, not an ERROR with a traceback (kserve's handler).
        app.add_exception_handler(InvalidInput, _client_error)
        # A body FastAPI cannot validate (not JSON, wrong fields) is a 400 like every other client error.
        app.add_exception_handler(RequestValidationError, _client_error)


async def _client_error(request: Any, exc: Exception) -> JSONResponse:
    message = str(exc)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        message = f"invalid request body ({where}: {first.get('msg', 'not valid')})"
    log.warning("400 %s %s: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=400, content={"error": message})


class RSNModelServer(ModelServer):
    """A single-process REST model server bound to ``host`` (no gRPC).

    Parameters
    ----------
    host : str
        Address to bind (``127.0.0.1``; ``0.0.0.0`` in a pod).
    http_port : int
        The HTTP port.
    max_request_bytes : int
        Largest request body accepted; larger ones get HTTP 413 (:class:`BodyLimit`).
    """

    def __init__(self, host: str, http_port: int, max_request_bytes: int) -> None:
        super().__init__(http_port=http_port, workers=1, enable_grpc=False, enable_docs_url=False)
        self.host = host
        self.max_request_bytes = max_request_bytes
        self.dataplane = _CheckedDataPlane(model_registry=self.registered_models)

    def start(self, models: list[Any]) -> None:
        """Register the models and serve REST requests until stopped (blocks).

        Parameters
        ----------
        models : list of kserve.Model
            The models to serve; at least one must be ready.
        """
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            host=self.host,
            max_request_bytes=self.max_request_bytes,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def serve(
    model_ref: str,
    name: str = "rsn-classifier",
    host: str = "127.0.0.1",
    port: int = 8080,
    max_request_mb: float = 64.0,
    max_batch: int = 128,
    abstain_below: float | None = None,
    device: str = "auto",
    atypical_below: float | None = None,
) -> None:
    """Load the model and answer V1 and V2 requests on ``host:port`` until stopped.

    Parameters
    ----------
    model_ref : str
        Model directory or MLflow model URI (:func:`rsnflow.serve.predictor.load_served_classifier`).
    name : str, default="rsn-classifier"
        Model name in the URLs (``/v1/models/NAME:predict``, ``/v2/models/NAME/infer``).
    host : str, default="127.0.0.1"
        Address to bind.
    port : int, default=8080
        The HTTP port.
    max_request_mb : float, default=64.0
        Largest request body in MiB (HTTP 413 above it); also the most uncompressed NIfTI data
        accepted in one request.
    max_batch : int, default=128
        Most maps in one request (HTTP 400 above it).
    abstain_below : float or None, default=None
        Say only the network of a map whose best probability is below this, and ``Unknown`` when
        its network probability is below it too (0: never; ``None``: the model's calibrated
        threshold).
    device : str, default="auto"
        ``auto``, ``cpu`` or ``cuda``.
    atypical_below : float or None, default=None
        Withhold a network label whose map correlates less than this with the
        class's prototype (0: never; ``None``: the model's floor, set on validation).
    """
    max_bytes = int(max_request_mb * (1 << 20))
    predictor = RSNPredictor(
        name,
        model_ref,
        device=device,
        max_batch=max_batch,
        max_nifti_bytes=max_bytes,
        abstain_below=abstain_below,
        atypical_below=atypical_below,
    )
    predictor.load()
    log.info(
        "listening on http://%s:%d (V1 /v1/models/%s:predict, V2 /v2/models/%s/infer)", host, port, name, name
    )
    RSNModelServer(host, port, max_bytes).start([predictor])
