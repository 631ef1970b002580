"""Split-conformal prediction sets on the posterior predictive (LAC, APS, RAPS; Mondrian).

>>> cs = bf.ConformalSets(alpha=0.05, method="aps").fit(cal_post, y_cal, head="origin")
>>> sets = cs.predict(test_post)        # DataFrame: set (list of labels), size
>>> coverage(sets, y_test)
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from bayesfuse.calibration._common import CalibrationWarning, align_labels, check_posterior, mean_probs
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.posterior import Posterior

__all__ = ["ConformalSets", "class_coverage", "conformal_quantile", "coverage", "to_indicator"]

_METHODS = ("lac", "aps", "raps")


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """Split-conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score.

    Equivalently the empirical quantile at level ``ceil((n+1)(1-alpha))/n``. Returns
    ``inf`` (every class in every set) when that rank exceeds ``n``, i.e. when
    ``n < 1/alpha - 1``.
    """
    s = np.sort(np.asarray(scores, dtype=float))
    n = len(s)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-12)
    if n == 0 or k > n:
        return float("inf")
    return float(s[max(k, 1) - 1])


class ConformalSets:
    """Split-conformal prediction sets from the posterior-predictive class probabilities.

    Parameters
    ----------
    alpha : float in (0, 1)
        Miscoverage: sets contain the true class with probability >= 1 - alpha (marginally
        over calibration and test patients; per class with ``mondrian=True``).
    method : {"lac", "aps", "raps"}
        Non-conformity score. ``"lac"``: ``1 - p_y`` (smallest sets); ``"aps"``: randomised
        adaptive prediction sets (mass of classes ranked above ``y`` plus ``U p_y``);
        ``"raps"``: APS plus ``lambda_reg * max(0, rank(y) - k_reg)`` (regularised, smaller sets).
    mondrian : bool
        Class-conditional (Mondrian) calibration: one quantile per class.
    seed : int
        Seed of the APS/RAPS randomisation (calibration and prediction use independent streams).
    k_reg : int
        RAPS: ranks up to ``k_reg`` are not penalised.
    lambda_reg : float
        RAPS: penalty per rank beyond ``k_reg``.

    Attributes
    ----------
    quantile_ : float or numpy.ndarray of shape (n_classes,)
        Conformal threshold(s) on the score (per class when ``mondrian=True``).
    n_calibration_ : int
    classes_ : list
    head_ : str

    Notes
    -----
    APS/RAPS sets are randomised and may be empty (that is what makes coverage exact);
    ``size`` is then 0. Guarantee: ``P(y in set) >= 1 - alpha`` for a new patient
    exchangeable with the calibration patients (also ``<= 1 - alpha + 1/(n+1)`` for
    continuous scores).
    """

    def __init__(self, alpha: float = 0.05, method: str = "aps", mondrian: bool = False, seed: int = 0,
                 k_reg: int = 1, lambda_reg: float = 0.01) -> None:
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"alpha={alpha!r} must lie in (0, 1), e.g. 0.05 for 95% coverage.")
        if method not in _METHODS:
            raise ValueError(f"method={method!r}; use one of {_METHODS}.")
        if int(k_reg) < 0 or lambda_reg < 0:
            raise ValueError("k_reg and lambda_reg must be >= 0.")
        self.alpha = float(alpha)
        self.method = method
        self.mondrian = bool(mondrian)
        self.seed = int(seed)
        self.k_reg = int(k_reg)
        self.lambda_reg = float(lambda_reg)

    def __repr__(self) -> str:
        return f"ConformalSets(alpha={self.alpha}, method={self.method!r}, mondrian={self.mondrian}, seed={self.seed})"

    # ------------------------------------------------------------------ scores
    def _all_scores(self, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Score of every candidate class, shape (n, C)."""
        if self.method == "lac":
            return 1.0 - p
        order = np.argsort(-p, axis=1, kind="stable")
        p_sorted = np.take_along_axis(p, order, axis=1)
        before = np.cumsum(p_sorted, axis=1) - p_sorted  # mass ranked strictly above
        s_sorted = before + u[:, None] * p_sorted
        if self.method == "raps":
            ranks = np.arange(1, p.shape[1] + 1)[None, :]
            s_sorted = s_sorted + self.lambda_reg * np.maximum(ranks - self.k_reg, 0)
        scores = np.empty_like(p)
        np.put_along_axis(scores, order, s_sorted, axis=1)
        return scores

    def _u(self, n: int, stream: int) -> np.ndarray:
        if self.method == "lac":
            return np.zeros(n)
        return np.random.default_rng([self.seed, stream]).uniform(size=n)

    # --------------------------------------------------------------------- fit
    def fit(self, post: Posterior, labels: pd.Series, head: str) -> ConformalSets:
        """Compute the conformal quantile(s) on calibration patients.

        Parameters
        ----------
        post : Posterior
            Calibration patients' posterior.
        labels : pandas.Series
            True class per patient id (aligned by id).
        head : str
            Categorical head.

        Returns
        -------
        ConformalSets
            ``self``, fitted.
        """
        codes = align_labels(post, labels, head)
        p = mean_probs(post, head)
        s = self._all_scores(p, self._u(len(codes), 0))[np.arange(len(codes)), codes]
        self.head_ = head
        self.classes_ = list(post.classes(head))
        self.n_calibration_ = int(len(codes))
        if self.mondrian:
            q = np.array([conformal_quantile(s[codes == c], self.alpha) for c in range(len(self.classes_))])
            small = [self.classes_[c] for c in range(len(q)) if not np.isfinite(q[c])]
            if small:
                warnings.warn(f"Mondrian conformal: class(es) {small} have fewer than {math.ceil(1 / self.alpha) - 1} "
                              "calibration patients; they are included in every set. Add calibration patients "
                              "of these classes or increase alpha.", CalibrationWarning, stacklevel=2)
            self.quantile_ = q
        else:
            self.quantile_ = conformal_quantile(s, self.alpha)
            if not np.isfinite(self.quantile_):
                warnings.warn(f"Only {len(s)} calibration patients: too few for alpha={self.alpha}; every set "
                              "contains every class.", CalibrationWarning, stacklevel=2)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "quantile_"):
            raise NotFittedError("This ConformalSets is not fitted yet: call .fit(cal_post, cal_labels, head=...).")

    # ----------------------------------------------------------------- predict
    def predict_indicator(self, post: Posterior) -> pd.DataFrame:
        """Membership matrix: DataFrame of bool, shape (n_patients, n_classes), indexed by id."""
        self._check_fitted()
        check_posterior(post, self.head_)
        if list(post.classes(self.head_)) != self.classes_:
            raise DataError(f"Posterior classes {post.classes(self.head_)} differ from the calibration "
                            f"classes {self.classes_}; use posteriors of the same fitted model.")
        p = mean_probs(post, self.head_)
        scores = self._all_scores(p, self._u(len(p), 1))
        q = np.asarray(self.quantile_, dtype=float)
        member = scores <= (q[None, :] if q.ndim else q)
        return pd.DataFrame(member, index=pd.Index(np.asarray(post.sample_ids, dtype=object), name="sample_id"),
                            columns=self.classes_)

    def predict(self, post: Posterior) -> pd.DataFrame:
        """Prediction sets for new patients.

        Parameters
        ----------
        post : Posterior

        Returns
        -------
        pandas.DataFrame, indexed by patient id
            ``set``: list of class labels, most probable first; ``size``: its length.
            Use :func:`to_indicator` (or :meth:`predict_indicator`) for the (n, C) bool matrix.
        """
        member = self.predict_indicator(post)
        p = mean_probs(post, self.head_)
        order = np.argsort(-p, axis=1, kind="stable")
        cls = np.asarray(self.classes_, dtype=object)
        m = member.to_numpy()
        sets = [list(cls[o[m[i, o]]]) for i, o in enumerate(order)]
        out = pd.DataFrame({"set": pd.Series(sets, index=member.index, dtype=object),
                            "size": m.sum(axis=1).astype(int)}, index=member.index)
        out.attrs["classes"] = list(self.classes_)
        return out

    def to_indicator(self, sets: pd.DataFrame) -> pd.DataFrame:
        """(n, C) bool membership of a :meth:`predict` result, columns in class order."""
        self._check_fitted()
        return to_indicator(sets, self.classes_)


