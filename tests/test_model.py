import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from minicl.kernels import TanhGELU
from minicl.model import ModelConfig, Transformer, build_model

ARCH_CASES = [  # every architecture, the transformer with each position embedding
    ("learned", "transformer"),
    ("rope", "transformer"),
    ("none", "transformer"),
    ("learned", "linear_attention"),
    ("none", "lstm"),
    ("none", "mamba"),
    ("none", "mambaformer"),
    ("none", "lsa"),
]


def make(pos_emb="learned", **kw):
    torch.manual_seed(0)
    cfg = dict(n_dims=4, n_positions=12, n_embd=32, n_layer=2, n_head=4, pos_emb=pos_emb) | kw
    return build_model(ModelConfig(**cfg)).eval()


@pytest.mark.parametrize("pos_emb, arch", ARCH_CASES)
def test_causal_later_pairs_never_change_earlier_predictions(pos_emb, arch):
    model = make(pos_emb, arch=arch)
    xs, ys = torch.randn(3, 10, 4), torch.randn(3, 10)
    before = model(xs, ys)
    xs2, ys2 = xs.clone(), ys.clone()
    xs2[:, 6:] += torch.randn(3, 4, 4)
    ys2[:, 5:] += 1.0  # y_5 is not an input to prediction 5
    after = model(xs2, ys2)
    assert before.shape == (3, 10)
    torch.testing.assert_close(after[:, :6], before[:, :6], rtol=0, atol=1e-6)
    assert (after[:, 6:] - before[:, 6:]).abs().min() > 0


def test_prefix_of_prompt_gives_the_same_predictions():
    model = make()
    xs, ys = torch.randn(2, 12, 4), torch.randn(2, 12)
    torch.testing.assert_close(model(xs[:, :5], ys[:, :5]), model(xs, ys)[:, :5], rtol=1e-5, atol=1e-6)


def gpt2_reference(model: Transformer, xs, ys):
    """The GPT-2 block written out longhand: explicit mask, softmax, tanh-GELU formula."""
    c = model.config
    B, N, D = xs.shape
    zs = torch.stack((xs, torch.cat((ys[..., None], torch.zeros(B, N, D - 1)), -1)), dim=2).view(B, 2 * N, D)
    h = zs @ model.read_in.weight.T + model.read_in.bias + model.wpe.weight[: 2 * N]
    T, hs = 2 * N, c.n_embd // c.n_head
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for blk in model.h:
        a = F.layer_norm(h, (c.n_embd,), blk.ln_1.weight, blk.ln_1.bias, 1e-5)
        q, k, v = (a @ blk.attn.c_attn.weight.T + blk.attn.c_attn.bias).split(c.n_embd, -1)
        q, k, v = (t.view(B, T, c.n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_embd)
        h = h + y @ blk.attn.c_proj.weight.T + blk.attn.c_proj.bias
        m = F.layer_norm(h, (c.n_embd,), blk.ln_2.weight, blk.ln_2.bias, 1e-5)
        u = m @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
        u = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))
        h = h + u @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    h = F.layer_norm(h, (c.n_embd,), model.ln_f.weight, model.ln_f.bias, 1e-5)
    return (h @ model.read_out.weight.T + model.read_out.bias)[:, ::2, 0]


def test_matches_longhand_gpt2_definition():
    model = make()
    for p in model.parameters():  # move LayerNorm and biases off their initial values
        p.data += 0.05 * torch.randn_like(p)
    xs, ys = torch.randn(2, 9, 4), torch.randn(2, 9)
    torch.testing.assert_close(model(xs, ys), gpt2_reference(model, xs, ys), rtol=1e-5, atol=1e-5)


