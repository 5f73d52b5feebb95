"""The front door keeps its promises (issue 9): nothing the user had is lost, no check passes having
compared nothing, and every bad input ends in one line and exit 2, never a traceback.

Each test reproduces one of the reported cases and shows the new behaviour."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import require_tools
from tests.test_cli import assert_one_line_error, zo_edge
from zo_edge.errors import ZoEdgeError
from zo_edge.outputs import MARKER, check_output_file, check_output_folder, first_free, write_file, write_folder


def _tree(folder) -> dict:
    """Every file under a folder with its bytes: what must survive a refused command."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(digits_run_dir, tmp_path_factory):
    """A private copy of the small digits run (tests here damage copies of it)."""
    out = tmp_path_factory.mktemp("front") / "run"
    shutil.copytree(digits_run_dir, out)
    return out


@pytest.fixture(scope="module")
def firmware(run, tmp_path_factory):
    fw = tmp_path_factory.mktemp("front-fw") / "fw"
    result = zo_edge("export", run, "--out", fw, "--batch-size", 8, "--q", 1, "--steps", 6, "--every", 3,
                     "--samples", 2)
    assert result.returncode == 0, result.stderr
    return fw


# -- 3. --force never reaches an input, nor files zo-edge did not write --------------------------------
@pytest.mark.parametrize("command", ["export", "simulate"])
def test_force_onto_the_input_run_folder_is_refused_and_the_run_survives(run, command):
    before = _tree(run)
    assert_one_line_error(zo_edge(command, run, "--out", run, "--force"), "is the input", "destroy")
    assert_one_line_error(zo_edge(command, run, "--out", run / "inside", "--force"), "lies inside the input")
    assert_one_line_error(zo_edge(command, run, "--out", run.parent, "--force"), "contains the input")
    assert _tree(run) == before


def test_force_refuses_a_folder_holding_files_zo_edge_did_not_write(run, firmware, tmp_path):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub" / "data.bin").write_bytes(b"\x00\x01")
    assert_one_line_error(zo_edge("export", run, "--out", mine, "--force"), "not written by zo-edge")
    assert (mine / "notes.txt").read_text() == "my notes" and (mine / "sub" / "data.bin").is_file()

    # an earlier export is zo-edge's: --force replaces it, until the user puts something of theirs inside
    copy = tmp_path / "fw"
    shutil.copytree(firmware, copy)
    (copy / "notes.txt").write_text("integration notes")
    before = _tree(copy)
    assert_one_line_error(zo_edge("export", run, "--out", copy, "--force", "--steps", 1), "did not write", "notes.txt")
    assert _tree(copy) == before
    (copy / "notes.txt").unlink()
    (copy / "app_main.c").write_text((copy / "app_main.c").read_text() + "/* my change */\n")
    assert_one_line_error(zo_edge("export", run, "--out", copy, "--force", "--steps", 1), "app_main.c")
    shutil.rmtree(copy)
    shutil.copytree(firmware, copy)
    result = zo_edge("export", run, "--out", copy, "--force", "--steps", 1, "--samples", 1)
    assert result.returncode == 0, result.stderr
    assert json.loads((copy / "export.json").read_text())["train"]["steps"] == 1


def test_force_does_not_turn_one_kind_of_output_into_another(run, firmware, tmp_path):
    assert_one_line_error(zo_edge("simulate", run, "--out", firmware, "--force", "--epochs", 1),
                          "zo-edge firmware folder", "not simulate output")


def test_output_rules_on_hand_made_folders(tmp_path):
    with write_folder(tmp_path / "out", "plots") as tmp:
        (tmp / "a.png").write_bytes(b"png")
    marker = json.loads((tmp_path / "out" / MARKER).read_text())
    assert marker["kind"] == "plots" and set(marker["files"]) == {"a.png"}
    with pytest.raises(ZoEdgeError, match="--force"):
        check_output_folder(tmp_path / "out", "plots")
    check_output_folder(tmp_path / "out", "plots", force=True)  # ours, unchanged: may be replaced
    (tmp_path / "out" / "b.txt").write_text("user")
    with pytest.raises(ZoEdgeError, match="b.txt"):
        check_output_folder(tmp_path / "out", "plots", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZoEdgeError, match="is a file, so nothing can be written below it"):
        check_output_folder(tmp_path / "file" / "sub", "plots")
    with pytest.raises(ZoEdgeError, match="interrupted"):
        with write_folder(tmp_path / "half", "plots") as tmp:
            (tmp / "x").write_text("1")
            raise ZoEdgeError("interrupted")
    assert not (tmp_path / "half").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert first_free(tmp_path / "out") == tmp_path / "out-2" and first_free(tmp_path / "new") == tmp_path / "new"


