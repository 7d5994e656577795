"""The other architectures (model.arch): each against a slow reference, and each through the
commands downstream of training (causality and the one-pass queries for each: tests/test_model.py;
two processes under torchrun: tests/test_robustness.py)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import ConfigCompositionException

from minicl import ICLRegressor, load_model
from minicl.compare import compare
from minicl.config import model_config
from minicl.evaluate import evaluate_run
from minicl.explore import run_sweep
from minicl.model import MODELS, LinearAttention, ModelConfig, Transformer, build_model, lstm_width
from minicl.probe import probe_run
from minicl.reproduce import claim_config
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import TrainStep, make_optimizer, train
from tests.helpers import assert_final_eval_is_the_models, tiny

ARCHS = list(MODELS)
OTHERS = [a for a in ARCHS if a != "transformer"]
SIZED = [a for a in ARCHS if a != "lsa"]  # lsa's width is the tokens' (n_dims + 1), not model.n_embd


def make(arch, **kw):
    torch.manual_seed(0)
    cfg = dict(n_dims=4, n_positions=12, n_embd=32, n_layer=2, n_head=4, arch=arch) | kw
    return build_model(ModelConfig(**cfg)).eval()


def explicit_tokens(model, xs, ys):
    """x1, (y1, 0, ..., 0), x2, ... through read_in, written out: (B, 2N, width)."""
    B, N, D = xs.shape
    zs = torch.stack((xs, torch.cat((ys[..., None], torch.zeros(B, N, D - 1)), -1)), dim=2).view(B, 2 * N, D)
    return zs @ model.read_in.weight.T + model.read_in.bias


def read_out(model, h):
    h = F.layer_norm(h, h.shape[-1:], model.ln_f.weight, model.ln_f.bias, 1e-5)
    return (h @ model.read_out.weight.T + model.read_out.bias)[..., 0]


def test_lstm_equals_a_token_by_token_lstm():
    model = make("lstm").double()
    xs, ys = torch.randn(3, 9, 4, dtype=torch.double), torch.randn(3, 9, dtype=torch.double)
    tokens, rnn = explicit_tokens(model, xs, ys), model.rnn
    B, T, W = tokens.shape
    h = [torch.zeros(B, W, dtype=torch.double) for _ in range(rnn.num_layers)]
    c = [torch.zeros(B, W, dtype=torch.double) for _ in range(rnn.num_layers)]
    outputs = []
    for t in range(T):
        inp = tokens[:, t]
        for layer in range(rnn.num_layers):
            w_ih, w_hh, b_ih, b_hh = (
                getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            i, f, g, o = (inp @ w_ih.T + b_ih + h[layer] @ w_hh.T + b_hh).chunk(4, dim=-1)
            c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h[layer] = inp = torch.sigmoid(o) * torch.tanh(c[layer])
        outputs.append(inp)
    reference = read_out(model, torch.stack(outputs, 1)[:, ::2])
    torch.testing.assert_close(model(xs, ys), reference, rtol=0, atol=1e-5)


def test_mamba_equals_a_token_by_token_recurrence():
    """Each block keeps a (B, E, N) state and the last d_conv inputs of its convolution, one token at a time."""
    model = make("mamba").double()
    c = model.config
    xs, ys = torch.randn(3, 9, 4, dtype=torch.double), torch.randn(3, 9, dtype=torch.double)
    tokens = explicit_tokens(model, xs, ys)
    B, T, _ = tokens.shape
    E, N = c.expand * c.n_embd, c.d_state
    states = [torch.zeros(B, E, N, dtype=torch.double) for _ in model.h]
    windows = [torch.zeros(B, E, c.d_conv, dtype=torch.double) for _ in model.h]
    outputs = []
    for t in range(T):
        x = tokens[:, t]
        for j, block in enumerate(model.h):
            mx = block.mixer
            a = F.layer_norm(x, (c.n_embd,), block.ln.weight, block.ln.bias, 1e-5)
            u, gate = (a @ mx.in_proj.weight.T).chunk(2, dim=-1)  # (B, E)
            windows[j] = torch.cat((windows[j][:, :, 1:], u[..., None]), dim=-1)
            u = F.silu((windows[j] * mx.conv.weight[:, 0]).sum(-1) + mx.conv.bias)
            dt, Bt, Ct = (u @ mx.x_proj.weight.T).split([mx.dt_rank, N, N], dim=-1)
            dt = F.softplus(dt @ mx.dt_proj.weight.T + mx.dt_proj.bias)
            states[j] = torch.exp(dt[..., None] * -mx.A_log.exp()) * states[j] + (dt * u)[..., None] * Bt[:, None]
            y = (states[j] * Ct[:, None]).sum(-1) + mx.D * u
            x = x + (y * F.silu(gate)) @ mx.out_proj.weight.T
        outputs.append(x)
    reference = read_out(model, torch.stack(outputs, 1)[:, ::2])
    torch.testing.assert_close(model(xs, ys), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("with_mask", [False, True])
def test_linear_attention_equals_the_naive_masked_sum(with_mask):
    """Output t = sum over allowed s of phi(q_t).phi(k_s) v_s / sum of phi(q_t).phi(k_s), phi = elu + 1, by loops."""
    torch.manual_seed(0)
    attn = LinearAttention(ModelConfig(n_dims=4, n_embd=16, n_head=2, arch="linear_attention")).double()
    B, T, C, H = 2, 7, 16, 2
    x = torch.randn(B, T, C, dtype=torch.double)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if with_mask:  # any mask that keeps the diagonal, as the queries' does
        mask = (torch.rand(T, T) < 0.5) | torch.eye(T, dtype=torch.bool)
    out = attn(x, None, mask if with_mask else None)
    q, k, v = (x @ attn.c_attn.weight.T + attn.c_attn.bias).split(C, -1)
    phi = lambda t: F.elu(t) + 1  # noqa: E731
    y = torch.zeros(B, T, C, dtype=torch.double)
    hs = C // H
    for b in range(B):
        for h in range(H):
            cols = slice(h * hs, (h + 1) * hs)
            for t in range(T):
                allowed = [s for s in range(T) if mask[t, s]]
                weights = [phi(q[b, t, cols]) @ phi(k[b, s, cols]) for s in allowed]
                y[b, t, cols] = sum(w * v[b, s, cols] for w, s in zip(weights, allowed)) / sum(weights)
    torch.testing.assert_close(out, y @ attn.c_proj.weight.T + attn.c_proj.bias, rtol=0, atol=1e-10)


def fixed_batch_losses(arch: str, steps: int, amp: bool = False) -> list[float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_dims=2, n_positions=11, n_embd=32, n_layer=1, n_head=2, arch=arch))
    task = build_task("linear", n_dims=2)
    xs, ys = PromptSampler(task, 11, make_generators(0)).sample(16)
    step = TrainStep(model, make_optimizer(model, 3e-3), task, 11, compile=False, amp=amp)
    return [step(xs, ys, 11).item() for _ in range(steps)]


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_trains_and_its_loss_falls(arch):
    """Training steps on one fixed batch: the loss must fall well below where it started."""
    losses = fixed_batch_losses(arch, 80)
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("arch", OTHERS)
def test_bf16_steps_track_fp32_steps(arch):
    """bf16 autocast (the CPU default where it is native) runs each, the recurrences in fp32."""
    fp32, bf16 = fixed_batch_losses(arch, 4), fixed_batch_losses(arch, 4, amp=True)
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.01)


@pytest.mark.parametrize(
    "arch, breaks_at",
    [("linear_attention", None), ("lstm", "LSTM"), ("mamba", "disable"), ("mambaformer", "disable"), ("lsa", None)],
)
def test_compile_traces_each_architecture(arch, breaks_at):
    """torch.compile (CUDA's default) takes each: linear attention in one graph, the LSTM around
    nn.LSTM (dynamo runs RNN modules eagerly), Mamba around its scans (kept eager on purpose)."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(make(arch))(torch.randn(2, 8, 4), torch.randn(2, 8))
    reasons = [str(r.reason) for r in explanation.break_reasons]
    assert all(breaks_at in r for r in reasons) and bool(reasons) == (breaks_at is not None), reasons


@pytest.mark.parametrize("size", ["tiny", "small", "standard"])
def test_sizes_have_comparable_parameter_counts(compose_cfg, size):
    counts = {
        arch: build_model(model_config(compose_cfg(f"model={size}", f"model.arch={arch}"))).num_parameters()
        for arch in SIZED
    }
    for count in counts.values():
        assert 0.9 <= count / counts["transformer"] <= 1.25, counts  # mamba: two blocks a layer, the most
    assert lstm_width(256) == 312


def test_bad_architectures_are_refused_by_name(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="arch must be one of .*'gru'"):
        ModelConfig(n_dims=4, arch="gru")
    with pytest.raises(ValueError, match="rope.*linear_attention"):
        ModelConfig(n_dims=4, arch="linear_attention", pos_emb="rope")
    with pytest.raises(ValueError, match="use build_model"):
        Transformer(ModelConfig(n_dims=4, arch="lstm"))
    with pytest.raises(ConfigCompositionException, match="model.arch=gru"):
        train(tiny_cfg("model.arch=gru"), tmp_path)  # refused as the config composes
    with pytest.raises(ValueError, match="claims are the transformer's.*'lstm'"):
        claim_config("linear", "cpu", ["model.arch=lstm"])


def test_a_run_saved_before_the_added_keys_resumes_as_a_transformer(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.steps=2"), tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    for key in ("arch", "d_state", "d_conv", "expand"):  # keys added with the other architectures
        del state["config"]["model"][key], state["model_config"][key]
    del state["config"]["trainer"]["decay_steps"]
    torch.save(state, tmp_path / "state.pt")
    assert load_model(tmp_path).config.arch == "transformer"
    train(tiny_cfg("trainer.steps=4"), tmp_path)  # not refused as a different config
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_recurrent_models_read_prompts_past_n_positions():
    model = make("lstm", n_positions=5)
    assert model(torch.randn(2, 30, 4), torch.randn(2, 30)).shape == (2, 30)
    with pytest.raises(ValueError, match="learned positions for only n_positions=5"):
        make("linear_attention", n_positions=5)(torch.randn(2, 30, 4), torch.randn(2, 30))


# ---------------------------------------------------------------- downstream, on one short run per architecture


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six steps of the small test run, narrower, for each architecture (a resumed one for each, too)."""
    root = tmp_path_factory.mktemp("archs")
    out = {}
    for arch in ARCHS:

        def cfg(*extra, arch=arch):
            return tiny(
                "task.curriculum.points.start=5",
                "task.curriculum.points.inc=3",
                "task.curriculum.points.interval=2",
                "model.n_layer=2",
                "model.n_embd=32",
                f"model.arch={arch}",
                *extra,
            )

        model = train(cfg(), root / arch)
        train(cfg("trainer.steps=3"), root / f"{arch}_resumed")
        resumed = train(cfg(), root / f"{arch}_resumed")
        out[arch] = (root / arch, model, resumed)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoints_round_trip_and_resume_exactly(runs, arch):
    run_dir, model, resumed = runs[arch]
    loaded = load_model(run_dir)
    assert loaded.config.arch == arch and type(loaded) is type(model)
    xs, ys = torch.randn(4, 11, 5), torch.randn(4, 11)
    with torch.no_grad():
        torch.testing.assert_close(loaded(xs, ys), model(xs, ys), rtol=0, atol=0)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], weight, rtol=0, atol=0)
    assert_final_eval_is_the_models(run_dir)


@pytest.mark.parametrize("arch", OTHERS)
def test_evaluation_exploration_probe_and_estimators(runs, arch, tmp_path):
    run_dir, model, _ = runs[arch]
    metrics = evaluate_run(run_dir, n_prompts=32, bootstrap=20, progress=False)  # every linear setting
    assert "orthogonal_train_test" in metrics["settings"]
    for s in metrics["settings"].values():
        assert arch in s["models"] and np.isfinite(s["models"][arch]["mean"]).all()
    length = run_sweep(
        run_dir, "length", n_prompts=32, max_points=None if arch != "linear_attention" else 11, out_dir=tmp_path
    )
    expected = 11 if model.config.max_points else 22  # past the training length where positions allow
    assert length["n_points"] == expected and len(length["results"][-1]["models"][arch]["mean"]) == expected
    probe = probe_run(run_dir, n_prompts=32)
    assert len(probe["least_squares"]["cosine"]) == 11
    X, y = np.random.default_rng(0).normal(size=(10 if model.config.max_points else 40, 5)), np.zeros(40)
    reg = ICLRegressor(model).fit(X, y[: len(X)])
    assert reg.predict(X[:3]).shape == (3,)


def test_compare_sets_architectures_side_by_side(runs, tmp_path):
    table = compare([runs[arch][0] for arch in ARCHS], out=tmp_path, n_prompts=32)
    for arch in ARCHS:
        assert f"model.arch={arch}" in table
    assert (tmp_path / "error.png").exists()
