"""Joint distillation: variants, hints, λ schedules and the gradient block.

Modules:

* ``rules``     ``Variant`` and ``Hint`` by name, each variant's defaults
  (``default_hint``, ``default_lambda``, ``default_gradient_block``), the rules a
  setting must follow (``rule_violation``) and ``nets_needed``.
* ``schedules`` ``Schedule`` and ``LambdaSchedule``: the hint weight ``w(t)`` per step.
* ``hints``     the hint losses (``logit_mse``, ``soft_bce``, ``binary_kl``,
  ``hidden_mse``, ``listwise_kl``) with their formulas.
* ``losses``    each variant's loss with the gradient block: ``DistillSettings``,
  ``LossTerms``, ``hint_loss``, ``compute_loss``.
"""

# The names of the former flat ``training/distill.py``, still importable from here for
# modules that have not moved to the new homes (training/loop/trainer.py and
# training/loop/distributed.py).
from training.distill.hints import binary_kl as binary_kl
from training.distill.hints import hidden_mse as hidden_mse
from training.distill.hints import listwise_kl as listwise_kl
from training.distill.hints import logit_mse as logit_mse
from training.distill.hints import soft_bce as soft_bce
from training.distill.losses import DistillSettings as DistillSettings
from training.distill.losses import LossTerms as LossTerms
from training.distill.losses import compute_loss as compute_loss
from training.distill.losses import hint_loss as hint_loss
from training.distill.rules import PFD_VARIANTS as PFD_VARIANTS
from training.distill.rules import ROCKET_VARIANTS as ROCKET_VARIANTS
from training.distill.rules import Hint as Hint
from training.distill.rules import Variant as Variant
from training.distill.rules import default_gradient_block as default_gradient_block
from training.distill.rules import default_hint as default_hint
from training.distill.rules import nets_needed as nets_needed
from training.distill.schedules import LambdaSchedule as LambdaSchedule
from training.distill.schedules import Schedule as Schedule
