"""The deepens CLI: --help, --json, one-line errors with exit status 2, SIGKILL-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from deepens.runs import RunDir

FAST = ["--dataset", "digits", "--widths", "16", "--members", "3", "--epochs", "2", "--no-progress",
        "--checkpoint-seconds", "0"]


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"]])
def test_help(command, cli):
    code, out, _ = cli([*command, "--help"])
    assert code == 0 and "usage: deepens" in out


def test_train_json_and_evaluate(tmp_path, cli):
    out_dir = tmp_path / "run"
    code, out, err = cli(["train", *FAST, "--out", str(out_dir), "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert 0.5 < result["test"]["accuracy"] <= 1 and len(result["test"]["curve"]) == 3
    assert result["members"] == 3 and result["run"] == str(out_dir)
    code, out, _ = cli(["evaluate", str(out_dir), "--json"])
    assert code == 0
    evaluated = json.loads(out)
    assert evaluated["test"]["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1e-12)
    assert evaluated["test"]["nll"] == pytest.approx(result["test"]["nll"], abs=1e-9)
    code, out, _ = cli(["evaluate", str(out_dir)])
    assert code == 0 and "correlation" in out and "test" in out


def test_config_file_and_flags_override(tmp_path, cli):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dataset": "digits", "widths": [8], "members": 2, "epochs": 1, "lr": 0.1}))
    code, out, err = cli(["train", "--config", str(cfg), "--members", "4", "--out", str(tmp_path / "r"),
                          "--json", "--no-progress"])
    assert code == 0, err
    stored = RunDir(tmp_path / "r").read_config()["train"]
    assert stored["members"] == 4 and stored["widths"] == [8] and stored["lr"] == 0.1
    # a run's config.json re-runs the run
    code, _, err = cli(["train", "--config", str(tmp_path / "r" / "config.json"), "--out", str(tmp_path / "r2"),
                        "--json"])
    assert code == 0, err
    a = RunDir(tmp_path / "r").read_weights()
    b = RunDir(tmp_path / "r2").read_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_modulation_syntax(tmp_path, cli):
    code, _, err = cli(["train", *FAST, "--ensemble", "batch", "--frozen", "--modulation",
                        "u=normal:0,1,v=constant:1", "--out", str(tmp_path / "r"), "--json"])
    assert code == 0, err
    cfg = RunDir(tmp_path / "r").read_config()["train"]
    assert cfg["modulation"] == "u=normal:0,1,v=constant:1"
    weights = RunDir(tmp_path / "r").read_weights()
    assert torch.equal(weights["net.modulations.v1.values"], torch.ones(3, 16))  # frozen constant 1
    u = weights["net.modulations.u1.values"]
    assert u.shape == (3, 16) and abs(float(u.mean())) < 0.5 and 0.5 < float(u.std()) < 1.5  # N(0, 1) draws


def _corrupt_run(tmp_path, cli):
    out_dir = tmp_path / "c"
    code, _, err = cli(["train", *FAST, "--out", str(out_dir), "--json"])
    assert code == 0, err
    (out_dir / "metrics.json").unlink()  # pretend it was killed before finishing
    (out_dir / "checkpoints" / "epoch-000002" / "optimizer.safetensors").write_bytes(b"\x00garbage")
    return out_dir


BAD = [
    (["train", "--out", "{tmp}/a", "--dataset", "imagenet"], "dataset"),
    (["train", "--out", "{tmp}/a", "--model", "resnet"], "--model"),
    (["train", "--out", "{tmp}/a", "--ensemble", "snapshot"], "--ensemble"),
    (["train", "--out", "{tmp}/a", "--dataset", "cifar10"], "data_dir"),
    (["train", "--out", "{tmp}/a", "--epochs", "-3"], "epochs"),
    (["train", "--out", "{tmp}/a", "--epochs", "two"], "--epochs"),
    (["train", "--out", "{tmp}/a", "--gamma", "sqrt"], "gamma"),
    (["train", "--out", "{tmp}/a", "--members", "0"], "members"),
    (["train", "--out", "{tmp}/a", "--modulation", "shifted-normal:1.5", "--ensemble", "batch"], "ShiftedNormal.p"),
    (["train", "--out", "{tmp}/a", "--modulation", "w=sign", "--ensemble", "batch"], "unknown kind"),
    (["train", "--out", "{tmp}/a", "--modulation", "sign"], "no modulations"),
    (["train", "--out", "{tmp}/a", "--widths", "12,x"], "widths"),
    (["train", "--out", "{tmp}/a", "--model", "convnet", "--dataset", "mnist1d"], "image data"),
    (["train", "--out", "{tmp}/a", "--device", "tpu"], "device"),
    (["train", "--out", "{tmp}/a", "--config", "{tmp}/missing.json"], "config"),
    (["train", "--out", "{tmp}/blocker/run"], "out: cannot write"),
    (["train"], "--out"),
    (["evaluate", "{tmp}/nothing"], "config"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv,word", BAD, ids=[" ".join(a[:3]) + " " + w for a, w in BAD])
def test_bad_arguments_one_line_exit_2(argv, word, tmp_path, cli):
    (tmp_path / "blocker").write_text("a file, not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = cli(argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert word in lines[0] and "Traceback" not in err


def test_corrupt_checkpoint_one_line_exit_2(tmp_path, cli):
    out_dir = _corrupt_run(tmp_path, cli)
    code, _, err = cli(["train", *FAST, "--out", str(out_dir), "--resume"])
    assert code == 2 and "checkpoint" in err and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_divergence_one_line_exit_2(tmp_path, cli):
    code, _, err = cli(["train", *FAST, "--lr", "1e6", "--out", str(tmp_path / "d")])
    assert code == 2 and "diverged" in err and "member(s)" in err and len(err.strip().splitlines()) == 1


def _cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "deepens", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_equal(tmp_path):
    args = ["train", "--dataset", "digits", "--widths", "32", "--members", "4", "--ensemble", "batch",
            "--epochs", "40", "--batch-size", "32", "--schedule", "cosine", "--no-progress",
            "--checkpoint-seconds", "0"]
    reference = _cli([*args, "--out", str(tmp_path / "ref")])
    killed = _cli([*args, "--out", str(tmp_path / "cut")])
    pointer = tmp_path / "cut" / "checkpoint.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it mid-training, once a few epochs are checkpointed
        if pointer.exists():
            try:
                if json.loads(pointer.read_text())["epoch"] >= 3:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.01)
    time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "metrics.json").exists()  # it really was cut short
    resumed = _cli([*args, "--out", str(tmp_path / "cut"), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    a = RunDir(tmp_path / "ref").read_weights()
    b = RunDir(tmp_path / "cut").read_weights()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ref_history = RunDir(tmp_path / "ref").read_history()
    cut_history = RunDir(tmp_path / "cut").read_history()
    for ref_row, cut_row in zip(ref_history, cut_history, strict=True):
        assert {k: v for k, v in ref_row.items() if k != "seconds"} == {
            k: v for k, v in cut_row.items() if k != "seconds"
        }
    assert [r["epoch"] for r in RunDir(tmp_path / "cut").read_history()] == list(range(1, 41))


def test_device_cuda_runs_or_says_why(tmp_path, cli):
    code, out, err = cli(["train", *FAST, "--device", "cuda", "--out", str(tmp_path / "g"), "--json"])
    if torch.cuda.is_available():
        assert code == 0 and json.loads(out)["test"]["accuracy"] > 0.5
    else:
        assert code == 2 and "CUDA is not available" in err and len(err.strip().splitlines()) == 1


def test_undefined_metrics_print_as_a_dash_not_nan(cli, tmp_path):
    """One member has no member correlation or disagreement: the table shows —, the JSON null."""
    code, out, err = cli(["train", "--dataset", "digits", "--members", "1", "--epochs", "1", "--out", tmp_path / "r",
                          "--no-progress"])
    assert code == 0, err
    assert "nan" not in out.lower()
    rows = [line.split() for line in out.splitlines() if line.split()[0] in ("train", "val", "test")
            and line.split()[1][0].isdigit()]
    assert len(rows) == 3 and all(r[-2:] == ["—", "—"] for r in rows)
    code, out, _ = cli(["evaluate", tmp_path / "r", "--json"])
    assert json.loads(out)["train"]["correlation"] is None


def test_make_demo_installs_only_what_the_demo_needs():
    """`make demo` installs the package (no dev extras: ray, playwright, pytest); `make test` adds them."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    demo = subprocess.run(["make", "-n", "demo", "VENV=/nonexistent/venv"], cwd=root, capture_output=True, text=True,
                          check=True).stdout
    test = subprocess.run(["make", "-n", "test", "VENV=/nonexistent/venv"], cwd=root, capture_output=True, text=True,
                          check=True).stdout
    assert "pip install --quiet -e ." in demo and "[dev]" not in demo and "torch==2.13.0" in demo
    assert 'pip install --quiet -e ".[dev]"' in test and "pytest" in test


def test_the_top_level_help_does_not_import_torch():
    """`deepens --help`, `deepens --version` and a mistyped command answer without importing torch (0.05 s, not
    seconds); a command's own --help imports what that command needs."""
    code = ("import sys\nfrom deepens.cli.main import main\n"
            "for argv in (['--help'], ['--version'], ['trian']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "train" in out.stdout and "invalid choice: 'trian'" in out.stderr


def test_every_command_has_help_and_json(cli):
    from deepens.cli.main import COMMANDS, build_parser

    full = build_parser()
    assert set(full._subparsers._group_actions[0].choices) == set(COMMANDS)
    for name in COMMANDS:
        code, out, _ = cli([name, "--help"])
        assert code == 0 and "usage: deepens " + name in out


def test_commands_write_under_runs_by_default():
    """`deepens equivariance` and `deepens study` write under runs/ unless told otherwise — never a folder named
    after the command in the working directory."""
    from deepens.cli.main import build_parser

    assert build_parser("equivariance").parse_args(["equivariance", "ising"]).out == "runs/equivariance"
    assert build_parser("study").parse_args(["study"]).out == "runs/study"