# -- 6. file outputs follow the same rule ----------------------------------------------------------------
def test_a_file_output_replaces_only_a_file_zo_edge_wrote(tmp_path):
    plot = tmp_path / "myplot.png"
    plot.write_bytes(b"the user's own picture")
    with pytest.raises(ZoEdgeError, match="exists; pass --force"):
        check_output_file(plot)
    with pytest.raises(ZoEdgeError, match="not written by zo-edge"):
        check_output_file(plot, force=True)
    assert plot.read_bytes() == b"the user's own picture"
    ours = tmp_path / "ours.png"
    with write_file(ours) as tmp:
        tmp.write_bytes(b"v1")
    with write_file(ours, force=True) as tmp:  # zo-edge's own, unchanged: replaced
        tmp.write_bytes(b"v2")
    assert ours.read_bytes() == b"v2"
    ours.write_bytes(b"edited by the user")
    with pytest.raises(ZoEdgeError, match="changed since"):
        check_output_file(ours, force=True)


def test_profile_plot_does_not_replace_the_users_file(run, tmp_path):
    plot = tmp_path / "myplot.png"
    plot.write_bytes(b"mine")
    assert_one_line_error(zo_edge("profile", run, "--device", "stm32f746", "--plot", plot), "exists", "--force")
    assert_one_line_error(zo_edge("profile", run, "--device", "stm32f746", "--plot", plot, "--force"),
                          "not written by zo-edge")
    assert plot.read_bytes() == b"mine"
    fresh = tmp_path / "budget.png"
    assert zo_edge("profile", run, "--device", "stm32f746", "--plot", fresh).returncode == 0
    again = zo_edge("profile", run, "--device", "stm32f746", "--plot", fresh, "--force")
    assert again.returncode == 0, again.stderr  # its own plot may be replaced


def test_compare_plots_do_not_replace_files_in_the_users_folder(run, tmp_path):
    sim = tmp_path / "sim"
    assert zo_edge("simulate", run, "--method", "head", "--epochs", 1, "--out", sim, "--quiet").returncode == 0
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "average_accuracy.png").write_bytes(b"mine")
    for force in ((), ("--force",)):
        result = zo_edge("compare", sim, "--plots", plots, *force)
        assert result.returncode == 2 and "--plots" in result.stderr
    assert (plots / "average_accuracy.png").read_bytes() == b"mine"
    assert zo_edge("compare", sim, "--plots", tmp_path / "new-plots").returncode == 0
    assert (tmp_path / "new-plots" / "average_accuracy.png").is_file()


