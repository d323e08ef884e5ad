"""Decision threshold of the official DCASE baseline: a gamma distribution fitted to the anomaly
scores of the (normal) training clips, threshold at its 0.9 quantile; and whether a batch of new
clips raised more alarms than that rate gives by chance (:func:`excess_alarms_p`)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.stats

log = logging.getLogger(__name__)


def gamma_threshold(scores: np.ndarray, *, quantile: float = 0.9) -> float:
    """``scipy.stats.gamma.ppf(quantile, *gamma.fit(scores))``, as the official code.

    Falls back to the empirical quantile (with a log message) when the fit fails, e.g. for
    constant scores, or when the fitted gamma does not describe the scores: if the share of
    training scores above its threshold is off by more than half of ``1 - quantile`` (the official
    fit can land far off on scores that are negative or heavy-tailed, such as standardised ones:
    a threshold below nine tenths of the training clips was measured, which raises an alarm for
    every normal clip).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 < quantile < 1:
        raise ValueError("quantile must be in (0, 1)")
    if len(scores) >= 3 and np.ptp(scores) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                shape, loc, scale = scipy.stats.gamma.fit(scores)
                t = float(scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))
                if np.isfinite(t) and abs(np.mean(scores > t) - (1 - quantile)) <= (1 - quantile) / 2:
                    return t
            except (ValueError, RuntimeError, FloatingPointError):
                pass
    log.info("gamma fit failed or does not fit %d scores; using the empirical %.2f quantile", len(scores), quantile)
    return float(np.quantile(scores, quantile))


EXCESS_P = 0.01  # below this, more alarms than the thresholds' rate explains (the commands say so)


def excess_alarms_p(flagged: int, clips: int, rate: float) -> float:
    """The chance of ``flagged`` or more alarms among ``clips`` normal clips at the thresholds'
    false-alarm ``rate`` (exact binomial test, one-sided). Small (below 0.01, say) where a batch
    of new recordings believed normal alarms more than the rate explains: the machine, its sound
    or the recording may have changed since the training clips."""
    if not (0 <= flagged <= clips and 0 < rate < 1):
        raise ValueError(f"excess_alarms_p needs 0 <= flagged <= clips and a rate in (0, 1), got {flagged}, "
                         f"{clips}, {rate}")  # fmt: skip
    return float(scipy.stats.binomtest(flagged, clips, rate, alternative="greater").pvalue)
