"""qat.py in-process: its export (the QAT network as the int8 IR convert_model makes of it), and the time
NNCF is given to build its CPU extension."""

from __future__ import annotations

import os

import nncf
import openvino
import torch

from model_store import ModelSpec
from model_store.architecture import as_arrays, build_network, from_spec
from model_store.training import qat


def test_export_is_the_ir_convert_models_own_tracing_makes_byte_for_byte(tmp_path):
    """export traces without torch's trace check (half the time): what it saves is what convert_model saves
    when it traces the network itself, as the script did before."""
    torch.manual_seed(8)
    spec = ModelSpec(num_layers=1)
    network = build_network(spec, as_arrays(from_spec(spec))).eval()
    images = torch.randn(4, 3, spec.input_size, spec.input_size)
    model = nncf.quantize(network, nncf.Dataset([images[i : i + 1] for i in range(4)]), subset_size=4)

    ours = qat.export(model, spec)
    theirs = openvino.convert_model(
        model, example_input=torch.zeros(1, 3, spec.input_size, spec.input_size), input=[(-1, 3, 32, 32)]
    )
    theirs.inputs[0].get_tensor().set_names({"images"})
    theirs.outputs[0].get_tensor().set_names({"logits"})
    theirs = qat.named_by_position(theirs)
    for name, graph in (("ours", ours), ("theirs", theirs)):
        openvino.save_model(graph, tmp_path / f"{name}.xml", compress_to_fp16=False)
    assert (tmp_path / "ours.xml").read_bytes() == (tmp_path / "theirs.xml").read_bytes()
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "theirs.bin").read_bytes()
    assert any(op.get_type_name() == "FakeQuantize" for op in ours.get_ops())


def test_nncf_is_given_ten_minutes_to_build_its_extension_on_a_slow_cpu():
    """Its 60 s default is near what the build takes on a slow CPU with the other core busy."""
    assert os.environ["NNCF_EXTENSION_LOAD_TIMEOUT"] == "600"