def test_gradients_match_longhand_gpt2_definition():
    model = make().train()
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    xs, ys = torch.randn(2, 9, 4), torch.randn(2, 9)
    ours = torch.autograd.grad((model(xs, ys) - ys).square().mean(), list(model.parameters()))
    theirs = torch.autograd.grad((gpt2_reference(model, xs, ys) - ys).square().mean(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_cpu_gelu_is_gpt2s_tanh_gelu_with_its_gradient():
    x = (3 * torch.randn(4, 7, 16, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(TanhGELU.apply, (x[:1, :2].detach().clone().requires_grad_(),))
    ours, aten = TanhGELU.apply(x), F.gelu(x, approximate="tanh")
    g = torch.randn_like(x)
    torch.testing.assert_close(ours, aten, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(aten, x, g)[0], rtol=1e-12, atol=1e-12
    )


def test_gpt2_initialisation():
    model = make(n_embd=64, n_layer=4)
    assert abs(model.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert abs(model.h[0].attn.c_proj.weight.std().item() - 0.02 / math.sqrt(8)) < 0.001
    assert model.h[0].attn.c_attn.bias.abs().max() == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_embd=30, n_head=4), "n_embd=30 is not divisible by n_head=4"),
        (dict(n_layer=0), "n_layer must be a positive integer, got 0"),
        (dict(n_dims=-2), "n_dims must be a positive integer, got -2"),
        (dict(dropout=1.5), "dropout must be in"),
        (dict(pos_emb="alibi"), "pos_emb must be one of"),
        (dict(pos_emb="rope", n_embd=12, n_head=4), "even head size"),
    ],
)
def test_bad_model_config(kwargs, match):
    cfg = dict(n_dims=4, n_positions=8, n_embd=32, n_layer=2, n_head=4) | kwargs
    with pytest.raises(ValueError, match=match):
        ModelConfig(**cfg)


@pytest.mark.parametrize("pos_emb", ["rope", "none"])
def test_rope_and_none_run_past_their_positions(pos_emb):
    model = make(pos_emb)
    assert model(torch.randn(2, 30, 4), torch.randn(2, 30)).shape == (2, 30)


def test_import_pulls_in_torch_only():
    heavy = ("hydra", "omegaconf", "sklearn", "xgboost", "transformers", "matplotlib")
    code = f"import sys, minicl.model, minicl; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("pos_emb, arch", ARCH_CASES)
def test_queries_in_one_pass_equal_one_pass_per_swapped_query(pos_emb, arch):
    model = make(pos_emb, arch=arch)
    xs, ys, qs = torch.randn(2, 7, 4), torch.randn(2, 7), torch.randn(2, 7, 4)
    out = model(xs, ys, queries=qs)
    for i in range(7):
        swapped = xs.clone()
        swapped[:, i] = qs[:, i]
        torch.testing.assert_close(out[:, i], model(swapped, ys)[:, i], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(xs, ys, queries=xs), model(xs, ys), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "pos_emb, arch",
    [("learned", "transformer"), ("rope", "transformer"), ("learned", "linear_attention"), ("none", "lstm")],
)
def test_after_prompt_predicts_every_query_from_the_whole_prompt(pos_emb, arch):
    model = make(pos_emb, arch=arch)
    xs, ys, qs = torch.randn(2, 6, 4), torch.randn(2, 6), torch.randn(2, 9, 4)
    together = model.after_prompt(xs, ys, qs)
    for j in range(9):  # one prompt per query: the pairs, then the query
        alone = model(torch.cat((xs, qs[:, j : j + 1]), 1), torch.cat((ys, torch.zeros(2, 1)), 1))[:, -1]
        torch.testing.assert_close(together[:, j], alone, rtol=1e-5, atol=1e-5)
    if model.config.max_points is not None:  # learned positions: the queries need the one after the prompt
        with pytest.raises(ValueError, match="leaves no position for its queries"):
            make(pos_emb, arch=arch, n_positions=6).after_prompt(xs, ys, qs)


def test_cpu_bf16_autocast_attends_in_fp32(monkeypatch):
    """Under CPU autocast the projections run in bf16 but attention in fp32 (CPU bf16 attention is slow)."""
    from minicl.model import CausalSelfAttention

    model = make()
    xs, ys = torch.randn(3, 12, 4), torch.randn(3, 12)
    seen = []
    attend = CausalSelfAttention.attend

    def spy(self, q, k, v, mask):
        y = attend(self, q, k, v, mask)
        seen.append((q.dtype, y.dtype))
        return y

    monkeypatch.setattr(CausalSelfAttention, "attend", spy)
    expected = model(xs, ys)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xs, ys)
        assert model.h[0].mlp.c_fc(torch.randn(2, 32)).dtype == torch.bfloat16  # autocast is really on
    assert seen == [(torch.float32, torch.float32)] * 2
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.05 * expected.abs().mean().item())
    # and the gradients agree with fp32's to bf16's precision
    grads = []
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            ((model(xs, ys) - ys) ** 2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert F.cosine_similarity(*grads, dim=0) > 0.99
