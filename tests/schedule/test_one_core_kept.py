"""A ``--cores 2`` compile that keeps the one-core program keeps the ``--cores 1`` program:
the same search, exact waits included (schedule/lower.py ``lower_multi``)."""

from __future__ import annotations

import importlib

import tcc_compiler as tc
from tcc_compiler.schedule.cost import replay
from tcc_compiler.target import load_target

L = importlib.import_module("tcc_compiler.schedule.lower")


def test_kept_one_core_program_is_the_one_core_compile(tmp_path):
    """Before, lower_multi took search_parts's program, which skipped search's last step
    (loads moved up to exact waits): a --cores 2 folder of ResNet-18 200x136 saying "one core
    (faster)" ran 1,045,563 cycles, the --cores 1 folder 1,039,882 (found by the session-14
    attack)."""
    from tcc_compiler.api.models import build_zoo_model

    model = tmp_path / "r18.onnx"
    build_zoo_model("resnet18", model, "200x136x3")
    g = tc.compile(str(model), "200x136x3", weight_rounding="nearest",
                   bias_correction="off").quantized_graph
    t = load_target("tcc750x")
    one = L.lower(g, t, compress_weights=True, cores=1)
    two = L.lower(g, t, compress_weights=True, cores=2)
    assert two.cores == 1, two.estimates["kept"]
    assert two.commands == one.commands
    assert two.estimates["single_core_cycles"] == max(e for _, e in replay(one.commands, t))
