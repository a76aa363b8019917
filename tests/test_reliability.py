"""What a new user's bad inputs get: exit status 2, one line naming the argument and the way on, no traceback, and
nothing written. The table of docs/reliability.md is rendered from CASES (``python tests/test_reliability.py``
rewrites it) and a test checks that the page is that rendering, so the documentation lists exactly what is
tested."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- cases:begin -->", "<!-- cases:end -->"


def _nan_logits(tmp: Path) -> None:
    z = np.random.default_rng(0).normal(size=(2, 30, 3))
    z[1, 7, 2] = np.nan
    np.save(tmp / "z.npy", z)
    np.save(tmp / "y.npy", np.arange(30) % 3)


def _nan_inputs(tmp: Path) -> None:
    x = np.ones((4, 3))
    x[3, 0] = np.inf
    np.save(tmp / "x.npy", x)


def _pickled(tmp: Path) -> None:
    np.save(tmp / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp / "y.npy", np.arange(30) % 3)


def _empty_spec(tmp: Path) -> None:
    (tmp / "empty.yaml").write_text("name: nothing\n")


def _finished_run(tmp: Path) -> None:
    from deepens.training import TrainConfig, train

    train(TrainConfig(dataset="digits", members=2, epochs=1, widths=[8]), tmp / "run", progress=False)


def _run_without_weights(tmp: Path) -> None:
    from deepens.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(dataset="digits", members=2, epochs=1, widths=[8]), tmp / "run")
    trainer.run.prepare()
    trainer.run.write_config({"train": trainer.config.to_dict()})


def _corrupt_checkpoint(tmp: Path) -> None:
    _finished_run(tmp)
    run = tmp / "run"
    for name in ("metrics.json", "model.safetensors"):
        (run / name).unlink()
    pointer = json.loads((run / "checkpoint.json").read_text())
    (run / pointer["dir"] / "optimizer.safetensors").write_bytes(b"\x00garbage")


def _nan_csv(tmp: Path) -> None:
    (tmp / "curve.csv").write_text("n,value\n1,1.0\n2,nan\n3,0.8\n4,0.7\n")


# (what the user did, argv (TMP: a fresh folder), set-up, words the one-line error must contain)
CASES = [
    ("more members than memory", ["train", "--dataset", "digits", "--members", "100000000", "--out", "TMP/out"],
     None, ["members: this training needs about", "available", "fit"]),
    ("a dry run of more members than memory", ["train", "--dataset", "digits", "--members", "100000000",
                                                "--dry-run"], None, ["members: this training needs about"]),
    ("a memory budget that is not a size", ["train", "--dataset", "digits", "--max-memory", "lots", "--out",
                                            "TMP/out"], None, ["memory: expected bytes or a size"]),
    ("CIFAR without its files", ["train", "--dataset", "cifar10", "--out", "TMP/out"], None,
     ["data_dir", "--data-dir"]),
    ("a learning rate that is not a number", ["train", "--dataset", "digits", "--lr", "fast", "--out", "TMP/out"],
     None, ["--lr", "invalid"]),
    ("a run directory that already holds a run", ["train", "--dataset", "digits", "--members", "2", "--epochs", "1",
                                                  "--widths", "8", "--out", "TMP/run"], _finished_run,
     ["already holds a run", "--resume", "--overwrite"]),
    ("resuming with other options", ["train", "--dataset", "digits", "--members", "3", "--epochs", "1", "--widths",
                                     "8", "--out", "TMP/run", "--resume"], _finished_run,
     ["resume: the options differ", "members", "--overwrite"]),
    ("a corrupt checkpoint", ["train", "--dataset", "digits", "--members", "2", "--epochs", "1", "--widths", "8",
                              "--out", "TMP/run", "--resume"], _corrupt_checkpoint, ["is corrupt", "--overwrite"]),
    ("evaluating a run that has no weights", ["evaluate", "TMP/run"], _run_without_weights,
     ["no weights yet", "--resume", "--overwrite"]),
    ("--estimate without --dry-run", ["train", "--dataset", "digits", "--estimate", "--out", "TMP/out"], None,
     ["estimate: only with --dry-run"]),
    ("NaN logits", ["calibrate", "TMP/z.npy", "--labels", "TMP/y.npy"], _nan_logits,
     ["logits", "z.npy", "non-finite", "member 1, sample 7"]),
    ("a pickled object array as logits", ["calibrate", "TMP/evil.npy", "--labels", "TMP/y.npy"], _pickled,
     ["evil.npy"]),
    ("infinite NTK inputs", ["ntk", "kernel", "--inputs", "TMP/x.npy"], _nan_inputs, ["non-finite", "row 3"]),
    ("a NaN in a power-law curve", ["powerlaw", "fit", "TMP/curve.csv"], _nan_csv, ["finite"]),
    ("an empty sweep spec", ["sweep", "plan", "TMP/empty.yaml"], _empty_spec,
     ["spec: declares no trainings", "base"]),
    ("the paper preset without its data", ["study", "--preset", "paper", "--plan"], None,
     ["data_dir", "--data-dir"]),
    ("a study part that does not exist", ["study", "--tiny", "--only", "regmie", "--out", "TMP/study"], None,
     ["only: expected comma-separated parts"]),
    ("a plan timed over zero steps", ["study", "--tiny", "--only", "lld", "--plan", "--plan-steps", "0"], None,
     ["steps: expected an integer >= 1"]),
]


def render() -> str:
    lines = ["| what the user did | command | what they get (exit 2, one line) |", "| --- | --- | --- |"]
    for what, argv, _setup, words in CASES:
        command = "deepens " + " ".join(a.replace("TMP/", "") for a in argv)
        lines.append(f"| {what} | `{command}` | {' … '.join(words)} |")
    return "\n".join(lines)


@pytest.mark.parametrize("what", [c[0] for c in CASES])
def test_bad_input_gets_one_line_exit_2_and_nothing_written(what, tmp_path, cli):
    _, argv, setup, words = next(c for c in CASES if c[0] == what)
    if setup is not None:
        setup(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    folders = {p for p in tmp_path.rglob("*") if p.is_dir()}
    code, out, err = cli([a.replace("TMP", str(tmp_path)) for a in argv])
    assert code == 2, (code, out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "a file was written or changed"
    assert {p for p in tmp_path.rglob("*") if p.is_dir()} == folders, "a folder was created or removed"


def test_the_reliability_page_lists_exactly_these_cases():
    text = PAGE.read_text()
    assert text[text.index(BEGIN) + len(BEGIN): text.index(END)].strip() == render()


if __name__ == "__main__":  # rewrite the table of docs/reliability.md
    text = PAGE.read_text()
    PAGE.write_text(text[: text.index(BEGIN) + len(BEGIN)] + "\n" + render() + "\n" + text[text.index(END):])
    sys.exit(0)
