"""deepens design collegial | alpha."""

import json

import pytest

from deepens.design import MLPFamily, ResNeXt29Family, collegial_design


def test_design_collegial_json_matches_library(cli, tmp_path):
    code, out, err = cli(["design", "collegial", "--block", "mlp", "--in", 784, "--out", 10, "--depth", 6,
                          "--baseline-width", 500, "--objective", "dual", "--alpha", 3.5, "--plot",
                          tmp_path / "c.png", "--json"])
    assert code == 0, err
    got = json.loads(out)
    want = collegial_design(MLPFamily(784, 10, 6), 500, 3.5, objective="dual")
    for key in ("alpha", "n", "m", "efficiency", "variance", "params", "flops"):
        assert got[key] == pytest.approx(getattr(want.best, key, None) if key != "alpha" else 3.5)
    assert got["candidates"][0]["label"] == f"{want.best.m}×{want.best.n}" and len(got["candidates"]) == 10
    assert got["alpha_stderr"] is None and (tmp_path / "c.png").stat().st_size > 1000


def test_design_resnext29_flops_text(cli):
    code, out, err = cli(["design", "collegial", "--block", "resnext29", "--baseline-width", 128, "--alpha", 1.6,
                          "--terms", "widths", "--top", 3])
    assert code == 0, err
    assert "m = 37 members of width n = 10" in out
    fam = ResNeXt29Family()
    assert f"{fam.parameters(37, 10):,}" in out


def test_design_fit_alpha_then_design(cli):
    code, out, err = cli(["design", "collegial", "--block", "mlp", "--in", 12, "--out", 3, "--depth", 3,
                          "--baseline-width", 64, "--fit-alpha", "--fit-widths", "4,8,16", "--draws", 300,
                          "--json"])
    assert code == 0, err
    got = json.loads(out)
    assert got["alpha"] == pytest.approx(got["alpha_fit"]["alpha"]) and got["alpha_stderr"] > 0
    assert [p["width"] for p in got["alpha_fit"]["points"]] == [4, 8, 16]
    code, out, err = cli(["design", "alpha", "--block", "mlp", "--in", 12, "--depth", 3, "--fit-widths", "4,8,16",
                          "--draws", 300, "--json"])
    assert code == 0, err
    assert json.loads(out)["alpha"] == pytest.approx(got["alpha"])  # same seed, same draws


@pytest.mark.parametrize(("args", "needle"), [
    (["design", "collegial", "--baseline-width", 500], "--alpha"),
    (["design", "collegial", "--baseline-width", 0, "--alpha", 1], "baseline-width"),
    (["design", "collegial", "--baseline-width", 50, "--alpha", -2], "alpha"),
    (["design", "collegial", "--baseline-width", 50, "--alpha", 2, "--widths", "80"], "widths"),
    (["design", "alpha", "--fit-widths", "4,x"], "fit-widths"),
    (["design", "collegial", "--block", "vgg", "--baseline-width", 5, "--alpha", 1], "block"),
])
def test_design_errors_are_one_line_with_status_2(cli, args, needle):
    code, out, err = cli(args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_design_help(cli):
    code, out, _ = cli(["design", "collegial", "--help"])
    assert code == 0 and "--fit-alpha" in out and "--efficiency" in out
