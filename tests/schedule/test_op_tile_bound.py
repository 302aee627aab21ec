"""The tile planner's bound on the tiles of one op (``MAX_OP_TILES``) and the up-front check
that names the op a target's SRAM cannot tile within it: MobileOne-S1 200x136 on a 4 KiB SRAM
used to lower half a million commands per search variant for minutes (a new-user attack)."""

from __future__ import annotations

import math

import pytest

from tcc_compiler.errors import ScheduleError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.schedule.bounds import check_op_tiles
from tcc_compiler.schedule.tiling import MAX_OP_TILES, ConvGeom, fewest_tiles, plan_conv
from tcc_compiler.target import load_target
from tests.helpers.two_cores import conv_net

#: conv_net's second conv: 3x3, 128 -> 128 channels on 28x28.
GEOM = ConvGeom(28, 28, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 1)


def _tiles(g: ConvGeom, p) -> int:
    return math.ceil(g.oh / p.rows) * math.ceil(g.ow / p.cols) * math.ceil(g.o / p.ocb)


def test_plan_conv_refuses_more_than_max_op_tiles():
    t = load_target()
    fewest = fewest_tiles(GEOM, t, 4096)
    assert fewest is not None and fewest[0] > MAX_OP_TILES   # shapes fit, all tiny
    with pytest.raises(ScheduleError, match=f"in at most {MAX_OP_TILES} tiles"):
        plan_conv(GEOM, t, 4096)   # returned a plan of ~25,000 tiles before


@pytest.mark.parametrize("budget", [12000, 16384, 65536, 1 << 20])
def test_fewest_tiles_bounds_the_plan(budget):
    """The plan of a budget has at least ``fewest_tiles`` tiles, and at most MAX_OP_TILES."""
    t = load_target()
    n = fewest_tiles(GEOM, t, budget)[0]
    p = plan_conv(GEOM, t, budget)
    assert n <= _tiles(GEOM, p) <= MAX_OP_TILES


def test_check_names_the_op_and_why():
    t = load_target()
    g = import_onnx(conv_net())
    check_op_tiles(g, t.with_sram(1 << 20))   # fits: nothing raised
    with pytest.raises(ScheduleError) as info:
        check_op_tiles(g, t.with_sram(4096))
    msg = str(info.value)
    assert msg.startswith("layer '") and "in 4,096 bytes of SRAM" in msg
    assert f"more than the {MAX_OP_TILES:,} an op may take" in msg and "\n" not in msg
