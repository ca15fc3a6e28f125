"""The run-tracking options ``train`` and ``ablate`` share (``training.loop.tracking``)."""

from __future__ import annotations

import argparse

from training.loop.mlflow_run import require_mlflow
from training.loop.tracking import ENABLE_HINT, Tracking


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "run tracking", f"TensorBoard and MLflow come with {ENABLE_HINT}"
    )
    group.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="write no TensorBoard event files (default: RUN/tensorboard/; view them with "
        "`tensorboard --logdir RUN`)",
    )
    group.add_argument(
        "--mlflow",
        default=None,
        metavar="URI",
        help="also track in MLflow at this tracking URI (e.g. sqlite:///mlflow.db, "
        "http://host:5000): params, per-epoch and final metrics, run files",
    )
    group.add_argument(
        "--mlflow-experiment",
        default="rocketrank",
        metavar="NAME",
        help="MLflow experiment of the run (default rocketrank)",
    )


def tracking_from_args(args: argparse.Namespace) -> Tracking:
    """The :class:`Tracking` the options ask for.

    Raises:
        TrainingError: ``--mlflow`` without MLflow installed (before any training starts;
            the store itself is opened by rank 0 alone).
    """
    # a Namespace built without these options (a caller of ``run``) tracks with defaults
    mlflow_uri = getattr(args, "mlflow", None)
    if mlflow_uri:
        require_mlflow()
    return Tracking(
        tensorboard=not getattr(args, "no_tensorboard", False),
        mlflow_uri=mlflow_uri,
        experiment=getattr(args, "mlflow_experiment", "rocketrank"),
    )
