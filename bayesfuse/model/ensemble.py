"""Deep ensemble of K independently initialised fusion models (Lakshminarayanan et al. 2017).

A baseline for weight uncertainty: member ``k`` is a :class:`FusionModel` fitted with seed
``seed + k`` (initialisation, minibatch order and validation split differ); predictions pool
the members' draws, so the result is one :class:`bayesfuse.Posterior` whose draws are a
uniform mixture over members.
"""

from __future__ import annotations

import numpy as np

from bayesfuse.data.multimodal import MultiModalData
from bayesfuse.model.fusion_model import FusionModel
from bayesfuse.posterior.posterior import Posterior

__all__ = ["DeepEnsemble"]


class DeepEnsemble:
    """K fusion models fitted from different seeds; predictions pool their draws.

    Parameters
    ----------
    data : MultiModalData
        Training cohort (passed to every member).
    K : int
        Number of members (>= 2).
    **kwargs
        Passed to :class:`FusionModel` (e.g. ``heads=``, ``latent_dim=``; default
        ``bayesian="none"``, i.e. a classic ensemble of point-estimate networks).

    Attributes
    ----------
    members_ : list[FusionModel]
        Fitted members (after :meth:`fit`).
    """

    def __init__(self, data: MultiModalData, K: int = 5, **kwargs):
        if int(K) < 2:
            raise ValueError(f"K={K}: a deep ensemble needs at least 2 members.")
        kwargs.setdefault("bayesian", "none")
        self.K = int(K)
        self.members_ = [FusionModel(data, **kwargs) for _ in range(self.K)]

    @classmethod
    def bayesian(cls, data: MultiModalData, K: int = 5, **kwargs) -> DeepEnsemble:
        """Mixture of ``K`` variational posteriors: ``K`` Bayesian fusion models (default
        ``bayesian="heads"`` with the package's head-guide defaults) from different seeds.

        Each member's head-weight guide approximates the posterior around one basin of the
        encoders; the pooled draws are a uniform mixture over basins (multi-basin VI, cf.
        MultiSWAG, Wilson & Izmailov 2020). The recommended Bayesian model of docs/bayesian.md
        (chosen by cross-validation on the training splits). Costs ``K`` Bayesian fits.

        Parameters
        ----------
        data : MultiModalData
            Training cohort.
        K : int
            Number of members (>= 2).
        **kwargs
            Passed to :class:`FusionModel`; ``bayesian`` may be any weight-uncertainty mode
            (``"heads"``, ``"encoders+heads"``, ``"all"``), not ``"none"`` or ``"mc_dropout"``.
        """
        mode = kwargs.setdefault("bayesian", "heads")
        if mode in ("none", "mc_dropout"):
            raise ValueError(f"bayesian={mode!r}: DeepEnsemble.bayesian mixes variational weight posteriors; "
                             "use 'heads', 'encoders+heads' or 'all', or DeepEnsemble(...) for a plain ensemble.")
        return cls(data, K=K, **kwargs)

    def fit(self, seed: int = 0, **fit_kwargs) -> DeepEnsemble:
        """Fit member ``k`` with ``seed + k`` (other arguments as :meth:`FusionModel.fit`)."""
        for k, m in enumerate(self.members_):
            m.fit(seed=seed + k, **fit_kwargs)
        self.fit_seconds_ = float(sum(m.fit_seconds_ for m in self.members_))
        return self

    def predict(self, data: MultiModalData, num_samples: int = 200, seed: int = 0, **kwargs) -> Posterior:
        """Pool ``ceil(num_samples / K)`` draws from each member (draw axis = members x draws).

        The latent fields (``latent``, ``latent_loc``, ...) are those of the members pooled or
        averaged, but members' latent spaces are not aligned; use the head draws, not ``z``.
        Head draws are pooled as they are: categorical ``probs`` (S, n, C) and survival
        ``log_hazard`` (S, n, K), so every survival method of :class:`Posterior`
        (``survival_function``, ``risk``, ``median_survival``, ...) is that of the uniform mixture
        of the members' predictive distributions. This needs the members' heads to agree (same
        classes, same survival cuts), which holds when they were built from the same data; a
        mismatch raises ``ValueError``.
        """
        self._check_heads_agree()
        per = int(np.ceil(int(num_samples) / self.K))
        posts = [m.predict(data, num_samples=per, seed=seed + k, **kwargs) for k, m in enumerate(self.members_)]
        first = posts[0]
        draws = {h: {name: np.concatenate([p.draws[h][name] for p in posts], axis=0)
                     for name in first.draws[h]} for h in first.draws}
        return Posterior(sample_ids=first.sample_ids, heads=first.heads, draws=draws,
                         latent=np.concatenate([p.latent for p in posts], axis=0),
                         latent_loc=np.mean([p.latent_loc for p in posts], axis=0),
                         latent_scale=np.mean([p.latent_scale for p in posts], axis=0),
                         presence=first.presence,
                         modality_precision=np.mean([p.modality_precision for p in posts], axis=0),
                         seed=int(seed), extra={"ensemble_size": self.K, "draws_per_member": per})

    def _check_heads_agree(self) -> None:
        """Raise if the members' head specs differ in what pooling relies on (classes, survival cuts)."""
        ref = self.members_[0].heads
        for k, m in enumerate(self.members_[1:], start=1):
            if set(m.heads) != set(ref):
                raise ValueError(f"Ensemble member {k} has heads {sorted(m.heads)}, member 0 has {sorted(ref)}; "
                                 "build every member from the same data and heads.")
            for h, spec in ref.items():
                for attr in ("classes", "cuts"):
                    a, b = getattr(spec, attr, None), getattr(m.heads[h], attr, None)
                    if (a is None) != (b is None) or (a is not None and list(a) != list(b)):
                        raise ValueError(f"Ensemble member {k}, head {h!r}: {attr} {b!r} differ from member 0's "
                                         f"{a!r}; pooled draws would mix different {attr}. Build every member "
                                         "from the same training data.")
