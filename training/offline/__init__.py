"""Offline use of an exported artifact: evaluate it on a split or a new log, score a
log into Parquet, and build sample requests from a log.

Everything here goes through :func:`models.contract.artifact.load_artifact` and the
artifact's own encoder, so it measures what the service serves, not the training run.
"""