# ---------------------------------------------------------------------- helpers
def to_indicator(sets: pd.DataFrame, classes=None) -> pd.DataFrame:
    """Bool membership matrix of prediction sets.

    Parameters
    ----------
    sets : pandas.DataFrame
        Output of :meth:`ConformalSets.predict` (column ``set``).
    classes : list, optional
        Column order; defaults to ``sets.attrs["classes"]``.

    Returns
    -------
    pandas.DataFrame of bool, shape (n_patients, n_classes)
    """
    if classes is None:
        classes = sets.attrs.get("classes")
        if classes is None:
            raise DataError("Pass classes=[...]: this sets frame carries no class list.")
    classes = list(classes)
    pos = {c: j for j, c in enumerate(classes)}
    m = np.zeros((len(sets), len(classes)), dtype=bool)
    for i, s in enumerate(sets["set"]):
        for c in s:
            m[i, pos[c]] = True
    return pd.DataFrame(m, index=sets.index, columns=classes)


def _covered(sets: pd.DataFrame, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(labels, pd.Series):
        raise DataError("labels must be a pandas Series indexed by patient id.")
    missing = sets.index.difference(labels.index)
    if len(missing):
        raise DataError(f"{len(missing)} patient(s) of the sets have no label (e.g. {missing[:5].tolist()}); "
                        "labels are aligned by patient id.")
    y = labels.reindex(sets.index)
    if y.isna().any():
        raise DataError("Some labels are NaN; drop unlabelled patients before computing coverage.")
    yv = y.to_numpy()
    hit = np.array([yi in s for yi, s in zip(yv, sets["set"])], dtype=bool)
    return hit, yv


def coverage(sets: pd.DataFrame, labels: pd.Series) -> float:
    """Fraction of patients whose true label is in their prediction set (aligned by id)."""
    hit, _ = _covered(sets, labels)
    return float(hit.mean()) if len(hit) else float("nan")


def class_coverage(sets: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Coverage, count and mean set size per true class.

    Returns
    -------
    pandas.DataFrame indexed by class with columns ``coverage``, ``n``, ``mean_size``.
    """
    hit, yv = _covered(sets, labels)
    df = pd.DataFrame({"y": yv, "hit": hit, "size": sets["size"].to_numpy()})
    g = df.groupby("y", sort=True)
    return pd.DataFrame({"coverage": g["hit"].mean(), "n": g.size(), "mean_size": g["size"].mean()})
