"""Out-of-distribution scores on the fused latent (numpy only).

:class:`LatentMahalanobis` is the class-conditional Mahalanobis distance of Lee et al. (2018,
"A simple unified framework for detecting out-of-distribution samples and adversarial
attacks") applied to the fused posterior mean of ``z``: Gaussian class clusters with a tied
covariance are estimated from training patients' posterior means, and a new patient's score is
the squared distance to the nearest class mean. It is label-free at scoring time, so it can
serve as the OOD gate of :class:`bayesfuse.Abstainer` (``ood_score=LatentMahalanobis...``),
whose threshold is then a conformal quantile of calibration scores.

>>> train_post = model.predict(train, num_samples=1)
>>> maha = LatentMahalanobis.from_posterior(train_post, train.targets["origin"])
>>> abst = bf.Abstainer(0.05, 0.1, ood_score=maha).fit(cal_post, cal_labels, head="origin")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesfuse._labels import class_list, label_codes
from bayesfuse.exceptions import DataError

__all__ = ["JointScore", "LatentMahalanobis", "PatientScores"]


@dataclass
class LatentMahalanobis:
    """Class-conditional Mahalanobis distance with a tied covariance, on latent posterior means.

    Build it with :meth:`fit` (arrays) or :meth:`from_posterior` (a training Posterior and labels).

    Attributes
    ----------
    classes_ : list
        Class labels, in the row order of ``means_``.
    means_ : numpy.ndarray, shape (n_classes, latent_dim)
        Class means of the training latent means.
    precision_ : numpy.ndarray, shape (latent_dim, latent_dim)
        Inverse of the tied (pooled within-class) covariance, ridge-regularised.
    shrinkage : float
        Ridge added to the covariance: ``shrinkage * trace(cov) / latent_dim * I``.
    n_train_ : int
        Training patients used.
    name : str
        Name used in the Abstainer's guarantee text.
    """

    classes_: list
    means_: np.ndarray
    precision_: np.ndarray
    shrinkage: float
    n_train_: int
    name: str = "latent Mahalanobis distance (tied covariance, nearest class)"

    @classmethod
    def fit(cls, latent_loc, labels, shrinkage: float = 1e-3) -> LatentMahalanobis:
        """Estimate class means and the tied covariance.

        Parameters
        ----------
        latent_loc : array-like, shape (n_patients, latent_dim)
            Posterior means of ``z`` of training patients.
        labels : array-like, shape (n_patients,)
            Class of each patient (NaN / None = unlabelled, left out).
        shrinkage : float >= 0
            Relative ridge on the covariance (keeps it invertible for few patients per dimension).

        Returns
        -------
        LatentMahalanobis
        """
        x = np.asarray(latent_loc, dtype=np.float64)
        if x.ndim != 2:
            raise DataError(f"latent_loc has shape {x.shape}; expected (n_patients, latent_dim).")
        y = pd.Series(np.asarray(labels, dtype=object).ravel())
        if len(y) != len(x):
            raise DataError(f"labels has {len(y)} entries but latent_loc has {len(x)} rows; pass one label per row.")
        if not np.isfinite(x).all():
            raise DataError("latent_loc contains non-finite values.")
        if not shrinkage >= 0:
            raise ValueError(f"shrinkage={shrinkage!r} must be >= 0 (e.g. 1e-3).")
        keep = y.notna().to_numpy()
        x, y = x[keep], y[keep].to_numpy()
        classes = class_list(y)
        if len(classes) < 1 or len(x) <= len(classes):
            raise DataError(f"Need more labelled patients ({len(x)}) than classes ({len(classes)}) to estimate "
                            "a tied covariance.")
        codes = label_codes(y, classes)
        means = np.stack([x[codes == j].mean(axis=0) for j in range(len(classes))])
        resid = x - means[codes]
        cov = resid.T @ resid / (len(x) - len(classes))
        d = cov.shape[0]
        cov = cov + float(shrinkage) * (np.trace(cov) / d if np.trace(cov) > 0 else 1.0) * np.eye(d)
        try:
            prec = np.linalg.inv(cov)
        except np.linalg.LinAlgError as exc:  # pragma: no cover - only with shrinkage=0 and degenerate data
            raise DataError("The tied latent covariance is singular; use shrinkage > 0.") from exc
        return cls(classes_=list(classes), means_=means, precision_=(prec + prec.T) / 2,
                   shrinkage=float(shrinkage), n_train_=int(len(x)))

    @classmethod
    def from_posterior(cls, post, labels: pd.Series, shrinkage: float = 1e-3) -> LatentMahalanobis:
        """Fit on a Posterior of training patients (``post.latent_loc``) and labels indexed by patient id.

        Ids are compared as strings; patients without a label are left out.
        """
        if not isinstance(labels, pd.Series):
            raise DataError("labels must be a pandas Series indexed by patient id.")
        lab = pd.Series(labels.to_numpy(), index=labels.index.map(str))
        if lab.index.has_duplicates:
            raise DataError("labels has duplicated patient ids; keep one label per patient.")
        y = lab.reindex([str(s) for s in post.sample_ids]).to_numpy()
        return cls.fit(post.latent_loc, y, shrinkage=shrinkage)

    def score(self, latent_loc) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean.

        Parameters
        ----------
        latent_loc : array-like, shape (n_patients, latent_dim)

        Returns
        -------
        numpy.ndarray, shape (n_patients,)
            ``min_c (z - mu_c)^T Sigma^{-1} (z - mu_c)``; higher = more unusual.
        """
        x = np.asarray(latent_loc, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.means_.shape[1]:
            raise DataError(f"latent_loc has shape {x.shape}; expected (n_patients, {self.means_.shape[1]}) "
                            "(the latent dimension of the model this score was fitted on).")
        diff = x[:, None, :] - self.means_[None, :, :]
        return np.einsum("ncd,de,nce->nc", diff, self.precision_, diff).min(axis=1)

    def __call__(self, post, head: str | None = None) -> np.ndarray:
        """Score a Posterior (``post.latent_loc``), shape (n_patients,). ``head`` is ignored."""
        return self.score(post.latent_loc)


class PatientScores:
    """Precomputed per-patient OOD scores (e.g. :func:`bayesfuse.model.ood_scores.reconstruction_elbo`) as a gate.

    Calling it with a Posterior returns the scores of ``post.sample_ids`` (shape (n_patients,));
    a patient without a score raises :class:`~bayesfuse.exceptions.DataError`.

    Parameters
    ----------
    scores : pandas.Series
        Score per patient id (higher = more unusual).
    name : str
        Name used in the Abstainer's guarantee text.
    """

    def __init__(self, scores: pd.Series, name: str = "precomputed OOD score") -> None:
        if not isinstance(scores, pd.Series):
            raise DataError("scores must be a pandas Series indexed by patient id.")
        s = pd.Series(np.asarray(scores, dtype=np.float64), index=scores.index.map(str))
        if s.index.has_duplicates:
            raise DataError("scores has duplicated patient ids; keep one score per patient.")
        if not np.isfinite(s.to_numpy()).all():
            raise DataError("scores contain NaN or infinite values.")
        self.scores = s
        self.name = str(name)

    def __call__(self, post, head: str | None = None) -> np.ndarray:
        ids = pd.Index([str(i) for i in post.sample_ids])
        missing = ids.difference(self.scores.index)
        if len(missing):
            raise DataError(f"{len(missing)} patient(s) have no precomputed score (e.g. {missing[:5].tolist()}); "
                            "compute the score for every patient you predict.")
        return self.scores.reindex(ids).to_numpy()


class JointScore:
    """Several OOD scores joined into one: the maximum of their robust z-scores against reference patients.

    ``joint(x) = max_k (s_k(x) - median_k) / IQR_k``, with the median and inter-quartile range of
    each score ``s_k`` taken on reference patients (the training patients: never the calibration
    ones). Each component's ranking is kept, and a patient unusual under any one of them scores high.
    The Abstainer then sets the gate threshold at a conformal quantile of the *joint* score on
    calibration patients, so the joint gate keeps the same "at least ``ood_quantile`` of
    exchangeable patients pass" statement as a single score.

    Parameters
    ----------
    components : list of callables ``f(post, head) -> (n_patients,)``
        E.g. :class:`LatentMahalanobis` and :class:`PatientScores` of a reconstruction ELBO.
    reference : list of array-like, each shape (n_reference,)
        Scores of the reference patients, one array per component.
    name : str, optional
        Name used in the Abstainer's guarantee text.
    """

    def __init__(self, components, reference, name: str | None = None) -> None:
        components, reference = list(components), [np.asarray(r, dtype=np.float64).ravel() for r in reference]
        if not components or len(components) != len(reference):
            raise ValueError(f"Give one reference array per component ({len(components)} components, "
                             f"{len(reference)} reference arrays).")
        self.components = components
        self.median_ = np.array([np.median(r) for r in reference])
        iqr = np.array([np.subtract(*np.percentile(r, [75, 25])) for r in reference])
        if not (np.isfinite(iqr).all() and (iqr > 0).all()):
            raise DataError("A reference score has zero or non-finite inter-quartile range; it cannot be scaled.")
        self.iqr_ = iqr
        self.name = name or ("max robust z of [" + ", ".join(getattr(c, "name", type(c).__name__)
                                                              for c in components) + "]")

    def __call__(self, post, head: str | None = None) -> np.ndarray:
        z = [(np.asarray(c(post, head), dtype=np.float64) - m) / q
             for c, m, q in zip(self.components, self.median_, self.iqr_)]
        return np.max(np.stack(z), axis=0)
