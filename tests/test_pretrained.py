"""The models shipped with minicl: each loads offline, re-evaluates to its recorded errors, and
runs through every command that takes run=; the wheel carries them with the configs."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from omegaconf import OmegaConf

import minicl
from minicl import pretrained, ship
from minicl.common import pointwise_metric, predict_in_batches
from minicl.config import CONF, task_from_config
from minicl.evaluate import evaluate_run
from minicl.explore import run_sweep
from minicl.probe import probe_run
from minicl.reproduce import reproduce
from minicl.rundir import SHIPPED
from minicl.settings import setting_prompts
from minicl.ship import queries_evaluation
from minicl.train import train
from tests.helpers import logged, tiny

NAMES = [
    "decision_tree",
    "linear",
    "linear_d20",
    "linear_deep",
    "noise_mixture",
    "quick",
    "relu_2nn",
    "sparse_linear",
    "tables",
    "tables_base",
]


def test_the_ten_models_are_shipped_with_their_records():
    assert pretrained.names() == NAMES
    for name in NAMES:
        assert (SHIPPED / f"{name}.pt").stat().st_size < 2**22  # fp32, at most 4 MB (tables, tables_base: 3.3)
        info = pretrained.info(name)
        assert info["command"].startswith("python -m minicl.") and info["commit"] and info["machine"]["cpu"]
        assert info["steps"] == info["config"]["trainer"]["steps"] and info["train_seconds"] > 0
    assert minicl.load_model("pretrained:linear").config == pretrained.load("linear").config
    with pytest.raises(FileNotFoundError, match="no shipped model 'cubic'; shipped: \\['decision_tree'"):
        minicl.load_model("pretrained:cubic")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "tables_base" else n for n in NAMES]
)  # tables_base is only a starting point
def test_each_shipped_model_reevaluates_within_its_recorded_bands(name):
    """Fresh prompts (another seed): the error at k = d/2, d, 2d as recorded, within sampling error. A
    5-95% band is 3.29 sigma of a mean wide; two independent means differ by N(0, 2 sigma^2), so
    sqrt(2) widths is 4.65 of their sigma (a false failure once in 3e5 checks)."""
    info, model = pretrained.info(name), pretrained.load(name)
    if info["evaluation"]["setting"] == "queries":  # trained as ICLRegressor reads a table
        fresh_run = queries_evaluation(SHIPPED / f"{name}.pt", info["evaluation"]["n_prompts"], "cpu", seed=1000)
        for c, recorded in info["evaluation"]["contexts"].items():
            got, want = fresh_run["contexts"][c]["model"], recorded["model"]
            assert abs(got["mean"] - want["mean"]) <= 4.65 * (got["sem"] ** 2 + want["sem"] ** 2) ** 0.5, (c, got, want)
        return
    task = task_from_config(info["config"]["task"])
    p = setting_prompts(
        "standard", task, info["evaluation"]["n_prompts"], info["n_points"], info["evaluation"]["seed"] + 1000
    )
    fresh = pointwise_metric(task, predict_in_batches(model, p.xs, p.ys), p.targets).mean(0)
    recorded = info["evaluation"]["models"][model.config.arch]
    for k in sorted({min(k, info["n_points"] - 1) for k in (max(1, task.n_dims // 2), task.n_dims, 2 * task.n_dims)}):
        width = recorded["hi"][k] - recorded["lo"][k]
        assert abs(fresh[k].item() - recorded["mean"][k]) <= 2**0.5 * width, (
            k,
            fresh[k].item(),
            recorded["mean"][k],
            width,
        )


def test_every_command_takes_a_shipped_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a shipped model's results go to runs/pretrained/<name> below the working directory
    metrics = evaluate_run("pretrained:quick", settings=["standard"], n_prompts=32, progress=False, device="cpu")
    assert "transformer" in metrics["settings"]["standard"]["models"]
    assert (tmp_path / "runs" / "pretrained" / "quick" / "metrics.json").exists()
    run_sweep("pretrained:quick", "x_scale", values=[1.0, 2.0], n_prompts=16)
    probe_run("pretrained:quick", n_prompts=16)
    assert {p.name for p in (tmp_path / "runs" / "pretrained" / "quick" / "explore").iterdir()} >= {
        "x_scale.json",
        "probe.json",
    }
    out = subprocess.run(
        [sys.executable, "-m", "minicl.explore", "run=pretrained:quick", "sweep=dims", "n_prompts=16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert not list(tmp_path.glob("pretrained:*"))


def test_reproduce_judges_the_shipped_claims_without_training(tmp_path):
    results = reproduce(["linear", "relu_2nn"], out=tmp_path, n_prompts=64, device="cpu", source="pretrained")
    for c in results:
        [r] = c["runs"]
        shipped = pretrained.info(c["claim"])
        assert (
            r["run"] == f"pretrained:{c['claim']}" and r["train_seconds"] == shipped["train_seconds"] and r["seed"] == 0
        )
        assert r["curve"]["steps"] == shipped["curve"]["steps"] and r["curve"]["steps"]
    assert not list(tmp_path.rglob("state.pt")) and (tmp_path / "pretrained" / "claims.png").exists()
    with pytest.raises(ValueError, match="source must be one of"):
        reproduce(["linear"], out=tmp_path, source="cache")
    with pytest.raises(ValueError, match="trained on seed 0; scale=cpu seeds=.0, 1. has none"):
        reproduce(["linear"], out=tmp_path, source="pretrained", seeds=2)


def test_ship_writes_a_runs_model_and_its_record(tmp_path):
    train(tiny(), tmp_path / "run")
    record = ship.ship("mine", tmp_path / "run", n_prompts=32, to=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["evaluation"]["models"] == metrics["settings"]["standard"]["models"]
    assert record["curve"]["steps"] == [] and record["steps"] == 6 == logged(tmp_path / "run")[-1]
    assert minicl.load_model(tmp_path / "mine.pt").config == minicl.load_model(tmp_path / "run").config
    with pytest.raises(ValueError, match="no finished run to ship"):
        ship.ship("mine", tmp_path / "nothing", to=tmp_path)


def test_the_wheel_carries_configs_and_models_and_runs_from_an_empty_directory(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(CONF.parent),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("minicl-*.whl")
    held = set(zipfile.ZipFile(wheel).namelist())
    assert {f"minicl/conf/{p.relative_to(CONF)}" for p in CONF.rglob("*.yaml")} <= held
    assert {f"minicl/shipped/{name}.{ext}" for name in NAMES for ext in ("pt", "json")} <= held
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    for command in (
        ["-c", "import minicl; print(minicl.__file__)"],
        ["-m", "minicl.train", "task=linear", "experiment=quick", "trainer.steps=3", "trainer.eval_prompts=16"],
        ["-m", "minicl.evaluate", "run=pretrained:linear", "settings=[standard]", "n_prompts=32"],
    ):
        out = subprocess.run(
            [sys.executable, *command], cwd=empty, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        if command[0] == "-c":
            assert out.stdout.startswith(str(site))  # the wheel's minicl, not the checkout's
    assert (
        list(empty.glob("runs/linear/*/state.pt"))
        and (empty / "runs" / "pretrained" / "linear" / "metrics.json").exists()
    )


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return out


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_composes_to_the_config_its_model_was_trained_with(compose_cfg, name):
    """info(name)["command"] trains what was shipped: its last command composes to the record's config
    (but for keys the record's older schema had and today's has not, and how the run was shown or
    compiled), and a trainer.init names the run directory an earlier command of the recipe trains."""
    commands = pretrained.info(name)["command"].split(" && ")
    config = pretrained.info(name)["config"]
    dirs = [c.split("hydra.run.dir=")[1] for c in commands]
    words = commands[-1].split()[3:]
    assert words[-1] == f"hydra.run.dir={pretrained.RECIPES[name][0]}" == f"hydra.run.dir={dirs[-1]}"
    composed = flat(OmegaConf.to_container(compose_cfg(*words[:-1]), resolve=True))
    ignored = {"trainer.compile", "trainer.progress", "trainer.init"}
    differ = {
        k: (v, composed[k]) for k, v in flat(config).items() if k in composed and k not in ignored and composed[k] != v
    }
    assert not differ, differ
    init = composed["trainer.init"]
    assert init is None or init in dirs[:-1], init  # from an earlier step of the recipe, not a shipped file
    if init is not None:
        assert config["trainer"]["init"] is not None


def test_a_recipe_retrains_its_model_from_an_empty_directory(tmp_path):
    """The tables recipe (tables_base, then tables from its run), at 2 steps a command."""
    short = "trainer.steps=2 trainer.eval_prompts=8 trainer.queries=4 trainer.progress=false"
    command = " && ".join(f"{c} {short}" for c in pretrained.info("tables")["command"].split(" && "))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command.replace("python ", f"{sys.executable} ", 2),
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    state = minicl.rundir.read_run(tmp_path / "runs/ship/tables")
    assert state["config"]["trainer"]["init"] == "runs/ship/tables_base" and state["step"] == 2
    assert state["config"]["task"]["linear"] == 3 and (tmp_path / "runs/ship/tables_base/state.pt").exists()
