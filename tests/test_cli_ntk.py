"""deepens ntk kernel / regime / empirical: JSON output equal to the library, one-line errors."""

import json

import numpy as np
import pytest

import deepens as d
from deepens.kernels import Network, infinite_width_kernels, regime


@pytest.fixture
def inputs(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 3))
    path = tmp_path / "X.npy"
    np.save(path, x)
    return path, x


def test_kernel_json_equals_library(inputs, cli):
    path, x = inputs
    code, out, err = cli(["ntk", "kernel", "--inputs", str(path), "--depth", "3", "--activation", "relu",
                          "--weight-std", "1.4142135623730951", "--bias-std", "0", "--readout-std", "1",
                          "--readout-bias-std", "0", "--json"])
    assert code == 0, err
    result = json.loads(out)
    ref = infinite_width_kernels(x, network=Network.mlp(3, "relu", 2**0.5, 0, 1, 0))
    assert set(result) == {"nngp", "ntk"}
    assert np.allclose(result["nngp"], ref.nngp_same, rtol=1e-12) and np.allclose(result["ntk"], ref.ntk_same)


def test_kernel_with_modulations_members_and_cross(inputs, cli, tmp_path):
    path, x = inputs
    args = ["ntk", "kernel", "--inputs", str(path), "--depth", "2", "--modulation",
            "u=shifted-normal:0.4,v=normal:0,1", "--members", "4", "--gamma", "1", "--json"]
    code, out, _ = cli(args)
    same = json.loads(out)
    net = Network.mlp(2, "relu", 2**0.5, u=d.ShiftedNormal(0.4), v=d.Normal(0, 1))
    ref = infinite_width_kernels(x, network=net, members=4, gamma=1)
    assert np.allclose(same["ntk"], ref.ntk_same) and np.allclose(same["ntk_individual"], ref.ntk_same_individual)
    assert np.allclose(np.array(same["ntk_common"]) + same["ntk_individual"], same["ntk"])
    code, out, _ = cli([*args, "--members-kernel", "cross", "--out", str(tmp_path / "k.npz")])
    cross = json.loads(out)
    assert np.allclose(cross["ntk"], ref.ntk_cross) and np.allclose(cross["nngp"], ref.nngp_cross)
    assert np.allclose(np.load(tmp_path / "k.npz")["ntk"], ref.ntk_cross)
    code, out, _ = cli(args[:-1])  # human-readable
    assert code == 0 and "ntk_individual" in out


def test_frozen_and_layers(inputs, cli):
    path, x = inputs
    code, out, _ = cli(["ntk", "kernel", "--inputs", str(path), "--depth", "3", "--modulation", "u=normal:0,1",
                        "--layers", "-1", "--frozen", "--json"])
    result = json.loads(out)
    assert np.allclose(result["ntk_individual"], 0)
    net = Network.mlp(3, "relu", 2**0.5, u=d.Normal(0, 1), layers=[-1], trainable=False)
    assert np.allclose(result["ntk"], infinite_width_kernels(x, network=net).ntk_same)


def test_regime_json_and_table(cli):
    code, out, _ = cli(["ntk", "regime", "--depth", "4", "--activation", "relu", "--modulation",
                        "u=shifted-normal:0.3,v=shifted-normal:0", "--json"])
    result = json.loads(out)
    ref = regime(Network.mlp(4, "relu", 2**0.5, u=d.ShiftedNormal(0.3), v=d.ShiftedNormal(0.0)))
    assert result["verdict"] == "collective" == ref["verdict"]
    assert result["ntk_ratio"] == pytest.approx(ref["ntk_ratio"]) and len(result["layers"]) == 5
    code, out, _ = cli(["ntk", "regime", "--depth", "2", "--modulation", "u=normal:0,1"])
    assert code == 0 and "verdict: independent" in out


