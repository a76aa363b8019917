"""``deepens sweep run | status | plan | merge``, ``powerlaw pool --store`` and ``study --store``."""

import json

import pytest

from deepens.study import StudyConfig, run_study
from deepens.sweeps import Store, load_spec

SPEC = """\
name: pools
base:
  dataset: digits
  ensemble: deep
  members: 6
  epochs: 2
  widths: [16]
  data_seed: 0
grid:
  width: [0.5, 1.0]
members_per_task: 3
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.slow
def test_sweep_run_status_plan_and_merge(cli, spec_file, tmp_path):
    code, out, err = cli(["sweep", "plan", spec_file, "--json"])
    assert code == 0
    plan = json.loads(out)
    assert plan["tasks"] == 4 and [t["members"] for t in plan["task_list"]] == [3, 3, 3, 3]
    assert plan["hash"] == load_spec(spec_file).hash

    store = tmp_path / "store"
    code, out, err = cli(["sweep", "run", spec_file, "--store", store, "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["trained"], summary["done"], summary["failed"]) == (4, 4, 0)
    code, out, _ = cli(["sweep", "run", spec_file, "--store", store, "--no-progress"])
    assert code == 0 and "0 task(s) trained now, 4 done earlier; 4/4 done" in out

    code, out, _ = cli(["sweep", "status", "--store", store, "--json"])
    status = json.loads(out)
    sweep = status["sweeps"][0]
    assert (sweep["name"], sweep["done"], sweep["attempts"], sweep["failures"]) == ("pools", 4, 4, 0)
    assert [t["status"] for t in status["tasks"]["pools"]] == ["done"] * 4
    records = {r.id: r for r in Store(store).tasks("pools")}
    assert sweep["train_seconds"] == pytest.approx(sum(r.seconds for r in records.values()))
    code, out, _ = cli(["sweep", "status", "--store", store, "--tasks"])
    assert code == 0 and "4 done" in out and "width=0.5 [chunk 2/2]" in out

    code, out, _ = cli(["sweep", "merge", store, "--store", tmp_path / "copy", "--json"])
    assert code == 0 and json.loads(out) == {"copied": 4, "already_done": 0, "running_here": 0}
    assert Store(tmp_path / "copy").status()["total"]["done"] == 4


@pytest.mark.slow
def test_powerlaw_pool_reads_a_store(cli, spec_file, tmp_path):
    store = tmp_path / "store"
    assert cli(["sweep", "run", spec_file, "--store", store, "--json"])[0] == 0
    runs = [str(p) for p in Store(store).finished_runs("pools")]
    code, from_store, err = cli(["powerlaw", "pool", "--store", store, "--sweep", "pools", "--by", "width", "--json"])
    assert code == 0, err
    code, from_runs, _ = cli(["powerlaw", "pool", *runs, "--by", "width", "--json"])
    assert json.loads(from_store) == json.loads(from_runs)
    pools = json.loads(from_store)["pools"]
    assert [p["networks"] for p in pools] == [6, 6]  # two chunks of 3 networks at each width, pooled


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "status", "--store", "{tmp}/none"], "store: {tmp}/none holds no deepens store"),
    (["sweep", "run", "{tmp}/missing.yaml", "--store", "{tmp}/s"], "spec: {tmp}/missing.yaml does not exist"),
    (["sweep", "run", "{spec}", "--store", "{tmp}/s", "--address", "auto"], "address: only the ray executor"),
    (["sweep", "run", "{spec}", "--store", "{tmp}/s", "--max-retries", "-1"], "max_retries: expected an integer >= 0"),
    (["sweep", "run", "{spec}", "--store", "{tmp}/s", "--workers", "0"], "workers: expected an integer >= 1"),
    (["powerlaw", "pool", "--sweep", "x"], "sweep: --sweep selects a sweep of a store; add --store DIR"),
    (["powerlaw", "pool"], "runs: give run directories or --store DIR"),
])
def test_bad_input_is_one_line_and_status_2(cli, spec_file, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, spec=spec_file) for a in args]
    code, out, err = cli(args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_a_bad_spec_names_the_key(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {dataset: digits, lr: -1}\n")
    code, _, err = cli(["sweep", "plan", bad])
    assert code == 2 and "task: lr: expected a number in (0, inf), got -1" in err


@pytest.mark.slow
def test_a_sweep_with_failed_tasks_exits_1(cli, tmp_path):
    spec = tmp_path / "div.toml"
    spec.write_text('max_retries = 0\n[base]\ndataset = "digits"\nmembers = 1\nepochs = 1\nwidths = [8]\nlr = 1e6\n')
    code, out, err = cli(["sweep", "run", spec, "--store", tmp_path / "s", "--no-progress"])
    assert code == 1 and "1 failed" in out and "1 task(s) failed 1 time(s)" in err
    code, out, _ = cli(["sweep", "status", "--store", tmp_path / "s"])
    assert "failed  " in out and "DivergenceError: training diverged" in out


def test_every_sweep_command_has_help(cli):
    for command in ("run", "status", "plan", "merge"):
        code, out, _ = cli(["sweep", command, "--help"])
        assert code == 0 and "--json" in out


@pytest.mark.slow
def test_the_study_through_a_store_loads_what_it_trained(tmp_path):
    config = StudyConfig.preset_config("tiny", lld_lrs=[0.01, 1e6])  # lr 1e6 diverges
    plain = run_study(config, tmp_path / "plain", only="lld,pool", progress=False)  # its own store, plain/store
    first = run_study(config, tmp_path / "a", only="lld,pool", progress=False, store=tmp_path / "store")
    second = run_study(config, tmp_path / "b", only="lld,pool", progress=False, store=tmp_path / "store")
    assert not (tmp_path / "a" / "store").exists() and (tmp_path / "plain" / "store" / "store.json").exists()
    for name in ("lld", "pool"):
        assert first["parts"][name]["results"] == plain["parts"][name]["results"]
        assert second["parts"][name]["results"] == plain["parts"][name]["results"]
        assert first["parts"][name]["from_store"] == plain["parts"][name]["from_store"] == 0
        assert second["parts"][name]["from_store"] == second["parts"][name]["trainings"] - len(
            second["parts"][name]["diverged"])
    diverging = config.seeds * len(config.lld_members)
    assert len(second["parts"]["lld"]["diverged"]) == len(plain["parts"]["lld"]["diverged"]) == diverging
    status = Store(tmp_path / "store").status("study")["sweeps"][0]
    trainings = sum(first["parts"][n]["trainings"] for n in ("lld", "pool"))
    assert (status["tasks"], status["failed"], status["attempts"]) == (trainings, diverging, trainings)
