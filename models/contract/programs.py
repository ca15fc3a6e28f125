"""Loading and running the ``torch.export`` programs of an artifact (format ``export``).

An ``export`` artifact stores its light net as ``torch.export.save`` archives (``.pt2``,
see ``models.contract.manifest``): ``model.pt2`` for an MLP; ``user_vector.pt2`` and
``item_vector.pt2`` for a two-tower net, whose logit is their dot product. Each program
takes ``features: dict[str, Tensor]`` with a dynamic batch dimension.

What "never unpickled" means here. ``torch.export.load`` (torch 2.13) is *not* a safe
loader on its own: it unpickles tensor subclasses and custom objects stored in the
archive (``torch.load(weights_only=False)``, ``pickle.loads``), reads the sample inputs
with ``torch.load(weights_only=True)`` and falls back to ``weights_only=False`` when
that fails, and parses symbolic shape expressions with sympy. So, besides the manifest
signature and the checksums that :func:`models.contract.artifact.load_artifact` checks
first, :func:`check_archive` reads the zip's directory and its two JSON payload
configurations and refuses, before ``torch.export.load`` sees a byte, any archive with
a member outside the layout ``torch.export.save`` writes, a pickled weight or constant,
a custom or opaque object, or non-empty sample inputs (the exporter stores none). On
what passes, ``torch.export.load`` calls neither ``torch.load`` nor ``pickle``
(``tests/models/contract/test_programs.py`` proves it with both replaced by a trap).
After loading, :class:`ProgramRunner` refuses a graph that calls anything but ATen
operators (and ``operator`` arithmetic on sizes), calls an operator that writes to a
tensor (an in-place update of a weight or an input), or has more than one output.

Running. ``ExportedProgram.module()`` wraps the graph in pytree flattening and
Python guard checks that cost more than the light net itself at serving sizes (see
docs/BENCHMARKS.md). :class:`ProgramRunner` instead calls the program's own graph with
its weights as leading arguments and the features in the program's input order, after
checking each feature's dtype (what the dropped ``_assert_tensor_metadata`` nodes
checked), and without the nodes that return their input unchanged (a ``reshape`` to
``[-1]`` of a 1-D feature, a ``to`` the dtype it already has); every other node is the
program's. Both cut the per-request cost by a fifth (docs/BENCHMARKS.md). Note that
``ExportedProgram.module()`` also matches a dict's entries by position, so a caller
must keep the export's key order; the runner looks features up by name.
"""

from __future__ import annotations

import copy
import io
import json
import operator
import re
import zipfile
from collections.abc import Mapping

import torch
from torch import Tensor
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils import _pytree as pytree

from models.contract.manifest import (
    ITEM_PROGRAM_FILE,
    PROGRAM_FILE,
    USER_PROGRAM_FILE,
    ArtifactError,
)

# The members torch.export.save (torch 2.13) writes for one program named "model".
_ALLOWED_MEMBER = re.compile(
    r"^[^/]+/("
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
    r"models/model\.json|data/sample_inputs/model\.pt|"
    r"data/weights/model_weights_config\.json|data/weights/weight_\d+|"
    r"data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r")$"
)
_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_MAX_CONFIG_BYTES = 16 * 1024 * 1024
_LIFTED = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
# Runtime checks the runner replaces by its own dtype check (they have no outputs).
_DROPPED = (torch.ops.aten._assert_tensor_metadata.default,)


