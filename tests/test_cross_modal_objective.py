"""The ``modality_dropout_mode="guide"`` objective (hide a dropped modality from the guide only).

* Its fused fast path equals Pyro's ``Trace_ELBO`` of the same model/guide (loss and gradients,
  float64, same seed), and it is a different objective from ``"both"`` (negative control).
* It is a valid ELBO of all observed modalities: with no modality masked it equals the
  ``"both"`` objective exactly.
* Training with it runs end to end through :meth:`FusionModel.fit`; bad values are rejected.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from test_perf import _grads, _setup

from bayesfuse.module.fused_elbo import fused_elbo_loss
from bayesfuse.train.svi import elbo_loss


@pytest.mark.parametrize("bayes_head", [False, True])
def test_guide_only_mode_fused_equals_trace_elbo(bayes_head):
    module, store = _setup(bayes_head)
    module.train()
    batch = store.batch(torch.tensor([3, 0, 17, 8, 1, 25, 39, 12, 30, 5]))
    torch.manual_seed(7)
    mmask = module.random_modality_mask(batch.presence, 0.5)
    assert ((mmask == 0) & (batch.presence > 0)).any()  # something is really hidden
    out = {}
    for method in ("trace", "fused"):
        module.zero_grad()
        torch.manual_seed(123)
        with pyro.validation_enabled(False):
            loss = elbo_loss(module, batch, store.n, 0.37, 1, mmask, method, hide_from="guide")
        loss.backward()
        out[method] = (loss.detach(), _grads(module))
    torch.testing.assert_close(out["fused"][0], out["trace"][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["fused"][1], out["trace"][1], rtol=1e-9, atol=1e-9)
    # Negative control: the sub-sampled ELBO ("both") at the same noise is another number
    # (the hidden modalities' log-likelihood is missing from it).
    torch.manual_seed(123)
    both = fused_elbo_loss(module, batch, store.n, 0.37, 1, mmask, hide_from="both").detach()
    assert abs(float(both - out["fused"][0])) > 1.0


def test_modes_agree_without_mask_and_extra_term_is_the_hidden_likelihood():
    module, store = _setup()
    module.eval()
    batch = store.batch(torch.arange(0, 40, 2))
    eps = torch.randn(20, 3, dtype=torch.float64)
    a = fused_elbo_loss(module, batch, store.n, 1.0, 1, None, eps=eps, hide_from="guide")
    b = fused_elbo_loss(module, batch, store.n, 1.0, 1, None, eps=eps, hide_from="both")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # With a mask, guide-mode minus both-mode = -(scaled log-lik of the hidden, present cells).
    mmask = torch.ones_like(batch.presence)
    mmask[0] = 0.0  # hide modality 0 (gaussian "g") from every patient
    g = fused_elbo_loss(module, batch, store.n, 1.0, 1, mmask, eps=eps, hide_from="guide")
    s = fused_elbo_loss(module, batch, store.n, 1.0, 1, mmask, eps=eps, hide_from="both")
    from bayesfuse.nn.decoders import decoder_log_likelihood

    loc, scale, _ = module.posterior(batch, mmask)
    z = loc + eps * scale
    m = module.modalities[0]
    ll = decoder_log_likelihood(module.likelihoods[m], module.decoders[m](z), batch.observed[m],
                                batch.cell_mask[m], batch.library[m])
    expected = -(ll * batch.presence[0]).sum() * (store.n / batch.size)
    torch.testing.assert_close(g - s, expected, rtol=1e-10, atol=1e-8)


def test_fit_accepts_mode_and_rejects_unknown():
    import bayesfuse as bf

    data, _ = bf.datasets.simulate(n_patients=80, seed=1)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=3, hidden=8, device="cpu")
    model.fit(max_epochs=3, kl_warmup_epochs=1, seed=0, progress=False, modality_dropout_mode="guide")
    assert model.train_config_["modality_dropout_mode"] == "guide"
    with pytest.raises(ValueError, match="modality_dropout_mode"):
        model.fit(max_epochs=1, progress=False, modality_dropout_mode="likelihood")
    with pytest.raises(ValueError, match="hide_from"):
        module, store = _setup()
        fused_elbo_loss(module, store.batch(torch.arange(4)), store.n, hide_from="nope")


@pytest.mark.slow
def test_guide_only_mode_makes_subset_posteriors_overconfident():
    """Why ``"both"`` stays the default: in the linear-Gaussian case the guide-only objective
    shrinks q(z | x_subset) below the exact p(z | x_subset) (it is pulled towards p(z | x_all)),
    while ``"both"`` matches it (tests/test_linear_gaussian.py, same data and schedule)."""
    import numpy as np
    from test_linear_gaussian import _exact_posterior, _fix_decoders, _linear_gaussian_cohort

    import bayesfuse as bf
    from bayesfuse.train.svi import TrainConfig, train_svi

    torch.manual_seed(0)
    data, truth, _ = _linear_gaussian_cohort()
    ratios = {}
    for mode in ("guide", "both"):
        model = bf.FusionModel(data, heads={}, latent_dim=2, hidden=0, encoder_dropout=0.0, dtype="float64")
        model.module = model._build_module()
        _fix_decoders(model, truth)
        store = model._store(data, strict_targets=True)
        gen = torch.Generator().manual_seed(0)
        for lr, epochs in ((1e-2, 150), (1e-3, 100)):
            cfg = TrainConfig(max_epochs=epochs, batch_size=250, lr=lr, kl_warmup_epochs=0, modality_dropout=0.5,
                              progress=False, patience=10**6, min_epochs=0, num_particles=4,
                              modality_dropout_mode=mode)
            train_svi(model.module, store, None, cfg, gen)
        for drop in ("a", "b"):
            post = model.predict(data.drop_modalities([drop]), num_samples=2)
            presence = {m: (m != drop) * np.ones(data.n_samples, bool) for m in truth}
            _, sd = _exact_posterior(data, truth, presence)
            ratios[mode, drop] = float((post.latent_scale / sd).mean())
    print("posterior sd / exact sd:", ratios)
    for drop in ("a", "b"):
        assert abs(ratios["both", drop] - 1) < 0.03, ratios      # positive control: exact
        assert ratios["guide", drop] < 0.95, ratios              # over-confident subset posterior
