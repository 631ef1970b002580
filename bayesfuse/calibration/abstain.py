"""Calibrated abstention ("I don't know") with a Learn-then-Test guarantee.

>>> abst = bf.Abstainer(max_risk=0.05, delta=0.1).fit(cal_post, cal_labels, head="origin")
>>> abst.threshold_, abst.guarantee_
>>> decision = abst.predict(test_post)          # label / score / accepted per patient
>>> abst.risk_coverage(test_post, test_labels)  # realised error among accepted + CI

Survival head (high / low risk call at a horizon) and several heads at once:

>>> sa = bf.Abstainer(max_risk=0.1, delta=0.1).fit(cal_post, cal_targets, head="survival", horizon=365.0)
>>> ma = bf.Abstainer(max_risk={"subtype": 0.05, "survival": 0.1}, delta=0.1).fit(cal_post, cal_targets,
...                                                                               horizon=365.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from bayesfuse.calibration._common import (
    CalibrationWarning,
    align_labels,
    check_posterior,
    mean_probs,
    missingness_patterns,
    mutual_information,
)
from bayesfuse.calibration.ltt import (
    LTTResult,
    _check_levels,
    default_grid,
    ltt_fixed_sequence,
    min_certifiable,
    procedure_text,
)
from bayesfuse.calibration.selective_risk import ABSTAIN, RiskCoverage, clopper_pearson
from bayesfuse.exceptions import DataError, NotFittedError
from bayesfuse.posterior import Posterior

__all__ = ["ABSTAIN", "Abstainer", "RiskCoverage", "clopper_pearson"]

_OOD_SCORES = ("mutual_info", "n_missing")


def _conformal_upper(values: np.ndarray, level: float) -> float:
    """The ceil((n+1) level)-th smallest value (``inf`` when that exceeds n)."""
    n = len(values)
    k = math.ceil((n + 1) * level)
    if k > n or n == 0:
        return float("inf")
    return float(np.sort(values)[k - 1])


class Abstainer:
    """Selective classifier that says "I don't know" with a certified error rate.

    A patient is accepted when the posterior-predictive maximum class probability is at
    least ``threshold_`` (and, optionally, when an epistemic out-of-distribution score
    passes a gate); otherwise the decision is :data:`ABSTAIN`. ``threshold_`` is chosen
    by Learn-then-Test (Angelopoulos et al., 2021): exact binomial p-values of
    ``H_lambda: error among accepted > max_risk`` on a label-free grid, fixed-sequence
    testing from the most conservative threshold, and the certified threshold with the
    most acceptances.

    The same class abstains on a **survival head** (``fit(..., head="survival", horizon=tau)``):
    the call is ``"high"`` when the posterior-predictive risk ``P(T <= tau | x)`` is at least
    ``risk_threshold``, else ``"low"``; it is wrong when the truth is on the other side; the score
    is the posterior confidence in the call; only calibration patients followed to ``tau``
    count (censoring time >= ``tau``, drawn from the censoring model for events before it, see
    :mod:`bayesfuse.calibration.censoring`). And on **several heads at once**
    (``max_risk={"subtype": 0.05, "survival": 0.1}``): a patient is accepted when, for every head,
    the posterior probability that its call is wrong is at most ``kappa`` times that head's level
    (one threshold on a level-relative scale: a lenient head may answer with less confidence),
    ``kappa`` certified by multi-risk LTT (:func:`~bayesfuse.calibration.ltt.ltt_multi_risk`) so that,
    with probability >= 1 - delta, *every* head's error among jointly accepted patients is at most its
    level.

    Parameters
    ----------
    max_risk : float in (0, 1), or dict[str, float]
        Tolerated error rate among accepted patients (e.g. 0.05). A dict ``{head: level}``
        abstains jointly on those heads (``fit`` then takes no ``head``).
    delta : float in (0, 1)
        Tolerated probability that the guarantee fails because of an unlucky calibration set.
    ood_score : {None, "mutual_info", "n_missing"} or callable, optional
        Optional out-of-distribution gate, higher = more unusual.
        ``"mutual_info"``: mutual information between the prediction and the posterior
        draws, ``H[E p] - E H[p]`` (epistemic uncertainty); ``"n_missing"``: number of
        absent modalities; a callable ``f(post, head) -> array (n_patients,)`` for anything
        else, e.g. :class:`bayesfuse.posterior.LatentMahalanobis` (class-conditional
        Mahalanobis distance of the fused latent mean; its ``name`` attribute is used in
        ``guarantee_``). The gate threshold ``ood_threshold_`` is the conformal ``ood_quantile``
        quantile of the calibration scores, set before looking at labels.
    ood_quantile : float in (0, 1)
        Share of in-distribution patients the gate must let through (on average >= this).
    per_pattern : bool
        Fit a separate threshold per missingness pattern (tuple of present modalities)
        when that pattern has at least ``n_min`` calibration patients; smaller patterns
        use the pooled threshold (with a :class:`CalibrationWarning` naming them).
    grid : array-like, optional
        Candidate thresholds (label-free). Default :func:`~bayesfuse.calibration.ltt.default_grid`.
        Several heads: candidate ``kappa`` values (default: every head's default grid on its
        ``(1 - confidence) / max_risk`` scale).
    starts : int
        Largest number of label-free start points of the fallback procedure (see
        :func:`~bayesfuse.calibration.ltt.ltt_fixed_sequence`); each carries ``delta / k`` and a
        certified threshold passes its level on to the next, with ``k <= starts`` the number of
        start points the calibration set affords (``starts_``; the last one may need at most half of the
        patients, so a small set gets ``k = 1``, plain fixed-sequence testing at the full ``delta``).
        ``4`` (default) keeps certifying when one of the few most confident calibration patients is
        wrong, where ``1`` stops for good; it answered as many or more patients than ``1`` on every
        categorical cell of the validity study and every survival cell except those where almost nothing
        is certified (docs/calibration.md, "Start points").
    risk_threshold : float in (0, 1)
        Survival heads: the call is ``"high"`` when the predictive risk at the horizon is >= this.
    survival_score : {"predictive", "band"}
        Survival heads' confidence in the call: ``"predictive"`` = posterior-predictive probability
        of the call; ``"band"`` = share of posterior draws of ``S(horizon | x)`` on the called side
        (1 when the whole credible band is).
    seed : int
        Survival heads: seed of the draw deciding, for calibration patients with an event before
        the horizon, whether their (unseen) censoring time exceeds it.

    Attributes
    ----------
    threshold_ : float
        Certified (pooled) threshold on the max probability; ``inf`` = abstain on everyone. Survival
        head: on the posterior confidence of the call. Several heads: ``-kappa`` on the joint score
        ``-max_h (1 - confidence_h) / max_risk_h`` (``head_thresholds_`` gives each head's confidence).
    guarantee_ : str
        Plain-language statement of what is (and is not) guaranteed.
    certified_ : bool
        Whether a threshold could be certified (pooled).
    p_values_, grid_ : numpy.ndarray, shape (n_tested,)
        Tested thresholds (most conservative first) and their binomial p-values.
    n_calibration_ : int
        Calibration patients used.
    n_min_ : int or dict
        Fewest acceptances that can be certified. Categorical head: ``ceil(log(delta) / log(1 -
        max_risk))``, the plain procedure's (the gate of ``per_pattern``). Survival head (int) or several
        heads (dict per head): the fitted test's, at level ``delta / starts_``.
    starts_ : int
        Start points the pooled test used (:func:`~bayesfuse.calibration.ltt.effective_starts`:
        at most ``starts``, fewer for a small calibration set).
    ltt_ : LTTResult
        Full pooled LTT record (accepted counts, errors, certified mask).
    ood_threshold_ : float or None
        Gate threshold (None without a gate).
    pattern_thresholds_ : dict[tuple[str, ...], float]
        Per-pattern thresholds (``per_pattern=True``; patterns falling back are absent).
    pattern_ltt_ : dict[tuple[str, ...], LTTResult]
    classes_ : list
        Classes of ``head_``.
    head_ : str
    kind_ : {"categorical", "survival", "joint"}
    heads_ : list of str
        Heads abstained on.
    horizon_ : float or None
        Horizon of the survival calls.
    censoring_ : KaplanMeierCensoring or None
        Censoring model of the survival head (fitted from ``censoring=``; see ``fit``).
    joint_ : JointAbstention or None
        The fitted survival / several-head rule (its ``ltt_`` is a
        :class:`~bayesfuse.calibration.ltt.MultiLTTResult`).

    Notes
    -----
    Guarantee (no gate, pooled): with probability >= 1 - delta over the calibration draw,
    the population error rate among accepted patients is <= max_risk, for new patients
    exchangeable with the calibration patients. It is an average over accepted patients,
    not a per-patient statement, and it says nothing about patients from another
    distribution (other cohort, unseen class). With a gate, the same statement holds for
    the combined rule (gate and threshold) because the gate threshold uses no labels; the
    gate additionally lets through >= ``ood_quantile`` of exchangeable patients on
    average, and only *tends* to refuse unusual ones (no guarantee for those). With
    ``per_pattern=True`` each certified pattern carries its own statement at level
    ``1 - delta`` (simultaneously for all K patterns: ``1 - K delta``).
    """

    def __init__(self, max_risk: float | dict = 0.05, delta: float = 0.1, *,
                 ood_score: str | Callable | None = None, ood_quantile: float = 0.95,
                 per_pattern: bool = False, grid=None, starts: int = 4, risk_threshold: float = 0.5,
                 survival_score: str = "predictive", seed: int = 0) -> None:
        from bayesfuse.calibration.survival_abstain import SURVIVAL_SCORES

        if isinstance(max_risk, dict):
            if not max_risk:
                raise ValueError("max_risk={} names no head; give e.g. {'subtype': 0.05, 'survival': 0.1}.")
            for h, r in max_risk.items():
                if not isinstance(h, str):
                    raise ValueError(f"max_risk keys must be head names (str), got {h!r}.")
                _check_levels(r, delta)
            if ood_score is not None or per_pattern:
                raise ValueError("ood_score and per_pattern apply to a single categorical head; with max_risk as a "
                                 "dict (several heads) leave them unset.")
        else:
            _check_levels(max_risk, delta)
        if not (isinstance(risk_threshold, (int, float)) and 0 < risk_threshold < 1):
            raise ValueError(f"risk_threshold={risk_threshold!r} must lie in (0, 1), e.g. 0.5.")
        if survival_score not in SURVIVAL_SCORES:
            raise ValueError(f"survival_score={survival_score!r}; use one of {SURVIVAL_SCORES}.")
        if ood_score is not None and not callable(ood_score) and ood_score not in _OOD_SCORES:
            raise ValueError(f"ood_score={ood_score!r}; use None, one of {_OOD_SCORES} or a callable "
                             "f(post, head) -> array of shape (n_patients,).")
        if not 0 < ood_quantile < 1:
            raise ValueError(f"ood_quantile={ood_quantile!r} must lie in (0, 1), e.g. 0.95.")
        self.max_risk = {h: float(r) for h, r in max_risk.items()} if isinstance(max_risk, dict) else float(max_risk)
        self.delta = float(delta)
        self.risk_threshold = float(risk_threshold)
        self.survival_score = survival_score
        self.seed = int(seed)
        self.ood_score = ood_score
        self.ood_quantile = float(ood_quantile)
        self.per_pattern = bool(per_pattern)
        self.grid = grid
        if not (isinstance(starts, (int, np.integer)) and starts >= 1):
            raise ValueError(f"starts={starts!r} must be an integer >= 1 (1 = plain fixed-sequence testing).")
        self.starts = int(starts)

    def __repr__(self) -> str:
        return (f"Abstainer(max_risk={self.max_risk}, delta={self.delta}, ood_score={self.ood_score!r}, "
                f"ood_quantile={self.ood_quantile}, per_pattern={self.per_pattern}, starts={self.starts})")

    # ----------------------------------------------------------------- helpers
    def _ood(self, post: Posterior, head: str) -> np.ndarray | None:
        if self.ood_score is None:
            return None
        if self.ood_score == "mutual_info":
            return mutual_information(post, head)
        if self.ood_score == "n_missing":
            return post.presence.shape[1] - missingness_patterns(post).map(len).to_numpy()
        vals = np.asarray(self.ood_score(post, head), dtype=float).ravel()
        if vals.shape != (post.n_patients,) or np.isnan(vals).any():
            raise DataError(f"ood_score callable returned shape {vals.shape} (or NaN); it must return "
                            f"one finite value per patient, shape ({post.n_patients},).")
        return vals

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_") or not hasattr(self, "kind_"):
            raise NotFittedError("This Abstainer is not fitted yet: call "
                                 "abst.fit(cal_post, cal_labels, head=...) on calibration patients first.")

    def _ltt(self, scores, errors, eligible) -> LTTResult:
        return ltt_fixed_sequence(scores, errors, self.max_risk, self.delta, grid=self.grid_full_,
                                  eligible=eligible, starts=self.starts)

    # --------------------------------------------------------------------- fit
    def fit(self, post: Posterior, labels: pd.Series | pd.DataFrame, head: str | None = None, *,
            horizon: float | None = None, censoring=None) -> Abstainer:
        """Certify a threshold on calibration patients.

        Parameters
        ----------
        post : Posterior
            Posterior of calibration patients (not used for training or tuning).
        labels : pandas.Series or pandas.DataFrame
            Categorical head: true class per patient id (a Series; aligned by id; extra ids are
            ignored). Survival head or several heads: the targets table indexed by patient id
            (class columns, and the survival head's time / event columns); missing targets are
            allowed there and leave only that head's counts.
        head : str, optional
            Head to abstain on (categorical or survival). Omit it when ``max_risk`` is a dict.
        horizon : float, optional
            Survival heads: time of the high / low call (units of the data). Required with a
            survival head.
        censoring : None, pandas.DataFrame or KaplanMeierCensoring
            Survival heads: where the censoring distribution comes from. ``None``: Kaplan-Meier of
            the calibration outcomes; recommended: the training patients' targets
            (``censoring=train.targets``), estimated independently of the calibration patients.

        Returns
        -------
        Abstainer
            ``self``, fitted.
        """
        from bayesfuse.heads import Survival

        multi = isinstance(self.max_risk, dict)
        if multi and head is not None:
            raise DataError(f"max_risk is a dict over heads {sorted(self.max_risk)}: leave head unset (it names the "
                            "heads), or pass a single float max_risk with head=.")
        if not multi and head is None:
            raise DataError("Pass the head to abstain on, e.g. fit(cal_post, labels, head='subtype'), or give "
                            "max_risk as a dict {head: level} to abstain on several heads.")
        if not isinstance(post, Posterior):
            raise DataError(f"Expected a bayesfuse.Posterior (from model.predict(...)), got {type(post).__name__}.")
        if multi or isinstance(post.heads.get(head), Survival):
            return self._fit_joint(post, labels, head, horizon, censoring)
        if horizon is not None or censoring is not None:
            raise DataError(f"horizon= and censoring= apply to survival heads; head {head!r} is categorical.")
        self.kind_, self.heads_, self.joint_, self.horizon_, self.censoring_ = "categorical", [head], None, None, None
        codes = align_labels(post, labels, head)
        classes = post.classes(head)
        if ABSTAIN in classes:
            raise DataError(f"A class is named {ABSTAIN!r}, the abstention sentinel; rename that class.")
        mp = mean_probs(post, head)
        scores = mp.max(axis=1)
        errors = mp.argmax(axis=1) != codes
        self.head_ = head
        self.classes_ = list(classes)
        self.grid_full_ = default_grid(len(classes)) if self.grid is None else np.asarray(self.grid, float)
        self.n_calibration_ = int(len(codes))
        # smallest certifiable count (a calibration set this small gets one start point at the full delta)
        self.n_min_ = min_certifiable(self.max_risk, self.delta)

        ood = self._ood(post, head)
        if ood is None:
            self.ood_threshold_ = None
            eligible = np.ones(len(codes), dtype=bool)
        else:
            self.ood_threshold_ = _conformal_upper(ood, self.ood_quantile)
            eligible = ood <= self.ood_threshold_
        self.n_gate_passed_ = int(eligible.sum())

        self.ltt_ = self._ltt(scores, errors, eligible)
        self.starts_ = self.ltt_.starts
        self.threshold_ = self.ltt_.threshold
        self.certified_ = self.ltt_.any_certified
        self.p_values_ = self.ltt_.p_values
        self.grid_ = self.ltt_.grid

        self.pattern_thresholds_: dict[tuple, float] = {}
        self.pattern_ltt_: dict[tuple, LTTResult] = {}
        self.fallback_patterns_: list[tuple] = []
        if self.per_pattern:
            pats = missingness_patterns(post).to_numpy()
            for pat in sorted(set(pats), key=lambda t: (-len(t), t)):
                idx = np.array([p == pat for p in pats])
                n_pat = int((idx & eligible).sum())
                if n_pat >= self.n_min_:
                    res = self._ltt(scores[idx], errors[idx], eligible[idx])
                    self.pattern_ltt_[pat] = res
                    self.pattern_thresholds_[pat] = res.threshold
                else:
                    self.fallback_patterns_.append(pat)
            if self.fallback_patterns_:
                warnings.warn(
                    f"per_pattern=True: missingness pattern(s) {self.fallback_patterns_} have fewer than "
                    f"n_min={self.n_min_} calibration patients and use the pooled threshold "
                    f"{self.threshold_:.4g}; their guarantee is the pooled one, not pattern-specific. "
                    "Add calibration patients with these patterns for a pattern-specific threshold.",
                    CalibrationWarning, stacklevel=2)

        self.guarantee_ = self._guarantee_text()
        if not self.certified_:
            warnings.warn("Abstainer: nothing could be certified, every patient will be abstained. "
                          + self._nothing_hint(), CalibrationWarning, stacklevel=2)
        return self

    def _fit_joint(self, post, targets, head, horizon, censoring) -> Abstainer:
        from bayesfuse.calibration.multi_abstain import JointAbstention

        if self.ood_score is not None or self.per_pattern:
            raise DataError("ood_score and per_pattern apply to a categorical head only; leave them unset for a "
                            "survival head.")
        if horizon is not None and not (np.ndim(horizon) == 0 and np.isfinite(horizon) and float(horizon) > 0):
            raise DataError(f"horizon={horizon!r} must be a finite time > 0 (units of the data).")
        risks = self.max_risk if isinstance(self.max_risk, dict) else {head: self.max_risk}
        joint = JointAbstention(risks, self.delta, horizon, self.risk_threshold, self.survival_score, self.seed,
                                self.starts, self.grid)
        joint.fit(post, targets, censoring)
        self.joint_ = joint
        self.kind_ = "joint" if isinstance(self.max_risk, dict) else "survival"
        self.heads_ = list(risks)
        self.head_ = None if self.kind_ == "joint" else head
        self.horizon_ = None if horizon is None else float(horizon)
        self.censoring_ = joint.censoring_
        self.ltt_ = joint.ltt_
        self.starts_ = joint.ltt_.starts
        self.threshold_ = joint.threshold_
        self.certified_ = joint.certified_
        self.p_values_ = joint.ltt_.p_joint
        self.grid_ = joint.ltt_.grid
        self.n_calibration_ = joint.n_calibration_
        self.n_min_ = dict(joint.ltt_.n_min) if self.kind_ == "joint" else joint.ltt_.n_min[head]
        self.head_thresholds_ = joint.head_thresholds_
        self.ood_threshold_ = None
        self.guarantee_ = joint.guarantee_text()
        return self

    def _nothing_hint(self) -> str:
        return (f"Certifying max_risk={self.max_risk:g} at delta={self.delta:g} needs at least "
                f"n_min={self.n_min_} accepted calibration patients with zero errors (more with errors); "
                f"there were {self.n_calibration_} calibration patients ({self.n_gate_passed_} past the "
                "OOD gate). Use more calibration patients, a larger max_risk or delta, or a better model.")

    def _procedure(self) -> str:
        return procedure_text(self.starts_)

    def _guarantee_text(self) -> str:
        conf = f"{100 * (1 - self.delta):.4g}%"
        risk = f"{100 * self.max_risk:.4g}%"
        if not self.certified_:
            text = (f"NOTHING CERTIFIED: no threshold could be shown to keep the error among accepted "
                    f"patients at or below {risk} with {conf} confidence, so every patient is answered "
                    f"{ABSTAIN!r}. " + self._nothing_hint())
        else:
            k = int(self.ltt_.n_accepted[self.ltt_.chosen])
            text = (f"With probability at least {conf} over the draw of the {self.n_calibration_} calibration "
                    f"patients, the error rate among accepted patients is at most {risk} (Learn-then-Test, "
                    f"exact binomial p-values, {self._procedure()}; accept when the posterior-predictive "
                    f"max probability >= {self.threshold_:.4g}; {k}/{self.n_calibration_} calibration patients "
                    f"accepted). This holds on average over accepted patients, for new patients exchangeable "
                    f"with the calibration patients (same cohort and preprocessing); it is not a "
                    f"per-patient statement.")
        if self.ood_threshold_ is not None:
            name = self.ood_score if isinstance(self.ood_score, str) else getattr(self.ood_score, "name",
                                                                                    "custom OOD score")
            text += (f" OOD gate: patients with {name} > {self.ood_threshold_:.4g} (the conformal "
                     f"{self.ood_quantile:.3g} quantile of calibration values, set without labels) are "
                     f"refused; on average at least {100 * self.ood_quantile:.3g}% of exchangeable patients "
                     "pass it. The gate makes unusual patients (other cohorts, unseen classes) less likely "
                     "to be accepted but gives no guarantee for them; the error guarantee above applies to "
                     "the combined rule (gate and threshold) on exchangeable patients.")
        if self.per_pattern:
            parts = [f"{'+'.join(p) or 'no modality'}: threshold {t:.4g}"
                     + ("" if np.isfinite(t) else " (nothing certified, abstain)")
                     + ("" if self.pattern_ltt_[p].starts == self.starts_
                        else f" ({procedure_text(self.pattern_ltt_[p].starts)})")
                     for p, t in self.pattern_thresholds_.items()]
            text += (" Per missingness pattern (each at the same max_risk/delta, separately; jointly over "
                     f"{len(parts)} patterns with probability >= 1 - {len(parts)}*delta): " + "; ".join(parts) + ".")
            if self.fallback_patterns_:
                text += (f" Patterns {['+'.join(p) or 'no modality' for p in self.fallback_patterns_]} had "
                         "too few calibration patients and use the pooled threshold (pooled guarantee only).")
        return text

    # ----------------------------------------------------------------- predict
    def predict(self, post: Posterior) -> pd.DataFrame:
        """Label or abstain for each patient.

        Parameters
        ----------
        post : Posterior
            Posterior of new patients with the fitted head and classes.

        Returns
        -------
        pandas.DataFrame, shape (n_patients, 6 or 7), indexed by patient id
            ``label`` (class, or :data:`ABSTAIN`), ``score`` (posterior-predictive max
            probability), ``accepted`` (bool), ``prediction`` (most probable class, also for
            abstained patients), ``threshold`` (the threshold applied to that patient),
            ``reason`` (``"accepted"``, ``"low confidence"``, ``"out of distribution"``),
            and ``ood`` (the gate score) when a gate is used.
        """
        self._check_fitted()
        if self.kind_ != "categorical":
            return self.joint_.frame(post, single=self.kind_ == "survival")
        check_posterior(post, self.head_)
        if list(post.classes(self.head_)) != self.classes_:
            raise DataError(f"Posterior classes {post.classes(self.head_)} differ from the calibration "
                            f"classes {self.classes_}; use posteriors of the same fitted model.")
        mp = mean_probs(post, self.head_)
        scores = mp.max(axis=1)
        pred = np.asarray(self.classes_, dtype=object)[mp.argmax(axis=1)]
        thr = np.full(len(scores), self.threshold_, dtype=float)
        if self.per_pattern:
            pats = missingness_patterns(post).to_numpy()
            unseen = set()
            for i, p in enumerate(pats):
                if p in self.pattern_thresholds_:
                    thr[i] = self.pattern_thresholds_[p]
                elif p not in self.fallback_patterns_:
                    unseen.add(p)
            if unseen:
                warnings.warn(f"Missingness pattern(s) {sorted(unseen)} were absent from calibration; "
                              f"they use the pooled threshold {self.threshold_:.4g}.",
                              CalibrationWarning, stacklevel=2)
        confident = scores >= thr
        ood = self._ood(post, self.head_)
        gate = np.ones(len(scores), bool) if ood is None else ood <= self.ood_threshold_
        accepted = confident & gate
        label = np.where(accepted, pred, ABSTAIN).astype(object)
        reason = np.where(accepted, "accepted", np.where(gate, "low confidence", "out of distribution"))
        out = pd.DataFrame({"label": label, "score": scores, "accepted": accepted, "prediction": pred,
                            "threshold": thr, "reason": reason},
                           index=pd.Index(np.asarray(post.sample_ids, dtype=object), name="sample_id"))
        if ood is not None:
            out["ood"] = ood
        return out

    def risk_coverage(self, post: Posterior, labels, confidence: float = 0.95):
        """Realised error among accepted patients and coverage on a labelled (test) set.

        Parameters
        ----------
        post : Posterior
        labels : pandas.Series or pandas.DataFrame
            True class per patient id (aligned by id); survival / several heads: the targets table.
        confidence : float
            Level of the Clopper-Pearson interval of the error among accepted.

        Returns
        -------
        RiskCoverage
            Categorical head. Survival head: a
            :class:`~bayesfuse.calibration.survival_abstain.SurvivalRiskCoverage` (wrong-call rate at
            the horizon among accepted: complete cases and IPCW with the fitted censoring model).
            Several heads: dict head -> one of those, each among the *jointly* accepted patients
            with that head's target known.
        """
        self._check_fitted()
        if self.kind_ != "categorical":
            out = self.joint_.risk_coverage(post, labels, confidence)
            return out if self.kind_ == "joint" else out[self.head_]
        decision = self.predict(post)
        codes = align_labels(post, labels, self.head_)
        truth = np.asarray(self.classes_, dtype=object)[codes]
        acc = decision["accepted"].to_numpy()
        n_acc = int(acc.sum())
        n_err = int((decision["prediction"].to_numpy()[acc] != truth[acc]).sum())
        lo, hi = clopper_pearson(n_err, n_acc, confidence)
        n = len(acc)
        return RiskCoverage(n=n, n_accepted=n_acc, n_errors=n_err, coverage=n_acc / n if n else float("nan"),
                            error=n_err / n_acc if n_acc else float("nan"), ci_low=lo, ci_high=hi,
                            confidence=float(confidence), max_risk=self.max_risk)
