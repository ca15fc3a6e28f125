"""Loaded models, hot reload and rollback.

The registry holds one :class:`Stage` per configured stage in a dict that
is *replaced*, never mutated: a request takes :meth:`ModelRegistry.snapshot`
once and uses those models to the end, so a swap never mixes versions inside
a request and never fails one.

A new version is loaded from ``REPO/NAME/current`` (polled every
``reload_interval_s``, or on ``POST /admin/reload``), verified by
``load_artifact`` (signature, checksums, spec hash), encoded against the feature store's
item table, warmed up (finite scores of the right shape), and only then swapped
in. A version that fails any step is refused, counted in
``reloads_total{result="failed"}`` and logged; the old version keeps serving and
the broken version is not retried until ``current`` moves again (or a forced
reload).

Rollback moves the repository's ``current`` pointer back (so every worker
process follows it on its next poll) and reloads this worker at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.contract.artifact import load_artifact
from models.contract.manifest import ArtifactError
from models.contract.repository import ModelRepository
from models.contract.repository_reader import BrokenPointerError, RepositoryError
from service.feature_store.base import FeatureStore
from service.metrics import ServiceMetrics
from service.ranking.stage_base import Stage
from service.ranking.stages import stage_class
from service.settings import Settings

log = logging.getLogger(__name__)

# Anything a broken artifact can raise (bad archive, wrong inputs in warm-up, ...) refuses it.
_LOAD_ERRORS = (Exception,)
# How often missing item features (feature store down at start) are retried.
_RETRY_S = 1.0
# Versions tried, newest promotion first, when `current` is broken at start-up.
_FALLBACK_TRIES = 5
# A re-encode that keeps failing is retried after 1, 2, 4, ... s, at most this long.
_RETRY_MAX_S = 60.0


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did for one stage.

    Attributes:
        stage: ``coarse`` or ``fine``.
        name: model name in the repository.
        result: ``success`` (new version serving), ``unchanged``, ``failed``
            (refused; the previous version keeps serving) or ``missing`` (no
            ``current`` pointer yet).
        version: the version now serving (``None`` if none).
        attempted: the version that was tried.
        error: why a load failed (repository paths replaced by ``REPO``).
    """

    stage: str
    name: str
    result: str
    version: str | None
    attempted: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry_delay(failures: int) -> float:
    """Seconds before the next re-encode after ``failures`` failed ones in a row."""
    return min(_RETRY_S * 2 ** min(failures, 16), _RETRY_MAX_S)


