"""Torch / Pyro likelihood building blocks used by the model's heads."""

from bayesfuse.distributions.piecewise_hazard import (
    PiecewiseExponential,
    censored_log_likelihood,
    cumulative_hazard,
    exposure,
    log_density,
    log_survival,
    make_cuts,
    piece_index,
)

__all__ = [
    "PiecewiseExponential",
    "censored_log_likelihood",
    "cumulative_hazard",
    "exposure",
    "log_density",
    "log_survival",
    "make_cuts",
    "piece_index",
]