# -- 4. a verification that compared nothing fails -------------------------------------------------------
def test_verify_firmware_fails_when_the_requested_steps_show_no_state(firmware):
    require_tools("gcc", "make")
    result = zo_edge("verify-firmware", firmware, "--board", "host", "--steps", 2)  # state printed every 3 steps
    assert_one_line_error(result, "--steps 2 ends before the first state", "--steps 3")
    assert result.returncode == 2
    ok = zo_edge("verify-firmware", firmware, "--board", "host", "--steps", 3, "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["states_compared"] == 1 and report["compared"]["state"]["compared_bytes"] > 0


def test_verify_firmware_rebuilds_from_the_folders_sources(firmware, tmp_path):
    require_tools("gcc", "make")
    fw = tmp_path / "fw"
    shutil.copytree(firmware, fw)
    assert zo_edge("verify-firmware", fw, "--board", "host").returncode == 0  # builds fw/build
    (fw / "zoedge_fixed.c").unlink()  # the stale build still has its object
    assert_one_line_error(zo_edge("verify-firmware", fw, "--board", "host"), "lacks zoedge_fixed.c", "export")


# -- 5. bad run folders: one line, not KeyError / IndexError ---------------------------------------------
@pytest.mark.parametrize("command", [["simulate", "--epochs", "1"], ["profile", "--device", "stm32f746"],
                                     ["export", "--steps", "1"]])
def test_a_run_json_without_a_key_is_named(run, tmp_path, command):
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    meta = json.loads((bad / "run.json").read_text())
    del meta["scenario"]
    (bad / "run.json").write_text(json.dumps(meta))
    out = ["--out", tmp_path / "out"] if command[0] != "profile" else []
    assert_one_line_error(zo_edge(command[0], bad, *command[1:], *out), "lacks the key scenario")


@pytest.mark.parametrize("command", [["simulate", "--epochs", "1"], ["profile", "--device", "stm32f746"],
                                     ["export", "--steps", "1"]])
def test_a_model_from_another_run_is_refused(run, kws_run_dir, tmp_path, command):
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    shutil.copy(kws_run_dir / "model_int8.tflite", bad / "model_int8.tflite")  # a valid int8 model, another run's
    out = ["--out", tmp_path / "out"] if command[0] != "profile" else []
    assert_one_line_error(zo_edge(command[0], bad, *command[1:], *out), "is not the model", "SHA-256")
    # without the recorded hash the structural checks catch it
    meta = json.loads((bad / "run.json").read_text())
    meta["files"] = {}
    (bad / "run.json").write_text(json.dumps(meta))
    assert_one_line_error(zo_edge(command[0], bad, *command[1:], *out), "do not belong together")


def test_simulate_out_below_a_file_fails_before_the_work(run, tmp_path):
    (tmp_path / "FILE").write_text("x")
    result = zo_edge("simulate", run, "--out", tmp_path / "FILE" / "sub", "--epochs", 50, "--seeds", 20)
    assert_one_line_error(result, "FILE is a file")  # at once: 20 seeds of 50 epochs never ran
    assert "task" not in result.stderr


def test_a_learning_rate_int8_cannot_hold_is_named_before_training(run):
    """--lr is capped at 10 (LearnerConfig.RANGES); beyond what the weights' scales allow, the learner
    refuses at construction, naming the option, instead of a ValueError mid-run."""
    from zo_edge.build import load_run
    from zo_edge.learners import LearnerConfig
    from zo_edge.learners.int8_learner import Int8Learner

    config = LearnerConfig(method="zo-fc", q=1).check()
    config.lr = 1e12  # past the flag's range, as a library caller could set it
    with pytest.raises(ZoEdgeError, match="--lr 1e\\+12 is too large for int8 mode"):
        Int8Learner(load_run(run), config)


# -- 7. silent no-ops ------------------------------------------------------------------------------------
def test_one_epoch_still_trains_the_zofc_classifier(run, tmp_path):
    result = zo_edge("simulate", run, "--epochs", 1, "--q", 1, "--out", tmp_path / "o", "--json")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["fc_epochs"] == 1  # was 0: the classifier never trained and nothing was said
    assert json.loads(result.stdout)["counters"]["forward_passes_per_step"] == 3.0  # 2q probes + classifier


# -- 8. one-line errors for click's own usage errors, config files named ------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["simulate", "{file}"], "is a file"),
    (["simulate", "{run}", "--out", "{file}"], "is a file"),
    (["simulate", "{run}", "--bogus"], "No such option"),
    (["nosuchcommand"], "No such command"),
    (["export", "{run}"], "Missing option '--out'"),
])
def test_usage_errors_are_one_line_with_exit_2(run, tmp_path, args, fragment):
    (tmp_path / "f.txt").write_text("x")
    args = [a.format(file=tmp_path / "f.txt", run=run) for a in args]
    result = zo_edge(*args)
    assert_one_line_error(result, "zo-edge: error:", fragment)
    assert result.returncode == 2 and not result.stderr.startswith("Error") and "Usage:" not in result.stderr


def test_a_wrong_type_in_a_config_file_names_the_file_and_the_key(run, tmp_path):
    config = tmp_path / "sim.toml"
    config.write_text('q = "four"\n')
    assert_one_line_error(zo_edge("simulate", run, "--config", config), "sim.toml: key q", "whole number")
    assert_one_line_error(zo_edge("simulate", run, "--config", config, "--q", "x"), "--q", "not a valid integer")


def test_compare_on_a_run_folder_points_at_its_results(run):
    result = zo_edge("compare", run)
    assert_one_line_error(result, "is a run folder", "zo-edge simulate")
    assert f"--out {run}" not in result.stderr  # never suggests writing into the run


