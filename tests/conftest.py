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
