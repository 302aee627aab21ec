"""Load and validate a target description (``specs/targets/<name>.toml``).

The default target ships inside the package (``tcc_compiler/target/targets`` is the
``specs/targets`` folder). All hardware numbers the compiler, cost model and reference executor
use come from a :class:`Target`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from tcc_compiler.errors import InputError

_TARGET_DIR = Path(__file__).resolve().parent / "targets"
DEFAULT_TARGET = "tcc750x"


@dataclass(frozen=True)
class Target:
    """A modelled NPU.

    Attributes:
        name: target name.
        macs_per_cycle: int8 MACs per cycle of the MAC array.
        array_in_channels, array_out_channels: MAC array shape (input x output channels).
        clock_hz: NPU clock (Hz).
        vector_lanes: int8 lanes per cycle of the element-wise/pooling datapath.
        compute_setup_cycles: fixed cycles per compute command.
        sram_bytes: on-chip SRAM size (bytes).
        sram_align_bytes: SRAM buffer alignment (bytes).
        dram_bandwidth_bytes_per_s: DRAM bandwidth (bytes/s).
        dma_setup_cycles: fixed cycles per DMA command.
        dram_align_bytes: DRAM buffer alignment (bytes).
        decompress_bytes_per_cycle: output bytes per cycle of the weight decompressor that
            DMA_LOAD_Z runs through (optional key ``memory.decompress_bytes_per_cycle``,
            default 16).
        image_mode: the MAC array accepts "image mode" convs (CONV_CFG flags bit1): the kw taps
            x cin_g channels of one kernel row form one input vector when kw * cin_g <=
            array_in_channels (optional key ``compute.image_mode``, default false).
        source: file the target was read from.
    """

    name: str
    macs_per_cycle: int
    array_in_channels: int
    array_out_channels: int
    clock_hz: int
    vector_lanes: int
    compute_setup_cycles: int
    sram_bytes: int
    sram_align_bytes: int
    dram_bandwidth_bytes_per_s: int
    dma_setup_cycles: int
    dram_align_bytes: int
    decompress_bytes_per_cycle: int = 16
    image_mode: bool = False
    source: str = ""

    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bandwidth expressed in bytes per NPU clock cycle."""
        return self.dram_bandwidth_bytes_per_s / self.clock_hz

    def with_sram(self, sram_bytes: int) -> "Target":
        """A copy of this target with another SRAM size (bytes)."""
        return replace(self, sram_bytes=int(sram_bytes))


_FIELDS = {
    "compute": ["macs_per_cycle", "array_in_channels", "array_out_channels", "clock_hz",
                "vector_lanes", "compute_setup_cycles"],
    "memory": ["sram_bytes", "sram_align_bytes", "dram_bandwidth_bytes_per_s",
               "dma_setup_cycles", "dram_align_bytes"],
}


def load_target(name_or_path: str | None = None) -> Target:
    """Load a target by name (a file in the packaged ``targets`` folder) or by .toml path.

    Raises:
        InputError: the file is missing, not TOML, or lacks/mistypes a field.
    """
    spec = name_or_path or DEFAULT_TARGET
    path = Path(spec)
    if not spec.endswith(".toml"):
        path = _TARGET_DIR / f"{spec}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in _TARGET_DIR.glob("*.toml"))
            raise InputError(f"unknown target '{spec}' (known: {', '.join(known)}; "
                             "or pass a .toml file)")
    if not path.is_file():
        raise InputError(f"{path}: target file not found")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML target description ({exc})") from None
    values = {}
    for section, keys in _FIELDS.items():
        table = data.get(section, {})
        for key in keys:
            v = table.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise InputError(f"{path}: [{section}] {key} must be a positive integer")
            values[key] = v
    if values["macs_per_cycle"] != values["array_in_channels"] * values["array_out_channels"]:
        raise InputError(f"{path}: macs_per_cycle must equal array_in_channels x "
                         "array_out_channels")
    image_mode = data.get("compute", {}).get("image_mode", False)
    if not isinstance(image_mode, bool):
        raise InputError(f"{path}: [compute] image_mode must be true or false")
    dec = data.get("memory", {}).get("decompress_bytes_per_cycle", 16)
    if not isinstance(dec, int) or isinstance(dec, bool) or dec <= 0:
        raise InputError(f"{path}: [memory] decompress_bytes_per_cycle must be a positive "
                         "integer")
    values["decompress_bytes_per_cycle"] = dec
    name = data.get("target", {}).get("name", path.stem)
    return Target(name=str(name), source=str(path), image_mode=image_mode, **values)
