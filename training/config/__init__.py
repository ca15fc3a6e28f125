"""The typed run config: one YAML file per training run, loaded strictly.

Modules:

* ``run``             ``RunConfig`` (task, stage, seed and the sections), its
  ``data`` and ``optim`` sections, ``load_config``.
* ``model_section``   ``ModelConfig`` and its mapping to ``JointModelArgs``
  (``architecture_args``, ``model_args``).
* ``distill_section`` ``DistillConfig`` and its resolution to ``DistillSettings``.
* ``strict``          the strict loader: unknown keys and wrong types are errors
  naming the key; ``dump`` for the way back.
* ``errors``          ``ConfigError`` and the range checks the sections run.
"""
