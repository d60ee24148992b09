"""The fast VGG features equal the encoder's, forward and backward, on every backend."""

from __future__ import annotations

import pytest
import torch

from atelier.art.engines.gatys.kernels import Features, nnpack_available
from atelier.art.blocks.vgg import VGGEncoder


BACKENDS = ["onednn", "plain", *(["nnpack"] if nnpack_available() else [])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fast_features_equal_the_encoder_s(backend: str) -> None:
    encoder = VGGEncoder.random(up_to="relu5_1")
    x = torch.rand(1, 3, 45, 67, generator=torch.Generator().manual_seed(1))
    layers = ["relu1_1", "conv2_2", "relu3_1", "relu4_2", "relu5_1"]
    expected = encoder(x, layers=layers)
    got = Features(encoder, up_to="relu5_1", backend=backend)(x, layers)  # type: ignore[arg-type]
    for name in layers:
        scale = expected[name].abs().max()
        assert torch.allclose(got[name], expected[name], atol=1e-5 * float(scale)), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fast_features_have_the_encoder_s_gradient(backend: str) -> None:
    # The pads and pools recompute what they need in the backward pass, NNPACK's backward is a
    # full correlation with the flipped kernel: the same gradient as autograd's.
    encoder = VGGEncoder.random(up_to="relu4_2")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 37, 50, generator=g)
    layers = ["relu1_2", "relu2_1", "conv3_1", "relu4_2"]
    weights = {name: torch.rand(f.shape, generator=g) for name, f in encoder(x, layers=layers).items()}

    def gradient(run) -> torch.Tensor:  # type: ignore[no-untyped-def]
        image = x.clone().requires_grad_(True)
        features = run(image)
        sum((features[n] * weights[n]).sum() for n in layers).backward()
        return image.grad

    expected = gradient(lambda image: encoder(image, layers=layers))
    fast = Features(encoder, up_to="relu4_2", backend=backend)  # type: ignore[arg-type]
    got = gradient(lambda image: fast(image, layers))
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.skipif(not nnpack_available(), reason="this PyTorch has no NNPACK")
@pytest.mark.parametrize(("threads", "nnpack_runs"), [(2, False), (1, True)])
def test_auto_uses_nnpack_only_on_one_thread(
    monkeypatch: pytest.MonkeyPatch, threads: int, nnpack_runs: bool
) -> None:
    # Measured per iteration (issue #9): NNPACK wins on one thread, oneDNN on two at every
    # size tried, so ``auto`` decides by the thread count at each call.
    calls: list[int] = []
    real = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: calls.append(1) or real(*a))
    encoder = VGGEncoder.random(up_to="relu3_1")
    x = torch.rand(1, 3, 80, 72, generator=torch.Generator().manual_seed(4))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = Features(encoder, up_to="relu3_1", backend="auto")(x, ["relu1_1", "relu3_1"])
    finally:
        torch.set_num_threads(before)
    assert bool(calls) == nnpack_runs
    expected = encoder(x, layers=["relu1_1", "relu3_1"])
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5 * float(value.abs().max())), name
