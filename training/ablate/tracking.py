"""Run tracking of an ablation: its table in TensorBoard, its runs under one MLflow run.

Every run an ablation trains is tracked as ``rocketrank train`` tracks one
(``training.loop.tracking``: ``DIR/<variant>/seed<s>/tensorboard/``). The
ablation itself adds:

* TensorBoard, ``DIR/tensorboard/``: ``report.md`` as the text ``ablation/report``,
  and one hparams entry per variant (``DIR/tensorboard/hparams/<variant>``) with
  the row's numbers (``ablation/light_auc/mean``, ``ablation/delta_vs_light_alone/mean``,
  ...), so TensorBoard's HParams tab shows the table;
* MLflow (``--mlflow URI``): a parent run ``ablation DIR`` that every run of the
  ablation nests under, with the base config and the ablation's settings as
  params, each row's numbers as metrics ``<variant>/<name>`` and
  ``report.{md,json,png}`` as artifacts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.config.run import RunConfig
from training.loop.errors import TrainingError
from training.loop.tracking import TENSORBOARD_DIR, Tracking, numeric, tensorboard_writer

REPORT_FILES = ("report.md", "report.json", "report.png")
_NOT_NUMBERS = ("runs", "seeds", "settings", "variant")


def row_numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """A report row's numeric entries, flattened (``light_auc/mean``, ``params/light``, ...)."""
    return numeric({k: v for k, v in row.items() if k not in _NOT_NUMBERS})


class AblationTracker:
    """An ablation's tracking; a context manager whose :attr:`runs` tracks its runs.

    Args:
        tracking: what the command asked for (None = nothing).
        out_dir: the ablation's report directory.
        cfg: the base run config (the parent MLflow run's params).
        settings: the ablation's own settings (seeds, variants, tuning budget).
    """

    def __init__(
        self,
        tracking: Tracking | None,
        out_dir: Path,
        cfg: RunConfig,
        settings: Mapping[str, Any],
    ) -> None:
        self.tracking, self.out_dir = tracking, out_dir
        self.params = {**cfg.to_dict(), "ablation": dict(settings)}
        self.client: Any = None
        self.parent_id: str | None = None
        self._finished = False

    def __enter__(self) -> AblationTracker:
        if self.tracking is not None and self.tracking.mlflow_uri:
            from training.loop.mlflow_run import log_params, mlflow_client, start_run

            self.client = mlflow_client(self.tracking.mlflow_uri)
            try:
                tags = {"rocketrank.ablation_dir": str(self.out_dir.resolve())}
                self.parent_id = start_run(
                    self.client, self.tracking, f"ablation {self.out_dir.name}", tags
                )
                log_params(self.client, self.parent_id, self.params)
            except Exception as exc:  # MlflowException, or the server's connection error
                raise TrainingError(f"MLflow at {self.tracking.mlflow_uri!r}: {exc}") from exc
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.parent_id is not None:
            status = "FINISHED" if self._finished else "FAILED" if exc_type else "KILLED"
            self.client.set_terminated(self.parent_id, status)

    @property
    def runs(self) -> Tracking | None:
        """The tracking of every run the ablation trains (nested under the parent run)."""
        if self.tracking is None:
            return None
        return dataclasses.replace(self.tracking, parent_run_id=self.parent_id)

    def report(self, report: Mapping[str, Any]) -> None:
        """The written report (``run_ablation``'s result) into TensorBoard and MLflow."""
        rows = {row["variant"]: row_numbers(row) for row in report["rows"]}
        if self.tracking is not None and self.tracking.tensorboard:
            self._tensorboard(report, rows)
        if self.parent_id is not None:
            from training.loop.mlflow_run import log_metrics

            values = {f"{variant}/{k}": v for variant, row in rows.items() for k, v in row.items()}
            log_metrics(self.client, self.parent_id, values, 0)
            for name in REPORT_FILES:
                if (self.out_dir / name).exists():
                    self.client.log_artifact(self.parent_id, str(self.out_dir / name))
        self._finished = True

    def _tensorboard(self, report: Mapping[str, Any], rows: Mapping[str, dict[str, float]]) -> None:
        writer = tensorboard_writer(self.out_dir / TENSORBOARD_DIR)
        if writer is None:
            return
        try:
            writer.add_text("ablation/report", (self.out_dir / "report.md").read_text(), 0)
            settings = {row["variant"]: row.get("settings") or "" for row in report["rows"]}
            for variant, numbers in rows.items():
                writer.add_hparams(
                    {"variant": variant, "settings": settings[variant]},
                    {f"ablation/{k}": v for k, v in numbers.items()},
                    name=f"hparams/{variant}",
                )
        finally:
            writer.close()


__all__ = ["AblationTracker", "row_numbers"]
