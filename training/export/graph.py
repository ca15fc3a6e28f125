"""Graph transforms applied to a light-net scorer before it is serialised.

* :func:`fold_batchnorm`: ``Linear → BatchNorm1d`` pairs (eval statistics) become
  one ``Linear``, so serving does no normalisation arithmetic.
* :func:`quantize_embeddings`: every ``nn.Embedding`` becomes an
  :class:`Int8Embedding` (8-bit codes, one fp16 scale per row) — the tables are
  almost all of a light net's bytes.
* :func:`quantize_linears`: every ``nn.Linear`` becomes an :class:`Int8Linear`
  (weight-only: 8-bit codes, one fp16 scale per output, dequantised once at load).
  Not ``torch.ao`` dynamic quantisation: it is deprecated in torch 2.13 and int8
  activations would cost parity on layers this small for no speed gain.
* :func:`to_torchscript`: script, optionally ``torch.jit.freeze`` (keeping the
  two-tower methods) and ``optimize_for_inference``.

All transforms work on a deep copy; the trained model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# fp16 cannot represent smaller positive scales (subnormal minimum); an all-zero
# row gets this scale and all-zero codes.
_MIN_SCALE = 2.0**-24
_MAX_FP16 = 65_504.0
_MAX_CODE = 127


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row symmetric 8-bit quantisation of a float matrix ``[N, d]``.

    Returns:
        ``codes int8 [N, d]`` in ``[-127, 127]`` and ``scale float16 [N]`` with
        ``row_i ≈ codes[i] · scale[i]`` (error ≤ half a step per value) and
        ``scale[i] = max|w_i| / 127``. An all-zero row comes back exactly.

    Raises:
        ValueError: non-finite values or values beyond the fp16 range.
    """
    weight = weight.detach().to(torch.float32)
    if not bool(torch.isfinite(weight).all()) or float(weight.abs().max()) > _MAX_FP16:
        raise ValueError("cannot quantise: non-finite values or values beyond the fp16 range")
    scale = (weight.abs().amax(dim=1) / _MAX_CODE).clamp_min(_MIN_SCALE).to(torch.float16)
    # Codes are computed against the fp16-rounded scale that is stored.
    codes = torch.round(weight / scale.to(torch.float32).unsqueeze(1))
    return codes.clamp(-_MAX_CODE, _MAX_CODE).to(torch.int8), scale


def dequantize_rows(codes: Tensor, scale: Tensor) -> Tensor:
    """``int8 [N, d]`` codes and ``[N]`` per-row scales -> float32 ``[N, d]``."""
    return codes.to(torch.float32) * scale.to(torch.float32).unsqueeze(1)


class Int8Embedding(nn.Module):
    """Embedding table stored as 8-bit codes with one fp16 scale per row.

    ``row_i ≈ codes[i] · scale[i]`` with ``scale[i] = max|w_i| / 127`` (symmetric,
    per row). A table of N rows × d costs ``N·(d + 2)`` bytes on disk instead of
    ``4·N·d``. Symmetric rows were chosen over asymmetric (scale and offset, ``d + 4``
    bytes): on the narrow rows of a light net the offset costs a noticeable share
    of the bytes for no measurable AUC (see docs/BENCHMARKS.md).

    The first call dequantises the whole table once into the ``table`` buffer
    (empty in the saved file) and every later lookup is a plain fp32 embedding:
    int8 shrinks the artifact, not the serving speed. Dequantising per lookup
    instead was slower than fp32 (see docs/BENCHMARKS.md). The
    buffer is assigned in ``forward``, so a module holding these must not be
    ``torch.jit.freeze``-d (freezing would fold the fp32 table into the file),
    and the first call should happen before concurrent use (``load_artifact``
    makes one).

    Args:
        weight: float table ``[N, d]``.

    Shapes: ``forward(ids int64 [*]) -> float32 [*, d]``.
    """

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        codes, scale = quantize_rows(weight)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("table", torch.empty(0, int(weight.shape[1])))
        self.num_embeddings = int(weight.shape[0])
        self.embedding_dim = int(weight.shape[1])

    def dequantized(self) -> Tensor:
        """The float table the codes represent, ``[N, d]``."""
        return self.codes.to(torch.float32) * self.scale.to(torch.float32).unsqueeze(1)

    def forward(self, ids: Tensor) -> Tensor:
        if self.table.shape[0] != self.num_embeddings:
            self.table = self.dequantized()
        return F.embedding(ids, self.table)


