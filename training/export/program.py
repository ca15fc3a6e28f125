"""``torch.export`` programs of a light-net scorer (artifact format ``export``).

An MLP scorer becomes one program (``model.pt2``: ``forward``); a two-tower scorer
becomes two, ``user_vector.pt2`` and ``item_vector.pt2`` — the only parts the service
runs (the user tower per request, the item tower at load), and the logit is their dot
product, so storing ``forward`` too would only duplicate the tables. Every program takes
``features: dict[str, Tensor]`` of exactly the features it reads, with a dynamic batch
dimension (1 … 2^20 rows), and is saved without sample inputs so that loading it
unpickles nothing (``models.contract.programs``).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from models.contract.manifest import ITEM_PROGRAM_FILE, PROGRAM_FILE, USER_PROGRAM_FILE
from training.export.errors import ExportError

MAX_BATCH = 1 << 20
_EXAMPLE_ROWS = 8


class _Method(nn.Module):
    """``forward`` = one named method of a scorer, so that method can be exported."""

    def __init__(self, scorer: nn.Module, method: str) -> None:
        super().__init__()
        self.scorer = scorer
        self.method = method

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return getattr(self.scorer, self.method)(features)


def _example(rows: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    """Up to 8 rows of ``names`` (at least 2: torch.export specialises a batch of 1)."""
    n = int(next(iter(rows.values())).shape[0])
    index = torch.arange(_EXAMPLE_ROWS) % max(n, 1)
    return {k: rows[k].index_select(0, index).contiguous() for k in names}


def _capture(module: nn.Module, example: dict[str, Tensor]) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    shapes = {"features": {k: {0: batch} for k in example}}
    try:
        return torch.export.export(module.eval(), (example,), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch raises many kinds for graphs it cannot capture
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {exc}") from exc


def _without_unused_state(
    module: nn.Module, program: torch.export.ExportedProgram
) -> nn.Module | None:
    """A copy of ``module`` whose parameters and buffers the program never reads are
    empty, or ``None`` when it reads them all.

    A program stores every tensor of the module it was captured from: the user tower
    program would otherwise carry the item tables too (and the other way round).
    """
    used = {n.name for n in program.graph.nodes if n.op == "placeholder" and n.users}
    unused = [
        spec.target
        for spec in program.graph_signature.input_specs
        if spec.target is not None and spec.arg.name not in used
    ]
    if not unused:
        return None
    pruned = copy.deepcopy(module)
    state = dict(pruned.named_parameters()) | dict(pruned.named_buffers())
    for target in unused:
        state[target].data = state[target].new_empty(0)
    return pruned


def export_program(module: nn.Module, example: dict[str, Tensor]) -> bytes:
    """``torch.export`` of ``module.forward(features)`` with a dynamic batch, as bytes;
    only the parameters and buffers it reads are stored.

    Raises:
        ExportError: the module does not export.
    """
    program = _capture(module, example)
    pruned = _without_unused_state(module, program)
    if pruned is not None:
        program = _capture(pruned, example)
    # No sample inputs in the archive: torch.export.load reads them with torch.load.
    program.example_inputs = None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def export_programs(
    scorer: nn.Module, kind: str, rows: Mapping[str, Tensor], features: Mapping[str, list[str]]
) -> dict[str, bytes]:
    """The program files of a prepared (eval, BatchNorm folded) scorer.

    Args:
        scorer: ``prepare_scorer`` output.
        kind: ``mlp`` or ``two_tower``.
        rows: encoded example rows (any batch size) holding every served feature.
        features: served names by side (``JointModel.light_features()``).

    Returns:
        ``{file name: torch.export.save bytes}``.
    """
    side = [*features.get("user", []), *features.get("context", [])]
    if kind == "two_tower":
        return {
            USER_PROGRAM_FILE: export_program(_Method(scorer, "user_vector"), _example(rows, side)),
            ITEM_PROGRAM_FILE: export_program(
                _Method(scorer, "item_vector"), _example(rows, list(features.get("item", [])))
            ),
        }
    served = [n for names in features.values() for n in names]
    return {PROGRAM_FILE: export_program(scorer, _example(rows, served))}


__all__ = ["MAX_BATCH", "export_program", "export_programs"]
