"""The data layer: logs + schema → validated, encoded, batched tensors.

Modules (import the one you need; this package imports nothing eagerly):

* ``schema``    the YAML log schema (ids, labels, tasks, features).
* ``readers``   Parquet/CSV → canonical numpy columns; side tables joined by id.
* ``data_dir``  data-directory layout (splits, ``schema.yaml``, ``users``/``items``
  side tables); ``read_data_dir``.
* ``validate``  every problem at once (``DataValidationError`` of ``Problem``);
  ``column_checks`` the value kinds and per-column checks it runs.
* ``dataset``   ``fit_encoder``, ``encode_columns``, ``EncodedSplit`` (features,
  labels, group, user, ``iter_batches``, ``filter_rows``, ``for_task``), ``Batch``.
* ``loader``    ``load_dataset(dir, tasks=...)``: read, validate, fit, encode,
  cached in ``DIR/.rocketrank_cache``.
* ``shuffle``   the chunked shuffle shared by in-memory and streaming batches.
* ``streaming`` ``StreamingSplit``: the same batches from Parquet row groups;
  ``rank_shard`` one torchrun rank's chunks, ``chunk_cache`` encoded chunks on disk.
* ``negatives`` ``sample_negatives`` for positive-only logs.
* ``prepare``   ``prepare_data``: one task's encoded splits for a run (``PreparedData``).

The ``rocketrank data`` commands live in ``training/commands/``.
"""
