"""Binary ``POST /v1/rank`` bodies: the KServe / Triton *binary tensor data extension*.

A binary body is a JSON header followed by raw tensors; the request header
``Inference-Header-Content-Length`` gives the JSON header's length in bytes::

    {"id": "r-1",
     "parameters": {"user_id": 1234, "stage": "coarse", "top_k": 50,
                    "context": {"hour": 20}, "binary_data_output": true},
     "inputs": [{"name": "candidate_ids", "datatype": "INT64", "shape": [10000],
                 "parameters": {"binary_data_size": 80000}}]}
    <80,000 bytes: the ids, int64 little-endian>

The ids become an int64 ``[N]`` array with one ``np.frombuffer`` (no Python object
per id). ``parameters`` holds every field of the JSON API except ``candidates``
(``request_id`` may also be given as KServe's top-level ``id``); they are validated by
the JSON parser itself (:func:`service.api.parsing.parse_rank_request`), so every
rule and limit of the JSON path applies unchanged, and the candidate count limit is
checked against the same settings.

Answers are JSON (the API's usual body) unless the request asks for binary outputs
(``parameters.binary_data_output``, an ``outputs[].parameters.binary_data`` flag, or
a binary media type in ``Accept``): then a JSON header (padded with spaces to a
multiple of 8 bytes, so the tensors are aligned) followed by ``item_ids`` INT64
``[k]``, ``scores`` FP32 ``[k]`` and, for a cascade, ``coarse_scores`` FP32 ``[k]``;
the other answer fields are in the header's ``parameters``. Errors are always JSON.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from service.api.parsing import RequestError, error, parse_rank_request
from service.ranking.ranker import RankQuery, RankResult
from service.settings import Settings

MEDIA_TYPE = "application/vnd.rocketrank.binary"
"""This service's binary media type; ``application/octet-stream`` (the convention of
KServe/Triton clients) is accepted as well."""
BINARY_MEDIA_TYPES = frozenset({MEDIA_TYPE, "application/octet-stream"})
HEADER_LENGTH = "inference-header-content-length"
CANDIDATES_INPUT = "candidate_ids"
OUTPUTS = ("item_ids", "scores", "coarse_scores")

_HEADER_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "datatype", "shape", "parameters"})
_ALIGN = 8
# A header larger than this is refused before it is parsed (the rest of the body is ids).
_MAX_HEADER_BYTES = 1024 * 1024


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _header_error(msg: str) -> RequestError:
    return RequestError(400, [{"loc": ["header", HEADER_LENGTH], "msg": msg, "type": "header"}])


@dataclasses.dataclass
class BinaryExchange:
    """How one request is read and answered (created by :func:`negotiate`).

    Attributes:
        binary_request: the body is a binary tensor body.
        header_length: the ``Inference-Header-Content-Length`` value (raw text).
        binary_response: answer with binary tensors; set from ``Accept`` and by :meth:`parse`.
        media_type: the media type of a binary answer.
        header_bytes: the JSON header length of the binary answer (set by :meth:`serialize`).
    """

    binary_request: bool
    header_length: str | None
    binary_response: bool
    media_type: str = MEDIA_TYPE
    header_bytes: int = 0

    def parse(self, body: bytes, settings: Settings) -> tuple[str, RankQuery]:
        """The body as ``(request_id, query)``, exactly as the JSON parser would give it.

        Raises:
            RequestError: 400 naming the header (missing, not an integer, negative, beyond
                the body) or 422 naming the field (header JSON, input, datatype, shape,
                size, truncated or trailing data, any parameter the JSON API refuses).
        """
        if not self.binary_request:
            return parse_rank_request(body, settings)
        return self._parse_binary(body, settings)

    def _parse_binary(self, body: bytes, settings: Settings) -> tuple[str, RankQuery]:
        head_len = _header_length(self.header_length, len(body))
        try:
            header = orjson.loads(body[:head_len])
        except orjson.JSONDecodeError as exc:
            raise error(["header"], f"invalid JSON header: {exc}", "json_invalid") from None
        if not isinstance(header, dict):
            raise error(["header"], "the JSON header must be an object", "model_type")
        unknown = sorted(set(header) - _HEADER_KEYS)
        if unknown:
            raise error([unknown[0]], "unknown key in the JSON header", "extra_forbidden")
        params = header.get("parameters", {})
        if not isinstance(params, dict):
            raise error(["parameters"], "expected an object", "dict_type")
        params = dict(params)
        flag = params.pop("binary_data_output", False)
        if type(flag) is not bool:
            raise error(["parameters", "binary_data_output"], "expected a boolean", "bool_type")
        self.binary_response = self.binary_response or flag or _outputs_binary(header)
        if "id" in header:
            if "request_id" in params:
                raise error(
                    ["id"],
                    "give the request id as id or as parameters.request_id, not both",
                    "value_error",
                )
            params["request_id"] = header["id"]
        size = _candidates_input(header.get("inputs"))
        data_len = len(body) - head_len
        if size > data_len:
            raise error(
                ["inputs", 0, "parameters", "binary_data_size"],
                f"tensor truncated: {size} bytes declared, {data_len} in the body",
                "truncated",
            )
        if size < data_len:
            raise error([], f"{data_len - size} bytes after the last tensor", "trailing_data")
        n = size // 8
        stage = params.get("stage", "cascade")
        limit = settings.max_fine_candidates if stage == "fine" else settings.max_candidates
        if n > limit:
            raise error(
                ["inputs", 0, "shape"],
                f"{n} candidates exceed the limit of {limit} for stage {stage!r}",
                "too_long",
            )
        request_id, query = _validated_head(params, settings)
        ids = np.frombuffer(body, dtype="<i8", count=n, offset=head_len)
        if not ids.flags.aligned or ids.dtype != np.int64:
            ids = ids.astype(np.int64)  # an odd header length or a big-endian host: one copy
        return request_id, dataclasses.replace(query, candidate_ids=ids)

    def serialize(self, request_id: str, stage: str, result: RankResult, start: float) -> bytes:
        """A binary answer: padded JSON header, then the output tensors (see module doc)."""
        t = time.perf_counter()
        tensors = [
            ("item_ids", "INT64", np.ascontiguousarray(result.item_ids, dtype="<i8")),
            ("scores", "FP32", np.ascontiguousarray(result.scores, dtype="<f4")),
        ]
        if result.coarse_scores is not None:
            coarse = np.ascontiguousarray(result.coarse_scores, dtype="<f4")
            tensors.append(("coarse_scores", "FP32", coarse))
        outputs = [
            {
                "name": name,
                "datatype": kind,
                "shape": [len(arr)],
                "parameters": {"binary_data_size": arr.nbytes},
            }
            for name, kind, arr in tensors
        ]
        timing = result.timing_ms
        timing["serialize"] = (time.perf_counter() - t) * 1e3
        timing["total"] = (time.perf_counter() - start) * 1e3
        header = orjson.dumps(
            {
                "id": request_id,
                "parameters": {
                    "request_id": request_id,
                    "stage": stage,
                    "model_versions": result.model_versions,
                    "unknown_item_ids": result.unknown_item_ids,
                    "unknown_user": result.unknown_user,
                    "degraded": result.degraded,
                    "timing_ms": timing,
                },
                "outputs": outputs,
            }
        )
        header += b" " * (-len(header) % _ALIGN)
        self.header_bytes = len(header)
        return b"".join([header, *(arr.tobytes() for _, _, arr in tensors)])

    def response_headers(self, status: int) -> list[tuple[bytes, bytes]]:
        """``Content-Type`` (and the header length of a binary answer) for the answer."""
        if status == 200 and self.binary_response:
            return [
                (b"content-type", self.media_type.encode()),
                (HEADER_LENGTH.encode(), str(self.header_bytes).encode()),
            ]
        return [(b"content-type", b"application/json")]


def negotiate(headers: Iterable[tuple[bytes, bytes]]) -> BinaryExchange | None:
    """The exchange of a request whose body or answer is binary; None for plain JSON.

    Args:
        headers: the ASGI scope's ``headers`` (lower-case names).
    """
    content_type = accept = length = None
    for name, value in headers:
        if name == b"content-type" and content_type is None:
            content_type = _media(value.decode("latin-1"))
        elif name == b"accept" and accept is None:
            accept = value.decode("latin-1")
        elif name == b"inference-header-content-length" and length is None:
            length = value.decode("latin-1")
    binary_request = content_type in BINARY_MEDIA_TYPES
    accepted = [m for m in map(_media, (accept or "").split(",")) if m in BINARY_MEDIA_TYPES]
    if not binary_request and not accepted:
        return None
    media = accepted[0] if accepted else content_type if binary_request else MEDIA_TYPE
    return BinaryExchange(binary_request, length, bool(accepted), media_type=media or MEDIA_TYPE)


def _header_length(value: str | None, body_len: int) -> int:
    if value is None:
        raise _header_error(f"required with a binary body ({MEDIA_TYPE})")
    try:
        length = int(value.strip())
    except ValueError:
        raise _header_error("must be an integer") from None
    if length < 0:
        raise _header_error("must not be negative")
    if length > body_len:
        raise _header_error(f"{length} exceeds the body of {body_len} bytes")
    if length > _MAX_HEADER_BYTES:
        raise _header_error(f"{length} exceeds the limit of {_MAX_HEADER_BYTES} bytes")
    return length


def _outputs_binary(header: dict[str, Any]) -> bool:
    outputs = header.get("outputs", [])
    if not isinstance(outputs, list):
        raise error(["outputs"], "expected a list", "list_type")
    binary = False
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or out.get("name") not in OUTPUTS:
            raise error(["outputs", i, "name"], f"outputs are {list(OUTPUTS)}", "literal_error")
        flag = (out.get("parameters") or {}).get("binary_data", False)
        if type(flag) is not bool:
            raise error(
                ["outputs", i, "parameters", "binary_data"], "expected a boolean", "bool_type"
            )
        binary = binary or flag
    return binary


def _candidates_input(inputs: Any) -> int:
    """The ``binary_data_size`` of the one ``candidate_ids`` input, checked."""
    if not isinstance(inputs, list) or not inputs:
        raise error(
            ["inputs"], f"expected a list holding the {CANDIDATES_INPUT!r} input", "missing"
        )
    if len(inputs) > 1:
        raise error(
            ["inputs", 1], f"only {CANDIDATES_INPUT!r} is accepted as an input", "extra_forbidden"
        )
    spec = inputs[0]
    if not isinstance(spec, dict):
        raise error(["inputs", 0], "expected an object", "dict_type")
    unknown = sorted(set(spec) - _INPUT_KEYS)
    if unknown:
        raise error(["inputs", 0, unknown[0]], "unknown key of an input", "extra_forbidden")
    if spec.get("name") != CANDIDATES_INPUT:
        raise error(["inputs", 0, "name"], f"expected {CANDIDATES_INPUT!r}", "literal_error")
    if spec.get("datatype") != "INT64":
        raise error(["inputs", 0, "datatype"], "candidate ids must be INT64", "datatype")
    shape = spec.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and type(shape[0]) is int):
        raise error(["inputs", 0, "shape"], "expected [N], N candidates", "shape")
    if shape[0] < 1:
        raise error(["inputs", 0, "shape"], "must hold at least one candidate", "too_short")
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is None:
        raise error(
            ["inputs", 0, "parameters", "binary_data_size"],
            "candidate ids must be sent as binary data",
            "missing",
        )
    if type(size) is not int or size < 0:
        raise error(
            ["inputs", 0, "parameters", "binary_data_size"],
            "must be a non-negative integer",
            "int_type",
        )
    if size != 8 * shape[0]:
        raise error(
            ["inputs", 0, "parameters", "binary_data_size"],
            f"{size} bytes do not hold shape {shape} of INT64 (8 bytes each)",
            "size_mismatch",
        )
    return size


def _validated_head(params: dict[str, Any], settings: Settings) -> tuple[str, RankQuery]:
    """The JSON parser's checks of every non-candidate field (one placeholder id)."""
    try:
        body = orjson.dumps({**params, "candidates": [0]})
    except TypeError as exc:  # cannot happen for values orjson parsed; kept for safety
        raise error(["parameters"], str(exc)) from None
    try:
        return parse_rank_request(body, settings)
    except RequestError as exc:
        for entry in exc.detail:
            loc = entry["loc"]
            if loc[:1] == ["body"]:
                entry["loc"] = ["body", "parameters", *loc[1:]]
        raise


