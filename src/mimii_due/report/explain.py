"""Why was a clip flagged? Its sound against its machine's training clips, band by band
(``mimii-due explain``).

An alarm sends someone to the machine; what they should listen for is where in the spectrum the
clip differs from the normal sound the model learned. For each of the 128 mel bands this compares
the clip with the training clips of its machine type and section, in two poolings over time, as
TWFR-GMM pools them: the **mean** level (a steady change: a new tone, a louder hum, a bearing's
broadband noise) and the **loudest frame** (a brief event: a knock, a click, a valve slamming). Each
is a z-score against the training clips' spread in that band (the spread floored at 1 dB, so a band
that never moved in a few clips does not swamp the rest). Where the section has clips of a new
operating condition (the target domain), the clip is compared with the condition it is closer to.

Detector-independent on purpose: it says where the sound differs, not how a detector weighs it
(an embedding's reasons are not bands), and so it serves every detector's alarms alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimii_due.config import FeatureConfig
from mimii_due.data import audio
from mimii_due.data.index import index
from mimii_due.errors import MimiiDueError, ModelError
from mimii_due.features.extract import extract, features_of
from mimii_due.runs import Run
from mimii_due.scoring import Decision, ModelSet, score_files

FLOOR_DB = 1.0  # the least spread a band's training clips are taken to have
POOLS = ("mean", "loudest frame")


@dataclass
class Explanation:
    domain: str  # the condition the clip was compared with
    n_train: int
    centres_hz: np.ndarray  # each mel band's centre frequency
    clip: np.ndarray  # (2, n_mels): the clip's mean and loudest-frame level per band, dB
    reference: np.ndarray  # (2, n_mels): the training clips' median
    z: np.ndarray  # (2, n_mels): the clip against the training clips' spread

    def strongest(self, n: int = 3) -> list[tuple[str, float, float]]:
        """The ``n`` (pooling, band centre in Hz, z) most unlike the training clips."""
        flat = np.argsort(-np.abs(self.z), axis=None)[:n]
        return [(POOLS[i // self.z.shape[1]], float(self.centres_hz[i % self.z.shape[1]]), float(self.z.flat[i]))
                for i in flat]  # fmt: skip


def _pooled(frames: np.ndarray) -> np.ndarray:
    return np.stack([frames.mean(axis=0), frames.max(axis=0)])


def band_centres(cfg: FeatureConfig) -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(cfg.n_mels + 2, fmin=0.0, fmax=cfg.sample_rate / 2)[1:-1]


def explain(clip: np.ndarray, train: list[np.ndarray], domains: np.ndarray, *, cfg: FeatureConfig) -> Explanation:
    """``clip``: its log-mel frames ``(frames, n_mels)``; ``train``: the training clips' frames,
    of the same machine type and section, with their ``domains``."""
    pooled = np.stack([_pooled(f) for f in train])  # (n, 2, n_mels)
    here = _pooled(clip)
    best = None
    for domain in ("source", "target"):
        mine = pooled[np.asarray(domains) == domain]
        if len(mine) == 0:
            continue
        ref = np.median(mine, axis=0)
        spread = np.maximum(mine.std(axis=0), FLOOR_DB)
        z = (here - ref) / spread
        if best is None or np.abs(z).mean() < np.abs(best.z).mean():
            best = Explanation(domain, len(mine), band_centres(cfg), here, ref, z)
    if best is None:
        raise ValueError("no training clips to compare with")
    return best


def hz(f: float) -> str:
    """A frequency as people read it: 350 Hz, 3.2 kHz."""
    return f"{f / 1000:.3g} kHz" if f >= 1000 else f"{f:.0f} Hz"


def summary(e: Explanation, n: int = 3) -> str:
    parts = [f"{pool} at {hz(f)} {z:+.1f} sd" for pool, f, z in e.strongest(n)]
    return (f"against the {e.n_train} {e.domain} training clips, the bands most unlike them: " + ", ".join(parts)
            + " (+: louder than they are, -: quieter)")  # fmt: skip


def explain_file(model: str | Path, path: str | Path, *, machine: str | None = None, section: int | None = None,
                 data: str | Path | None = None) -> tuple[Decision, Explanation, np.ndarray]:  # fmt: skip
    """Score the WAV file ``path`` with a run's model (as ``score`` does) and compare it with the
    training clips of its machine type and section: those of the run's data folder (``data``
    where they have moved), their features from the run's cache where it holds them. Returns the
    decision, the explanation and the clip's log-mel frames."""
    models = ModelSet(model)
    decisions, failed = score_files(models, [path], machine=machine, section=section)
    if failed:
        raise MimiiDueError(failed[0][1].removeprefix(f"{path}: "), path)
    decision = decisions[0]
    det = models.models[decision.machine]
    run = Run(Path(model) if Run(Path(model)).exists() else Path(model).parent.parent)
    meta = run.meta() if run.exists() else {}
    folder = Path(data or meta.get("data") or "")
    if not (data or meta.get("data")) or not folder.is_dir():
        raise ModelError(f"the training clips are not at {str(folder) or 'a known folder'}: give the data folder "
                         "they were trained from (--data)", model)  # fmt: skip
    table = index(folder, on_error="skip")
    train = table[(table["machine"] == decision.machine) & (table["section"] == decision.section)
                  & (table["split"] == "train")].reset_index(drop=True)  # fmt: skip
    feats, train = extract(train, cfg=det.features, cache=run.cache if run.exists() else None, on_error="skip")
    if not len(feats):
        raise ModelError(f"{folder} holds no readable training clips of {decision.machine} section "
                         f"{decision.section:02d}", model)  # fmt: skip
    frames = features_of([audio.load(path, sr=det.features.sample_rate)], cfg=det.features).clip(0)
    clips = [feats.clip(i) for i in range(len(feats))]
    return decision, explain(frames, clips, train["domain"].to_numpy(), cfg=det.features), frames
