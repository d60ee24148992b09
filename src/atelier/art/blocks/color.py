"""Colour helpers for style transfer: CORAL colour matching and luminance-only transfer.

Two ways to keep a photo's colours when painting it in another picture's style (Gatys et al.
2016, "Preserving Color in Neural Artistic Style Transfer"):

* :func:`coral` -- recolour the *style* image so its colour mean and covariance match the
  photo's, then stylize with it (what AdaIN's ``--preserve_color`` does);
* :func:`preserve_colors` -- stylize normally, then keep the result's luminance and put the
  photo's chroma back (luminance-only transfer), with :func:`match_luminance` to bring the
  style's luminance histogram to the photo's first.

Images are float RGB tensors in 0..1, shaped (3, H, W) or (N, 3, H, W).
"""

from __future__ import annotations

import torch

# ITU-R BT.601 luma, the Y of both YIQ and YCbCr.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} must be (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    return image


def _sqrt_and_inverse_sqrt(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The reference takes the square root through an SVD; for these symmetric positive definite
    # 3x3 matrices an eigendecomposition gives the same root, and the inverse root directly.
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(torch.finfo(values.dtype).tiny)
    root = vectors @ torch.diag_embed(values.sqrt()) @ vectors.transpose(-1, -2)
    inverse_root = vectors @ torch.diag_embed(values.rsqrt()) @ vectors.transpose(-1, -2)
    return root, inverse_root


def _normalised_channels(
    image: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened (N, 3, P) channels standardised per channel, their mean, std and correlation."""
    flat = image.reshape(image.shape[0], 3, -1).double()
    count = flat.shape[-1]
    if count < 2:
        raise ValueError("coral needs images of at least 2 pixels")
    # Unbiased std, as torch's .std() in the reference's _calc_feat_flatten_mean_std.
    std, mean = torch.std_mean(flat, dim=-1, keepdim=True)
    std = std.clamp_min(1e-12)  # a flat channel: no spread to match, keep it finite
    normalised = (flat - mean) / std
    # The reference adds the identity to the *unnormalised* product normalised @ normalised.T,
    # which is (P - 1) * (correlation + I / (P - 1)). We keep that same regulariser but divide
    # by P - 1, so the transform no longer scales with sqrt(P_target / P_source) when the style
    # and the photo have different pixel counts (the reference's results are only right for
    # equal sizes; for equal sizes the two agree exactly).
    correlation = normalised @ normalised.transpose(-1, -2) / (count - 1)
    correlation = correlation + torch.eye(3, dtype=correlation.dtype) / (count - 1)
    return normalised, mean, std, correlation


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` recoloured so its colour mean and covariance match ``target``'s.

    CORAL (correlation alignment) as in AdaIN's ``coral(source, target)``: standardise each
    channel, whiten with the source's channel correlation, colour with the target's, restore
    the target's per-channel mean and std. Shapes: (3, H, W) or (N, 3, H, W); the two may differ
    in size, and a batch of 1 broadcasts against a batch of N. The result is not clamped (like
    the reference's): it is meant to be fed to an encoder; clamp it to show it.
    """
    squeeze = source.dim() == 3 and target.dim() == 3
    src = _as_batch(source, "source")
    tgt = _as_batch(target, "target")
    src_norm, _, _, src_corr = _normalised_channels(src)
    _, tgt_mean, tgt_std, tgt_corr = _normalised_channels(tgt)
    _, src_inverse_root = _sqrt_and_inverse_sqrt(src_corr)
    tgt_root, _ = _sqrt_and_inverse_sqrt(tgt_corr)
    transferred = (tgt_root @ src_inverse_root) @ src_norm
    out = transferred * tgt_std + tgt_mean
    batch = max(src.shape[0], tgt.shape[0])
    out = out.reshape(batch, *src.shape[1:]).to(source.dtype)
    return out[0] if squeeze else out


def luminance(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (the Y of YIQ and YCbCr) of RGB images: (N, 1, H, W) or (1, H, W)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=image.dtype, device=image.device)
    channel_dim = image.dim() - 3
    shape = [1] * image.dim()
    shape[channel_dim] = 3
    return (image * weights.view(shape)).sum(dim=channel_dim, keepdim=True)


def preserve_colors(
    stylized: torch.Tensor, content: torch.Tensor, *, clamp: bool = True
) -> torch.Tensor:
    """The stylized image's luminance with the content's chroma (luminance-only transfer).

    Gatys et al. 2016 do it in YIQ: take Y from the stylized image and I, Q from the photo. In
    YIQ as in YCbCr both chroma axes are zero on grey, so swapping Y is the same as adding the
    change of luma to all three channels, and both spaces give the same result; that is how it
    is computed here. ``stylized`` and ``content`` must have the same size; the result is
    clamped to 0..1 unless ``clamp=False`` (bright content chroma on a brighter luma can leave
    the RGB gamut).
    """
    if stylized.shape[-2:] != content.shape[-2:]:
        raise ValueError(
            f"preserve_colors needs images of the same size, got {tuple(stylized.shape[-2:])} "
            f"and {tuple(content.shape[-2:])}"
        )
    out = content + (luminance(stylized) - luminance(content))
    return out.clamp(0.0, 1.0) if clamp else out


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``style`` with its luminance mean and std moved to the content's, chroma kept.

    The "luminance histogram matching" step that Gatys et al. 2016 apply to the style image
    before a luminance-only transfer, so that the painting's light and dark ranges line up with
    the photo's. Each image is matched on its own statistics; a batch of 1 broadcasts.
    """
    style_b = _as_batch(style, "style")
    content_b = _as_batch(content, "content")
    y_style = luminance(style_b)
    y_content = luminance(content_b)
    s_std, s_mean = torch.std_mean(y_style, dim=(-2, -1), keepdim=True)
    c_std, c_mean = torch.std_mean(y_content, dim=(-2, -1), keepdim=True)
    y_new = (y_style - s_mean) * (c_std / s_std.clamp_min(1e-6)) + c_mean
    out = style_b + (y_new - y_style)
    return out[0] if style.dim() == 3 and content.dim() == 3 else out
