"""The typed run config: one YAML file per training run, loaded strictly.

Modules:

* ``run``             ``RunConfig`` (task, stage, seed and the sections), its
  ``data`` and ``optim`` sections, ``load_config``.
* ``model_section``   ``ModelConfig`` and its mapping to ``JointModelArgs``
  (``architecture_args``, ``model_args``).
* ``distill_section`` ``DistillConfig`` and its resolution to ``DistillSettings``.
* ``strict``          the sections as strict pydantic dataclasses (``extra="forbid"``,
  strict types): ``load``, ``dump``, ``json_schema``, errors naming the full key.
* ``schema``          the JSON Schema for editors (``configs/run_config.schema.json``).
* ``errors``          ``ConfigError``.
"""
