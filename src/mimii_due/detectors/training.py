"""The training loop shared by the neural detectors: seeded, checkpointed every epoch, resumable.

Each epoch's shuffle and every random draw of a training step (crops, mixup) come from one
generator seeded with ``(seed, epoch)`` and handed to the step, and the checkpoint holds the model,
the optimizer and the loss history, so a run interrupted after epoch ``k`` and resumed reaches the
same weights as an uninterrupted one. Checkpoints load with ``weights_only=True``.

Networks train where their config's ``device`` says (``"auto"``: a CUDA GPU when torch sees one);
the batch indices and random draws stay on the CPU, so a GPU run draws the same batches, crops and
mixup weights as a CPU run (its float arithmetic differs). On a GPU, cuDNN is held to its
deterministic algorithms while a network trains (``repeatable``), so a seeded GPU run, too, repeats
itself and resumes to the same weights (without it, two runs of the embedding on an H100 differed
after one epoch). The trained model comes back to the CPU: scoring, saving and serving run there.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from mimii_due import atomic
from mimii_due.errors import ConfigError, ModelError
from mimii_due.progress import Progress

log = logging.getLogger(__name__)

# (batch of item indices, the epoch's random generator) -> mean loss
Step = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def torch_device(name: str) -> torch.device:
    """The torch device of a config's ``device``: ``"auto"`` is the first CUDA GPU when torch
    sees one, else the CPU; a GPU asked for by name must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        n = torch.cuda.device_count()
        raise ConfigError(f"device {name!r} was asked for, but torch sees {n} CUDA GPU(s) here; use auto or cpu")
    return dev


@contextmanager
def repeatable(device: torch.device):
    """On a CUDA device, cuDNN's deterministic algorithms only (its fastest convolution kernels
    add in a varying order), restored afterwards; nothing changes on the CPU."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def split_items(n: int, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into (train, validation) index arrays."""
    perm = np.random.default_rng([seed, 99]).permutation(n)
    n_val = int(round(n * fraction)) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: Step,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    epochs: int,
    batch_size: int,
    seed: int,
    checkpoint: str | Path | None = None,
    fingerprint: dict | None = None,
    progress: Progress | None = None,
    eval_batch_size: int | None = None,
) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs over ``train_idx`` in shuffled mini-batches.

    ``step(indices, generator)`` returns the mean loss of a batch (the model's mode is set here);
    its random draws must come from ``generator``. With
    ``checkpoint`` (a file path) the state is saved after every epoch and a later call resumes from
    it; ``fingerprint`` (settings that must not change between the two calls) is checked.
    Returns the history: one ``{"epoch", "loss", "val_loss", "seconds"}`` per epoch (``seconds``:
    the epoch's wall time, training and validation).
    """
    path = Path(checkpoint) if checkpoint else None
    fp = json.dumps(fingerprint or {}, sort_keys=True)
    history: list[dict] = []
    start = 0
    if path is not None and path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file
            raise ModelError(f"unreadable checkpoint ({type(e).__name__}); delete it to start again", path) from e
        if state.get("fingerprint") != fp:
            raise ModelError("checkpoint was made with other settings or data; delete it to start again", path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["epoch"]
        log.info("resuming from epoch %d of %d", start, epochs)
    train_t = torch.as_tensor(train_idx, dtype=torch.long)
    val_t = torch.as_tensor(val_idx, dtype=torch.long)
    n_batches = max(1, math.ceil(len(train_t) / batch_size))
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
        order = train_t[torch.randperm(len(train_t), generator=g)]
        model.train()
        total, count = 0.0, 0
        for b in range(n_batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if len(idx) == 0:
                continue
            loss = step(idx, g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = total + loss.detach().double() * len(idx)  # summed where the loss is: no wait on a GPU
            count += len(idx)
        rec = {"epoch": epoch + 1, "loss": float(total) / max(count, 1), "val_loss": None}
        if len(val_t):
            model.eval()
            vb = eval_batch_size or batch_size
            gv = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():
                vl = sum(float(step(val_t[i : i + vb], gv)) * len(val_t[i : i + vb]) for i in range(0, len(val_t), vb))
            rec["val_loss"] = vl / len(val_t)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(rec)
        if path is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "history": history, "fingerprint": fp}  # fmt: skip
            atomic.write_with(path, lambda tmp, state=state: torch.save(state, tmp))
        if progress:
            val = f" val {rec['val_loss']:.4f}" if rec["val_loss"] is not None else ""
            progress(epoch + 1, epochs, f"loss {rec['loss']:.4f}{val}")
    model.eval()
    return history


def fit_with_config(
    model: torch.nn.Module,
    step: Step,
    n_items: int,
    config,
    *,
    checkpoint: str | Path | None = None,
    progress: Progress | None = None,
    eval_batch_size: int | None = None,
    data_key: dict | None = None,
    ignore: tuple[str, ...] = ("epochs",),
    repeat: np.ndarray | None = None,
    seed: int | None = None,
) -> list[dict]:
    """:func:`fit_loop` with Adam and the settings of a detector config (``epochs``,
    ``batch_size``, ``lr``, ``validation_split``, ``seed``, ``device``) over items ``0 .. n_items - 1``.
    The model trains on ``config.device`` (``step`` must return its loss there) and is on the CPU
    when this returns.

    ``checkpoint`` is a folder (the state goes to ``checkpoint.pt`` in it); the resume fingerprint
    is the config without ``ignore`` and ``device`` (settings that may change on resume) plus ``data_key``.
    ``repeat`` (one count per item) repeats training items in every epoch (balanced sampling).
    ``seed`` draws the batches and the step's random draws instead of ``config.seed`` (one of
    several networks trained on the same items); the validation split is always ``config.seed``'s.
    """
    train_idx, val_idx = split_items(n_items, fraction=config.validation_split, seed=config.seed)
    if repeat is not None:
        train_idx = np.repeat(train_idx, np.asarray(repeat)[train_idx])
    device = torch_device(config.device)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    skip = set(ignore) | {"device"}
    fingerprint = {k: v for k, v in vars(config).items() if k not in skip} | {"n": n_items} | (data_key or {})
    if seed is not None:
        fingerprint["training_seed"] = seed
    with repeatable(device):
        history = fit_loop(
            model, opt, step, train_idx=train_idx, val_idx=val_idx, epochs=config.epochs,
            batch_size=config.batch_size, seed=config.seed if seed is None else seed,
            checkpoint=Path(checkpoint) / "checkpoint.pt" if checkpoint else None, fingerprint=fingerprint,
            progress=progress, eval_batch_size=eval_batch_size,
        )  # fmt: skip
    model.to("cpu")
    return history


def seeded(seed: int):
    """A context in which torch's global RNG (weight initialisation) is seeded, then restored."""
    ctx = torch.random.fork_rng(devices=[])

    class _Seeded:
        def __enter__(self):
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Seeded()


def restore(model: torch.nn.Module, weights: dict) -> torch.nn.Module:
    """``model`` with the saved ``weights`` loaded, in evaluation mode."""
    model.load_state_dict(weights)
    return model.eval()
