"""`zo-edge profile`: budgets against a device catalogue, the JSON schema, exit codes 0/3/2, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import assert_one_line_error, zo_edge
from zo_edge.devices import CORES, load_catalogue
from zo_edge.errors import ZoEdgeError

REQUIRED = ("stm32f746", "stm32h743", "stm32l4r5", "nrf52840", "rp2040")
CONFIGURATIONS = ("inference", "zo-fc", "fo")

GOOD = """
[devices.{key}]
name = "A test part"
core = "cortex-m4"
fpu = true
sram_bytes = {sram}
flash_bytes = {flash}
clock_hz = 48_000_000
source = "this test"
"""


@pytest.fixture(scope="module")
def run_dir(digits_run_dir):
    return digits_run_dir


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    path = tmp_path_factory.mktemp("devices") / "mine.toml"
    path.write_text(GOOD.format(key="tiny", sram=1024, flash=2048) + GOOD.format(key="huge", sram=1 << 30, flash=1 << 30))
    return path


def test_bundled_catalogue_has_the_required_parts_each_with_a_source():
    devices = load_catalogue()
    for key in REQUIRED:
        assert key in devices, key
    assert any(key.startswith("apollo") for key in devices)
    for key, dev in devices.items():
        assert dev.source.strip(), key
        assert dev.core in CORES
        assert dev.sram_bytes > 0 and dev.flash_bytes > 0 and dev.clock_hz > 0
    # the well-known headline figures
    assert (devices["stm32f746"].sram_bytes, devices["stm32f746"].flash_bytes) == (320 << 10, 1 << 20)
    assert (devices["nrf52840"].sram_bytes, devices["nrf52840"].flash_bytes, devices["nrf52840"].clock_hz) == \
        (256 << 10, 1 << 20, 64_000_000)
    assert devices["rp2040"].sram_bytes == 264 << 10 and devices["rp2040"].core == "cortex-m0plus"
    assert not devices["rp2040"].fpu


def test_user_catalogue_adds_devices_and_overrides_fields(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GOOD.format(key="my-board", sram=4096, flash=8192) + "\n[devices.nrf52840]\nflash_bytes = 868_352\n")
    devices = load_catalogue(extra=path)
    assert devices["my-board"].sram_bytes == 4096
    assert devices["nrf52840"].flash_bytes == 868_352 and devices["nrf52840"].sram_bytes == 256 << 10
    assert set(load_catalogue()) < set(devices)


@pytest.mark.parametrize("entry, field", [
    ({"sram_bytes": None}, "sram_bytes"),  # missing
    ({"flash_bytes": "-5"}, "flash_bytes"),  # negative
    ({"clock_hz": "48.5e6"}, "clock_hz"),  # not an integer
    ({"sram_bytes": '"256 KiB"'}, "sram_bytes"),  # not an integer
    ({"core": '"cortex-a53"'}, "core"),  # no such core
    ({"fpu": '"yes"'}, "fpu"),
    ({"source": None}, "source"),
])
def test_malformed_entry_names_file_device_and_field(tmp_path, entry, field):
    lines = {"name": '"Broken"', "core": '"cortex-m4"', "fpu": "true", "sram_bytes": "1024", "flash_bytes": "2048",
             "clock_hz": "1000000", "source": '"here"'}
    lines.update(entry)
    path = tmp_path / "broken.toml"
    path.write_text("[devices.broken]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None))
    with pytest.raises(ZoEdgeError) as exc:
        load_catalogue(extra=path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message and "'broken'" in message and repr(field) in message, message


def test_json_has_device_and_every_configuration(run_dir):
    result = zo_edge("profile", run_dir, "--device", "nrf52840", "--method", "all", "--json")
    assert result.returncode in (0, 3), result.stderr
    report = json.loads(result.stdout)
    device = report["device"]
    assert {"name", "core", "sram_bytes", "flash_bytes", "clock_hz", "source"} <= set(device)
    assert device["sram_bytes"] == 256 << 10 and device["core"] == "cortex-m4"
    configs = report["configurations"]
    assert set(configs) == set(CONFIGURATIONS)
    for name, entry in configs.items():
        assert isinstance(entry["ram_bytes"], int) and entry["ram_bytes"] > 0, name
        assert isinstance(entry["flash_bytes"], int) and entry["flash_bytes"] > 0, name
        comps = entry["components"]
        assert comps["ram"] and comps["flash"]
        assert all(isinstance(v, int) and v >= 0 for part in comps.values() for v in part.values())
        assert entry["ram_bytes"] == sum(comps["ram"].values())
        assert entry["flash_bytes"] == sum(comps["flash"].values())
        assert entry["fits"] == (entry["ram_bytes"] <= device["sram_bytes"] and entry["flash_bytes"] <= device["flash_bytes"])
        assert entry["ram_headroom_bytes"] == device["sram_bytes"] - entry["ram_bytes"]
    # training needs RAM beyond inference
    assert configs["zo-fc"]["ram_bytes"] > configs["inference"]["ram_bytes"]
    assert configs["fo"]["ram_bytes"] > configs["inference"]["ram_bytes"]
    assert report["selected"] == list(CONFIGURATIONS)
    assert report["fits"] == all(e["fits"] for e in configs.values())
    assert result.returncode == (0 if report["fits"] else 3)


def test_exit_3_on_a_tiny_device_with_the_shortfall(run_dir, catalogue):
    result = zo_edge("profile", run_dir, "--device", "tiny", "--devices", catalogue)
    assert result.returncode == 3, result.stderr
    assert "zo-fc does not fit tiny: needs" in result.stdout and "more SRAM" in result.stdout
    assert "Traceback" not in result.stderr


def test_exit_0_on_a_big_device_with_table_and_plot(run_dir, catalogue, tmp_path):
    plot = tmp_path / "budget.png"
    result = zo_edge("profile", run_dir, "--device", "HUGE", "--devices", catalogue, "--method", "all",
                     "--batch-size", 8, "--q", 2, "--momentum", 0, "--plot", plot)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in CONFIGURATIONS:
        assert f"{name} fits huge:" in out
    assert "total" in out and "headroom" in out and "device SRAM" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_device_lists_the_known_ones(run_dir):
    result = zo_edge("profile", run_dir, "--device", "esp32")
    assert result.returncode == 2
    assert_one_line_error(result, "unknown device 'esp32'", "nrf52840", "stm32f746", "rp2040")


def test_malformed_catalogue_entry_is_a_one_line_error(run_dir, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.format(key="bad", sram=-1, flash=1024))
    result = zo_edge("profile", run_dir, "--device", "bad", "--devices", path)
    assert result.returncode == 2
    assert_one_line_error(result, str(path), "'bad'", "'sram_bytes'")


def test_run_folder_without_a_model(tmp_path):
    result = zo_edge("profile", tmp_path, "--device", "nrf52840")
    assert result.returncode == 2
    assert_one_line_error(result, "no run.json", "zo-edge build")
    (tmp_path / "run.json").write_text("{}")
    assert_one_line_error(zo_edge("profile", tmp_path, "--device", "nrf52840"), "no model_int8.tflite", "zo-edge build")


def test_help_documents_exit_code_3():
    result = zo_edge("profile", "--help")
    assert result.returncode == 0
    assert "3  a selected configuration does not fit" in result.stdout


def test_exit_code_follows_the_selected_configurations(run_dir, tmp_path):
    """A device with exactly zo-fc's RAM: zo-fc fits (0), fo does not (3), and all is 3 because fo is in it."""
    report = json.loads(zo_edge("profile", run_dir, "--device", "nrf52840", "--method", "all", "--json").stdout)
    need = report["configurations"]["zo-fc"]["ram_bytes"]
    assert report["configurations"]["fo"]["ram_bytes"] > need
    path = tmp_path / "exact.toml"
    path.write_text(GOOD.format(key="exact", sram=need, flash=1 << 20))
    codes = {m: zo_edge("profile", run_dir, "--device", "exact", "--devices", path, "--method", m).returncode
             for m in ("zo-fc", "fo", "all")}
    assert codes == {"zo-fc": 0, "fo": 3, "all": 3}


