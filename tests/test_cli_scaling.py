"""deepens calibrate / powerlaw fit | pool | split."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from deepens.scaling import calibrated_nll, fit_power_law, reference_cnll


@pytest.fixture
def logits(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    z = rng.normal(size=(3, 200, 4)) * 2
    z[:, np.arange(200), y] += 1.5
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    save_file({"test.logits": z.astype(np.float32), "test.labels": y}, str(tmp_path / "z.safetensors"))
    return tmp_path, z, y


def test_calibrate_npy_and_safetensors(logits, cli):
    tmp, z, y = logits
    code, out, err = cli(["calibrate", tmp / "z.npy", "--labels", tmp / "y.npy", "--cv", "none", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["cnll"] == pytest.approx(reference_cnll(z, y, cv="none"), abs=1e-5)
    assert result["members"] == 3 and result["samples"] == 200
    code, out, _ = cli(["calibrate", tmp / "z.safetensors", "--temperature", "after", "--repeats", "3", "--json"])
    ref = calibrated_nll(z.astype(np.float32), y, temperature="after", repeats=3)
    assert json.loads(out)["cnll"] == pytest.approx(ref["cnll"], abs=1e-9)
    code, out, _ = cli(["calibrate", tmp / "z.npy", "--labels", tmp / "y.npy"])
    assert code == 0 and "cnll" in out


def test_powerlaw_fit_csv(tmp_path, cli):
    m = np.arange(1, 13)
    y = 0.8 + 0.4 * m**-0.9
    (tmp_path / "d.csv").write_text("n,value\n" + "\n".join(f"{a},{b}" for a, b in zip(m, y, strict=True)))
    code, out, err = cli(["powerlaw", "fit", tmp_path / "d.csv", "--json", "--plot", tmp_path / "fit.png"])
    assert code == 0, err
    result = json.loads(out)
    ref = fit_power_law(m, y)
    assert result["a"] == pytest.approx(ref.a) and set(result) >= {"a", "b", "c", "rmse_log2", "rmse"}
    assert (tmp_path / "fit.png").stat().st_size > 1000
    code, out, _ = cli(["powerlaw", "fit", tmp_path / "d.csv", "--predict-from", "4"])
    assert code == 0 and "m = 12" in out


def test_pool_and_split_from_runs(tmp_path, cli):
    runs = []
    for width in (8, 16):
        out = tmp_path / f"w{width}"
        code, _, err = cli(["train", "--dataset", "digits", "--widths", f"{width}", "--ensemble", "deep", "--members",
                            "8", "--epochs", "3", "--out", out, "--json"])
        assert code == 0, err
        runs.append(out)
    code, out, err = cli(["powerlaw", "pool", *runs, "--sizes", "1,2,3,4,5", "--json", "--plot", tmp_path / "plots"])
    assert code == 0, err
    result = json.loads(out)
    sizes = [p["size"] for p in result["pools"]]
    assert sizes == [64 * 8 + 8 * 10, 64 * 16 + 16 * 10]  # parameters per network, from config.json
    assert [r["ensembles"] for r in result["pools"][0]["rows"]] == [8, 4, 2, 2, 1]
    for name in ("cnll_power_laws.png", "plane.png", "budget.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    budget = 64 * 16 + 16 * 10
    code, out, err = cli(["powerlaw", "split", *runs, "--budget", budget, "--sizes", "1,2,3,4", "--json"])
    assert code == 0, err
    split = json.loads(out)
    assert split["measured"]["single_network"]["n"] == 1 and split["measured"]["msa"] in (True, False)
    assert {s["n"] for s in split["measured"]["splits"]} == {1, 2}
    code, out, _ = cli(["powerlaw", "split", *runs, "--budget", budget, "--sizes", "1,2,3,4"])
    assert code == 0 and "Memory Split Advantage" in out


BAD = [
    (["calibrate", "{tmp}/z.npy"], "labels"),
    (["calibrate", "{tmp}/missing.npy", "--labels", "{tmp}/y.npy"], "logits"),
    (["calibrate", "{tmp}/z.txt", "--labels", "{tmp}/y.npy"], "logits"),
    (["calibrate", "{tmp}/z.npy", "--labels", "{tmp}/bad_labels.npy"], "labels"),
    (["calibrate", "{tmp}/z.npy", "--labels", "{tmp}/y.npy", "--repeats", "0"], "repeats"),
    (["powerlaw", "fit", "{tmp}/up.csv"], "does not decrease"),
    (["powerlaw", "fit", "{tmp}/two.csv"], "at least 3"),
    (["powerlaw", "fit", "{tmp}/junk.csv"], "columns n,value"),
    (["powerlaw", "pool", "{tmp}"], "config"),
]


@pytest.mark.parametrize("argv,word", BAD, ids=[f"{a[0]}-{w}" for a, w in BAD])
def test_bad_input(argv, word, logits, cli):
    tmp = logits[0]
    (tmp / "z.txt").write_text("1")
    np.save(tmp / "bad_labels.npy", np.zeros(5, dtype=np.int64))
    (tmp / "up.csv").write_text("1,1\n2,2\n3,3\n")
    (tmp / "two.csv").write_text("1,1\n2,0.5\n")
    (tmp / "junk.csv").write_text("x,y\n1,2\n")
    code, _, err = cli([a.replace("{tmp}", str(tmp)) for a in argv])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and word in lines[0], err


def test_help(cli):
    for cmd in (["calibrate"], ["powerlaw"], ["powerlaw", "fit"], ["powerlaw", "pool"], ["powerlaw", "split"]):
        code, out, _ = cli([*cmd, "--help"])
        assert code == 0 and "usage" in out
