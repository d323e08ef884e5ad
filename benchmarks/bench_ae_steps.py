"""The paper's AE training step on a CUDA GPU: where does its time go?

Times 300 training steps (batch 512, 5-frame windows gathered by index as the AE detector does)
on the GPU with the gather indices made on the CPU (as the training loop hands them over) and with
indices already on the GPU, then 100 steps on the CPU with 16 torch threads as the reference, and
prints milliseconds per step and the GPU's speed-up over that reference. Needs a CUDA GPU.

    python benchmarks/bench_ae_steps.py
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from mimii_due.detectors.autoencoder import AutoEncoder


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench_ae_steps: torch sees no CUDA GPU here")
    dev = torch.device("cuda")
    data = torch.randn(313_000, 128, device=dev)  # about one full-size machine type of log-mel frames
    starts_cpu = torch.randint(0, 313_000 - 5, (300_000,))
    starts_gpu = starts_cpu.to(dev)
    offs_cpu, offs_gpu = torch.arange(5), torch.arange(5, device=dev)
    model = AutoEncoder().to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    mse = nn.MSELoss()

    def run(gpu_idx: bool, n: int = 300) -> float:
        order = torch.randperm(300_000)
        order_g = order.to(dev)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for b in range(n):
            if gpu_idx:
                idx = order_g[b * 512 : (b + 1) * 512]
                x = data[starts_gpu[idx, None] + offs_gpu].reshape(512, -1)
            else:
                idx = order[b * 512 : (b + 1) * 512]
                x = data[starts_cpu[idx, None] + offs_cpu].reshape(512, -1)
            loss = mse(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / n * 1e3

    run(True, 50)
    run(False, 50)  # warm-up
    gpu = []
    for _ in range(2):
        gpu += [run(False), run(True)]
        print(f"cpu index {gpu[-2]:.2f} ms/step, gpu index {gpu[-1]:.2f} ms/step", flush=True)
    torch.set_num_threads(16)
    m2 = AutoEncoder()
    o2 = torch.optim.Adam(m2.parameters(), 1e-3)
    dc = data.cpu()
    t = time.perf_counter()
    for _ in range(100):
        idx = torch.randint(0, 300_000, (512,))
        x = dc[starts_cpu[idx, None] + offs_cpu].reshape(512, -1)
        loss = mse(m2(x), x)
        o2.zero_grad()
        loss.backward()
        o2.step()
    cpu = (time.perf_counter() - t) / 100 * 1e3
    print(f"cpu (16 threads) {cpu:.2f} ms/step; the GPU step is {cpu / min(gpu):.1f}x faster")


if __name__ == "__main__":
    main()