def test_empirical_from_model_spec_and_run_dir(tmp_path, cli):
    spec = json.dumps({"ensemble": "batch", "members": 3, "widths": [16], "modulation": "shifted-normal:0.5"})
    code, out, err = cli(["ntk", "empirical", "--model", spec, "--inputs", "8", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["members"] == 3 and result["inputs"] == 8
    assert set(result["nll"]["eq62"]) == {"1", "2"} and 0 <= result["gradient_cosine"]["mean"] <= 1
    code, _, err = cli(["train", "--dataset", "digits", "--widths", "16", "--members", "3", "--ensemble", "batch",
                        "--epochs", "1", "--out", str(tmp_path / "r"), "--json"])
    assert code == 0, err
    code, out, err = cli(["ntk", "empirical", str(tmp_path / "r"), "--inputs", "6", "--float64", "--json"])
    assert code == 0, err
    assert json.loads(out)["ntk"]["cross_to_same"] >= 0
    code, out, _ = cli(["ntk", "empirical", str(tmp_path / "r"), "--inputs", "6"])
    assert code == 0 and "Eq. (62)" in out


BAD = [
    (["ntk", "kernel", "--inputs", "{tmp}/missing.npy", "--depth", "2"], "inputs"),
    (["ntk", "kernel", "--inputs", "{tmp}/obj.npy", "--depth", "2"], "inputs"),
    (["ntk", "kernel", "--inputs", "{tmp}/X.npy", "--depth", "0"], "depth"),
    (["ntk", "kernel", "--inputs", "{tmp}/X.npy", "--depth", "2", "--activation", "swish"], "activation"),
    (["ntk", "kernel", "--inputs", "{tmp}/X.npy", "--depth", "2", "--modulation", "u=cauchy:1"], "cauchy"),
    (["ntk", "kernel", "--inputs", "{tmp}/X.npy", "--depth", "2", "--gamma", "2"], "members"),
    (["ntk", "kernel", "--inputs", "{tmp}/X.npy", "--depth", "2", "--members-kernel", "both"], "members-kernel"),
    (["ntk", "kernel", "--inputs", "{tmp}/X.npy", "--depth", "2", "--layers", "5"], "layers"),
    (["ntk", "regime", "--depth", "2", "--modulation", "v=shifted-normal:2"], "ShiftedNormal.p"),
    (["ntk", "empirical"], "run"),
    (["ntk", "empirical", "--model", "{not json"], "model"),
    (["ntk", "empirical", "{tmp}/nowhere"], "config"),
    (["ntk"], "KERNEL_COMMAND"),
]


@pytest.mark.parametrize("argv,word", BAD, ids=[" ".join(a[:2] + a[-2:]) for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, word, tmp_path, cli):
    np.save(tmp_path / "X.npy", np.ones((2, 3)))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = cli([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0], err


@pytest.mark.parametrize("command", [["ntk"], ["ntk", "kernel"], ["ntk", "regime"], ["ntk", "empirical"]])
def test_help(command, cli):
    code, out, _ = cli([*command, "--help"])
    assert code == 0 and "usage" in out


def test_kernel_and_regime_of_a_convnet_as_trained(tmp_path, cli):
    """--model reads the kernels from the very ensemble deepens builds (a BatchEnsemble of the average-pooling
    EE ConvNet on digits); --run from a trained run; a max-pooling ConvNet is refused in one line."""
    from deepens.training.build import build_ensemble
    from deepens.training.config import TrainConfig
    from deepens.training.trainer import load_data, load_run

    x = np.random.default_rng(1).normal(size=(3, 1, 8, 8))
    np.save(tmp_path / "img.npy", x)
    options = {"model": "convnet", "pool": "avg", "width": 0.0625, "ensemble": "batch", "members": 3,
               "modulation": "u=shifted-normal:0.5,v=normal:0,1"}
    code, out, err = cli(["ntk", "kernel", "--inputs", tmp_path / "img.npy", "--model", json.dumps(options), "--json"])
    assert code == 0, err
    config = TrainConfig.from_dict(options).validate()
    model = build_ensemble(config, load_data(config, "cpu"))
    ref = infinite_width_kernels(x, network=Network.from_module(model))
    got = json.loads(out)
    assert np.allclose(got["ntk"], ref.ntk_same, rtol=1e-12) and np.allclose(got["ntk_individual"],
                                                                           ref.ntk_same_individual, rtol=1e-12)
    code, out, err = cli(["ntk", "regime", "--model", json.dumps(options), "--json"])
    assert code == 0 and json.loads(out)["verdict"] == "collective", err
    code, out, err = cli(["ntk", "regime", "--model", json.dumps({**options, "modulation": "u=normal:0,1"}), "--json"])
    assert json.loads(out)["verdict"] == "independent"
    code, _, err = cli(["ntk", "kernel", "--inputs", tmp_path / "img.npy", "--model",
                        json.dumps({**options, "pool": "max"})])
    assert code == 2 and "max pooling" in err and len(err.strip().splitlines()) == 1
    run = tmp_path / "run"
    code, _, err = cli(["train", "--dataset", "digits", "--model", "convnet", "--pool", "avg", "--width", "0.0625",
                        "--members", "2", "--ensemble", "deep", "--epochs", "1", "--out", run, "--json"])
    assert code == 0, err
    code, out, err = cli(["ntk", "kernel", "--inputs", tmp_path / "img.npy", "--run", run, "--members-kernel",
                          "cross", "--json"])
    assert code == 0, err
    _, _, trained = load_run(run, "cpu")
    assert np.allclose(json.loads(out)["nngp"], 0.0)  # a deep ensemble's members share nothing
    same = infinite_width_kernels(x, network=trained)
    assert np.all(np.diag(same.ntk_same) > 0)