class ModelRegistry:
    """The served models of one worker process.

    Args:
        settings: service settings (repository, model names, intervals).
        store: feature store whose item table the models are encoded against.
        metrics: service metrics (``model_info``, ``reloads_total``).
    """

    def __init__(self, settings: Settings, store: FeatureStore, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.repository = ModelRepository(settings.repo)
        self.store = store
        self.metrics = metrics
        self._models: Mapping[str, Stage] = {}
        self._failed: dict[str, str] = {}
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rebind_failures = 0  # consecutive failed re-encodes (backs off the retries)

    # ----------------------------------------------------------------- queries
    def snapshot(self) -> Mapping[str, Stage]:
        """The models serving now (an immutable mapping; hold it for a whole request)."""
        return self._models

    def ready(self) -> bool:
        return all(role in self._models for role in self.settings.stage_models)

    def describe(self) -> list[dict[str, Any]]:
        models = self._models
        return [models[r].describe() for r in self.settings.stage_models if r in models]

    # ----------------------------------------------------------------- loading
    def sanitize(self, message: str) -> str:
        """Error text without file-system paths (responses never reveal paths)."""
        root = str(self.repository.root.resolve())
        return message.replace(root, "REPO").replace(str(self.repository.root), "REPO")

    def _build(self, role: str, path: Path) -> Stage:
        # the signature is checked before the manifest is parsed or model.pt opened
        artifact = load_artifact(
            path,
            public_key=self.settings.artifact_public_key,
            allow_unsigned=self.settings.allow_unsigned_artifacts,
        )
        if artifact.manifest.stage != role:
            raise ArtifactError(
                f"artifact {path}: stage {artifact.manifest.stage!r} cannot serve the {role} stage"
            )
        return self._bind(role, artifact)

    def _bind(self, role: str, artifact: Any) -> Stage:
        complete = self.store.items_available()
        model = stage_class(artifact.manifest.kind)(
            role,
            artifact,
            self.store.items(),
            items_complete=complete,
            user_id_column=self.settings.user_id_column,
            item_id_column=self.settings.item_id_column,
            side_cache_bytes=self.settings.side_cache_bytes,
        )
        model.warm_up(self.settings.warmup_rounds)
        return model

    def _swap(self, role: str, model: Stage) -> None:
        previous = self._models.get(role)
        models = dict(self._models)
        models[role] = model
        self._models = models  # one reference assignment: atomic for readers
        self.metrics.set_model(
            role, model.name, model.version, previous.version if previous else None
        )

    def reload(
        self, force: bool = False, roles: Iterable[str] | None = None
    ) -> list[ReloadOutcome]:
        """Load every stage whose ``current`` pointer moved (all of them when ``force``).

        Returns:
            One outcome per configured stage.
        """
        outcomes = []
        with self._load_lock:
            for role, name in self.settings.stage_models.items():
                if roles is not None and role not in roles:
                    continue
                outcomes.append(self._reload_one(role, name, force))
        return outcomes

    def _reload_one(self, role: str, name: str, force: bool) -> ReloadOutcome:
        loaded = self._models.get(role)
        serving = loaded.version if loaded else None
        try:
            version = self.repository.current_version(name)
        except BrokenPointerError as exc:
            return self._serve_fallback(role, name, serving, exc)
        except RepositoryError as exc:
            return ReloadOutcome(role, name, "failed", serving, error=str(exc))
        if version is None:
            return ReloadOutcome(role, name, "missing", serving)
        if version == serving and not force:
            return ReloadOutcome(role, name, "unchanged", serving)
        if version == self._failed.get(role) and not force:
            return ReloadOutcome(role, name, "unchanged", serving, attempted=version)
        start = time.perf_counter()
        self.store.refresh()  # a new model is encoded against the newest item features
        try:
            model = self._build(role, self.repository.version_dir(name, version).resolve())
        except _LOAD_ERRORS as exc:
            self._failed[role] = version
            self.metrics.reloads.labels("failed").inc()
            log.error(
                "refusing %s model %s@%s (still serving %s): %s", role, name, version, serving, exc
            )
            return ReloadOutcome(
                role, name, "failed", serving, attempted=version, error=self.sanitize(str(exc))
            )
        self._failed.pop(role, None)
        self._swap(role, model)
        self.metrics.reloads.labels("success").inc()
        log.info(
            "serving %s model %s@%s (was %s; loaded in %.2f s)",
            role, name, version, serving, time.perf_counter() - start,
        )  # fmt: skip
        return ReloadOutcome(role, name, "success", version, attempted=version)

    def _serve_fallback(
        self, role: str, name: str, serving: str | None, broken: BrokenPointerError
    ) -> ReloadOutcome:
        """``current`` is not a symlink: keep what serves, or load the last good version."""
        if serving is not None:
            return ReloadOutcome(role, name, "unchanged", serving, error=self.sanitize(str(broken)))
        self.metrics.reloads.labels("failed").inc()  # alerts: the pointer needs fixing
        for version in self.repository.fallback_versions(name)[:_FALLBACK_TRIES]:
            try:
                model = self._build(role, self.repository.version_dir(name, version).resolve())
            except _LOAD_ERRORS as exc:
                log.error("fallback %s model %s@%s refused too: %s", role, name, version, exc)
                continue
            self._swap(role, model)
            self.metrics.reloads.labels("success").inc()
            log.error(
                "%s; serving the last good %s model %s@%s instead", broken, role, name, version
            )
            return ReloadOutcome(
                role, name, "success", version, attempted=version,
                error=self.sanitize(f"{broken}; serving the last good version {version}"),
            )  # fmt: skip
        return ReloadOutcome(role, name, "failed", None, error=self.sanitize(str(broken)))

    def rollback(self, roles: Iterable[str] | None = None) -> list[ReloadOutcome]:
        """Point ``current`` of the stages' models back one promotion (all or none),
        then reload.

        The expected source of each pointer is the version this worker serves, so a
        POST repeated on another replica (or retried) does not move it one step more.

        Raises:
            RepositoryError: a model has no earlier version (nothing is changed), or
                the repository is read-only here (``ReadOnlyRepositoryError``: its
                message names the writer command, ``rocketrank models rollback``).
        """
        selected = [r for r in self.settings.stage_models if roles is None or r in roles]
        names = [self.settings.stage_models[r] for r in selected]
        models = self._models
        expect = {self.settings.stage_models[r]: models[r].version for r in selected if r in models}
        self.repository.rollback_all(names, expect_current=expect)
        return self.reload(force=False, roles=selected)

    def refresh_items(self) -> bool:
        """Re-encode the models when the store's item table changed; True if swapped."""
        self.store.refresh()
        table = self.store.items()
        changed = False
        with self._load_lock:
            for role, model in list(self._models.items()):
                if model.items.version == table.version and model.items_complete:
                    continue
                try:
                    rebound = self._bind(role, model.artifact)
                except _LOAD_ERRORS as exc:
                    self.rebind_failures += 1
                    log.error("cannot re-encode %s model for new item features: %s", role, exc)
                    continue
                self.rebind_failures = 0
                self._swap(role, rebound)
                changed = True
                log.info("%s model re-encoded for item features %s", role, table.version)
        return changed

    # ----------------------------------------------------------------- watching
    def start(self) -> None:
        """Load what is current now and start the background watcher thread."""
        self.reload()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="rocketrank-model-watcher", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        poll = self.settings.reload_interval_s
        refresh = self.settings.item_refresh_s
        tick = min(x for x in (poll, refresh, _RETRY_S) if x > 0)
        now = time.monotonic()
        next_poll = now + poll if poll else math.inf
        next_refresh = now + refresh if refresh else math.inf
        next_retry = now + _RETRY_S
        while not self._stop.wait(tick):
            try:
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + poll
                    self.reload()
                table = self.store.items().version
                incomplete = not self.store.items_available() or any(
                    not m.items_complete or m.items.version != table for m in self._models.values()
                )
                if now >= next_refresh or (incomplete and now >= next_retry):
                    next_refresh = now + refresh if refresh else math.inf
                    self.refresh_items()
                    next_retry = now + retry_delay(self.rebind_failures)
            except Exception:  # the watcher must survive anything and keep the old model
                log.exception("model watcher iteration failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
