"""Benchmark of the Gatys engine against the textbook loop, measured alternately in one process.

The textbook loop is what neural-style-pt (the PyTorch port of jcjohnson/neural-style, which
picmatix ran) does, written here on the same network and the same layers: an ``nn.Sequential``
of the VGG modules with loss modules spliced in after the content and style layers, Gram
matrices by ``torch.mm`` under autograd, MSE losses, in-place ReLUs, contiguous (NCHW) tensors,
and ``torch.optim.LBFGS`` (history 100, one evaluation per iteration) driving a closure. It is
the baseline the issue measured at 0.40 s per iteration at 256^2 and 1.7 s at 512^2.

The machine may be shared and noisy, so the two are run in alternating blocks of iterations,
several rounds, and the ratio is taken between medians of per-iteration times measured side by
side. Speed does not depend on the weights, so the full VGG-19 architecture is used with random
weights in the official layout (``VGGEncoder.random``).

Peak memory of a 960 px pass is measured in a fresh child process per engine (the parent's
allocator keeps what earlier runs freed, which would hide or inflate the figure).
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.art.engines.gatys import RECIPES, Pass, Recipe, paint, pass_shape, resolve_backend
from atelier.art.blocks.vgg import LAYOUT, VGGEncoder, layer_channels, layer_index
from atelier.bench.engines import synthetic_image
from atelier.bench.timing import Row, peak_rss_mb, reset_peak_rss

log = logging.getLogger(__name__)

#: The layers of the issue's reference measurement: Gatys et al. 2016 / neural-style defaults.
LAYER_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "classic": (RECIPES["classic"].passes[0].content_layers, RECIPES["classic"].passes[0].style_layers),
    "shallow": (RECIPES["shallow"].passes[0].content_layers, RECIPES["shallow"].passes[0].style_layers),
}


# ----------------------------------------------------------------------------- the textbook loop


class _ContentLoss(nn.Module):
    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight, self.target, self.loss = weight, None, torch.zeros(())
        self.mode = "off"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "capture":
            self.target = x.detach().clone()
        elif self.mode == "loss":
            self.loss = F.mse_loss(x, self.target) * self.weight
        return x


class _StyleLoss(nn.Module):
    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight, self.target, self.loss = weight, None, torch.zeros(())
        self.mode = "off"

    @staticmethod
    def gram(x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        flat = x.view(c, h * w)
        return torch.mm(flat, flat.t()).div(h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "capture":
            self.target = self.gram(x).detach()
        elif self.mode == "loss":
            self.loss = F.mse_loss(self.gram(x), self.target) * self.weight
        return x


def textbook_net(encoder: VGGEncoder, spec: Pass) -> tuple[nn.Sequential, list[_ContentLoss], list[_StyleLoss]]:
    """The encoder's modules up to the deepest layer, loss modules spliced in (neural-style-pt)."""
    modules: list[nn.Module] = []
    contents: list[_ContentLoss] = []
    styles: list[_StyleLoss] = []
    for layer in LAYOUT[: layer_index(spec.deepest_layer) + 1]:
        module = encoder.get_submodule(str(layer.index))
        modules.append(nn.ReLU(inplace=True) if layer.kind == "relu" else module)
        if layer.name in spec.content_layers:
            contents.append(_ContentLoss(spec.content_weight / len(spec.content_layers)))
            modules.append(contents[-1])
        if layer.name in spec.style_layers:
            styles.append(_StyleLoss(spec.style_weight / layer_channels(layer.name) ** 2))
            modules.append(styles[-1])
    return nn.Sequential(*modules), contents, styles


