"""Service configuration: one pydantic-settings ``Settings`` read from ``ROCKETRANK_*``.

Every field can be set from an environment variable named ``ROCKETRANK_<FIELD>``
(e.g. ``ROCKETRANK_REPO=/models``, ``ROCKETRANK_REDIS_URL=redis://host:6379/0``).
An environment variable with the prefix that names no field is an error, so a
typo such as ``ROCKETRANK_REDIS_ULR`` stops the service at start-up instead of
being silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ROCKETRANK_"
# rocketrank variables of other commands that may share the service's environment
_NOT_SERVICE_ENV = {"ROCKETRANK_SIGNING_KEY"}  # `rocketrank export`'s private key path


class SettingsError(ValueError):
    """The configuration is invalid; the message names the setting."""


class Settings(BaseSettings):
    """Scoring-service configuration.

    Attributes:
        repo: model repository root (``REPO/NAME/VERSION`` + ``current`` pointers).
        coarse_model: model name served for the coarse stage (empty = no coarse stage).
        fine_model: model name served for the fine stage (empty = no fine stage).
        features_dir: folder with ``users.parquet`` and ``items.parquet`` (embedded store).
        redis_url: Redis feature store; takes precedence over ``features_dir``.
        redis_prefix: key prefix written by ``rocketrank features load``.
        redis_version: feature version to read; empty = follow ``<prefix>current``.
        redis_timeout_ms: socket connect/read timeout of one Redis call.
        breaker_failures: consecutive Redis failures that open the circuit breaker.
        breaker_cooldown_s: time the breaker stays open before a half-open probe.
        item_refresh_s: how often item features are re-read from Redis (0 = only on reload).
        user_id_column: id column of the user table; a served feature of this name is
            encoded from the request's ``user_id``.
        item_id_column: id column of the item table; a served feature of this name is
            encoded from the candidate ids.
        reload_interval_s: how often the ``current`` pointers are polled (0 = never).
        admin_token: bearer token for ``/admin/*``; unset disables the admin endpoints.
        max_body_bytes: request bodies larger than this are refused with 413.
        max_candidates: candidate lists longer than this are refused with 422.
        max_fine_candidates: limit for ``stage=fine`` (the MLP scores every candidate).
        max_top_k: upper bound of ``top_k`` and ``coarse_top_k``.
        default_top_k: ``top_k`` when the request omits it.
        default_coarse_top_k: ``coarse_top_k`` when the request omits it.
        workers: uvicorn worker processes (used to size torch threads).
        torch_threads: intra-op threads per worker (0 = 1); capped at cores // workers.
        rank_threads: threads that run feature fetch and inference off the event loop.
        warmup_rounds: scoring passes over a sample before a model is swapped in.
        shutdown_delay_s: on SIGTERM, ``/readyz`` turns false at once and the server keeps
            serving this long before it stops accepting (lets load balancers drain).
        log_level: Python logging level name.
        artifact_public_key: ed25519 public key (PEM file) every artifact's manifest
            signature is verified with before anything of it is loaded.
        allow_unsigned_artifacts: also load artifacts without a signature (off in the
            shipped deployments; a signature that does not verify is always refused).
        max_string_length: longest string (characters) in a feature value or feature name.
        max_list_length: longest list in a multi-valued feature value.
        max_map_size: most entries in ``context``, ``user_features`` or one candidate's
            inline ``features``.
        side_cache_bytes: byte budget of each model's user/context encoding cache (LRU).
        max_inflight: rank requests admitted at once per worker; beyond it 503 at once.
        request_deadline_ms: a request still queued this long after it arrived is
            answered 503 without being scored.
        body_timeout_s: a request body not fully received within this is refused (408).
        retry_after_s: the ``Retry-After`` of a 503 from admission control.
        limit_concurrency: uvicorn's cap of open connections + tasks per worker (503 beyond);
            ``rocketrank serve`` raises the open-file limit to cover it.
        timeout_keep_alive_s: uvicorn closes an idle keep-alive connection after this.
        header_timeout_s: a connection whose request headers are not complete this long
            after it opened (or after the request's first byte) is closed.
        redis_check_interval_s: how often a lookup also checks that the served feature
            version still exists in Redis (meta key and ``current`` pointer).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    repo: Path
    coarse_model: str = "coarse"
    fine_model: str = "fine"
    features_dir: Path | None = None
    redis_url: str | None = None
    redis_prefix: str = "rocketrank:"
    redis_version: str = ""
    redis_timeout_ms: float = Field(20.0, gt=0, le=10_000)
    breaker_failures: int = Field(3, ge=1)
    breaker_cooldown_s: float = Field(2.0, gt=0)
    item_refresh_s: float = Field(300.0, ge=0)
    user_id_column: str = "user_id"
    item_id_column: str = "item_id"
    reload_interval_s: float = Field(5.0, ge=0)
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_candidates: int = Field(20_000, ge=1)
    max_fine_candidates: int = Field(2_000, ge=1)
    max_top_k: int = Field(1_000, ge=1)
    default_top_k: int = Field(50, ge=1)
    default_coarse_top_k: int = Field(500, ge=1)
    workers: int = Field(1, ge=1, le=64)
    torch_threads: int = Field(0, ge=0)
    rank_threads: int = Field(2, ge=1, le=64)
    warmup_rounds: int = Field(3, ge=1)
    shutdown_delay_s: float = Field(0.0, ge=0, le=300)
    log_level: str = "INFO"
    artifact_public_key: Path | None = None
    allow_unsigned_artifacts: bool = False
    max_string_length: int = Field(1024, ge=1)
    max_list_length: int = Field(256, ge=1)
    max_map_size: int = Field(256, ge=1)
    side_cache_bytes: int = Field(4 * 1024 * 1024, ge=0)
    max_inflight: int = Field(64, ge=1)
    request_deadline_ms: float = Field(2000.0, gt=0)
    body_timeout_s: float = Field(2.0, gt=0)
    retry_after_s: int = Field(1, ge=0)
    limit_concurrency: int = Field(1024, ge=1)
    timeout_keep_alive_s: float = Field(5.0, gt=0)
    header_timeout_s: float = Field(5.0, gt=0)
    redis_check_interval_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.coarse_model and not self.fine_model:
            raise ValueError("at least one of coarse_model and fine_model must be set")
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        if self.redis_url is None and self.features_dir is None:
            raise ValueError("set features_dir (embedded store) or redis_url (Redis store)")
        return self

    @property
    def effective_torch_threads(self) -> int:
        """Intra-op threads per worker; workers × threads never exceeds the cores.

        The default is 1: a request's tensors are small (≤ tens of thousands of rows
        × d), so intra-op parallelism gains nothing and its OpenMP barriers wait for
        descheduled threads (measured on 2 shared cores: a 2,000-candidate two-tower
        pass took ~15 ms with 2 threads and ~0.9 ms with 1).
        """
        share = max(1, (os.cpu_count() or 1) // self.workers)
        return min(self.torch_threads, share) if self.torch_threads else 1

    @property
    def stage_models(self) -> dict[str, str]:
        """Stage role -> model name, only for the configured stages."""
        return {
            role: name
            for role, name in (("coarse", self.coarse_model), ("fine", self.fine_model))
            if name
        }


def _attribute_docs() -> dict[str, str]:
    """The ``Attributes:`` section of :class:`Settings`' docstring, by field name."""
    docs: dict[str, str] = {}
    current = None
    in_section = False
    for line in (Settings.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_section = True
            continue
        if not in_section or not stripped:
            continue
        name, sep, text = stripped.partition(": ")
        if sep and name in Settings.model_fields:
            current = name
            docs[name] = text
        elif current is not None:
            docs[current] += " " + stripped
    return docs


def settings_table() -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` of every setting, from the Settings model itself."""
    docs = _attribute_docs()
    rows = []
    for name, field in Settings.model_fields.items():
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        elif field.default is None:
            default = "(unset)"
        else:
            default = (
                str(field.default) if not isinstance(field.default, str) else repr(field.default)
            )
        rows.append((ENV_PREFIX + name.upper(), default, docs.get(name, "")))
    return rows


def unknown_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """``ROCKETRANK_*`` variables that name no setting (sorted)."""
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(
        key
        for key in environ
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() not in known
        and key.upper() not in _NOT_SERVICE_ENV
    )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (plus explicit overrides).

    Raises:
        SettingsError: an unknown ``ROCKETRANK_*`` variable or an invalid value,
            with the offending names in the message.
    """
    unknown = unknown_env()
    if unknown:
        allowed = sorted(ENV_PREFIX + n.upper() for n in Settings.model_fields)
        raise SettingsError(f"unknown setting(s) {unknown}; allowed: {allowed}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        message = f"invalid service settings: {describe_errors(exc)}"
    except ValueError:
        message = "invalid service settings"
    # raised outside the handler: the pydantic error (which echoes every input) is not
    # even the implicit context of this one, so no traceback or logger can print it
    raise SettingsError(message)


def describe_errors(exc: ValidationError) -> str:
    """Each error as ``field: message``, never the offending input (tokens, passwords)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
