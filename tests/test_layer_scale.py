"""The layer-scaled covariance against an explicit blockdiag(s_l I) quadratic form gᵀΣg.

The reference builds the full per-example gradient g [B, P] by jacrev over functional_call and
the dense block-diagonal Σ [P, P], in float64; the fast path uses the per-parameter norms of one
backward (`sq_grad_norms(..., by_param=True)`) and `layer_scaled_sq_norms`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from isograd import Covariance, LayerScale, estimate, layer_variances, sq_grad_norms
from isograd.layer_scale import layer_scaled_sq_norms
from tests.problems import PROBLEMS

X = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.LayerNorm(6), nn.Linear(6, 4)).double()
    with torch.no_grad():  # layers of very different scales, as in a standard-parameterised net
        m[0].weight.mul_(5.0)
        m[3].weight.mul_(0.1)
        m[2].weight.uniform_(0.5, 1.5)
    return m


def quad_form(model: nn.Module, fn, batch, scales: dict[str, float]) -> torch.Tensor:
    """gᵀ blockdiag(s_l I) g per example, from the dense Jacobian and a dense Σ."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    was = model.training
    model.eval()
    try:
        jac = jacrev(lambda ps: fn(lambda *a, **k: functional_call(model, ps, a, k), batch))(params)
    finally:
        model.train(was)
    g = torch.cat([jac[n].reshape(jac[n].shape[0], -1).double() for n in params], 1)
    sigma = torch.block_diag(*[
        scales[n] * torch.eye(p.numel(), dtype=torch.float64) for n, p in params.items()
    ])
    return torch.einsum("bp,pq,bq->b", g, sigma, g)


@pytest.mark.parametrize("rule", list(LayerScale), ids=lambda r: r.value)
@pytest.mark.parametrize("pb", PROBLEMS, ids=lambda pb: pb.id)
def test_layer_scaled_matches_dense_quadratic_form(pb, rule):
    model = pb.build_model(torch.float64)
    with torch.no_grad():  # layers of different scales, so that s_l differ under either rule
        for k, p in enumerate(model.parameters()):
            p.mul_(1.5 ** (k % 4))
    batch = pb.build_batch(torch.float64)
    scales = layer_variances(model, rule=rule)
    _, per = sq_grad_norms(model, pb.fn, batch, method="auto", by_param=True)
    fast = layer_scaled_sq_norms(per, scales)
    ref = quad_form(model, pb.fn, batch, scales)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-300)
    # not the isotropic number in disguise
    assert not torch.allclose(fast, sum(per.values()), rtol=1e-3)


def test_estimate_layer_scaled_classification_exact():
    model = _mlp()
    u = estimate(model, X, covariance="layer-scaled", layer_scale="weight-variance", sigma2=0.3)
    iso = estimate(model, X, sigma2=0.3)
    label = u.label

    def p_fn(f, x):
        return f(x).softmax(1).gather(1, label[:, None])[:, 0]

    ref = quad_form(model, p_fn, X, layer_variances(model, rule="weight-variance"))
    torch.testing.assert_close(u.epistemic, 0.3 * ref, rtol=1e-9, atol=0)
    torch.testing.assert_close(u.sq_grad_norm, iso.sq_grad_norm)  # ‖∇p‖² stays isotropic
    torch.testing.assert_close(u.aleatoric, iso.aleatoric)
    assert u.covariance == "layer-scaled:weight-variance" and iso.covariance == "isotropic"
    assert not torch.allclose(u.epistemic, iso.epistemic, rtol=1e-2)


def test_estimate_layer_scaled_regression_and_selection():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    sel = ["2.weight", "2.bias", "0.weight"]
    u = estimate(model, X, task="regression", noise_var=0.1, covariance="layer-scaled",
                 layer_scale="fan-in", params=sel)
    scales = layer_variances(model, rule="fan-in", params=sel)
    assert set(scales) == set(sel)
    n = {k: dict(model.named_parameters())[k].numel() for k in sel}
    assert sum(scales[k] * n[k] for k in sel) / sum(n.values()) == pytest.approx(1.0, rel=1e-12)
    full = {**scales, "0.bias": 0.0}  # unselected: no variance

    def mean_fn(f, x):
        return f(x)[:, 0]

    torch.testing.assert_close(u.epistemic, quad_form(model, mean_fn, X, full), rtol=1e-9, atol=0)


