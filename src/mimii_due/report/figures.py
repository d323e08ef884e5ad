"""The figures: the paper's Figure 1 (spectrograms) and Figure 2 (t-SNE), per-run ROC curves,
score histograms and loss curves, and the score history of a watch or service. Every function
draws on its own matplotlib ``Figure`` (no pyplot, so importing this module leaves the program's
backend alone) and writes a PNG atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from mimii_due import atomic
from mimii_due.data import audio
from mimii_due.data.table1 import MACHINE_TITLES
from mimii_due.errors import AudioError, ConfigError, MimiiDueError

if TYPE_CHECKING:
    from mimii_due.report.explain import Explanation

log = logging.getLogger(__name__)

DOMAIN_COLOURS = {"source": "tab:blue", "target": "tab:orange"}
LABEL_MARKERS = {"normal": "o", "anomaly": "x"}


def _subplots(n: int, figsize: tuple[float, float], **kw):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, n, squeeze=False, **kw)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` atomically in the format its suffix names (matplotlib's: png, pdf, svg, ...)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ConfigError(f"a figure is written as .png, .pdf, .svg or another format matplotlib writes, not "
                          f"'{path.suffix or path.name}'", path)  # fmt: skip
    return atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))


def _title(machine: str) -> str:
    return MACHINE_TITLES.get(machine, machine)


def _first_readable(paths, on_error: str, channel: int = 0) -> np.ndarray | None:
    """The samples of the first of ``paths`` that loads; with ``on_error="skip"`` the ones before it
    are reported, and ``None`` if none loads."""
    for path in paths:
        try:
            return audio.load(path, channel=channel)
        except AudioError as e:
            if on_error != "skip":
                raise
            log.warning("skipping %s", e)
    return None


def spectrograms(table: pd.DataFrame, path: str | Path, *, n_fft: int = 1024, hop: int = 512,
                 on_error: str = "raise", channel: int = 0) -> Path:  # fmt: skip
    """Figure 1: the power spectrogram of one normal clip per machine type (of multichannel recordings,
    their ``channel``), shared colour scale. ``on_error="skip"``: a clip that cannot be read is
    reported and the machine type's next one drawn."""
    normal = table[(table["label"] == "normal") & (table["split"] == "train")]
    if normal.empty:
        normal = table[table["label"] == "normal"]
    specs = []
    for machine, clips in normal.sort_values(["machine", "section", "domain", "clip"]).groupby("machine"):
        y = _first_readable(clips["path"], on_error, channel)
        if y is None:
            continue  # no readable normal clip of this machine type: it is left out of the figure
        win = np.hanning(n_fft + 1)[:-1]
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, n_fft // 2), n_fft)[::hop] * win
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        specs.append((machine, 10 * np.log10(np.maximum(power.T, 1e-12)), len(y) / audio.SAMPLE_RATE))
    if not specs:
        raise MimiiDueError("no readable normal clip to draw a spectrogram of")
    vmax = max(s.max() for _, s, _ in specs)
    vmin = vmax - 90
    fig, axes = _subplots(len(specs), (3.2 * len(specs), 3.2), sharey=True)
    for ax, (machine, s, dur) in zip(axes[0], specs, strict=True):
        im = ax.imshow(
            s,
            origin="lower",
            aspect="auto",
            extent=[0, dur, 0, audio.SAMPLE_RATE / 2],
            vmin=vmin,
            vmax=vmax,
            cmap="magma",
        )
        ax.set_title(_title(machine))
        ax.set_xlabel("Time [s]")
    axes[0][0].set_ylabel("Frequency [Hz]")
    fig.colorbar(im, ax=axes[0].tolist(), label="Power [dB]", shrink=0.9)
    return _save(fig, path)


TSNE_MIN_CLIPS = 4


