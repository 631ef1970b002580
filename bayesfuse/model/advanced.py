"""`AdvancedConfig`: the fitting options no default changes, kept apart from `FusionModel`'s constructor.

Each field lost or never needed its own comparison against the default (conclusions in
``studies/README.md``); they stay for reproducing those studies and for experts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["AdvancedConfig"]


@dataclass(frozen=True)
class AdvancedConfig:
    """Expert options of :class:`bayesfuse.FusionModel` (``FusionModel(..., advanced=AdvancedConfig(...))``).

    Parameters
    ----------
    head_guide : {"fullrank", "lowrank", "meanfield"}
        Variational family of Bayesian categorical-head weights. ``"fullrank"`` (default): on the
        NUTS reference of docs/studies/bayesian.md mean-field under-disperses the correlated
        softmax weights (sd ratio 0.31-0.49, k-hat 1.2) and rank 4 still misses one direction.
    guide_rank : int
        Rank of the ``"lowrank"`` head guide.
    encoder_layers : {"last", "all"}
        With Bayesian encoders (``bayesian="encoders+heads"`` / ``"all"``): only each encoder's
        (and decoder's) output layer is Bayesian (default) or every linear layer (1.85x the step
        cost, no gain measured).
    head_refit_steps : int
        After SVI, Bayesian head guides are refitted for this many Adam steps to the head
        posterior given the fitted latent guide (:func:`bayesfuse.module.head_refit.refit_head_posterior`):
        early stopping ends the joint fit long before a full-rank guide started at sd 0.01
        converges. 0 switches the refit off.
    survival_refit : {"laplace", "none", "laplace_mode", "meanfield"}
        Post-fit refit of each survival head's parameter guide (:mod:`bayesfuse.module.survival_refit`).
        ``"laplace"`` (default): full-rank Gaussian with the trained guide mean and the Laplace
        covariance of the head posterior given the fitted latent guide (sds match NUTS, ratio
        0.94-1.08 per piece; docs/survival.md); ``"none"``: the joint fit's guide (sds 4-20x too
        small); ``"laplace_mode"`` / ``"meanfield"``: study variants (docs/studies/survival.md).
    """

    head_guide: str = "fullrank"
    guide_rank: int = 4
    encoder_layers: str = "last"
    head_refit_steps: int = 600
    survival_refit: str = "laplace"

    def to_dict(self) -> dict:
        return asdict(self)