def check_archive(where: str, fname: str, data: bytes) -> None:
    """Refuse a ``.pt2`` archive that ``torch.export.load`` would unpickle anything from.

    Raises:
        ArtifactError: naming the file and the offending member.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ArtifactError(f"{where}: {fname} is not a torch.export archive: {exc}") from None
    names = {m.filename.split("/", 1)[-1]: m for m in members}
    for member in members:
        if not _ALLOWED_MEMBER.match(member.filename):
            raise ArtifactError(f"{where}: {fname} holds an unexpected member {member.filename!r}")
    for required in ("models/model.json", _WEIGHTS_CONFIG, _CONSTANTS_CONFIG):
        if required not in names:
            raise ArtifactError(f"{where}: {fname} lacks {required}")
    sample = names.get(_SAMPLE_INPUTS)
    if sample is not None and sample.file_size != 0:
        raise ArtifactError(f"{where}: {fname} holds pickled sample inputs; refused")
    for config_name, prefix in ((_WEIGHTS_CONFIG, "weight_"), (_CONSTANTS_CONFIG, "tensor_")):
        member = names[config_name]
        if member.file_size > _MAX_CONFIG_BYTES:
            raise ArtifactError(f"{where}: {fname}: {config_name} is over 16 MiB")
        try:
            config = json.loads(archive.read(member))["config"]
            entries = list(config.items())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{where}: {fname}: {config_name} is invalid: {exc}") from None
        for key, entry in entries:
            path = entry.get("path_name") if isinstance(entry, Mapping) else None
            if (
                not isinstance(path, str)
                or not re.fullmatch(prefix + r"\d+", path)
                or entry.get("use_pickle") is not False
            ):
                raise ArtifactError(
                    f"{where}: {fname}: {key!r} is not a plain tensor payload "
                    "(pickled tensors and custom objects are refused)"
                )


def _is_identity(node: torch.fx.Node) -> bool:
    """A node that returns its input unchanged: ``reshape(x, [-1])`` of a 1-D ``x`` or
    ``x.to(dtype)`` of an ``x`` already of that dtype (ATen returns ``x`` itself or a
    view of all of it). The exporter writes one per feature; each costs a Python call."""
    if node.op != "call_function" or node.kwargs or len(node.args) != 2:
        return False
    source, arg = node.args
    val = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
    if not isinstance(val, Tensor):
        return False
    aten = torch.ops.aten
    if node.target is aten.reshape.default:
        return list(arg) == [-1] and val.dim() == 1
    return node.target is aten.to.dtype and arg == val.dtype


def _check_node(where: str, node: torch.fx.Node) -> None:
    """ATen operators that write nothing, and ``operator`` arithmetic on sizes, only."""
    if node.op in ("placeholder", "output"):
        return
    target = node.target
    aten = isinstance(target, torch._ops.OpOverload) and target.namespace == "aten"
    name = getattr(target, "__name__", "")
    size_arithmetic = callable(target) and getattr(operator, name, None) is target
    if node.op != "call_function" or not (aten or size_arithmetic):
        raise ArtifactError(f"{where}: the program calls {node.op} {target!r}, not an ATen op")
    if aten and target._schema.is_mutable:
        # the graph keeps in-place ops: one would change the weights between requests
        raise ArtifactError(f"{where}: the program mutates a tensor ({target})")


class ProgramRunner:
    """One exported program, callable on ``features: dict[str, Tensor]``.

    Args:
        program: a loaded ``ExportedProgram`` whose ``forward(features)`` returns one tensor.
        where: ``artifact DIR: FILE`` for error messages.

    Shapes: ``__call__({name: [B, ...]}) -> [B, ...]`` (``[B]`` logits or ``[B, d]`` vectors).

    Raises:
        ArtifactError: the program's signature or graph is not one the service runs.
    """

    def __init__(self, program: torch.export.ExportedProgram, where: str) -> None:
        signature = program.graph_signature
        outputs = signature.output_specs
        if len(outputs) != 1 or outputs[0].kind is not OutputKind.USER_OUTPUT:
            kinds = [o.kind.name for o in outputs]
            raise ArtifactError(f"{where}: expected one output and no mutations, got {kinds}")
        state = {**program.state_dict, **program.constants}
        lifted: list[Tensor] = []
        for spec in signature.input_specs:
            if spec.kind in _LIFTED:
                lifted.append(state[spec.target].detach())
            elif spec.kind is not InputKind.USER_INPUT:
                raise ArtifactError(f"{where}: unsupported program input {spec.kind.name}")
        user = [s for s in signature.input_specs if s.kind is InputKind.USER_INPUT]
        try:
            (args, kwargs) = pytree.tree_unflatten(
                list(range(len(user))), program.call_spec.in_spec
            )
            (positions,) = args
            assert not kwargs and isinstance(positions, dict)
        except (AssertionError, TypeError, ValueError):
            raise ArtifactError(f"{where}: the program must take one dict of tensors") from None
        graph = copy.deepcopy(program.graph_module)
        placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
        by_position = {i: placeholders[len(lifted) + i] for i in range(len(user))}
        for node in list(graph.graph.nodes):
            _check_node(where, node)
            if node.op == "call_function" and node.target in _DROPPED and not node.users:
                graph.graph.erase_node(node)
            elif _is_identity(node):
                node.replace_all_uses_with(node.args[0])
                graph.graph.erase_node(node)
        graph.recompile()
        self.names: list[str] = sorted(positions, key=positions.__getitem__)
        self.dtypes = [by_position[positions[n]].meta["val"].dtype for n in self.names]
        self._lifted = lifted
        self._forward = graph.forward

    def __call__(self, features: Mapping[str, Tensor]) -> Tensor:
        inputs = []
        for name, dtype in zip(self.names, self.dtypes, strict=True):
            tensor = features[name]
            if tensor.dtype != dtype:
                raise ValueError(f"feature {name!r}: expected {dtype}, got {tensor.dtype}")
            inputs.append(tensor)
        return self._forward(*self._lifted, *inputs)[0]


class ExportedScorer:
    """The light net of an ``export`` artifact, with the TorchScript module's interface.

    ``forward(features) -> Tensor[B]`` logits; two-tower scorers also have
    ``user_vector(features) -> Tensor[B, d]`` and ``item_vector(features) -> Tensor[N, d]``
    (scale applied), and their ``forward`` is ``(user_vector · item_vector)`` row by row,
    which the exporter's parity check compares with the trained model's logits.
    """

    def __init__(self, kind: str, programs: Mapping[str, ProgramRunner]) -> None:
        self.kind = kind
        self.programs = dict(programs)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        if self.kind == "mlp":
            return self.programs[PROGRAM_FILE](features)
        return (self.user_vector(features) * self.item_vector(features)).sum(dim=1)

    __call__ = forward

    def user_vector(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.programs[USER_PROGRAM_FILE](features)

    def item_vector(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.programs[ITEM_PROGRAM_FILE](features)


def load_program(where: str, fname: str, data: bytes) -> ProgramRunner:
    """Check and load one ``.pt2`` archive (the verified bytes of ``fname``).

    Raises:
        ArtifactError: the archive is refused or does not load.
    """
    check_archive(where, fname, data)
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # torch raises many kinds for a bad archive
        raise ArtifactError(
            f"{where}: {fname} is not a loadable torch.export program: {exc}"
        ) from exc
    return ProgramRunner(program, f"{where}: {fname}")


def load_scorer(where: str, kind: str, files: Mapping[str, bytes]) -> ExportedScorer:
    """The :class:`ExportedScorer` of a ``kind`` artifact from its program files' bytes."""
    return ExportedScorer(kind, {f: load_program(where, f, data) for f, data in files.items()})


__all__ = ["ExportedScorer", "ProgramRunner", "check_archive", "load_program", "load_scorer"]