def tsne(table: pd.DataFrame, embeddings: np.ndarray, path: str | Path, *, seed: int = 0) -> Path:
    """Figure 2: t-SNE of test clips per machine type, coloured by domain, marked by label.

    ``embeddings`` has one row per row of ``table`` (e.g. the clip-mean log-mel, the MobileNetV2
    baseline's input averaged per clip, as the paper).
    """
    from sklearn.manifold import TSNE

    machines = sorted(table["machine"].unique())
    fig, axes = _subplots(len(machines), (3.6 * len(machines), 3.6))
    labels = table["label"].fillna("unknown").to_numpy()
    for ax, machine in zip(axes[0], machines, strict=True):
        m = (table["machine"] == machine).to_numpy()
        x = embeddings[m]
        ax.set_title(_title(machine))
        ax.set_xticks([])
        ax.set_yticks([])
        if len(x) < TSNE_MIN_CLIPS:  # t-SNE needs more points than its perplexity (at least 2)
            ax.text(0.5, 0.5, f"{len(x)} test clip(s):\ntoo few for t-SNE", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            continue
        x = (x - x.mean(0)) / (x.std(0) + 1e-9)
        xy = TSNE(
            n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), init="pca", random_state=seed
        ).fit_transform(x)
        dom, lab = table["domain"].to_numpy()[m], labels[m]
        for d in ("source", "target"):
            for lb, marker in LABEL_MARKERS.items():
                sel = (dom == d) & (lab == lb)
                if sel.any():
                    ax.scatter(
                        xy[sel, 0],
                        xy[sel, 1],
                        s=14,
                        marker=marker,
                        c=DOMAIN_COLOURS[d],
                        label=f"{d} {lb}",
                        alpha=0.8,
                        linewidths=1,
                    )
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="best")
    return _save(fig, path)


def roc_curves(scores: pd.DataFrame, path: str | Path) -> Path:
    """ROC curve per section and domain, one panel per machine type (labelled clips only)."""
    scores = scores[scores["label"].notna()]
    machines = sorted(scores["machine"].unique())
    fig, axes = _subplots(len(machines), (3.4 * len(machines), 3.4))
    for ax, machine in zip(axes[0], machines, strict=True):
        g = scores[scores["machine"] == machine]
        for (section, domain), h in g.groupby(["section", "domain"]):
            y = (h["label"] == "anomaly").to_numpy()
            if y.min() == y.max():
                continue
            fpr, tpr, _ = roc_curve(y, h["score"].to_numpy())
            ax.plot(fpr, tpr, ls="-" if domain == "source" else "--", label=f"{section:02d} {domain}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.axvspan(0, 0.1, color="grey", alpha=0.1)  # the pAUC range
        ax.set(title=_title(machine), xlabel="False positive rate", ylabel="True positive rate")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        else:  # new normal recordings only, say: nothing to draw a curve of
            ax.text(0.5, 0.5, "no curve: needs normal and\nanomalous test clips", ha="center", va="center", fontsize=8)
    return _save(fig, path)


def score_histograms(scores: pd.DataFrame, path: str | Path) -> Path:
    """Anomaly-score histograms (normal vs anomalous, source vs target) with the threshold drawn."""
    machines = sorted(scores["machine"].unique())
    fig, axes = _subplots(len(machines), (3.4 * len(machines), 3.0))
    for ax, machine in zip(axes[0], machines, strict=True):
        g = scores[scores["machine"] == machine]
        bins = np.histogram_bin_edges(g["score"], bins=30)
        for d in ("source", "target"):
            for lb in ("normal", "anomaly"):
                s = g[(g["domain"] == d) & (g["label"] == lb)]["score"]
                if len(s):
                    ax.hist(
                        s,
                        bins=bins,
                        histtype="step",
                        color=DOMAIN_COLOURS[d],
                        ls="-" if lb == "normal" else "--",
                        label=f"{d} {lb}",
                    )
        if "threshold" in g:
            ax.axvline(g["threshold"].iloc[0], color="red", lw=1, label="threshold")
        ax.set(title=_title(machine), xlabel="anomaly score", ylabel="clips")
        ax.legend(fontsize=6)
    return _save(fig, path)


def loss_curves(histories: dict[str, list[dict]], path: str | Path) -> Path | None:
    """Training and validation loss per epoch, one panel per machine type."""
    histories = {m: h for m, h in histories.items() if h}
    if not histories:
        return None
    fig, axes = _subplots(len(histories), (3.2 * len(histories), 2.8))
    for ax, (machine, h) in zip(axes[0], sorted(histories.items()), strict=True):
        ep = [r["epoch"] for r in h]
        ax.plot(ep, [r["loss"] for r in h], label="training")
        if any(r.get("val_loss") is not None for r in h):
            ax.plot(ep, [r["val_loss"] for r in h], label="validation")
        ax.set(title=_title(machine), xlabel="epoch", ylabel="loss")
        ax.legend(fontsize=7)
    return _save(fig, path)


def score_history(decisions: pd.DataFrame, path: str | Path, *, window: int = 20,
                  expected: dict[str, float] | None = None) -> Path:  # fmt: skip
    """The scores a watch or service recorded over time (the decision record's rows: ``time``,
    ``machine``, ``section``, ``score``, ``threshold``, ``decision``), one panel per machine type
    and section: each clip's score, anomalous ones marked, the threshold it was decided with, and
    on the right axis the share of anomalous clips among the last ``window``, against the rate
    the threshold expects of normal clips (``expected``, per machine type, where known)."""
    if not len(decisions):
        raise ConfigError("no decisions to draw")
    if not (isinstance(window, int) and window >= 1):
        raise ConfigError(f"the moving window must be at least 1 clip, not {window!r}")
    groups = list(decisions.sort_values("time", kind="stable").groupby(["machine", "section"], sort=True))
    fig = Figure(figsize=(9.0, 2.8 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, ((machine, section), g) in zip(axes, groups, strict=True):
        when = pd.to_datetime(g["time"], unit="s").to_numpy()  # UTC
        flagged = g["decision"].astype(bool).to_numpy()
        ax.plot(when[~flagged], g["score"][~flagged], "o", ms=3, color="tab:blue", label="normal")
        ax.plot(when[flagged], g["score"][flagged], "x", ms=5, color="tab:red", label="anomalous")
        ax.step(when, g["threshold"], where="post", color="tab:red", lw=0.8, label="threshold")
        ax.set(title=f"{_title(machine)} section {int(section):02d}: {len(g)} clips, {int(flagged.sum())} anomalous",
               ylabel="anomaly score", xlabel="time (UTC)")  # fmt: skip
        ticks = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(ticks)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ticks))
        rate = ax.twinx()
        share = pd.Series(flagged.astype(float)).rolling(window, min_periods=1).mean().to_numpy()
        rate.plot(when, share, color="grey", lw=1, label=f"anomalous share, last {window}")
        if expected and machine in expected:
            rate.axhline(expected[machine], color="grey", ls=":", lw=1, label="expected of normal clips")
        rate.set(ylim=(0, 1.02), ylabel="share")
        handles = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=6, loc="upper left")
    return _save(fig, path)


