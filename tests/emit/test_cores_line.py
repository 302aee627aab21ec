"""The ``--cores 2`` summary line (compile, inspect) as a user reads it: latency in ms beside
its cycles (as the line above it gives ms), every count with thousands separators (the
throughput printed ``1646 images/s`` beside ``1,350,472 cycles``), speed-ups said against
what (``1.77x one core's``, not a bare ``x1.77``), and no ``x1.00`` when one core is kept."""

from __future__ import annotations

from tcc_compiler.emit.report import cores_line

_SCHEDULE = "npu_cmd_stream.bin: 8 images per run, 4 per core"


def _cores(kept: str, cores: int, latency: int, split: int | None) -> dict:
    """A report's ``cores`` object at the 1 GHz clock (cycles = ns)."""
    period = 607_430
    return {"cores": cores, "requested": 2, "kept": kept, "latency_cycles": latency,
            "latency_ms": latency / 1e6, "stream_period_cycles": period,
            "stream_images_per_s": 1e9 / period, "stream_schedule": _SCHEDULE,
            "estimates": {"single_core_cycles": 1_350_472, "spatial_latency_cycles": split},
            "per_core": [{"core": k, "utilisation": u}
                         for k, u in enumerate([0.81, 0.79][:cores])]}


def test_split_kept():
    line = cores_line(_cores("spatial split", 2, 761_318, 761_318))
    assert line == ("2 cores: kept spatial split; latency 761.3 µs = 761,318 cycles (1.77x one "
                    "core's 1,350,472); stream 1,646 images/s, 2.22x one core's 740 "
                    f"({_SCHEDULE}); utilisation core 0 81%, core 1 79%")


def test_one_core_kept_names_the_split_it_beat():
    line = cores_line(_cores("one core (faster)", 1, 1_350_472, 1_386_769), "npu_0: ")
    assert line.startswith("npu_0: 2 cores: kept one core (faster); latency 1.35 ms = "
                           "1,350,472 cycles (split over both 1,386,769); stream 1,646 "
                           "images/s"), line
    assert "x1.00" not in line and "1.00x" not in line
    assert "no split fits" in cores_line(_cores("one core (faster)", 1, 1_350_472, None))


def test_one_core_compile_has_no_line():
    assert cores_line(None) is None
    assert cores_line({"cores": 1, "estimates": {}}) is None


def test_one_core_kept_says_why():
    """A tie between the split and one core was reported as "one core (faster)" (yolov8n 160x96
    --cores 2: "latency 385,935 cycles (split over both 385,935)")."""
    from tcc_compiler.schedule.lower import one_core_kept
    assert one_core_kept(385_935, 385_935) == "one core (a split is no faster)"
    assert one_core_kept(385_936, 385_935) == "one core (faster)"
    assert one_core_kept(None, 385_935) == "one core (no split fits)"