# -- 9. honest output ------------------------------------------------------------------------------------
def test_one_seed_prints_no_spread_and_progress_lines_without_a_terminal(run, tmp_path):
    result = zo_edge("simulate", run, "--method", "head", "--epochs", 1, "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "±" not in result.stdout  # one seed measured no spread
    tasks = json.loads((tmp_path / "o" / "results.json").read_text())["scenario"]["tasks"]
    progress = [line for line in result.stderr.splitlines() if ": task " in line]
    assert len(progress) == len(tasks) - 1  # one line per trained task, though stderr is not a terminal
    metrics = json.loads((tmp_path / "o" / "results.json").read_text())["metrics"]
    assert metrics["average_accuracy"]["std"] is None


def test_help_lists_the_commands_in_the_order_of_the_job():
    result = zo_edge("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:10] == ["data", "build", "inspect", "simulate", "compare", "export", "verify-firmware", "profile",
                           "sweep", "demo"]
    assert "From nothing to firmware" in result.stdout


def test_verify_report_states_the_bound_and_separates_library_from_app():
    from firmware_export.verify import format_report

    report = {"board": "mps2-an386", "differing_bytes": 0, "compared_bytes": 100, "samples": 2, "steps": 3,
              "states_compared": 1, "compared": {"logits": {"differing_bytes": 0, "compared_bytes": 20}},
              "instructions": {"inference": 10, "train_step": 50, "breakdown": {},
                               "cost": {"suffix_pass": 1, "prefix_per_sample": 2, "update": 3, "ratio": 1.2,
                                        "bound": 1.15, "within_bound": False}},
              "memory": {"library": {"flash_bytes": 1000, "ram_static_bytes": 200},
                         "app": {"flash_bytes": 5000, "ram_static_bytes": 900}, "stack_high_water_bytes": 64}}
    text = format_report(report)
    assert "1.200, ABOVE the bound 1.15" in text
    assert "zo-edge library: 1,000 bytes flash, 200 bytes static RAM" in text and "example app adds 5,000" in text


# -- 1. the demo on a machine without the Arm toolchain --------------------------------------------------
@pytest.mark.slow
def test_demo_without_the_arm_toolchain_runs_the_host_stages_and_says_what_it_skipped(tmp_path, monkeypatch):
    from zo_edge import demo

    monkeypatch.setattr(demo, "firmware_tools_missing", lambda: ["arm-none-eabi-gcc", "qemu-system-arm"])
    lines = []
    result = demo.run_demo(tmp_path / "demo", echo=lines.append)
    assert result["skipped"] == ["qemu"] and set(result["firmware"]) == {"host"}
    assert lines[-1].startswith("skipped: the firmware run in QEMU") and "apt-get install" in lines[-1]
    assert result["firmware"]["host"]["differing_bytes"] == 0
    with pytest.raises(ZoEdgeError, match="--force"):  # a second demo into the same folder is refused
        demo.run_demo(tmp_path / "demo", echo=lambda m: None)


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("x")
    assert_one_line_error(zo_edge("demo", "--out", tmp_path / "demo", "--force"), "not written by zo-edge")
    assert (tmp_path / "demo" / "keep.txt").is_file()


def test_infer_output_rules(tmp_path):
    """infer's --out follows the file rule: the user's existing file survives even --force, and the
    output may not be the model it reads."""
    import keras

    from tests.test_cli import _convert

    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 1), batch_size=1)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    path = tmp_path / "m.tflite"
    path.write_bytes(_convert(model, np.random.default_rng(0).standard_normal((8, 4, 4, 1)).astype(np.float32)))
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 1), np.int8))
    (tmp_path / "y.npy").write_bytes(b"the user's")
    result = zo_edge("infer", path, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy", "--force")
    assert_one_line_error(result, "not written by zo-edge")
    assert (tmp_path / "y.npy").read_bytes() == b"the user's"
    assert_one_line_error(zo_edge("infer", path, "--inputs", tmp_path / "x.npy", "--out", path, "--force"),
                          "is the input")
    assert zo_edge("infer", path, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "z.npy").returncode == 0
    again = zo_edge("infer", path, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "z.npy", "--force")
    assert again.returncode == 0, again.stderr  # its own output may be replaced
