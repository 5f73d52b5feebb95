"""`zo-edge simulate` and `zo-edge compare`: results.json as documented, one-line errors for bad settings."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.test_cli import assert_one_line_error, zo_edge


@pytest.fixture(scope="module")
def digits_run(digits_run_dir):
    return digits_run_dir


def test_simulate_writes_results_json_and_plots_and_compare_reads_them(digits_run, tmp_path):
    out = tmp_path / "zofc"
    config = tmp_path / "sim.toml"
    config.write_text('method = "zo-fc"\nmode = "int8"\nepochs = 3\nq = 2\nseeds = 2\n')
    result = zo_edge("simulate", digits_run, "--config", config, "--epochs", 2, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    on_disk = json.loads((out / "results.json").read_text())
    assert results["settings"] == on_disk["settings"]
    assert results["settings"]["epochs"] == 2  # the flag overrides the file
    assert results["settings"]["q"] == 2 and results["seeds"] == [0, 1]
    T = len(results["scenario"]["tasks"])
    for R in results["accuracy_matrices"]:
        assert len(R) == T and all(R[t][i] is None for t in range(T) for i in range(t + 1, T))
        assert all(0 <= R[t][i] <= 100 for t in range(T) for i in range(t + 1))
    assert len(results["seen_accuracy"]) == 2 and len(results["seen_accuracy"][0]) == T
    for name in ("average_accuracy", "last_accuracy", "forgetting", "bwt"):
        assert set(results["metrics"][name]) >= {"mean", "std", "per_seed"}
    assert results["counters"]["forward_passes_per_step"] == 4.5  # 2q probes, + the classifier pass in epoch 1 of 2
    assert (out / "state_seed0.npz").is_file() and (out / "average_accuracy.png").is_file()

    again = zo_edge("simulate", digits_run, "--epochs", 1, "--out", out)
    assert_one_line_error(again, "not empty", "--force")  # nothing overwritten without asking

    head = tmp_path / "head"
    assert zo_edge("simulate", digits_run, "--method", "head", "--epochs", 1, "--out", head, "--quiet").returncode == 0
    table = zo_edge("compare", out, head)
    assert table.returncode == 0, table.stderr
    assert "zo-fc" in table.stdout and "head" in table.stdout


@pytest.mark.parametrize("args, fragments", [
    (["--method", "sgd"], ["'sgd' is not one of", "--method", "zo-fc"]),
    (["--mode", "int4"], ["'int4' is not one of", "--mode"]),
    (["--q", "0"], ["--q", "[1, 1024]"]),
    (["--epsilon", "0"], ["--epsilon", "> 0"]),
    (["--epsilon", "-1"], ["--epsilon", "[0, 1]"]),
    (["--epsilon", "inf"], ["--epsilon", "got inf"]),
    (["--lr", "inf"], ["--lr", "got inf"]),
    (["--fc-lr", "nan"], ["--fc-lr", "got nan"]),
    (["--lr", "1e12"], ["--lr", "[0, 10]"]),
    (["--epochs", "0"], ["--epochs", "--method frozen"]),
    (["--fc-epochs", "5", "--epochs", "1"], ["--fc-epochs 5 exceeds the 1 epochs"]),
    (["--fc-epochs", "0"], ["--fc-epochs", "--method zo"]),
    (["--seeds", "0"], ["--seeds", "1..1000"]),
    (["--epsilon", "1e-9"], ["--epsilon", "below one int8 quantisation step", "--mode float"]),
    (["--master", "int4"], ["--master"]),
    (["--momentum", "1.5"], ["--momentum"]),
])
def test_bad_settings_get_one_line_errors_naming_the_option(digits_run, tmp_path, args, fragments):
    assert_one_line_error(zo_edge("simulate", digits_run, "--out", tmp_path / "o", *args), *fragments)


def test_a_run_folder_without_a_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(zo_edge("simulate", tmp_path / "empty"), "no run.json", "zo-edge build")


def test_a_scenario_with_more_classes_than_the_classifier_is_refused(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["scenario"]["num_classes"] = meta["model"]["num_classes"] + 2
    (run / "run.json").write_text(json.dumps(meta))
    assert_one_line_error(zo_edge("simulate", run, "--out", tmp_path / "o"), "scenario has 12 classes", "classifier 10")


def test_a_bad_config_file_names_the_file_and_the_key(digits_run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("qq = 3\n")
    assert_one_line_error(zo_edge("simulate", digits_run, "--config", bad), "unknown option 'qq'")
    bad.write_text("q = [\n")
    assert_one_line_error(zo_edge("simulate", digits_run, "--config", bad), "not valid TOML")


def test_compare_without_results_says_how_to_make_them(tmp_path):
    assert_one_line_error(zo_edge("compare", tmp_path), "results.json", "zo-edge simulate")
