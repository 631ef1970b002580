"""Abstention over several heads at once (and over one survival head), certified jointly.

The engine behind ``Abstainer(max_risk={"subtype": 0.05, "survival": 0.1})`` and
``Abstainer(...).fit(..., head=<survival head>, horizon=...)``. One head: accepted when the confidence
``s`` of its call is at least a threshold. Several heads: each head's posterior probability that its
call is wrong, ``1 - s_h``, is measured in units of that head's level, ``u_h = (1 - s_h) / max_risk_h``
(a label- and data-free scale), and a patient is accepted when ``max_h u_h <= kappa`` (joint score
``-max_h u_h``): a lenient head may answer with less confidence than a strict one. The threshold is
certified by multi-risk Learn-then-Test
(:func:`~bayesfuse.calibration.ltt.ltt_multi_risk`): per head the exact binomial p-value of "this
head's error among jointly accepted patients is above its level", their maximum, and
fixed-sequence testing. numpy only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse.calibration._common import (
    CalibrationWarning,
    align_labels,
    align_survival,
    check_posterior,
    check_survival_posterior,
    mean_probs,
)
from bayesfuse.calibration.censoring import KaplanMeierCensoring, describe_censoring, make_censoring
from bayesfuse.calibration.ltt import MultiLTTResult, default_grid, ltt_multi_risk, procedure_text
from bayesfuse.calibration.selective_risk import ABSTAIN, RiskCoverage, clopper_pearson
from bayesfuse.calibration.survival_abstain import (
    HIGH,
    LOW,
    SurvivalRiskCoverage,
    survival_calls,
    survival_errors,
    survival_risk_coverage,
)
from bayesfuse.exceptions import DataError
from bayesfuse.heads import Categorical, Survival
from bayesfuse.posterior import Posterior

__all__ = ["JointAbstention", "HeadCalls"]


@dataclass(frozen=True)
class HeadCalls:
    """One head's calls on a set of patients (arrays of shape (n_patients,))."""

    head: str
    kind: str
    calls: np.ndarray       # class label / "high" / "low" (object)
    scores: np.ndarray      # confidence of the call in [0, 1]
    risk: np.ndarray | None  # survival: predictive P(T <= horizon)


