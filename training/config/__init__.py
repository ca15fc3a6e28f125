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

# The names of the former flat ``training/config.py``, still importable from here for
# modules that have not moved to the new homes (training/loop/trainer.py and
# training/loop/distributed.py).
from training.config.distill_section import DistillConfig as DistillConfig
from training.config.errors import ConfigError as ConfigError
from training.config.model_section import ModelConfig as ModelConfig
from training.config.model_section import model_args as model_args
from training.config.run import DataConfig as DataConfig
from training.config.run import OptimConfig as OptimConfig
from training.config.run import RunConfig as RunConfig
from training.config.run import load_config as load_config
