"""Load and validate a target description (``specs/targets/<name>.toml``).

The default target ships inside the package (``tcc_compiler/target/targets`` is the
``specs/targets`` folder). All hardware numbers the compiler, cost model and reference executor
use come from a :class:`Target`. :meth:`Target.to_dict` / :meth:`Target.from_dict` carry the whole
target through ``manifest.json`` (key ``target``), so a compiled program runs against the
machine it was compiled for, not the default one.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tcc_compiler.errors import FormatError, InputError

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
        sram_capacity_bytes: size of the on-chip SRAM (bytes): every SRAM operand of every
            command must lie in ``[0, sram_capacity_bytes)``. (A program's *peak* use is
            ``sram_peak_bytes`` in ``npu_cmd.bin``.)
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
        depthwise_mode: the NPU has a depthwise datapath (CONV_CFG flags bit2): a conv with one
            input and one output channel per group runs on it instead of the MAC array
            (optional key ``compute.depthwise_mode``, default false).
        depthwise_channels_per_cycle: channels the depthwise datapath works on per cycle
            (optional key, default 64).
        depthwise_taps_per_cycle: kernel taps per channel per cycle of the depthwise datapath
            (optional key, default 9: one 3x3 window).
        depthwise_max_kernel: largest kernel height/width of depthwise mode (default 5).
        depthwise_max_stride: largest stride of depthwise mode (default 2); its dilation is 1.
        depthwise_accumulate_cycles: an ASSUMPTION: cycles per output pixel and channel pass
            a depthwise tile in accumulate mode (CONV_CFG out_mode bit1: a part of a kernel
            larger than ``depthwise_max_kernel``) spends loading its int32 partial sums into
            the accumulators before its taps, not overlapped with them (optional key, default
            1: one 64-lane int32 vector per cycle; recorded only when not the default).
        int16_rate_divisor: an ASSUMPTION: a compute tile with int16 activations (mixed
            precision) takes this many times the cycles of the same int8 tile, on the MAC
            array, the depthwise datapath and the vector unit alike (optional key
            ``compute.int16_rate_divisor``, default 2: 16x8-bit products from pairs of 8x8
            multipliers, 16-bit lanes from pairs of 8-bit lanes).
        cores: NPU cores (optional key ``compute.cores``, default 1). Each core has the
            MAC array, vector unit, depthwise datapath, three queues and an SRAM of
            ``sram_capacity_bytes`` of its own; the DRAM and its ``dram_bandwidth_bytes_per_s``
            are shared (an ASSUMPTION: while DMA transfers of both cores are in flight, each
            core's transfers get half the bandwidth; schedule/cores.py, specs/target.md).
        sem_latency_cycles: an ASSUMPTION: cycles from a core's SEM_SIGNAL finishing to a
            SEM_WAIT on another core seeing the counter move (optional key
            ``compute.sem_latency_cycles``, default 100; recorded only when ``cores`` > 1).
        source: file the target was read from ("" when built in code or from a manifest).
    """

    name: str
    macs_per_cycle: int
    array_in_channels: int
    array_out_channels: int
    clock_hz: int
    vector_lanes: int
    compute_setup_cycles: int
    sram_capacity_bytes: int
    sram_align_bytes: int
    dram_bandwidth_bytes_per_s: int
    dma_setup_cycles: int
    dram_align_bytes: int
    decompress_bytes_per_cycle: int = 16
    image_mode: bool = False
    depthwise_mode: bool = False
    depthwise_channels_per_cycle: int = 64
    depthwise_taps_per_cycle: int = 9
    depthwise_max_kernel: int = 5
    depthwise_max_stride: int = 2
    depthwise_accumulate_cycles: int = 1
    int16_rate_divisor: int = 2
    cores: int = 1
    sem_latency_cycles: int = 100
    source: str = ""

    @property
    def depthwise_macs_per_cycle(self) -> int:
        """Peak int8 MACs per cycle of the depthwise datapath (channels x taps); 0 without
        depthwise mode."""
        if not self.depthwise_mode:
            return 0
        return self.depthwise_channels_per_cycle * self.depthwise_taps_per_cycle

    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bandwidth expressed in bytes per NPU clock cycle."""
        return self.dram_bandwidth_bytes_per_s / self.clock_hz

    def with_sram(self, sram_capacity_bytes: int) -> "Target":
        """A copy of this target with another SRAM capacity (bytes)."""
        return replace(self, sram_capacity_bytes=int(sram_capacity_bytes))

    def to_dict(self) -> dict[str, Any]:
        """The whole target as a JSON-ready dict (the manifest's ``target`` object).

        Keys: ``name``, every hardware field of :class:`Target` (integers, ``image_mode`` a
        bool) and ``sha256``, the hex SHA-256 of :meth:`canonical_json` (identifies the machine
        independently of the file's comments and path; ``source`` is not recorded).
        """
        d = self._recorded()
        return {"name": self.name, **d, "sha256": hashlib.sha256(
            self.canonical_json().encode()).hexdigest()}

    def canonical_json(self) -> str:
        """Canonical serialisation the ``sha256`` of :meth:`to_dict` hashes: compact JSON,
        sorted keys, of ``name`` and every hardware field."""
        d = {"name": self.name, **self._recorded()}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def _recorded(self) -> dict[str, Any]:
        """Field -> value of the hardware fields; a target without depthwise mode records no
        ``depthwise_*`` field (so it reads and hashes as targets did before the datapath
        existed, and manifests written then still load); likewise ``int16_rate_divisor`` is
        recorded only when it is not the default 2, ``cores`` only when it is not 1 and
        ``depthwise_accumulate_cycles`` only when it is not 1."""
        return {f: getattr(self, f) for f in _RECORDED
                if (self.depthwise_mode or not f.startswith("depthwise_"))
                and (f not in ("int16_rate_divisor", "cores", "depthwise_accumulate_cycles")
                     or getattr(self, f) != _OPTIONAL[f])
                and (f != "sem_latency_cycles" or self.cores > 1)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "target") -> "Target":
        """Rebuild a target from :meth:`to_dict` output (e.g. a manifest's ``target``).

        Args:
            data: the parsed JSON object (any type: it is checked).
            where: prefix of field names in messages (``target`` -> ``target.clock_hz``).

        Raises:
            FormatError: ``data`` is not an object, a field is missing or mistyped, the values
                are inconsistent (``macs_per_cycle`` != in x out channels), or ``sha256``
                does not match the fields; the message names the field, e.g.
                ``target.sram_capacity_bytes: expected a positive integer, got None``.
        """
        if not isinstance(data, dict):
            raise FormatError(f"{where}: expected an object, got {type(data).__name__}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise FormatError(f"{where}.name: expected a non-empty string, got {name!r}")
        optional = ("depthwise_", "int16_", "cores", "sem_")
        values = {f: data.get(f, _OPTIONAL[f]) if f.startswith(optional)
                  else data.get(f) for f in _RECORDED}
        problem = _check_values(values)
        if problem:
            key, msg = problem
            raise FormatError(f"{where}.{key}: {msg}")
        tgt = cls(name=name, **values)
        want = tgt.to_dict()["sha256"]
        if data.get("sha256") != want:
            raise FormatError(f"{where}.sha256: {data.get('sha256')!r} does not match the "
                              f"target's fields ({want}); edited by hand? recompile, or "
                              "recompute it with Target.to_dict()")
        return tgt


#: Hardware fields recorded by :meth:`Target.to_dict` (every field but ``name``/``source``).
_RECORDED = tuple(f.name for f in fields(Target) if f.name not in ("name", "source"))
#: TOML section of every integer field.
_FIELDS = {
    "compute": ["macs_per_cycle", "array_in_channels", "array_out_channels", "clock_hz",
                "vector_lanes", "compute_setup_cycles", "depthwise_channels_per_cycle",
                "depthwise_taps_per_cycle", "depthwise_max_kernel", "depthwise_max_stride",
                "depthwise_accumulate_cycles", "int16_rate_divisor", "cores", "sem_latency_cycles"],
    "memory": ["sram_capacity_bytes", "sram_align_bytes", "dram_bandwidth_bytes_per_s",
               "dma_setup_cycles", "dram_align_bytes", "decompress_bytes_per_cycle"],
}
#: Keys a target file may omit, with their defaults.
_OPTIONAL = {"decompress_bytes_per_cycle": 16, "image_mode": False, "depthwise_mode": False,
             "depthwise_channels_per_cycle": 64, "depthwise_taps_per_cycle": 9,
             "depthwise_max_kernel": 5, "depthwise_max_stride": 2,
             "depthwise_accumulate_cycles": 1, "int16_rate_divisor": 2,
             "cores": 1, "sem_latency_cycles": 100}
#: Boolean fields (TOML section ``compute``).
_BOOLS = ("image_mode", "depthwise_mode")
#: Largest ``memory.sram_capacity_bytes`` accepted (1 GiB, as a DRAM region): SRAM addresses
#: and sizes are 32-bit command and header fields (specs/isa.md), and the reference executor
#: allocates each core's whole SRAM per run (a 10**20-byte SRAM failed with exit 1 when the
#: first address did not fit its field, after the whole compile).
MAX_SRAM_BYTES = 1 << 30
#: Old spelling of ``memory.sram_capacity_bytes`` in target files, still accepted.
_LEGACY_SRAM_KEY = "sram_bytes"


def _check_values(values: dict[str, Any]) -> tuple[str, str] | None:
    """The first problem of a flat field -> value dict as (field, message); None when valid:
    every integer field a positive int (not bool), ``image_mode``/``depthwise_mode`` bools,
    ``macs_per_cycle == array_in_channels * array_out_channels``, ``sram_capacity_bytes`` at
    most :data:`MAX_SRAM_BYTES` and ``sram_align_bytes`` at most ``sram_capacity_bytes``."""
    for key in _FIELDS["compute"] + _FIELDS["memory"]:
        v = values.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            return key, f"expected a positive integer, got {v!r}"
    for key in _BOOLS:
        if not isinstance(values.get(key), bool):
            return key, f"expected true or false, got {values.get(key)!r}"
    if values["macs_per_cycle"] != values["array_in_channels"] * values["array_out_channels"]:
        return "macs_per_cycle", "must equal array_in_channels x array_out_channels"
    if values["sram_capacity_bytes"] > MAX_SRAM_BYTES:
        return "sram_capacity_bytes", (f"{values['sram_capacity_bytes']:,} exceeds the "
                                       f"{MAX_SRAM_BYTES:,} (2**30) tccc supports")
    if values["sram_align_bytes"] > values["sram_capacity_bytes"]:
        return "sram_align_bytes", (f"{values['sram_align_bytes']:,} exceeds "
                                    f"sram_capacity_bytes ({values['sram_capacity_bytes']:,})")
    return None


def _resolve(spec: str) -> Path:
    """The .toml file of a target name or path.

    Raises:
        InputError: unknown name or missing file.
    """
    path = Path(spec)
    if not spec.endswith(".toml"):
        path = _TARGET_DIR / f"{spec}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in _TARGET_DIR.glob("*.toml"))
            raise InputError(f"unknown target '{spec}' (known: {', '.join(known)}; "
                             "or pass a .toml file)")
    if not path.is_file():
        raise InputError(f"{path}: target file not found")
    return path


def _flatten(data: dict, path: Path) -> dict[str, Any]:
    """Field -> value of a parsed target file (optional keys defaulted; the legacy
    ``memory.sram_bytes`` accepted for ``memory.sram_capacity_bytes``).

    Raises:
        InputError: both SRAM spellings given.
    """
    values: dict[str, Any] = {}
    for section, keys in _FIELDS.items():
        table = data.get(section, {})
        for key in keys:
            values[key] = table.get(key, _OPTIONAL.get(key))
    memory = data.get("memory", {})
    if _LEGACY_SRAM_KEY in memory:
        if "sram_capacity_bytes" in memory:
            raise InputError(f"{path}: [memory] gives both sram_capacity_bytes and its old "
                             "name sram_bytes; keep sram_capacity_bytes")
        values["sram_capacity_bytes"] = memory[_LEGACY_SRAM_KEY]
    for key in _BOOLS:
        values[key] = data.get("compute", {}).get(key, _OPTIONAL[key])
    return values


def load_target(name_or_path: str | None = None) -> Target:
    """Load a target by name (a file in the packaged ``targets`` folder) or by .toml path.

    Raises:
        InputError: the file is missing, not TOML, or lacks/mistypes a field (the message
            names the file, the ``[section] key`` and what it must be).
    """
    path = _resolve(name_or_path or DEFAULT_TARGET)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML target description ({exc})") from None
    values = _flatten(data, path)
    problem = _check_values(values)
    if problem:
        key, msg = problem
        section = next((s for s, keys in _FIELDS.items() if key in keys), "compute")
        raise InputError(f"{path}: [{section}] {key}: {msg}")
    name = data.get("target", {}).get("name", path.stem)
    return Target(name=str(name), source=str(path), **values)
