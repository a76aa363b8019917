import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same global RNG state and restores the default dtype."""
    torch.manual_seed(1234)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture
def cli(capsys):
    """Run ``deepens ARGS`` in-process: returns (exit status, stdout, stderr); argparse's exits for --help and
    usage errors are caught."""
    from deepens.cli.main import main

    def run(args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def interrupt_training_after(patch, calls: int) -> None:
    """Make the trainer raise KeyboardInterrupt at training step ``calls`` + 1 (``patch``: a MonkeyPatch)."""
    import deepens.training.trainer as trainer_module

    real, count = trainer_module.training_step, {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    patch.setattr(trainer_module, "training_step", flaky)


@pytest.fixture
def interrupted_and_resumed(monkeypatch, tmp_path):
    """``run(options, after)``: train ``options`` uninterrupted (``tmp_path/ref``), then again interrupted after
    ``after`` training steps and resumed from its checkpoint (``tmp_path/cut``); returns (reference, resumed)."""
    from deepens.training import TrainConfig, train

    def run(options: dict, after: int):
        reference = train(TrainConfig(**options), tmp_path / "ref", progress=False)
        with monkeypatch.context() as patch:
            interrupt_training_after(patch, after)
            with pytest.raises(KeyboardInterrupt):
                train(TrainConfig(**options), tmp_path / "cut", progress=False)
        resumed = train(TrainConfig(**options), tmp_path / "cut", resume=True, progress=False)
        return reference, resumed

    return run


@pytest.fixture
def cifar100_files():
    """``write(root, n_train=20, n_test=8)``: CIFAR-100 files in the official python format under
    ``root/cifar-100-python`` (random pixels, labels 0, 1, 2, ...)."""
    import pickle

    import numpy as np

    def write(root, n_train: int = 20, n_test: int = 8):
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name, n in (("train", n_train), ("test", n_test)):
            with open(folder / name, "wb") as fh:
                pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [0] * n}, fh, protocol=4)
        return folder

    return write