def explanation(e: Explanation, frames: np.ndarray, path: str | Path, *, title: str, machine: str) -> Path:
    """The clip's log-mel spectrogram, its level per band against the training clips', and the
    z-scores, the strongest bands marked (:mod:`mimii_due.report.explain`)."""
    from mimii_due.report.explain import POOLS, hz

    fig = Figure(figsize=(9.0, 8.0), layout="constrained")
    spec, levels, zs = fig.subplots(3, 1)
    img = spec.imshow(frames.T, origin="lower", aspect="auto", cmap="magma")
    fig.colorbar(img, ax=spec, label="dB")
    ticks = np.linspace(0, len(e.centres_hz) - 1, 6).astype(int)
    spec.set(title=f"{_title(machine)}: {title}", xlabel="frame", ylabel="mel band centre",
             yticks=ticks, yticklabels=[hz(e.centres_hz[t]) for t in ticks])  # fmt: skip
    for i, (pool, colour) in enumerate(zip(POOLS, ("tab:blue", "tab:red"), strict=True)):
        levels.plot(e.centres_hz, e.reference[i], color=colour, lw=0.8, ls="--", label=f"training clips, {pool}")
        levels.plot(e.centres_hz, e.clip[i], color=colour, lw=1.2, label=f"this clip, {pool}")
        zs.plot(e.centres_hz, e.z[i], color=colour, lw=1.2, label=pool)
    levels.set(xscale="log", xlabel="frequency (Hz)", ylabel="level (dB)",
               title=f"against the median of the {e.n_train} {e.domain} training clips")  # fmt: skip
    levels.legend(fontsize=7)
    zs.axhspan(-3, 3, color="grey", alpha=0.15)
    for pool, f, z in e.strongest():
        zs.annotate(f"{hz(f)} ({pool})", (f, z), fontsize=7, textcoords="offset points", xytext=(4, 4))
    zs.set(xscale="log", xlabel="frequency (Hz)", ylabel="z (training spread)",
           title="how unlike the training clips, band by band (grey: within 3 sd)")  # fmt: skip
    zs.legend(fontsize=7)
    return _save(fig, path)
