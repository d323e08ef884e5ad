"""Log-mel spectrograms as the official baseline computes them, batched in torch.

The official DCASE baseline computes, per file, ``librosa.feature.melspectrogram(y, sr, n_fft=1024,
hop_length=512, n_mels=128, power=2.0)`` followed by ``10 * log10(mel + eps)``. :class:`LogMel`
does the same for a batch of clips at once: a periodic Hann window, centred frames with zero
padding (librosa's defaults), librosa's Slaney mel filterbank as a registered buffer, and
``10 * log10(max(mel, eps))``. A parity test checks it against librosa within 1e-3 dB.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mimii_due.config import FeatureConfig


def n_frames(n_samples: int, *, hop_length: int) -> int:
    """Frames of a centred STFT of ``n_samples`` samples (librosa's ``center=True``)."""
    return 1 + n_samples // hop_length


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """librosa's mel filterbank (Slaney scale and norm), shape ``(n_mels, n_fft // 2 + 1)``."""
    import librosa

    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels).astype(np.float32)


class LogMel(nn.Module):
    """Batched log-mel: ``(batch, n_samples)`` float waveforms -> ``(batch, n_frames, n_mels)`` dB."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True))
        self.register_buffer("mel_fb", torch.from_numpy(mel_filterbank(cfg)).T.contiguous())  # (freq, mel)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        spec = torch.stft(
            wave,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        # torch.stft returns a (batch, freq, frames) view of (batch, frames, freq) memory: working in
        # the memory's own layout avoids strided passes over the largest array.
        ri = torch.view_as_real(spec.transpose(1, 2))  # (batch, frames, freq, 2), contiguous
        power = ri[..., 0].square() + ri[..., 1].square()
        if c.power != 2.0:
            power = power.pow_(c.power / 2)
        mel = torch.matmul(power, self.mel_fb)  # (batch, frames, mel)
        return torch.log10_(mel.clamp_min_(c.eps)).mul_(10.0)


def logmel(y: np.ndarray, *, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Log-mel of one clip or a batch: ``(n,)`` -> ``(frames, mels)``, ``(b, n)`` -> ``(b, frames, mels)``."""
    x = torch.as_tensor(np.asarray(y, dtype=np.float32))
    squeeze = x.ndim == 1
    out = LogMel(cfg)(x[None] if squeeze else x).numpy()
    return out[0] if squeeze else out


def stack_frames(spec: np.ndarray | torch.Tensor, *, frames: int) -> np.ndarray | torch.Tensor:
    """Consecutive-frame vectors of the AE baseline: ``(T, M)`` -> ``(T - frames + 1, frames * M)``.

    Row ``t`` is frames ``t .. t + frames - 1`` concatenated, as the official ``vectors[:,
    M*k:M*(k+1)] = log_mel[:, k:k+n_vectors].T``. For a torch tensor the result is a view built with
    ``unfold`` (no copy until it is reshaped in a batch).
    """
    if isinstance(spec, torch.Tensor):
        v = spec.unfold(-2, frames, 1)  # (..., T-f+1, M, f)
        return v.transpose(-1, -2).reshape(*v.shape[:-2], frames * spec.shape[-1])
    t = spec.shape[0] - frames + 1
    return np.concatenate([spec[k : k + t] for k in range(frames)], axis=1)
