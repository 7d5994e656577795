import json
import math
import subprocess
import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException

from minicl import load_model
from minicl.config import check_config, config_differences
from minicl.tasks import TASKS
from minicl.train import learning_rate, train
from tests.helpers import SHORT, assert_final_eval_is_the_models, logged


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_writes_a_loadable_checkpoint_and_log(tiny_cfg, tmp_path):
    model = train(tiny_cfg(), tmp_path)
    assert (tmp_path / "state.pt").exists() and (tmp_path / "state.prev.pt").exists()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert set(records[0]) == {"step", "loss", "active_dims", "points", "steps_per_s"}
    final = json.loads((tmp_path / "final_eval.json").read_text())
    assert final["k"] == 10 and final["least_squares"] < 1e-6
    assert_final_eval_is_the_models(tmp_path)
    loaded = load_model(tmp_path)
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"
    xs, ys = torch.randn(4, 11, 5), torch.randn(4, 11)
    torch.testing.assert_close(loaded(xs, ys), model(xs, ys), rtol=0, atol=0)


def test_resume_gives_the_same_weights_as_one_run(tiny_cfg, tmp_path):
    whole = weights(
        train(tiny_cfg("task.curriculum.points.start=3", "task.curriculum.points.interval=2"), tmp_path / "a")
    )
    train(
        tiny_cfg("task.curriculum.points.start=3", "task.curriculum.points.interval=2", "trainer.steps=3"),
        tmp_path / "b",
    )
    resumed = weights(
        train(tiny_cfg("task.curriculum.points.start=3", "task.curriculum.points.interval=2"), tmp_path / "b")
    )
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert logged(tmp_path / "b") == [2, 3, 4, 6]