def test_every_core_has_a_kernel_instruction_set():
    from zo_edge.kernel_spec import CORE_ISA, ISAS

    assert set(CORE_ISA) == set(CORES) and set(CORE_ISA.values()) <= set(ISAS)
    assert (CORE_ISA["cortex-m0plus"], CORE_ISA["cortex-m4"], CORE_ISA["cortex-m55"]) == ("ref", "dsp", "mve")


@pytest.mark.parametrize("device, isa", [("nrf52840", "dsp"), ("rp2040", "ref")])
def test_time_is_a_labelled_lower_bound_per_inference_and_per_step(run_dir, device, isa):
    result = zo_edge("profile", run_dir, "--device", device, "--batch-size", 2, "--q", 2, "--json")
    assert result.returncode in (0, 3), result.stderr
    report = json.loads(result.stdout)
    time, clock = report["time"], report["device"]["clock_hz"]
    assert time["isa"] == isa and time["clock_hz"] == clock and time["measured"] is False
    assert time["lower_bound"].startswith("a lower bound: instructions / clock")
    assert "estimated" in time["basis"] and "B = 2 prefix" in time["basis"]
    ins = time["instructions"]
    assert ins["inference"] > 0 and ins["train_step"] >= 2 * ins["inference"]  # at least B whole passes
    assert time["seconds_at_least"] == {k: v / clock for k, v in ins.items()}
    text = zo_edge("profile", run_dir, "--device", device, "--batch-size", 2, "--q", 2).stdout
    assert f"a lower bound (instructions / clock): inference {ins['inference']:,} instructions" in text


def test_reference_kernels_are_estimated_slower_than_the_dsp_kernels(run_dir):
    from zo_edge import kernel_spec
    from zo_edge.build import load_run

    layers = kernel_spec.model_layers(load_run(run_dir).graph)
    ref, dsp, mve = (kernel_spec.estimated_instructions(layers, isa) for isa in ("ref", "dsp", "mve"))
    assert ref > 2 * dsp > 2 * mve > 0


def test_measured_counts_replace_the_estimate_only_for_the_same_kernels(run_dir):
    from zo_edge.build import load_run
    from zo_edge.devices import get_device, load_catalogue
    from zo_edge.learners import LearnerConfig
    from zo_edge.profile import attach_measured, profile

    run, config = load_run(run_dir), LearnerConfig(batch_size=2, q=2)
    measured = {"board": "mps2-an386", "isa": "dsp", "instructions": {"inference": 1_000_000, "train_step": 9_000_000},
                "ram_bytes": 40_000, "flash_bytes": 50_000}
    for device, replaced in (("nrf52840", True), ("rp2040", False)):  # M4 (dsp) and M0+ (reference kernels)
        result = profile(run, config, get_device(device, load_catalogue()))
        estimated = dict(result["time"]["instructions"])
        time = attach_measured(result, measured)["time"]
        assert time["measured"] is replaced
        assert time["instructions"] == (measured["instructions"] if replaced else estimated)
        if replaced:
            assert time["estimated_instructions"] == estimated and "measured exactly on mps2-an386" in time["basis"]
            assert time["seconds_at_least"]["train_step"] == 9_000_000 / time["clock_hz"]
