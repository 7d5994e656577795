"""minicl.mechanism: the experiments' verdicts on inputs whose answer is known, and its commands on
tiny runs."""

import json

import pytest

from minicl import mechanism
from minicl.train import train


def layer(index: int, gd: int, newton: int, verdict: str = "ridge_1") -> dict:
    family = {"at_edge": False, "distance": 0.1}
    return {
        "layer": index,
        "verdict": verdict,
        "families": {
            "gd": family | {"closest": f"gd_{gd}", "band": [f"gd_{gd}", f"gd_{gd}"]},
            "newton": family | {"closest": f"newton_{newton}", "band": [f"newton_{newton}", f"newton_{newton}"]},
        },
    }


def report(settings: dict[str, list[tuple[int, int]]]) -> dict:
    """A sweep=algorithms JSON whose layers match these (GD, Newton) counts; layer 0 and 1 say none."""
    return {
        "run": "made-up",
        "settings": {
            name: {
                "layers": [layer(0, 1, 1, "none"), layer(1, 1, 1, "none")]
                + [layer(i + 2, *c) for i, c in enumerate(counts)]
            }
            for name, counts in settings.items()
        },
    }


def test_fus_claims_are_judged_as_their_criteria_say():
    fu = [(2, 3), (6, 5), (16, 8), (45, 11)]  # GD x2.8 a layer, Newton +2 or +3 a layer
    newton_jumps = [(2, 3), (6, 9), (16, 10), (45, 11)]  # Newton +6 once
    slow_gd = [(2, 3), (3, 5), (4, 8), (6, 11)]  # GD x1.4 a layer
    ill = [(8, 3), (30, 6), (64, 9), (181, 12)]  # GD 4x standard's, Newton within 1
    verdicts = mechanism.depth({"r": report({"standard": fu, "kappa_10": ill})})["verdicts"]
    by_setting = {v["setting"]: v for v in verdicts}
    standard = by_setting["standard"]
    assert standard["holds"] and standard["gd_growth_per_layer"] == pytest.approx((45 / 2) ** (1 / 3))
    assert by_setting["standard against kappa_10"]["holds"]
    assert by_setting["standard against kappa_10"]["layers_compared"] == 4  # the "none" layers left out
    for counts in (newton_jumps, slow_gd):
        assert not mechanism.depth({"r": report({"standard": counts})})["verdicts"][0]["holds"]
    no_rise = mechanism.depth({"r": report({"standard": fu, "kappa_10": fu})})["verdicts"][-1]
    assert no_rise["gd_doubles_on"] == 0 and not no_rise["holds"]


def row(arch, layers, seed, mask, error, gd_error):
    return {"arch": arch, "n_layer": layers, "seed": seed, "mask": mask, "error": error, "gd_error": gd_error}


def test_the_mask_verdicts_need_every_seed_and_three_of_them():
    rows = [row("lsa", 2, s, "prefix", 0.3, 0.4) for s in range(3)] + [
        row("lsa", 3, s, "prefix", 0.3, 0.2 + 0.1 * (s == 2)) for s in range(3)
    ]
    pairs = [
        {"arch": "lsa", "n_layer": 2, "seed": s, "prefix_minus_causal": -0.1, "band": [-0.2, -0.05]} for s in range(3)
    ]
    pairs += [
        {"arch": "transformer", "n_layer": 3, "seed": s, "prefix_minus_causal": -0.1, "band": [-0.2, 0.01 * s - 0.005]}
        for s in range(3)
    ]
    verdicts = {v["claim"]: v for v in mechanism.mask_verdicts(rows, pairs)}
    assert verdicts["von Oswald: 2-layer prefix lsa at most 2-step GD's error"]["holds"]
    assert verdicts["von Oswald: 3-layer prefix lsa at most 3-step GD's error"]["held_on"] == 1
    assert verdicts["Ding: 2-layer lsa, prefix below causal"]["holds"]
    ding = verdicts["Ding: 3-layer transformer, prefix below causal (band below 0)"]
    assert ding["held_on"] == 1 and not ding["holds"]  # the bands of seeds 1 and 2 reach above 0
    two_seeds = mechanism.mask_verdicts(rows[:2], pairs[:2])
    assert not any(v["holds"] or v["judged"] for v in two_seeds)


def test_the_mechanism_commands_run_on_tiny_runs(tiny_cfg, tmp_path):
    for mask in ("causal", "prefix"):
        train(
            tiny_cfg("model.arch=lsa", f"model.mask={mask}", "trainer.loss_on=last", "trainer.snapshot_every=2"),
            tmp_path / "runs" / mask,
        )
    out = mechanism.main(["masks", str(tmp_path / "runs"), "--out", str(tmp_path / "masks.json"), "--n-prompts", "64"])
    assert out["kind"] == "masks" and len(out["runs"]) == 2 and len(out["pairs"]) == 1
    assert json.loads((tmp_path / "masks.json").read_text())["command"].startswith("python -m minicl.mechanism masks")
    dynamics = mechanism.main(
        [
            "dynamics",
            str(tmp_path / "runs" / "causal"),
            "--out",
            str(tmp_path / "d.json"),
            "--figure",
            str(tmp_path / "d.png"),
        ]
    )
    assert [p["step"] for p in dynamics["runs"][0]["points"]] == [2, 4, 6] and (tmp_path / "d.png").is_file()
    assert dynamics["holds_on"][1] == 1 and "gd_before_least_squares" in dynamics["runs"][0]
    with pytest.raises(FileNotFoundError, match="holds none"):
        mechanism.main(["masks", str(tmp_path), "--out", str(tmp_path / "x.json")])


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        (["zero", "gd_2", "tie: gd_8 / least_squares", "least_squares"], (2, 3, True)),
        (["zero", "tie: gd_2 / ridge_1", "least_squares"], (None, 3, False)),  # a tie is not GD-like
        (["least_squares", "gd_4", "gd_8"], (2, 1, False)),  # least squares first
        (["gd_1", "gd_4", "ridge_0.01"], (1, None, False)),  # never least-squares-like
        (["gd_1", "tie: ridge_0.01 / least_squares"], (1, 2, True)),
    ],
)
def test_the_dynamics_order_on_known_verdict_sequences(verdicts, expected):
    found = mechanism.order([{"step": i + 1, "verdict": v} for i, v in enumerate(verdicts)])
    assert (found["first_gd"], found["first_least_squares"], found["gd_before_least_squares"]) == expected
