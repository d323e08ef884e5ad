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

    def summary(self, n: int = 3) -> str:
        parts = [f"{pool} at {hz(f)} {z:+.1f} sd" for pool, f, z in self.strongest(n)]
        return (f"against the {self.n_train} {self.domain} training clips, the bands most unlike them: "
                + ", ".join(parts) + " (+: louder than they are, -: quieter)")  # fmt: skip

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


@dataclass
class Reference:
    """A machine type and section's training clips, pooled: ``pooled`` ``(n, 2, n_mels)`` (each
    clip's mean and loudest frame per band) and their ``domains``."""

    pooled: np.ndarray
    domains: np.ndarray
    centres_hz: np.ndarray

    @classmethod
    def of(cls, train: list[np.ndarray], domains, *, cfg: FeatureConfig) -> Reference:
        """From the training clips' log-mel frames (each ``(frames, n_mels)``) and domains."""
        if not train:
            raise ValueError("no training clips to compare with")
        return cls(np.stack([_pooled(f) for f in train]), np.asarray(domains), band_centres(cfg))


def explain(clip: np.ndarray, ref: Reference) -> Explanation:
    """``clip``'s log-mel frames ``(frames, n_mels)`` against the training clips of ``ref``, in the
    domain (operating condition) it is closer to."""
    here = _pooled(clip)
    best = None
    for domain in ("source", "target"):
        mine = ref.pooled[ref.domains == domain]
        if len(mine) == 0:
            continue
        median = np.median(mine, axis=0)
        z = (here - median) / np.maximum(mine.std(axis=0), FLOOR_DB)
        if best is None or np.abs(z).mean() < np.abs(best.z).mean():
            best = Explanation(domain, len(mine), ref.centres_hz, here, median, z)
    return best


def hz(f: float) -> str:
    """A frequency as people read it: 350 Hz, 3.2 kHz."""
    return f"{f / 1000:.3g} kHz" if f >= 1000 else f"{f:.0f} Hz"


def reference(model: str | Path, det, machine: str, section: int, *, data: str | Path | None = None) -> Reference:
    """The training clips of a machine type and section of the run that ``model`` (a run folder
    or one of its model folders) belongs to: those of the run's data folder (``data`` where they
    have moved), their features from the run's cache where it holds them."""
    run = Run(Path(model) if Run(Path(model)).exists() else Path(model).parent.parent)
    meta = run.meta() if run.exists() else {}
    folder = Path(data or meta.get("data") or "")
    if not (data or meta.get("data")) or not folder.is_dir():
        raise ModelError(f"the training clips are not at {str(folder) or 'a known folder'}: give the data folder "
                         "they were trained from (--data)", model)  # fmt: skip
    table = index(folder, on_error="skip")
    train = table[(table["machine"] == machine) & (table["section"] == section)
                  & (table["split"] == "train")].reset_index(drop=True)  # fmt: skip
    feats, train = extract(train, cfg=det.features, cache=run.cache if run.exists() else None, on_error="skip")
    if not len(feats):
        raise ModelError(f"{folder} holds no readable training clips of {machine} section {section:02d}", model)
    return Reference.of([feats.clip(i) for i in range(len(feats))], train["domain"], cfg=det.features)


def frames_of(path: str | Path, det, window: tuple[float, float] | None = None) -> np.ndarray:
    """A WAV file's log-mel frames as the model ``det`` computes them; of the ``window`` (seconds)
    that a decision on a long recording was made on, where it has one."""
    sr = det.features.sample_rate
    y = audio.load(path, sr=sr, channel=det.features.channel)
    if window is not None:
        y = y[round(window[0] * sr) : round(window[1] * sr)]
    return features_of([y], cfg=det.features).clip(0)


def explain_file(model: str | Path, path: str | Path, *, machine: str | None = None, section: int | None = None,
                 data: str | Path | None = None) -> tuple[Decision, Explanation, np.ndarray]:  # fmt: skip
    """Score the WAV file ``path`` with a run's model (as ``score`` does) and compare it with the
    training clips of its machine type and section (:func:`reference`). Returns the decision, the
    explanation and the clip's log-mel frames (of a long recording: its most anomalous window's)."""
    if Path(path).is_dir():  # score_files would score every clip in it, then one is to be explained
        raise MimiiDueError("explain takes one WAV file, not a folder (`mimii-due score` scores a folder)", path)
    models = ModelSet(model)
    decisions, failed = score_files(models, [path], machine=machine, section=section)
    if failed:
        raise MimiiDueError(failed[0][1].removeprefix(f"{path}: "), path)
    d = max(decisions, key=lambda x: x.score)  # a long recording's most anomalous window
    det = models.models[d.machine]
    frames = frames_of(path, det, d.window)
    return d, explain(frames, reference(model, det, d.machine, d.section, data=data)), frames


class Explainer:
    """What an alarm command is told of why (``--explain`` on ``watch`` and ``serve``): each
    machine type and section's training clips pooled once, at its first alarm (in the alarm's
    thread, never delaying scoring), then each alarmed clip compared with them."""

    def __init__(self, model: str | Path, models: ModelSet, *, data: str | Path | None = None):
        self.model, self.models, self.data = model, models, data
        self._refs: dict[tuple[str, int], Reference] = {}

    def __call__(self, path: str | Path, d: Decision) -> Explanation:
        det = self.models.models[d.machine]
        key = (d.machine, d.section)
        if key not in self._refs:
            self._refs[key] = reference(self.model, det, d.machine, d.section, data=self.data)
        return explain(frames_of(path, det, d.window), self._refs[key])
