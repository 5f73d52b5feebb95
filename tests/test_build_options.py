"""The build options of issue 12 refuse what they cannot do in one line: strong shifts outside the spoken
digits' domain-il stream, a cosine head or another pretraining set for a model the user brings, a
pretraining set whose samples do not fit the model."""

from __future__ import annotations

from tests.test_cli import assert_one_line_error, zo_edge


def test_strong_shifts_are_the_spoken_digits_domain_il_streams(tmp_path):
    assert_one_line_error(zo_edge("build", "--out", tmp_path / "a", "--dataset", "digits", "--scenario", "domain-il",
                                  "--shifts", "strong"), "made for spoken-digits")
    assert_one_line_error(zo_edge("build", "--out", tmp_path / "b", "--shifts", "strong"), "domain-il")


def test_a_users_model_brings_its_own_classifier_and_pretraining(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"not read")
    (tmp_path / "d.npz").write_bytes(b"not read")
    for option in (["--head", "cosine"], ["--pretrain-dataset", "spoken-digits"]):
        assert_one_line_error(zo_edge("build", "--out", tmp_path / "run", "--model", tmp_path / "m.keras", "--data",
                                      tmp_path / "d.npz", *option), "zoo model")


def test_the_pretraining_set_must_fit_the_model(tmp_path):
    assert_one_line_error(zo_edge("build", "--out", tmp_path / "run", "--dataset", "digits", "--pretrain-dataset",
                                  "spoken-digits", "--epochs", 1), "pretraining data", "(32, 13, 1)", "(8, 8, 1)")