class Int8Linear(nn.Module):
    """``nn.Linear`` whose weight is stored as 8-bit codes, one fp16 scale per output.

    Weight-only quantisation (the bias stays fp32): like :class:`Int8Embedding`
    the first call dequantises the weight once into the ``weight_fp32`` buffer and
    the layer then runs the same fp32 ``F.linear`` as before, so it costs no
    latency and no activation rounding; it only shrinks the file (``out·(in + 2)``
    bytes instead of ``4·out·in``). Same caveats: never freeze, call once before
    concurrent use.

    Args:
        linear: the trained layer.

    Shapes: ``forward(x float32 [*, in]) -> float32 [*, out]``.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        codes, scale = quantize_rows(linear.weight)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("weight_fp32", torch.empty(0, linear.in_features))
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def dequantized(self) -> Tensor:
        """The float weight the codes represent, ``[out, in]``."""
        return self.codes.to(torch.float32) * self.scale.to(torch.float32).unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight_fp32.shape[0] != self.out_features:
            self.weight_fp32 = self.dequantized()
        return F.linear(x, self.weight_fp32, self.bias)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``Linear`` directly followed by ``BatchNorm1d`` inside an
    ``nn.Sequential`` into the Linear (in place; the BatchNorm becomes Identity).

    Uses the running statistics, i.e. eval-mode semantics. Returns the number of
    folded pairs.
    """
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            lin, bn = seq[i], seq[i + 1]
            if not (isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d)):
                continue
            if bn.running_mean is None or bn.running_var is None:
                continue  # track_running_stats=False normalises by batch: not foldable
            with torch.no_grad():
                inv_std = torch.rsqrt(bn.running_var + bn.eps)
                gamma = bn.weight if bn.affine else torch.ones_like(inv_std)
                beta = bn.bias if bn.affine else torch.zeros_like(inv_std)
                factor = gamma * inv_std  # [out]
                bias = lin.bias if lin.bias is not None else torch.zeros_like(inv_std)
                fused = nn.Linear(lin.in_features, lin.out_features, bias=True)
                fused.weight.copy_(lin.weight * factor.unsqueeze(1))
                fused.bias.copy_((bias - bn.running_mean) * factor + beta)
            seq[i] = fused
            seq[i + 1] = nn.Identity()
            folded += 1
    return folded


def quantize_embeddings(module: nn.Module, min_rows: int = 0) -> int:
    """Replace every ``nn.Embedding`` submodule by an :class:`Int8Embedding` (in place).

    Args:
        module: the scorer (modified in place).
        min_rows: keep tables with fewer rows in fp32 (default: quantise all).

    A table referenced from several places (shared views) is quantised once and
    stays shared. Returns the number of distinct tables quantised.
    """
    return _replace(module, nn.Embedding, lambda m: Int8Embedding(m.weight), min_rows)


def quantize_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` submodule by an :class:`Int8Linear` (in place).

    Returns the number of distinct layers quantised.
    """
    return _replace(module, nn.Linear, Int8Linear, 0)


def _replace(module: nn.Module, kind: type, make: Any, min_rows: int) -> int:
    done: dict[int, nn.Module] = {}
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, kind) and child.weight.shape[0] >= min_rows:
                if id(child) not in done:
                    done[id(child)] = make(child)
                setattr(parent, child_name, done[id(child)])
    return len(done)


def prepare_scorer(
    scorer: nn.Module, quantize: str = "none", min_rows: int = 0, linears: bool = True
) -> nn.Module:
    """A deep copy of ``scorer`` in eval mode with BatchNorm folded and, for
    ``quantize="int8"``, 8-bit rows in every table of at least ``min_rows`` rows
    and (``linears``) 8-bit weights in every Linear layer."""
    if quantize not in ("none", "int8"):
        raise ValueError(f"quantize must be 'none' or 'int8', got {quantize!r}")
    model = copy.deepcopy(scorer).eval()
    fold_batchnorm(model)
    if quantize == "int8":
        quantize_embeddings(model, min_rows)
        if linears:
            quantize_linears(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def to_torchscript(
    model: nn.Module,
    methods: Sequence[str] = (),
    freeze: bool = True,
    optimize: bool = False,
) -> torch.jit.ScriptModule:
    """Script ``model``; optionally freeze it and run ``optimize_for_inference``.

    Args:
        model: an eval-mode scorer (``forward(features) -> [B]``).
        methods: extra ``@torch.jit.export`` methods that must survive freezing
            (``user_vector``, ``item_vector`` for two-tower scorers).
        freeze: inline parameters as constants (``torch.jit.freeze``); not for
            int8 scorers (see :class:`Int8Embedding`).
        optimize: also run ``torch.jit.optimize_for_inference`` (implies freeze).
    """
    if (freeze or optimize) and any(
        isinstance(m, Int8Embedding | Int8Linear) for m in model.modules()
    ):
        raise ValueError("an int8 scorer cannot be frozen: its tables dequantise on first use")
    scripted = torch.jit.script(model.eval())
    if freeze or optimize:
        scripted = torch.jit.freeze(scripted, preserved_attrs=list(methods))
    if optimize:
        scripted = torch.jit.optimize_for_inference(scripted, other_methods=list(methods))
    return scripted


__all__ = [
    "Int8Embedding",
    "Int8Linear",
    "dequantize_rows",
    "fold_batchnorm",
    "prepare_scorer",
    "quantize_embeddings",
    "quantize_linears",
    "quantize_rows",
    "to_torchscript",
]
