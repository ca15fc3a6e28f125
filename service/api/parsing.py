"""Fast, strict parsing of ``POST /v1/rank`` bodies into a :class:`RankQuery`.

The body is parsed with orjson; the small fields go through pydantic
(:class:`RankRequestHead`); the candidate list becomes a numpy int64 array in
one call. Python-level checks run only where numpy cannot tell (bools hiding
among 0/1 ids) or when the list holds objects with inline features.

Every problem raises :class:`RequestError` with FastAPI-style ``detail`` entries
whose ``loc`` names the field, e.g. ``["body", "candidates", 3]``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from service.api.schemas import INT64_MAX, INT64_MIN, CandidateObject, RankRequestHead
from service.ranking.ranker import RankQuery
from service.settings import Settings

_MAX_REPORTED = 5
# Refused bodies up to this size are re-read to name the field holding NaN/Infinity.
_NON_FINITE_SCAN_BYTES = 64 * 1024


class RequestError(Exception):
    """A client error: HTTP ``status`` and a list of ``{loc, msg, type}`` entries."""

    def __init__(self, status: int, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail[0]["msg"] if detail else "bad request")
        self.status = status
        self.detail = detail


def error(
    loc: list[str | int], msg: str, kind: str = "value_error", status: int = 422
) -> RequestError:
    return RequestError(status, [{"loc": ["body", *loc], "msg": msg, "type": kind}])


def _pydantic_detail(exc: ValidationError, prefix: list[str | int]) -> list[dict[str, Any]]:
    # Only loc, msg and type: echoing the input could return megabytes (or secrets).
    return [
        {"loc": ["body", *prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def check_feature_map(value: Any, loc: list[str | int], settings: Settings) -> None:
    """Size limits of one raw feature map, before pydantic looks at it (O(entries)).

    Checks the number of entries, the length of every name and string value and of
    every list (and of the strings inside it). Types are pydantic's business; values
    of an unexpected type are left to it.

    Raises:
        RequestError: 422 whose ``loc`` names the map or the offending feature.
    """
    if not isinstance(value, dict):
        return
    if len(value) > settings.max_map_size:
        raise error(
            loc,
            f"{len(value)} features exceed the limit of {settings.max_map_size}",
            "too_many_features",
        )
    max_str, max_list = settings.max_string_length, settings.max_list_length
    for name, item in value.items():
        if len(name) > max_str:
            raise error(loc, f"a feature name exceeds {max_str} characters", "string_too_long")
        kind = type(item)
        if kind is str:
            if len(item) > max_str:
                raise error(
                    [*loc, name], f"string longer than {max_str} characters", "string_too_long"
                )
        elif kind is list:
            if len(item) > max_list:
                raise error([*loc, name], f"list longer than {max_list} values", "too_long")
            for element in item:
                if type(element) is str and len(element) > max_str:
                    raise error(
                        [*loc, name], f"string longer than {max_str} characters", "string_too_long"
                    )


def _int_candidates(values: list[Any]) -> np.ndarray | None:
    """The fast path: a list of plain ints → int64 array, or None when it is not one."""
    try:
        arr = np.fromiter(values, dtype=np.int64, count=len(values))
    except (TypeError, ValueError, OverflowError):
        return None
    # fromiter converts floats, numeric strings and bools silently. sum() (a C loop) is a
    # float when a float is present and raises on a string; bools add like 0/1, so only
    # the positions holding 0 or 1 need a look at the original objects.
    try:
        if type(sum(values)) is not int:
            return None
    except TypeError:
        return None
    for i in np.flatnonzero((arr == 0) | (arr == 1)).tolist():
        if type(values[i]) is not int:
            return None
    return arr


def _slow_candidates(
    values: list[Any], settings: Settings
) -> tuple[np.ndarray, dict[int, Mapping[str, Any]]]:
    """Mixed lists: ids and objects with inline features, checked one by one."""
    ids = np.empty(len(values), dtype=np.int64)
    inline: dict[int, Mapping[str, Any]] = {}
    problems: list[dict[str, Any]] = []
    for i, value in enumerate(values):
        if type(value) is int:
            if INT64_MIN <= value <= INT64_MAX:
                ids[i] = value
                continue
            problems.append(
                {
                    "loc": ["body", "candidates", i],
                    "msg": "item id is outside the int64 range",
                    "type": "int64_range",
                }
            )
        elif isinstance(value, dict):
            check_feature_map(value.get("features"), ["candidates", i, "features"], settings)
            try:
                obj = CandidateObject.model_validate(value)
            except ValidationError as exc:
                problems.extend(_pydantic_detail(exc, ["candidates", i]))
            else:
                ids[i] = obj.item_id
                if obj.features:
                    inline[i] = obj.features
                continue
        else:
            problems.append(
                {
                    "loc": ["body", "candidates", i],
                    "msg": "expected an int64 item id or an object with item_id and features",
                    "type": "candidate_type",
                }
            )
        if len(problems) >= _MAX_REPORTED:
            break
    if problems:
        raise RequestError(422, problems)
    return ids, inline


def _json_error(body: bytes, exc: orjson.JSONDecodeError) -> RequestError:
    """422 for a body orjson refuses; names the field when only NaN/Infinity are wrong.

    Python's json module accepts the NaN and Infinity literals, so a small body it can
    read tells where they are (an error path only, bounded by the body size).
    """
    if len(body) <= _NON_FINITE_SCAN_BYTES:
        try:
            where = _non_finite_path(json.loads(body), [])
        except (ValueError, RecursionError):
            where = None
        if where is not None:
            return error(where, "NaN and Infinity are not valid JSON numbers", "json_invalid")
    return error([], f"invalid JSON: {exc}", "json_invalid")


def _non_finite_path(value: Any, path: list[str | int]) -> list[str | int] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items: Any = (
        value.items() if isinstance(value, dict) else enumerate(value)
        if isinstance(value, list) else ()
    )  # fmt: skip
    for key, item in items:
        found = _non_finite_path(item, [*path, key])
        if found is not None:
            return found
    return None


def parse_rank_request(body: bytes, settings: Settings) -> tuple[str, RankQuery]:
    """Parse and validate a rank body.

    Returns:
        ``(request_id, query)``; the request id is generated when the body has none.

    Raises:
        RequestError: 422 naming the field for any invalid or out-of-limit value.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _json_error(body, exc) from None
    if not isinstance(data, dict):
        raise error([], "expected a JSON object", "model_type")
    candidates = data.pop("candidates", None)
    # Before pydantic: validating a map of 300k entries costs ~100 normal requests.
    check_feature_map(data.get("context"), ["context"], settings)
    check_feature_map(data.get("user_features"), ["user_features"], settings)
    try:
        head = RankRequestHead.model_validate(data)
    except ValidationError as exc:
        detail = _pydantic_detail(exc, [])
        if candidates is None:
            detail.insert(
                0, {"loc": ["body", "candidates"], "msg": "Field required", "type": "missing"}
            )
        raise RequestError(422, detail) from None
    if candidates is None:
        raise error(["candidates"], "Field required", "missing")
    if not isinstance(candidates, list):
        raise error(["candidates"], "expected a list of item ids", "list_type")
    if not candidates:
        raise error(["candidates"], "must hold at least one candidate", "too_short")
    limit = settings.max_fine_candidates if head.stage == "fine" else settings.max_candidates
    if len(candidates) > limit:
        raise error(
            ["candidates"],
            f"{len(candidates)} candidates exceed the limit of {limit} for stage {head.stage!r}",
            "too_long",
        )
    top_k = head.top_k if head.top_k is not None else settings.default_top_k
    coarse_top_k = (
        head.coarse_top_k
        if head.coarse_top_k is not None
        else min(settings.default_coarse_top_k, settings.max_fine_candidates)
    )
    if top_k > settings.max_top_k:
        raise error(["top_k"], f"must be at most {settings.max_top_k}", "less_than_equal")
    # coarse_top_k is what the fine MLP scores: the fine limit bounds it, or a cascade
    # would score max_candidates rows with the MLP.
    if head.stage == "cascade" and coarse_top_k > settings.max_fine_candidates:
        raise error(
            ["coarse_top_k"],
            f"must be at most {settings.max_fine_candidates} (max_fine_candidates)",
            "less_than_equal",
        )

    ids = _int_candidates(candidates)
    inline: dict[int, Mapping[str, Any]] = {}
    if ids is None:
        ids, inline = _slow_candidates(candidates, settings)
    return head.request_id or new_request_id(), RankQuery(
        user_id=head.user_id,
        candidate_ids=ids,
        stage=head.stage,
        top_k=top_k,
        coarse_top_k=coarse_top_k,
        user_features=head.user_features,
        context=head.context,
        inline=inline,
    )


def new_request_id() -> str:
    return uuid.uuid4().hex
