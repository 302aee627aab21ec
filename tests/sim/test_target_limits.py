"""The executor is built from a target and refuses a program that exceeds it (SRAM capacity,
image mode, array input lanes) before running anything; the target's manifest form
(``Target.to_dict`` / ``from_dict``) round-trips and rejects bad fields by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcc_compiler.binfmt import read_cmd_file, write_cmd_file
from tcc_compiler.errors import ExecutionError, FormatError, InputError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.sim import Executor
from tcc_compiler.sim.limits import check_program, sram_extents
from tcc_compiler.target import Target, load_target

SRAM = 1 << 14
TGT = load_target().with_sram(SRAM)


def _program(cmds, peak: int = SRAM, path: str = "prog/npu_cmd.bin"):
    return read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=peak,
                                        act_arena_bytes=0, input_bytes=64, output_bytes=64,
                                        tool_version="t"), path)


def _load(sram: int, nbytes: int) -> C.DmaLoad:
    return C.DmaLoad(dram_address(Region.INPUT, 0), sram, nbytes, 1, 1, 0, 0, 0, 0)


def _image_conv(kw: int = 7, cin_g: int = 3) -> list:
    """CONV_CFG (image mode) + one CONV_TILE of a kw x kw x cin_g -> 8 conv on a 7 x 7 tile."""
    cfg = C.ConvCfg(kw, kw, 1, 1, 1, 1, 0, spec.CONV_FLAG_IMAGE, 1, cin_g, 0, 0, 0, -128, 127)
    tile = C.ConvTile(0, 0x400, 0x1000, 0x1100, 0, kw, kw, cin_g, 8, 1, 1, 0, 0, 0, 0)
    return [cfg, tile]


def test_program_within_the_target_is_accepted():
    ex = Executor(_program([_load(SRAM - 64, 64)]), None, TGT)
    assert ex.target is TGT
    assert ex.run(bytes(64)) == bytes(64)


def test_sram_operand_beyond_capacity_is_refused_before_running():
    cmd = _program([_load(0, 64), _load(SRAM - 32, 64)])
    with pytest.raises(ExecutionError) as exc:
        Executor(cmd, None, TGT)
    msg = str(exc.value)
    assert msg.startswith("prog/npu_cmd.bin: command 1 (DMA_LOAD): sram range 0x3fe0-0x4020 "
                          "(transfer) outside the target's SRAM")
    assert f"sram_capacity_bytes = {SRAM}" in msg and "\n" not in msg
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("cmd, what", [
    (C.DmaLoadZ(dram_address(Region.WEIGHTS, 0), SRAM - 8, 4, 16), "destination"),
    (C.AddTile(0, SRAM - 4, 0, 8), "b"),
    (C.PoolTile(0, SRAM - 2, 2, 2, 4, 1, 1, 0, 0, 0, 0), "output"),
])
def test_every_command_kind_is_checked(cmd, what):
    cfg = [C.PoolCfg(0, 2, 2, 2, 2, 0, 0, 1, 1)] if isinstance(cmd, C.PoolTile) else []
    with pytest.raises(ExecutionError, match=rf"command {len(cfg)} \({cmd.name}\): sram range "
                                             rf".* \({what}\) outside the target's SRAM"):
        check_program(_program(cfg + [cmd]), TGT)


def test_conv_tile_operands_use_the_configuration():
    cfg, tile = _image_conv()
    ranges = dict((w, (a, b)) for w, a, b in sram_extents(tile, C.Registers(conv=cfg)))
    assert ranges == {"input": (0, 7 * 7 * 3), "weights": (0x400, 0x400 + 8 * 7 * 7 * 3),
                      "params": (0x1000, 0x1000 + 8 * 16), "output": (0x1100, 0x1108)}


def test_header_peak_beyond_capacity_is_refused():
    with pytest.raises(ExecutionError, match=r"npu_cmd.bin: header field sram_peak_bytes = "
                                             rf"{SRAM + 64} exceeds the target's SRAM"):
        Executor(_program([_load(0, 64)], peak=SRAM + 64), None, TGT)


def test_image_mode_wider_than_the_array_is_refused():
    cmd = _program(_image_conv())                 # 7 * 3 = 21 lanes
    check_program(cmd, TGT)                       # tcc750x: 32 lanes, image mode
    narrow = dataclasses.replace(TGT, array_in_channels=16, macs_per_cycle=16 * 64)
    with pytest.raises(ExecutionError, match=r"command 1 \(CONV_TILE\): image mode packs "
                                             r"kw \* cin_g = 7 \* 3 = 21 values per input "
                                             r"vector, target tcc750x has array_in_channels "
                                             r"= 16"):
        Executor(cmd, None, narrow)


def test_image_mode_on_a_target_without_it_is_refused():
    plain = dataclasses.replace(TGT, image_mode=False)
    with pytest.raises(ExecutionError, match=r"command 1 \(CONV_TILE\): image mode .*"
                                             r"compute\.image_mode = false"):
        check_program(_program(_image_conv()), plain)


# ---- Target <-> manifest dict --------------------------------------------------------------

def test_to_dict_records_every_field_and_round_trips():
    t = load_target()
    d = t.to_dict()
    # int16_rate_divisor is recorded only when it is not its default 2 (older manifests,
    # written before mixed precision, keep their hash), depthwise_accumulate_cycles only when
    # it is not 1 (manifests written before the depthwise accumulate mode)
    hw = {f.name for f in dataclasses.fields(Target)} - {"source", "int16_rate_divisor",
                                                          "depthwise_accumulate_cycles"}
    assert t.int16_rate_divisor == 2 and t.depthwise_accumulate_cycles == 1
    assert set(d) == hw | {"sha256"}
    assert dataclasses.replace(t, int16_rate_divisor=3).to_dict()["int16_rate_divisor"] == 3
    d2 = dataclasses.replace(t, depthwise_accumulate_cycles=2).to_dict()
    assert d2["depthwise_accumulate_cycles"] == 2
    assert Target.from_dict(d2).depthwise_accumulate_cycles == 2
    back = Target.from_dict(d)
    assert back == dataclasses.replace(t, source="")
    assert back.to_dict() == d
    assert d["sha256"] != t.with_sram(1 << 20).to_dict()["sha256"]


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.pop("clock_hz"), "target.clock_hz: expected a positive integer, got None"),
    (lambda d: d.update(sram_capacity_bytes=-1), "target.sram_capacity_bytes"),
    (lambda d: d.update(array_in_channels=True), "target.array_in_channels"),
    (lambda d: d.update(image_mode=1), "target.image_mode: expected true or false"),
    (lambda d: d.update(name=""), "target.name"),
    (lambda d: d.update(macs_per_cycle=7), "target.macs_per_cycle: must equal"),
    (lambda d: d.update(sha256="0" * 64), "target.sha256"),
    (lambda d: d.update(vector_lanes=32), "target.sha256: .* does not match"),
])
def test_from_dict_names_the_bad_field(edit, field):
    d = load_target().to_dict()
    edit(d)
    with pytest.raises(FormatError, match=field):
        Target.from_dict(d)


def test_from_dict_rejects_a_non_object():
    with pytest.raises(FormatError, match="target: expected an object, got list"):
        Target.from_dict([])


def test_target_file_accepts_the_old_sram_key(tmp_path):
    text = Path(load_target().source).read_text()
    old = tmp_path / "old.toml"
    old.write_text(text.replace("sram_capacity_bytes =", "sram_bytes ="))
    assert load_target(str(old)).sram_capacity_bytes == 2 * 1024 * 1024
    both = tmp_path / "both.toml"
    both.write_text(text.replace("sram_capacity_bytes = 2_097_152",
                                 "sram_capacity_bytes = 2_097_152\nsram_bytes = 1024"))
    with pytest.raises(InputError, match="both sram_capacity_bytes and its old name"):
        load_target(str(both))
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("vector_lanes = 64", "vector_lanes = 0"))
    with pytest.raises(InputError, match=r"bad.toml: \[compute\] vector_lanes: expected a "
                                         r"positive integer, got 0"):
        load_target(str(bad))