def textbook_pass(
    encoder: VGGEncoder,
    content: torch.Tensor,
    style: torch.Tensor,
    spec: Pass,
    *,
    on_iteration: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """One pass the textbook way; ``on_iteration(loss)`` after each evaluation."""
    net, contents, styles = textbook_net(encoder, spec)
    with torch.no_grad():
        for module in contents:
            module.mode = "capture"
        net(content)
        for module in contents:
            module.mode = "off"
        for module in styles:
            module.mode = "capture"
        net(style)
    for module in (*contents, *styles):
        module.mode = "loss"
    image = content.clone().requires_grad_(True)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        net(image)
        loss = sum((m.loss for m in (*contents, *styles)), start=torch.zeros(()))
        loss.backward()
        if on_iteration is not None:
            on_iteration(loss.item())
        return loss

    if spec.optimizer == "lbfgs":
        optimizer = torch.optim.LBFGS(
            [image], lr=spec.lr, max_iter=spec.iterations, max_eval=spec.iterations,
            tolerance_grad=-1, tolerance_change=-1, history_size=spec.history_size,
        )
        optimizer.step(closure)
    else:
        optimizer = torch.optim.Adam([image], lr=spec.lr)
        for _ in range(spec.iterations):
            optimizer.step(closure)
    return image.detach()


# ----------------------------------------------------------------------------- measuring


@dataclass
class _Timer:
    """Per-iteration wall and CPU times from the callbacks (the first, with the setup, is
    dropped). CPU time (all threads of this process) hardly moves when other programs take
    turns on the cores, so its ratio is the steadier one on a shared machine."""

    stamps: list[tuple[float, float]]

    def __call__(self, *_: object) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))

    @property
    def iterations(self) -> list[tuple[float, float]]:
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.stamps, self.stamps[1:])]


def _pass(size: int, iterations: int, optimizer: str, layers: str) -> Pass:
    content_layers, style_layers = LAYER_SETS[layers]
    return Pass(
        size=size, iterations=iterations, content_layers=content_layers, style_layers=style_layers,
        optimizer=optimizer,  # type: ignore[arg-type]
    )


def _run_block(
    engine: str, encoder: VGGEncoder, content: torch.Tensor, style: torch.Tensor, spec: Pass
) -> list[tuple[float, float]]:
    """``textbook``, or ``atelier:<backend>`` (auto, nnpack, onednn, plain)."""
    timer = _Timer([])
    if engine.startswith("atelier"):
        backend = engine.partition(":")[2] or "auto"
        paint(encoder, content, [style], recipe=Recipe("bench", (spec,)), backend=backend, progress=timer)  # type: ignore[arg-type]
    else:
        textbook_pass(encoder, content, style, spec, on_iteration=timer)
    return timer.iterations