def test_weight_variance_rule_by_hand():
    model = _mlp()
    s = layer_variances(model, rule="weight-variance")
    model.requires_grad_(False)
    w0, w3, g = model[0].weight, model[3].weight, model[2].weight
    raw = {"0.weight": w0.var(unbiased=False), "3.weight": w3.var(unbiased=False),
           "2.weight": g.square().mean(), "2.bias": model[2].bias.square().mean()}
    raw["0.bias"], raw["3.bias"] = raw["0.weight"], raw["3.weight"]  # a bias shares its layer
    params = dict(model.named_parameters())
    mean = sum(float(raw[k]) * params[k].numel() for k in params) / sum(
        p.numel() for p in params.values())
    for k in params:
        assert s[k] == pytest.approx(float(raw[k]) / mean, rel=1e-12)
    assert s["2.bias"] == 0.0  # LayerNorm bias at its zero init: no scale, no contribution


def test_fan_in_rule_reads_layer_types():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    s = layer_variances(model, rule="fan-in")
    raw = {"0.weight": 1.0, "1.weight": 1 / 4, "1.bias": 1 / 4, "2.weight": 1.0, "2.bias": 1.0,
           "3.weight": 1 / 8, "3.bias": 1 / 8}
    params = dict(model.named_parameters())
    mean = sum(raw[k] * params[k].numel() for k in raw) / sum(p.numel() for p in params.values())
    assert s == pytest.approx({k: v / mean for k, v in raw.items()}, rel=1e-12)
    # from bare tensors the layer type is unknown: torch's convention (embedding fan-in = 4)
    bare = layer_variances(dict(model.named_parameters()), rule="fan-in")
    assert bare["0.weight"] / bare["1.weight"] == pytest.approx(1.0)


def test_equal_layers_give_the_isotropic_estimate():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False))
    model = model.double()
    x = X[:, :1].repeat(1, 4)
    s = layer_variances(model, rule="fan-in")
    assert all(v == pytest.approx(1.0) for v in s.values())
    a = estimate(model, x, covariance=Covariance.LAYER_SCALED, layer_scale=LayerScale.FAN_IN)
    b = estimate(model, x)
    torch.testing.assert_close(a.epistemic, b.epistemic, rtol=1e-12, atol=0)


def test_gpt2_conv1d_fan_in_and_meta_weights():
    pb = next(p for p in PROBLEMS if p.id.startswith("gpt2"))
    model = pb.build_model(torch.float32)
    s = layer_variances(model, rule="fan-in")
    attn = model.transformer.h[0].attn.c_attn.weight  # Conv1D: [in, out]
    proj = model.transformer.h[0].mlp.c_proj.weight
    ratio = s["transformer.h.0.attn.c_attn.weight"] / s["transformer.h.0.mlp.c_proj.weight"]
    assert ratio == pytest.approx(proj.shape[0] / attn.shape[0])
    with torch.device("meta"):
        meta = pb.build_model(torch.float32)
    assert layer_variances(meta, rule="fan-in") == pytest.approx(s)  # shapes suffice
    with pytest.raises(ValueError, match="meta device"):
        layer_variances(meta, rule="weight-variance")


def test_errors_name_the_option():
    model = _mlp()
    with pytest.raises(ValueError, match="unknown layer scale rule 'spectral'.*'fan-in'"):
        layer_variances(model, rule="spectral")
    with pytest.raises(ValueError, match="unknown covariance 'kfac'.*'layer-scaled'"):
        estimate(model, X, covariance="kfac")
    with pytest.raises(ValueError, match="unknown parameter names"):
        layer_variances(model, params=["nope"])
    with pytest.raises(ValueError, match="no layer scale for parameters"):
        layer_scaled_sq_norms({"a": torch.ones(2)}, {"b": 1.0})
    zero = nn.Linear(2, 2)
    nn.init.zeros_(zero.weight)
    nn.init.zeros_(zero.bias)
    with pytest.raises(ValueError, match="zero scale"):
        layer_variances(zero)
