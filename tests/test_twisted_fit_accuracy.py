"""benchmarks/twisted_fit_accuracy.py fits fresh ensembles on a VMBPO run's D, plain and twisted, and
scores them on D's newest rows; bad variants and sizes get a one-line error."""

import math

import pytest
from benchmark_scripts import load_script, train_checkpoint


def test_fits_each_variant_and_scores_it_on_the_newest_rows(tmp_path, capsys):
    script = load_script("twisted_fit_accuracy")
    path = str(train_checkpoint(tmp_path / "run", "vmbpo"))
    rows = script.main([path, "--test-rows", "40", "--variants", "mle", "twist", "twist:0.9", "--max-epochs", "2"])
    out = capsys.readouterr().out
    assert "vmbpo on Pendulum-v1, env step 200: fitted on 160 real rows, scored on the newest 40" in out
    assert [r["variant"] for r in rows] == ["mle", "twist", "twist:0.9"]
    assert all(r["epochs"] == 2 and math.isfinite(r["newest_mse_elites"]) for r in rows)
    assert rows[0]["newest_mse_elites"] != rows[1]["newest_mse_elites"]  # the twist changed the fit


def test_variant_names_parse_and_bad_ones_are_named():
    parse = load_script("twisted_fit_accuracy").parse_variant
    assert parse("mle") == (False, None) and parse("twist") == (True, None) and parse("twist:0.9") == (True, 0.9)
    for bad in ("twist:0", "twist:1.5", "twist:x", "mse"):
        with pytest.raises(SystemExit, match="expected 'mle', 'twist' or 'twist:F'"):
            parse(bad)


def test_too_many_test_rows_is_an_error(tmp_path):
    path = str(train_checkpoint(tmp_path / "run", "vmbpo"))
    with pytest.raises(SystemExit, match="--test-rows must be in"):
        load_script("twisted_fit_accuracy").main([path, "--test-rows", "500"])