def test_resume_refuses_a_different_config(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.steps=2"), tmp_path)
    with pytest.raises(ValueError, match=r"different config.*trainer.lr: 0.001 -> 0.002"):
        train(tiny_cfg("trainer.lr=2e-3"), tmp_path)


def test_init_starts_from_another_runs_weights_and_refuses_another_model(tiny_cfg, tmp_path):
    source = weights(train(tiny_cfg("trainer.steps=2"), tmp_path / "a"))
    started = weights(
        train(tiny_cfg("trainer.steps=1", "trainer.lr=1e-12", f"trainer.init={tmp_path / 'a'}"), tmp_path / "b")
    )
    fresh = weights(train(tiny_cfg("trainer.steps=1", "trainer.lr=1e-12"), tmp_path / "c"))
    for k in source:  # one step at a learning rate of 1e-12 moves no weight by more than that
        torch.testing.assert_close(started[k], source[k], rtol=0, atol=1e-9)
    assert max((source[k] - fresh[k]).abs().max() for k in source) > 1e-4  # what training moved them
    with pytest.raises(ValueError, match=r"trainer.init=.* another config.*n_embd="):
        train(tiny_cfg("trainer.steps=1", "model.n_embd=16", f"trainer.init={tmp_path / 'a'}"), tmp_path / "d")
    with pytest.raises(FileNotFoundError, match=r"trainer.init=.*nowhere: no run directory"):
        train(tiny_cfg("trainer.steps=1", f"trainer.init={tmp_path / 'nowhere'}"), tmp_path / "e")


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.steps=4"), tmp_path)
    (tmp_path / "state.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable.*using state.prev.pt \\(step 2\\)"):
        load_model(tmp_path)


def test_non_finite_loss_stops_and_names_the_step(tiny_cfg, tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite loss at step 0"):
        train(tiny_cfg("task.w_scale=nan"), tmp_path)
    assert not (tmp_path / "state.pt").exists()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains(compose_cfg, tmp_path, task):
    train(compose_cfg(f"task={task}", "model=tiny", *SHORT, "trainer.steps=2"), tmp_path)
    assert json.loads((tmp_path / "final_eval.json").read_text())["k"] == 40
    assert_final_eval_is_the_models(tmp_path)


def test_command_line_entry_point(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "minicl.train",
        "task=quadratic",
        "experiment=quick",
        "trainer.steps=3",
        "trainer.eval_prompts=16",
        f"hydra.run.dir={tmp_path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "normalised squared error at k=10" in out.stdout
    assert (tmp_path / "state.pt").exists() and (tmp_path / ".hydra" / "config.yaml").exists()


def test_the_banner_and_the_saved_config_name_the_precision_that_ran(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg("trainer.steps=2", "trainer.amp=null", "trainer.compile=null"), tmp_path / "auto")
    saved = torch.load(tmp_path / "auto" / "state.pt", weights_only=True)["config"]["trainer"]
    assert saved["amp"] in (True, False) and saved["compile"] is False  # resolved, never null
    assert ("bf16 autocast" if saved["amp"] else ": eager, fp32") in capsys.readouterr().out
    train(tiny_cfg("trainer.steps=2", "trainer.amp=true"), tmp_path / "bf16")
    assert torch.load(tmp_path / "bf16" / "state.pt", weights_only=True)["config"]["trainer"]["amp"] is True
    assert "eager, bf16 autocast" in capsys.readouterr().out


def test_learning_rate_schedules(compose_cfg):
    tr = compose_cfg(
        "trainer.steps=100", "trainer.lr=1.0", "trainer.schedule=cosine", "trainer.warmup_steps=10"
    ).trainer
    lrs = [learning_rate(tr, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    constant = compose_cfg("trainer.lr=0.3").trainer
    assert {learning_rate(constant, s) for s in (0, 5, 10**6)} == {0.3}
    with pytest.raises(ConfigCompositionException, match="trainer.schedule=linear"):
        compose_cfg("trainer.schedule=linear")
    wsd = compose_cfg(
        "trainer.steps=100",
        "trainer.lr=1.0",
        "trainer.schedule=wsd",
        "trainer.warmup_steps=10",
        "trainer.decay_steps=40",
    ).trainer
    lrs = [learning_rate(wsd, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and set(lrs[9:61]) == {1.0}
    assert lrs[61] == pytest.approx(39 / 40) and lrs[80] == pytest.approx(0.5) and lrs[99] == pytest.approx(1 / 40)
    short = compose_cfg("trainer.steps=4", "trainer.lr=1.0", "trainer.schedule=wsd", "trainer.decay_steps=8").trainer
    assert [learning_rate(short, s) for s in range(4)] == [0.5, 0.375, 0.25, 0.125]  # a cut-short run: its tail
    with pytest.raises(ValueError, match="trainer.schedule=wsd needs trainer.decay_steps >= 1, got 0"):
        check_config(compose_cfg("trainer.schedule=wsd"))


def test_a_resumed_cosine_run_matches_one_run_and_keeps_its_length(tiny_cfg, tmp_path):
    schedule = ("trainer.schedule=cosine", "trainer.warmup_steps=2")
    whole = weights(train(tiny_cfg(*schedule), tmp_path / "a"))
    train(tiny_cfg(*schedule), tmp_path / "b")
    (tmp_path / "b" / "state.pt").unlink()  # as if killed after step 4's checkpoint
    resumed = weights(train(tiny_cfg(*schedule), tmp_path / "b"))
    assert all(torch.equal(whole[k], v) for k, v in resumed.items())
    with pytest.raises(ValueError, match="trainer.steps: 6 -> 8"):  # the schedule depends on it
        train(tiny_cfg(*schedule, "trainer.steps=8"), tmp_path / "b")
    saved = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["config"]
    wsd = {**saved, "trainer": {**saved["trainer"], "schedule": "wsd", "decay_steps": 2}}
    longer = {**wsd, "trainer": {**wsd["trainer"], "steps": 8}}
    assert config_differences(wsd, longer) == ["trainer.steps: 6 -> 8"]  # wsd's decay depends on it too


def test_the_final_report_says_whether_the_model_left_the_plateau(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg(), tmp_path / "fresh")  # six steps from random weights: about predicting 0
    fresh = json.loads((tmp_path / "fresh" / "final_eval.json").read_text())
    assert fresh["plateau"] is True and 1.1 * fresh["zero"] >= fresh["transformer"] >= 0.9 * fresh["zero"] > 0.5
    assert fresh["worse_than_zero"] is False
    assert "stayed on the plateau" in capsys.readouterr().out
    points = ("task.curriculum.points.start=21", "task.curriculum.points.end=21", "model.n_positions=21")
    train(tiny_cfg(*points, "trainer.init=pretrained:quick", "trainer.lr=1e-9"), tmp_path / "trained")
    trained = json.loads((tmp_path / "trained" / "final_eval.json").read_text())
    assert trained["plateau"] is False and trained["transformer"] < 0.2 * trained["zero"]
    assert "plateau" not in capsys.readouterr().out
    train(tiny_cfg(*points, "trainer.init=pretrained:quick", "trainer.lr=1"), tmp_path / "wrong")
    wrong = json.loads((tmp_path / "wrong" / "final_eval.json").read_text())  # six steps of lr 1 wreck it
    assert wrong["worse_than_zero"] is True and wrong["plateau"] is False
    assert "worse than predicting 0" in capsys.readouterr().out
