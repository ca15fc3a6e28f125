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