def conv_gflops(device: torch.device, *, seconds: float = 1.0) -> float:
    """The conv throughput of this machine now (GFLOP/s, a 3x3 256->256 conv, channels-last)."""
    x = torch.rand(1, 256, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.rand(256, 256, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * 256 * 256 * 9 * 62 * 62
    with torch.inference_mode():
        F.conv2d(x, w)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 3:
            F.conv2d(x, w)
            runs += 1
        elapsed = time.perf_counter() - start
    return flops * runs / elapsed / 1e9


def pass_gflop(size: int, deepest: str) -> float:
    """GFLOP of one iteration's convolutions: forward plus the backward pass to the input."""
    h = w = size
    total = 0
    for layer in LAYOUT[1 : layer_index(deepest) + 1]:
        if layer.kind == "conv":
            total += 2 * layer.in_channels * layer.out_channels * 9 * h * w
        elif layer.kind == "pool":
            h, w = -(-h // 2), -(-w // 2)
    return 2 * total / 1e9


def bench_gatys(
    *,
    sizes: Sequence[int] = (256, 512),
    optimizers: Sequence[str] = ("lbfgs", "adam"),
    layers: str = "classic",
    iterations: int = 4,
    rounds: int = 5,
    memory_size: int = 960,
    memory_iterations: int = 3,
    backends: Sequence[str] = ("auto", "onednn"),
    device: torch.device | str = "cpu",
) -> Iterator[Row]:
    """Seconds per iteration of Atelier's Gatys engine and of the textbook loop, side by side.

    For each size and optimizer: ``rounds`` rounds of one textbook block and one Atelier block
    per backend (``auto`` is what the product uses: NNPACK when PyTorch runs on one thread and
    the CPU has it, oneDNN otherwise; ``onednn`` is the same engine on the convolutions the
    textbook loop uses; backends that resolve to the same one run once) of ``iterations``
    iterations each, alternating; each
    figure is the median per-iteration time over every round, and the ratio is textbook /
    Atelier. Then the compute floor (conv FLOPs over this machine's measured direct-conv
    throughput) and the peak memory of a ``memory_size`` px pass of each (fresh processes; 0
    skips it).
    """
    device = torch.device(device)
    deepest = max(LAYER_SETS[layers][0] + LAYER_SETS[layers][1], key=layer_index)
    encoder = VGGEncoder.random(up_to=deepest).to(device)
    note = f"{layers} layers to {deepest}, VGG-19 architecture with random weights"
    resolved: dict[str, str] = {}  # the backend each name resolves to -> the name timed for it
    for backend in backends:
        resolved.setdefault(resolve_backend(backend, device), backend)
    engines = ["textbook", *(f"atelier:{b}" for b in resolved.values())]
    names = {f"atelier:{b}": f"atelier {concrete}" for concrete, b in resolved.items()}
    for size in sizes:
        gflops = conv_gflops(device)
        content = synthetic_image(size, size, seed=1).to(device)
        style = synthetic_image(size, size, seed=2).to(device)
        for optimizer in optimizers:
            spec = _pass(size, iterations, optimizer, layers)
            times: dict[str, list[tuple[float, float]]] = {engine: [] for engine in engines}
            for round_ in range(rounds):
                for engine in engines:
                    times[engine] += _run_block(engine, encoder, content, style, spec)
                log.info("gatys bench %d px %s: round %d of %d", size, optimizer, round_ + 1, rounds)
            wall = {e: statistics.median(t[0] for t in times[e]) for e in engines}
            cpu = {e: statistics.median(t[1] for t in times[e]) for e in engines}
            params = {"size": size, "optimizer": optimizer, "iterations": len(times["textbook"])}
            yield Row("gatys", f"textbook loop ({optimizer})", wall["textbook"], unit="iteration", params=params,
                      note=f"neural-style-pt's way; CPU {cpu['textbook']:.3f} s/iteration; {note}")
            for engine in engines[1:]:
                yield Row(
                    "gatys", f"{names[engine]} ({optimizer})", wall[engine], unit="iteration", params=params,
                    ratios={"faster (wall)": wall["textbook"] / wall[engine], "faster (CPU)": cpu["textbook"] / cpu[engine]},
                    note=f"CPU {cpu[engine]:.3f} s/iteration; {note}",
                )
        floor = pass_gflop(size, deepest) / gflops
        yield Row("gatys", "compute floor", floor, unit="iteration", params={"size": size},
                  note=f"{pass_gflop(size, deepest):.0f} GFLOP of convs per iteration at {gflops:.0f} GFLOP/s measured now")
    if memory_size:
        for engine in ("textbook", "atelier:auto"):
            seconds, peak, base = _memory_in_child(engine, memory_size, memory_iterations, layers, str(device))
            h, w = pass_shape(3, 4, memory_size)
            label = "textbook" if engine == "textbook" else f"atelier {resolve_backend('auto', device)}"
            yield Row("gatys", f"{label} {memory_size} px pass (lbfgs)", seconds, unit="iteration",
                      peak_mb=peak, params={"size": f"{w}x{h}", "iterations": memory_iterations},
                      note=f"peak RSS of a fresh process; {base:.0f} MiB before the pass (torch, weights)")


def _memory_in_child(engine: str, size: int, iterations: int, layers: str, device: str) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_memory_run, (engine, size, iterations, layers, device))


def _memory_run(engine: str, size: int, iterations: int, layers: str, device: str) -> tuple[float, float, float]:
    from atelier.runtime import set_threads, tune_allocator

    tune_allocator()  # as the CLI does: the same setting for both engines
    set_threads(torch.get_num_threads())
    deepest = max(LAYER_SETS[layers][0] + LAYER_SETS[layers][1], key=layer_index)
    encoder = VGGEncoder.random(up_to=deepest).to(device)
    h, w = pass_shape(3, 4, size)  # a 4:3 photo, the shape of most
    content = synthetic_image(h, w, seed=1).to(device)
    style = synthetic_image(h, w, seed=2).to(device)
    spec = _pass(size, iterations, "lbfgs", layers)
    reset_peak_rss()
    base = peak_rss_mb()
    times = _run_block(engine, encoder, content, style, spec)
    return statistics.median(t[0] for t in times) if times else float("nan"), peak_rss_mb(), base
