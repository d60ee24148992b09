"""Colour helpers: CORAL as AdaIN's reference defines it, luminance-only transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.art.blocks.color import coral, luminance, match_luminance, preserve_colors
from atelier.art.blocks.images import to_tensor

Pair = tuple[torch.Tensor, torch.Tensor]  # a photo and a painting, (3, 72, 96) each


def reference_coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """naoto0804/pytorch-AdaIN function.py ``coral`` for (3, H, W), written from its definition."""

    def flat_mean_std(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = feat.reshape(3, -1)
        return flat, flat.mean(dim=-1, keepdim=True), flat.std(dim=-1, keepdim=True)

    def mat_sqrt(x: torch.Tensor) -> torch.Tensor:
        u, d, v = torch.svd(x)
        return u @ torch.diag(d.pow(0.5)) @ v.t()

    s, s_mean, s_std = flat_mean_std(source)
    s_norm = (s - s_mean) / s_std
    s_cov_eye = s_norm @ s_norm.t() + torch.eye(3, dtype=source.dtype)
    t, t_mean, t_std = flat_mean_std(target)
    t_norm = (t - t_mean) / t_std
    t_cov_eye = t_norm @ t_norm.t() + torch.eye(3, dtype=source.dtype)
    transfer = mat_sqrt(t_cov_eye) @ (torch.inverse(mat_sqrt(s_cov_eye)) @ s_norm)
    return (transfer * t_std + t_mean).reshape(source.shape)


def colour_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = image.reshape(3, -1).double()
    return flat.mean(dim=1), torch.cov(flat)


@pytest.fixture(scope="module")
def photo_and_painting(content_dir: Path, style_dir: Path) -> Pair:
    def load(path: Path, size: tuple[int, int]) -> torch.Tensor:
        return to_tensor(Image.open(path).convert("RGB").resize(size, Image.BILINEAR))[0]

    return load(content_dir / "dog.jpg", (96, 72)), load(style_dir / "starry_night.jpg", (96, 72))


def test_coral_matches_the_reference_on_equal_sizes(photo_and_painting: Pair) -> None:
    photo, painting = photo_and_painting
    ours = coral(painting, photo)
    theirs = reference_coral(painting.double(), photo.double()).float()
    assert ours.shape == painting.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_coral_gives_the_source_the_targets_colour_mean_and_covariance(
    photo_and_painting: Pair,
) -> None:
    photo, painting = photo_and_painting
    small_photo = photo[:, :40, :50]  # a different pixel count from the painting
    recoloured = coral(painting, small_photo)
    mean, cov = colour_stats(recoloured)
    target_mean, target_cov = colour_stats(small_photo)
    torch.testing.assert_close(mean, target_mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(cov, target_cov, rtol=1e-2, atol=2e-4)
    # The reference's regulariser scales the result by sqrt(P_target / P_source) when the sizes
    # differ; ours does not (here the painting has 3.5x the pixels, so its covariance is off).
    _, ref_cov = colour_stats(reference_coral(painting.double(), small_photo.double()))
    assert not torch.allclose(ref_cov, target_cov, rtol=0.1)


def test_coral_keeps_batches_and_broadcasts_a_single_source(
    photo_and_painting: Pair,
) -> None:
    photo, painting = photo_and_painting
    targets = torch.stack([photo, photo.flip(0)])  # two photos with swapped colours
    out = coral(painting[None], targets)
    assert out.shape == (2, *painting.shape)
    torch.testing.assert_close(out[0], coral(painting, photo))
    torch.testing.assert_close(out[1], coral(painting, photo.flip(0)))


def test_luminance_is_bt601_luma() -> None:
    rgb = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    assert luminance(rgb).item() == pytest.approx(0.299 + 0.587 * 0.5 + 0.114 * 0.25)
    assert luminance(rgb[0]).shape == (1, 1, 1)


def test_preserve_colors_keeps_the_luma_of_the_result_and_the_chroma_of_the_photo() -> None:
    generator = torch.Generator().manual_seed(0)
    photo = torch.rand(1, 3, 16, 16, generator=generator) * 0.6 + 0.2
    stylized = torch.rand(1, 3, 16, 16, generator=generator) * 0.6 + 0.2
    out = preserve_colors(stylized, photo, clamp=False)
    torch.testing.assert_close(luminance(out), luminance(stylized))
    clamped = preserve_colors(stylized, photo)
    assert clamped.min() >= 0 and clamped.max() <= 1
    inside = (out >= 0).all(1) & (out <= 1).all(1)  # out of gamut only where clamping bit
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(clamped.permute(1, 0, 2, 3)[:, inside], out.permute(1, 0, 2, 3)[:, inside])

    def yiq_chroma(x: torch.Tensor) -> torch.Tensor:
        i = 0.595716 * x[:, 0] - 0.274453 * x[:, 1] - 0.321263 * x[:, 2]
        q = 0.211456 * x[:, 0] - 0.522591 * x[:, 1] + 0.311135 * x[:, 2]
        return torch.stack([i, q], 1)

    def ycbcr_chroma(x: torch.Tensor) -> torch.Tensor:
        y = luminance(x)[:, 0]
        return torch.stack([(x[:, 2] - y) / 1.772, (x[:, 0] - y) / 1.402], 1)

    torch.testing.assert_close(yiq_chroma(out), yiq_chroma(photo), rtol=0, atol=1e-5)
    torch.testing.assert_close(ycbcr_chroma(out), ycbcr_chroma(photo), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="same size"):
        preserve_colors(stylized, photo[..., :8])


def test_match_luminance_moves_the_style_luma_to_the_photos_statistics(
    photo_and_painting: Pair,
) -> None:
    photo, painting = photo_and_painting
    out = match_luminance(painting, photo[:, :50, :60])
    y_out, y_photo = luminance(out), luminance(photo[:, :50, :60])
    assert y_out.mean().item() == pytest.approx(y_photo.mean().item(), abs=1e-5)
    assert y_out.std().item() == pytest.approx(y_photo.std().item(), abs=1e-5)
    # chroma untouched: the change is the same on all three channels
    delta = out - painting
    torch.testing.assert_close(delta[0], delta[1])
    torch.testing.assert_close(delta[1], delta[2])
