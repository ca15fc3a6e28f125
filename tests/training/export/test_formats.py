"""Which artifact format an export writes: ``export`` for fp32 by default, TorchScript for
int8 (its tables dequantise on the first call), and no silent mix of the two."""

from __future__ import annotations

import pytest

from training.export.export import ExportError, ExportOptions


def test_fp32_defaults_to_torch_export_and_int8_to_torchscript():
    assert ExportOptions().format == "export"
    assert ExportOptions(quantize="int8").format == "torchscript"
    assert ExportOptions(format="torchscript").format == "torchscript"


def test_int8_as_a_torch_export_program_is_refused_with_the_fix():
    with pytest.raises(ExportError, match="--format torchscript"):
        ExportOptions(format="export", quantize="int8")


def test_an_unknown_format_is_refused_naming_the_supported_ones():
    with pytest.raises(ExportError, match=r"'aoti'.*\['export', 'torchscript'\]"):
        ExportOptions(format="aoti")