def encode_request(
    candidate_ids: np.ndarray, parameters: dict[str, Any], *, binary_output: bool = False
) -> tuple[bytes, int]:
    """A binary rank body (for clients, tests and the benchmark): ``(body, header length)``.

    Args:
        candidate_ids: int64 ``[N]``.
        parameters: the JSON API's fields except ``candidates``.
        binary_output: ask for a binary answer.
    """
    ids = np.ascontiguousarray(candidate_ids, dtype="<i8")
    params = {**parameters, "binary_data_output": True} if binary_output else dict(parameters)
    header = orjson.dumps(
        {
            "parameters": params,
            "inputs": [
                {
                    "name": CANDIDATES_INPUT,
                    "datatype": "INT64",
                    "shape": [len(ids)],
                    "parameters": {"binary_data_size": ids.nbytes},
                }
            ],
        }
    )
    header += b" " * (-len(header) % _ALIGN)
    return header + ids.tobytes(), len(header)


def decode_response(
    body: bytes, header_length: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A binary answer as ``(header, {output name: array})``.

    Raises:
        ValueError: the outputs do not match the bytes.
    """
    header = orjson.loads(body[:header_length])
    arrays: dict[str, np.ndarray] = {}
    offset = header_length
    dtypes = {"INT64": "<i8", "FP32": "<f4"}
    for out in header["outputs"]:
        size = out["parameters"]["binary_data_size"]
        if offset + size > len(body):
            raise ValueError(f"output {out['name']!r} is truncated")
        dtype = np.dtype(dtypes[out["datatype"]])
        arrays[out["name"]] = np.frombuffer(body, dtype, size // dtype.itemsize, offset)
        offset += size
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the last output")
    return header, arrays