class JointAbstention:
    """Fitted joint rule over ``max_risks`` heads (built by :class:`~bayesfuse.calibration.Abstainer`).

    Parameters
    ----------
    max_risks : dict[str, float]
        Level per head.
    delta : float
        Family-wise failure probability.
    horizon : float or None
        Horizon of the survival heads' calls.
    risk_threshold : float
        Survival: ``"high"`` when the predictive risk is >= this.
    survival_score : {"predictive", "band"}
    seed : int
        Seed of the censoring-time draw (:func:`~bayesfuse.calibration.censoring.select_at_risk`).
    starts : int
    grid : array-like or None
    """

    def __init__(self, max_risks: dict, delta: float, horizon, risk_threshold: float, survival_score: str,
                 seed: int, starts: int, grid=None) -> None:
        self.max_risks = dict(max_risks)
        self.delta = float(delta)
        self.horizon = None if horizon is None else float(horizon)
        self.risk_threshold = float(risk_threshold)
        self.survival_score = survival_score
        self.seed = int(seed)
        self.starts = int(starts)
        self.grid = grid

    # ----------------------------------------------------------------- calls
    def calls(self, post: Posterior) -> dict[str, HeadCalls]:
        """Each head's calls and scores on ``post`` (no labels used)."""
        out = {}
        for h in self.max_risks:
            spec = post.heads.get(h)
            if isinstance(spec, Survival):
                check_survival_posterior(post, h)
                risk, high, scores = survival_calls(post, h, self.horizon, self.risk_threshold, self.survival_score)
                out[h] = HeadCalls(h, "survival", np.where(high, HIGH, LOW).astype(object), scores, risk)
            else:
                check_posterior(post, h)
                mp = mean_probs(post, h)
                out[h] = HeadCalls(h, "categorical", np.asarray(post.classes(h), dtype=object)[mp.argmax(axis=1)],
                                   mp.max(axis=1), None)
        return out

    def _head_grid(self, post: Posterior, h: str) -> np.ndarray:
        if isinstance(post.heads[h], Categorical):
            return default_grid(len(post.classes(h)))
        if self.risk_threshold != 0.5 or self.survival_score == "band":
            return np.unique(np.concatenate([default_grid(2), np.linspace(0.0, 1.0, 401)]))[::-1]
        return default_grid(2)

    def _grid(self, post: Posterior) -> np.ndarray:
        """Label-free grid on the joint score: the score scale for one head, ``-kappa`` for several."""
        several = len(self.max_risks) > 1
        if self.grid is not None:
            g = np.asarray(self.grid, dtype=float)
            return -g if several else g      # several heads: ``grid`` lists kappa values
        if not several:
            return self._head_grid(post, next(iter(self.max_risks)))
        kappa = np.concatenate([(1.0 - self._head_grid(post, h)) / r for h, r in self.max_risks.items()])
        return -np.unique(kappa)

    def joint_score(self, calls: dict[str, HeadCalls]) -> np.ndarray:
        """Per patient: the head score (one head) or ``-max_h (1 - s_h) / max_risk_h`` (several heads)."""
        if len(calls) == 1:
            return next(iter(calls.values())).scores
        return -np.max(np.stack([(1.0 - c.scores) / self.max_risks[h] for h, c in calls.items()]), axis=0)

    @property
    def head_thresholds_(self) -> dict[str, float]:
        """The confidence each head's call needs at the certified threshold (``inf`` when nothing is certified)."""
        if len(self.max_risks) == 1:
            return {h: self.threshold_ for h in self.max_risks}
        kappa = -self.threshold_
        return {h: (1.0 - kappa * r if np.isfinite(kappa) else float("inf")) for h, r in self.max_risks.items()}

    # ------------------------------------------------------------------- fit
    def fit(self, post: Posterior, targets, censoring=None) -> JointAbstention:
        """Certify the joint threshold on calibration patients (``targets``: labels / time and event per id)."""
        surv_heads = [h for h in self.max_risks if isinstance(post.heads.get(h), Survival)]
        for h in self.max_risks:
            if h not in post.heads:
                raise DataError(f"max_risk names head {h!r}, which this posterior lacks; heads are {sorted(post.heads)}.")
        if surv_heads and self.horizon is None:
            raise DataError(f"Survival head(s) {surv_heads} need a horizon for their high/low calls: "
                            "fit(..., horizon=365.0) in the time units of the data.")
        if len(surv_heads) > 1:
            raise DataError(f"Only one survival head per Abstainer (got {surv_heads}); fit one Abstainer per head.")
        calls = self.calls(post)
        rng = np.random.default_rng([self.seed, 16])
        errors, eligible = {}, {}
        self.censoring_, self.censoring_source_ = None, None
        for h, c in calls.items():
            if c.kind == "survival":
                spec = post.heads[h]
                time, event, known = align_survival(post, _frame(targets, h, spec), h, allow_missing=True)
                self.censoring_, self.censoring_source_ = make_censoring(censoring, time[known], event[known],
                                                                         spec.time, spec.event)
                if not getattr(self.censoring_, "marginal", False):
                    raise DataError("The survival Abstainer needs a censoring model independent of the patient "
                                    "(Kaplan-Meier; pass None or the training targets); a covariate-dependent "
                                    "one is supported by SurvivalBound only.")
                if isinstance(self.censoring_, KaplanMeierCensoring):
                    self.censoring_.check_support(self.horizon, "horizon")
                errors[h], eligible[h] = survival_errors(c.calls == HIGH, time, event, known, self.horizon,
                                                         self.censoring_, rng, post)
            else:
                codes = align_labels(post, _series(targets, h, post.heads[h]), h, allow_missing=True)
                if ABSTAIN in post.classes(h):
                    raise DataError(f"A class of head {h!r} is named {ABSTAIN!r}, the abstention sentinel; rename it.")
                truth = np.asarray(post.classes(h), dtype=object)[np.clip(codes, 0, None)]
                eligible[h] = codes >= 0
                errors[h] = eligible[h] & (c.calls != truth)
        joint = self.joint_score(calls)
        self.ltt_: MultiLTTResult = ltt_multi_risk(joint, errors, eligible, self.max_risks, self.delta,
                                                   grid=self._grid(post), starts=self.starts)
        self.threshold_ = self.ltt_.threshold
        self.certified_ = self.ltt_.any_certified
        self.n_calibration_ = int(post.n_patients)
        self.n_eligible_ = {h: int(v.sum()) for h, v in eligible.items()}
        self.kinds_ = {h: c.kind for h, c in calls.items()}
        self.classes_ = {h: list(post.classes(h)) for h, c in calls.items() if c.kind == "categorical"}
        if not self.certified_:
            warnings.warn("Abstainer: nothing could be certified, every patient will be abstained. "
                          + self._nothing_hint(), CalibrationWarning, stacklevel=4)
        return self

    def _nothing_hint(self) -> str:
        need = ", ".join(f"{h}: n_min={m} (had {self.n_eligible_[h]} eligible)" for h, m in self.ltt_.n_min.items())
        return (f"Each head needs at least n_min accepted calibration patients that count for it with zero errors "
                f"(more with errors); {need}. Survival heads count only patients followed to the horizon. Use more "
                "calibration patients, larger max_risk or delta, or a better model.")

    # --------------------------------------------------------------- predict
    def predict(self, post: Posterior) -> tuple[dict[str, HeadCalls], np.ndarray, np.ndarray]:
        """``(calls, joint score, accepted)`` for new patients."""
        calls = self.calls(post)
        for h, cls in self.classes_.items():
            if list(post.classes(h)) != cls:
                raise DataError(f"Posterior classes {post.classes(h)} of head {h!r} differ from the calibration "
                                f"classes {cls}; use posteriors of the same fitted model.")
        joint = self.joint_score(calls)
        return calls, joint, joint >= self.threshold_

    def frame(self, post: Posterior, single: bool) -> pd.DataFrame:
        """The decision table (see :meth:`Abstainer.predict`)."""
        calls, joint, acc = self.predict(post)
        idx = pd.Index(np.asarray(post.sample_ids, dtype=object), name="sample_id")
        if single:
            (h, c), = calls.items()
            return pd.DataFrame({"label": np.where(acc, c.calls, ABSTAIN).astype(object), "score": c.scores,
                                 "accepted": acc, "prediction": c.calls, "risk": c.risk,
                                 "threshold": self.threshold_,
                                 "reason": np.where(acc, "accepted", "low confidence")}, index=idx)
        cols: dict = {}
        names = list(calls)
        rel = np.stack([(1.0 - calls[h].scores) / self.max_risks[h] for h in names])
        for h in names:
            c = calls[h]
            cols[h] = np.where(acc, c.calls, ABSTAIN).astype(object)
            cols[f"{h}_call"] = c.calls
            cols[f"{h}_score"] = c.scores
            cols[f"{h}_threshold"] = self.head_thresholds_[h]
            if c.risk is not None:
                cols[f"{h}_risk"] = c.risk
        weakest = np.asarray(names, dtype=object)[rel.argmax(axis=0)]
        cols.update({"relative_error": -joint, "accepted": acc, "kappa": -self.threshold_,
                     "reason": np.where(acc, "accepted", np.char.add("low confidence: ", weakest.astype(str)))})
        return pd.DataFrame(cols, index=idx)

    def risk_coverage(self, post: Posterior, targets, confidence: float = 0.95) -> dict:
        """Per head: realised error among jointly accepted test patients (that head's target known)."""
        calls, _, acc = self.predict(post)
        out: dict[str, RiskCoverage | SurvivalRiskCoverage] = {}
        for h, c in calls.items():
            if c.kind == "survival":
                spec = post.heads[h]
                time, event, known = align_survival(post, _frame(targets, h, spec), h, allow_missing=True)
                sub = post if known.all() else _subset(post, known)
                out[h] = survival_risk_coverage(acc[known], (c.calls == HIGH)[known], time[known], event[known],
                                                self.horizon, self.censoring_, self.max_risks[h], confidence, sub)
            else:
                codes = align_labels(post, _series(targets, h, post.heads[h]), h, allow_missing=True)
                ok = codes >= 0
                truth = np.asarray(post.classes(h), dtype=object)[np.clip(codes, 0, None)]
                a = acc[ok]
                n_acc, n_err = int(a.sum()), int((c.calls[ok][a] != truth[ok][a]).sum())
                lo, hi = clopper_pearson(n_err, n_acc, confidence)
                n = int(ok.sum())
                out[h] = RiskCoverage(n=n, n_accepted=n_acc, n_errors=n_err,
                                      coverage=n_acc / n if n else float("nan"),
                                      error=n_err / n_acc if n_acc else float("nan"), ci_low=lo, ci_high=hi,
                                      confidence=float(confidence), max_risk=self.max_risks[h])
        return out

    # ------------------------------------------------------------- guarantee
    def guarantee_text(self) -> str:
        conf = f"{100 * (1 - self.delta):.4g}%"
        parts = []
        for h, r in self.max_risks.items():
            if self.kinds_[h] == "survival":
                parts.append(f"{h}: the share of wrong high/low calls at horizon {self.horizon:g} (a 'high' call, "
                             f"predictive P(T <= {self.horizon:g}) >= {self.risk_threshold:g}, is wrong when T > "
                             f"{self.horizon:g}; a 'low' call when T <= {self.horizon:g}) is at most {100 * r:.4g}%")
            else:
                parts.append(f"{h}: the error rate is at most {100 * r:.4g}%")
        if not self.certified_:
            return ("NOTHING CERTIFIED: no threshold could be shown to keep " + "; ".join(parts)
                    + f" with {conf} confidence, so every patient is answered {ABSTAIN!r}. " + self._nothing_hint())
        k = int(self.ltt_.n_joint[self.ltt_.chosen])
        several = len(self.max_risks) > 1
        score = ("posterior-predictive probability of the call" if self.survival_score == "predictive"
                 else "categorical: max class probability; survival: share of posterior draws on the called side")
        test = procedure_text(self.ltt_.starts)
        procedure = (f" over several risks (the largest per-head exact binomial p-value, {test}: family-wise, no "
                     "Bonferroni split across heads)" if several else f" (exact binomial p-values, {test})")
        if several:
            counted = (". Counted per head: " + ", ".join(f"{h} {n}" for h, n in self.n_eligible_.items())
                       + " calibration patients (a patient missing one head's target still counts for the others; "
                         "targets are assumed missing independently of the errors).")
        else:
            counted = (f". {next(iter(self.n_eligible_.values()))} calibration patients count (known target"
                       + (", followed to the horizon)." if self.censoring_ is not None else ")."))
        if several:
            rule = (f"for every head the posterior probability that its call is wrong is at most "
                    f"{-self.threshold_:.4g} x that head's max_risk, i.e. confidence (" + score + ") >= "
                    + ", ".join(f"{h}: {t:.4g}" for h, t in self.head_thresholds_.items()))
        else:
            rule = f"the call has posterior confidence >= {self.threshold_:.4g} ({score})"
        text = (f"With probability at least {conf} over the draw of the {self.n_calibration_} calibration patients"
                + (", simultaneously for every head" if several else "") + ", among accepted patients "
                + "; ".join(parts) + f". A patient is accepted when {rule} ({k}/{self.n_calibration_} calibration "
                  "patients accepted). Certified by Learn-then-Test" + procedure + counted)
        if self.censoring_ is not None:
            src = describe_censoring(self.censoring_source_, self.censoring_)
            text += (" Survival: only patients followed to the horizon count (censoring time >= horizon; for an "
                     f"event before it drawn from the censoring distribution: {src}). Exact when that estimate is the true censoring distribution and censoring is "
                     "independent of the survival time and of the patient's data; approximate when estimated.")
        return text + (" This holds on average over accepted patients exchangeable with the calibration patients; "
                       "it is not a per-patient statement.")


def _frame(targets, head: str, spec: Survival) -> pd.DataFrame:
    if not isinstance(targets, pd.DataFrame):
        raise DataError(f"Survival head {head!r}: pass targets as a DataFrame indexed by patient id with columns "
                        f"{spec.time!r} and {spec.event!r} (e.g. data.targets), got {type(targets).__name__}.")
    return targets


def _series(targets, head: str, spec) -> pd.Series:
    if isinstance(targets, pd.Series):
        return targets
    if isinstance(targets, pd.DataFrame):
        col = spec.column or head
        if col not in targets.columns:
            raise DataError(f"targets lack column {col!r} of categorical head {head!r} (columns: "
                            f"{list(targets.columns)[:10]}).")
        return targets[col]
    raise DataError(f"Head {head!r}: pass targets as a DataFrame (or a Series for one categorical head), got "
                    f"{type(targets).__name__}.")


def _subset(post: Posterior, keep: np.ndarray) -> Posterior:
    from bayesfuse.calibration._common import subset_posterior

    return subset_posterior(post, np.asarray(post.sample_ids, dtype=object)[keep])
