"""The model registry: every set of weights the product uses, where it officially comes from,
and how it is installed, checked and found.

A models folder is laid out ``<models_dir>/<family folder>/<official file name>``, exactly as
the official sources name their files (see ``../shared/models/MODELS.md``), so a folder
prepared elsewhere can be copied in with :func:`import_dir` and the loaders only need the
official formats.

Trust model:

* A file with a pinned ``sha256`` is accepted only if it hashes to that value (download,
  import and verify all check it).
* Some official files have no hash we can pin (the pytorch/examples filters live in a Dropbox
  zip whose bytes could not be obtained here). For those, ``sha256`` is ``None`` and
  ``alternates`` lists hashes of *known-good alternative* files -- e.g. the fp16 conversions of
  the same networks in ``../shared/models``. An alternate match is reported as ``known``; a
  file that matches neither is ``unpinned``, never ``corrupt``: a different hash is expected for
  the official file, so it must not be called damaged.
* Downloads are streamed to a temporary file in the destination folder, hashed while
  streaming, checked, and only then renamed into place (``os.replace``, atomic on one
  filesystem). A failed or interrupted download leaves nothing behind.

This module uses the standard library only (urllib) and imports nothing of ours but
``atelier.art``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from atelier.art.errors import ModelError, ModelMissingError
from atelier.install.fetch import FetchError, fetch
from atelier.install.fetch import host as _host
from atelier.art.progress import ProgressCallback

if TYPE_CHECKING:
    from atelier.art.engines.upscale import Waifu2xFiles

log = logging.getLogger(__name__)

__all__ = [
    "REGISTRY",
    "FileReport",
    "FileStatus",
    "ModelFile",
    "ModelSpec",
    "ModelStatus",
    "check_known",
    "download",
    "downloadable_names",
    "fix_command",
    "get_spec",
    "import_dir",
    "require",
    "sha256_file",
    "status",
    "verify",
]

_CHUNK = 1024 * 1024
# Nothing this product downloads is near this size; it stops an endless or hostile stream (or a
# zip member that claims to be huge) from filling the disk when no size is pinned.
_MAX_UNPINNED_BYTES = 2 * 1024**3
_USER_AGENT = "atelier-models/1 (+https://github.com/; python urllib)"


# ----------------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model.

    ``key`` is what engines ask for (``require(...)[key]``); ``relpath`` is where it lives under
    the models folder. ``urls`` are tried in order (empty: the file can only be imported).
    ``size`` and ``sha256`` are pinned when known. When ``archive_member`` is set, each url
    points to a zip archive and the file is that member of it. ``alternates`` are sha256 of
    known-good alternative files (conversions of the same weights) that are accepted as such
    when no official hash is pinned.
    """

    key: str
    relpath: str
    urls: tuple[str, ...]
    size: int | None
    sha256: str | None
    archive_member: str | None = None
    alternates: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None

    @property
    def filename(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A named model: what engines ``require()`` and what ``atelier models`` lists."""

    name: str
    family: str
    title: str
    license: str
    homepage: str
    files: tuple[ModelFile, ...]
    notes: str = ""

    @property
    def downloadable(self) -> bool:
        """False for import-only models (no official file in the format we load)."""
        return all(f.urls for f in self.files)

    @property
    def size(self) -> int | None:
        """Total bytes when every file's size is known."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def file(self, key: str) -> ModelFile:
        for f in self.files:
            if f.key == key:
                return f
        raise KeyError(f"{self.name} has no file {key!r}; it has {[f.key for f in self.files]}")


@dataclass(frozen=True, slots=True)
class FileStatus:
    key: str
    relpath: str
    path: Path
    present: bool


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    state: Literal["installed", "missing", "partial"]
    files: tuple[FileStatus, ...]

    @property
    def paths(self) -> dict[str, Path]:
        return {f.key: f.path for f in self.files}

    @property
    def missing(self) -> tuple[FileStatus, ...]:
        return tuple(f for f in self.files if not f.present)


ReportState = Literal[
    # verify
    "ok", "known", "unpinned", "corrupt", "missing",
    # download
    "downloaded", "present",
    # import
    "imported", "refused", "absent",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileReport:
    """What happened to one file in :func:`verify`, :func:`download` or :func:`import_dir`.

    States: ``ok`` (matches the pinned sha256), ``known`` (no official hash, matches a known-good
    alternate), ``unpinned`` (nothing to check against), ``corrupt`` (differs from the pinned
    sha256 or size), ``missing``; ``downloaded``, ``present`` (already installed and good);
    ``imported``, ``refused`` (the source file failed the check; nothing was copied), ``absent``
    (not in the source folder).
    """

    name: str
    key: str
    relpath: str
    path: Path
    state: ReportState
    message: str = ""


# ----------------------------------------------------------------------------- the registry


def _github_raw(repo: str, commit: str, path: str) -> tuple[str, ...]:
    """Raw file URLs of a repository at a pinned commit (two hosts serving the same bytes)."""
    return (
        f"https://raw.githubusercontent.com/{repo}/{commit}/{path}",
        f"https://github.com/{repo}/raw/{commit}/{path}",
    )


# Commits the shared copies were verified against (../shared/assets/MANIFEST.md).
_UST_REPO, _UST_COMMIT = "jkbehne/GOTStyleTranfer", "70d006829ab75b6c32ac3f707a04e635184fdec7"
_MICROAST_REPO, _MICROAST_COMMIT = "EndyWon/MicroAST", "d2796c7dbf01dbc29ed35b11675d87fcc640f969"
_WAIFU2X_REPO, _WAIFU2X_COMMIT = "nihui/waifu2x-ncnn-vulkan", "64914665c45893135c9e50c1c296170a121b9f77"
_ADAIN_RELEASE = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"
_FNS_ZIP = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"


def _adain() -> ModelSpec:
    # sha256 and sizes of the v0.0.0 release assets: not observable from this machine (no
    # internet), but recorded identically by several unrelated projects, one of them as the
    # git-LFS object id (which *is* the sha256 of the content) of an 80,102,481-byte file.
    return ModelSpec(
        name="adain",
        family="adain",
        title="AdaIN",
        license="MIT",
        homepage="https://github.com/naoto0804/pytorch-AdaIN",
        files=(
            ModelFile(
                "vgg",
                "vgg/vgg_normalised.pth",
                (f"{_ADAIN_RELEASE}/vgg_normalised.pth",),
                80_102_481,
                "804ca2835ecf7539f0cd2a7ac3c18ce81e6f8468969ae7117ac0c148d286bb4a",
            ),
            ModelFile(
                "decoder",
                "adain/decoder.pth",
                (f"{_ADAIN_RELEASE}/decoder.pth",),
                14_023_458,
                "379ca41d59f3a37eed3599bbbc2560c19da5c458870a5ffd3a9dd41aa88f9472",
            ),
        ),
        notes="Huang & Belongie 2017. PyTorch conversion of the authors' Torch7 models "
        "(xunhuang1995/AdaIN-style), published as release v0.0.0 assets of naoto0804/"
        "pytorch-AdaIN. The VGG is the normalised VGG-19 also used by the Gatys engine.",
    )


_UST_FILES = {
    1: (8_031, "1bc4ad2ae2a3e5e5f86a9c8d4cb5b78d9a94a07371334a3952d8dceaa4a55aa6",
        7_488, "fb48663414644122e4311305907d3fbfa3d51cba1a8609b0179e3a38ba4fa025"),
    2: (451_726, "0d345a57453279ba914f991edce6ac99a52f1d30df387721c603e423386b1cc9",
        450_926, "146e53c444bab64cbc118e6c733409dbedfee202e0f0cb9095f4284d4deeef8c"),
    3: (2_223_308, "4ffff49ad5cdc3337374b947918f35f903fcb0898b0b5eebfcbd601b99fc3929",
        2_221_993, "899eb82c2ee7b4214c57ca3655c50fbed652c63ef695f36ed035368c03bdf7d7"),
}  # fmt: skip


def _ust(level: int) -> ModelSpec:
    enc_size, enc_sha, dec_size, dec_sha = _UST_FILES[level]
    encoder = f"vgg_normalised_conv{level}_1.pth"
    decoder = f"feature_invertor_conv{level}_1.pth"
    return ModelSpec(
        name=f"ust-conv{level}_1",
        family="vgg",
        title=f"Universal Style Transfer encoder and inverter (relu{level}_1)",
        license="MIT (original Torch7 models); the PyTorch conversion's repository has no LICENSE",
        homepage="https://github.com/Yijunmaverick/UniversalStyleTransfer",
        files=(
            ModelFile("encoder", f"vgg/{encoder}",
                      _github_raw(_UST_REPO, _UST_COMMIT, f"models/{encoder}"), enc_size, enc_sha),
            ModelFile("decoder", f"vgg/{decoder}",
                      _github_raw(_UST_REPO, _UST_COMMIT, f"models/{decoder}"), dec_size, dec_sha),
        ),  # fmt: skip
        notes=f"Li et al. 2017 (WCT). The encoder is the normalised VGG-19 up to relu{level}_1 "
        "(a prefix of AdaIN's vgg_normalised.pth layout); the inverter is WCT's decoder for "
        "that level, not AdaIN's. The widely used PyTorch conversion, byte-identical to "
        f"{_UST_REPO}@{_UST_COMMIT[:12]}.",
    )


_MICROAST_FILES = (
    ("content_encoder", 634_983, "c8d895c0eec52507c157e102fab217c37f0c399ef3e168ef8b0b2677714660a4"),
    ("style_encoder", 634_983, "94f6b3fa386828692c20809a0af8bd0eba9c04e90a7d8842086976e4d223c5af"),
    ("modulator", 12_158, "8588055baf7d5ad8398d595d5518c6f030e3ff8dbb6007a7c1779776e11da28b"),
    ("decoder", 619_135, "32e04a46b953fd9f94ec9e20f351511305a5260e000c18f9aef6570d5f1e23d9"),
)


def _microast() -> ModelSpec:
    return ModelSpec(
        name="microast",
        family="microast",
        title="MicroAST",
        license="MIT",
        homepage="https://github.com/EndyWon/MicroAST",
        files=tuple(
            ModelFile(
                key,
                f"microast/{key}_iter_160000.pth.tar",
                _github_raw(_MICROAST_REPO, _MICROAST_COMMIT, f"models/{key}_iter_160000.pth.tar"),
                size,
                sha,
            )
            for key, size, sha in _MICROAST_FILES
        ),
        notes="Wang et al., AAAI 2023. Committed in the official repository itself; legacy "
        "(non-zip) torch serialization despite the .pth.tar name. No VGG at inference.",
    )


# sha256 of the state_dicts in ../shared/models/fast_neural_style: fp16-exact conversions of
# the same networks (see MODELS.md), not the official Dropbox bytes.
_FILTER_ALTERNATES = {
    "candy": "b87479b3c3cc5aab94834b489f69a80ff806e5632b25a791951a77abfde00ffe",
    "mosaic": "bac28d2ade29cb2f8b72a5499d4b5ec94540b863b6ea59804d7093fef038a5d7",
    "rain_princess": "89593cf7dcc6af1f2a98a98ac7d5582b38f24ca01437586101a66f3af156c134",
    "udnie": "e99d14abef8a33e5216a789412419cddadb9e7be4906f34a7a30402166451383",
    "pointilism": "c63324903c58173c8bb2df3f14c9b5b640f1fcebe957243d8b9e02c4e458a3e8",
}
_FILTER_TITLES = {
    "candy": "Candy",
    "mosaic": "Mosaic",
    "rain_princess": "Rain Princess",
    "udnie": "Udnie",
    "pointilism": "Pointillism",
}


def _filter(style: str) -> ModelSpec:
    relpath = f"fast_neural_style/{style}.pth"
    alternates = (_FILTER_ALTERNATES[style],)
    if style == "pointilism":
        return ModelSpec(
            name="filter-pointilism",
            family="fast_neural_style",
            title=f"{_FILTER_TITLES[style]} filter",
            license="BSD-3-Clause",
            homepage="https://github.com/onnx/models/tree/main/validated/vision/style_transfer/"
            "fast_neural_style",
            files=(ModelFile("weights", relpath, (), None, None, alternates=alternates),),
            notes="Import only: there is no official PyTorch file. The official distribution is "
            "onnx/models' pointilism-9.onnx, trained with the pytorch/examples code; a .pth in "
            "the TransformerNet state_dict layout (as in ../shared/models) can be imported with "
            "`atelier models import DIR`.",
        )
    return ModelSpec(
        name=f"filter-{style}",
        family="fast_neural_style",
        title=f"{_FILTER_TITLES[style]} filter",
        license="BSD-3-Clause",
        homepage="https://github.com/pytorch/examples/tree/main/fast_neural_style",
        files=(
            ModelFile(
                "weights",
                relpath,
                (_FNS_ZIP,),
                None,
                None,
                archive_member=f"saved_models/{style}.pth",
                alternates=alternates,
            ),
        ),
        notes="Johnson et al. 2016, the pytorch/examples TransformerNet. Official weights are a "
        "member of the Dropbox saved_models.zip linked by pytorch/examples; their sha256 is not "
        "pinned (the zip could not be fetched here). The official files carry InstanceNorm "
        "running_mean/var keys that the loader must drop. The fp16-exact conversion in "
        "../shared/models is accepted as a known-good alternate.",
    )


# (file name, bytes, sha256) per waifu2x folder; ../shared/models/MODELS.md section 3.
_W2X_UPCONV_PARAM = (1_047, "413195ffde05b4d43807792c6c020c916cecdf25dcf002ee83f5e28d5cc246c6")
_W2X_CUNET_PARAM2X = (7_249, "ccc3b2f1c9fad829ecdda40cac8dc853fcddf14917170efba888b256fbf9074a")
_W2X_CUNET_PARAM1X = (7_231, "4513ef004281bd50cdbed325df500df9aec154e8495190f578f09414c75f10f9")
_W2X_BINS = {
    "models-upconv_7_photo": {
        "scale2.0x_model": (1_106_248, "25a2bb25b29e43e63179aac216cd87690791243a436328506d4ef9fca88ee962"),
        "noise0_scale2.0x_model": (1_106_248, "fbfc8d57e4333748c9c6db2ec4d5454c98cd1c6aa53289f2989c3bdb4e84b673"),
        "noise1_scale2.0x_model": (1_106_248, "9f8ce2c4df1ed862a7441e3b49ad965b8e34aaa6d87c1cad52a1768210fdfee6"),
        "noise2_scale2.0x_model": (1_106_248, "432ca8f62ffc4873794a399ded70b17af23aa870b25e5ddba76f029b7ce14c2b"),
        "noise3_scale2.0x_model": (1_106_248, "a24379eb4e954005da1804223f428e67340e3f0037e4f7b9f568f0d0f20e9f20"),
    },
    "models-upconv_7_anime_style_art_rgb": {
        "scale2.0x_model": (1_106_248, "27d880903ff81390a3b4a900b67af3381c465279e34297546c9a58781855f7ef"),
        "noise0_scale2.0x_model": (1_106_248, "e1d2c4d91be98e72c0d48d08626cbe7d879aa2b80f740133dcc0d860eabb4189"),
        "noise1_scale2.0x_model": (1_106_248, "536fd7070b023463d30bd105f675acf301760dce539f2fb974bd06906045514f"),
        "noise2_scale2.0x_model": (1_106_248, "435f9082425c4520d3586757411ac409b1d67e428ed37ec571feb06f823e245e"),
        "noise3_scale2.0x_model": (1_106_248, "3e783a9117d4564fbd0cc376375b29d7eb05bd2e457f748898e82eefb1ace2f1"),
    },
    "models-cunet": {
        "scale2.0x_model": (2_776_400, "d82ed30207fd07e1c16726a9ca838ce44e6e25a105b0278c7ca681516ee0e18e"),
        "noise0_scale2.0x_model": (2_776_400, "5329a9375c9cfb64a60a2903fd8ae6e2851d9b069556bf025dbab9d0216fb27c"),
        "noise1_scale2.0x_model": (2_776_400, "862c0e40f3df956ff57bd4d168c85dea5d375b614077fdddd3ac8cfdb9a686da"),
        "noise2_scale2.0x_model": (2_776_400, "5c836e6ae022636cdd5590fbb66dbca2a5fc20bbf8e628884c3612ef72d51858"),
        "noise3_scale2.0x_model": (2_776_400, "f42c18610fecb14a40f75cca9b9276a6889689d5937a4f75f0c2b21bde7e49ed"),
        "noise0_model": (2_767_568, "b15c356a36bcbf6fb8c2f1404ca016fd917d4e45426bcf41f7a3867022fdd7b0"),
        "noise1_model": (2_767_568, "3407cb87c2503cbd69f8a6703b31bc4949a72080a3e1b1e536dba8bdbfad934f"),
        "noise2_model": (2_767_568, "b45d5febeb56166b7aff055cb0fbb87647dae528968f97d838dfd7ce0b7117f4"),
        "noise3_model": (2_767_568, "cd3d2440673d28d7a20aa6428a2a79e1c5e733f21de0a66785958f98d6994926"),
    },
}  # fmt: skip
_W2X_TITLES = {
    "models-upconv_7_photo": ("waifu2x-upconv_7_photo", "waifu2x upconv_7 (photo)"),
    "models-upconv_7_anime_style_art_rgb": ("waifu2x-upconv_7_art", "waifu2x upconv_7 (art)"),
    "models-cunet": ("waifu2x-cunet", "waifu2x CUnet"),
}


def _waifu2x(folder: str) -> ModelSpec:
    name, title = _W2X_TITLES[folder]
    files = []
    for stem, (bin_size, bin_sha) in _W2X_BINS[folder].items():
        if folder != "models-cunet":
            param_size, param_sha = _W2X_UPCONV_PARAM
        elif "scale2.0x" in stem:
            param_size, param_sha = _W2X_CUNET_PARAM2X
        else:
            param_size, param_sha = _W2X_CUNET_PARAM1X
        for suffix, size, sha in ((".param", param_size, param_sha), (".bin", bin_size, bin_sha)):
            filename = stem + suffix
            files.append(
                ModelFile(
                    filename,
                    f"waifu2x/{folder}/{filename}",
                    _github_raw(_WAIFU2X_REPO, _WAIFU2X_COMMIT, f"models/{folder}/{filename}"),
                    size,
                    sha,
                )
            )
    return ModelSpec(
        name=name,
        family="waifu2x",
        title=title,
        license="MIT",
        homepage="https://github.com/nihui/waifu2x-ncnn-vulkan",
        files=tuple(files),
        notes="ncnn conversions (fp16 .bin + text .param) of nagadomi/waifu2x models (MIT), "
        f"from {_WAIFU2X_REPO} models/{folder}/ as in its release zips. Keys are the file "
        "names (scale2.0x_model.param, noise1_scale2.0x_model.bin, ...).",
    )


def _build_registry() -> dict[str, ModelSpec]:
    specs = [
        _adain(),
        _ust(1),
        _ust(2),
        _ust(3),
        _microast(),
        *(_filter(style) for style in ("candy", "mosaic", "rain_princess", "udnie", "pointilism")),
        *(_waifu2x(folder) for folder in _W2X_BINS),
    ]
    return {spec.name: spec for spec in specs}


REGISTRY: dict[str, ModelSpec] = _build_registry()


def get_spec(name: str) -> ModelSpec:
    """The spec of a registry name; an unknown name is a :class:`ModelError` listing the names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"there is no model called {name!r}; the models are: {', '.join(REGISTRY)}"
        ) from None


def downloadable_names() -> list[str]:
    """Registry names that ``download`` fetches by default (all but the import-only ones)."""
    return [name for name, spec in REGISTRY.items() if spec.downloadable]


def _specs(names: Iterable[str] | None) -> list[ModelSpec]:
    if names is None:
        return list(REGISTRY.values())
    unique = list(dict.fromkeys(names))
    return [get_spec(name) for name in unique]


# ----------------------------------------------------------------------------- status, require


def status(name: str, *, models_dir: Path) -> ModelStatus:
    """Which of a model's files are present under ``models_dir`` (no hashing: cheap)."""
    spec = get_spec(name)
    files = tuple(
        FileStatus(f.key, f.relpath, Path(models_dir) / f.relpath, (Path(models_dir) / f.relpath).is_file())
        for f in spec.files
    )
    present = sum(f.present for f in files)
    state: Literal["installed", "missing", "partial"] = (
        "installed" if present == len(files) else "missing" if present == 0 else "partial"
    )
    return ModelStatus(name=name, state=state, files=files)


def fix_command(name: str) -> str:
    """The commands that install a model, worded for a message."""
    spec = get_spec(name)
    if spec.downloadable:
        return f"run `atelier models download {name}` or `atelier models import DIR`"
    return (
        "copy the file in with `atelier models import DIR` "
        "(there is no official download of these weights)"
    )


def require(name: str, *, models_dir: Path) -> dict[str, Path]:
    """The installed file paths of a model by key, or :class:`ModelMissingError`.

    Checks presence and (where pinned) size, not the sha256 -- hashing 80 MB on every load
    would cost more than the load; ``atelier models verify`` does that.
    """
    spec = get_spec(name)
    models_dir = Path(models_dir)
    current = status(name, models_dir=models_dir)
    if current.missing:
        if len(current.missing) <= 3:
            shown = ", ".join(f.relpath for f in current.missing)
        else:
            folders = sorted({f.relpath.rsplit("/", 1)[0] + "/" for f in current.missing})
            shown = f"{len(current.missing)} files under {', '.join(folders)}"
        raise ModelMissingError(
            f"{spec.title} weights are missing ({shown} in {models_dir}); {fix_command(name)}"
        )
    for f in spec.files:
        path = models_dir / f.relpath
        if f.size is not None and path.stat().st_size != f.size:
            raise ModelError(
                f"{spec.title} weights are damaged ({path} is {path.stat().st_size} bytes, "
                f"expected {f.size}); run `atelier models download {name}` to replace them"
                if spec.downloadable
                else f"{spec.title} weights are damaged ({path}); import a good copy"
            )
    return current.paths



def waifu2x_files(model: str, *, noise: int = -1, scale: int = 2, models_dir: Path) -> Waifu2xFiles:
    """The ``.param`` and ``.bin`` of a waifu2x model choice under ``<models_dir>/waifu2x/``.

    An impossible choice raises :class:`ModelError`; missing files :class:`ModelMissingError`
    naming the command that installs them (:func:`require`).
    """
    # Imported here: the registry is read by commands that must start without torch.
    from atelier.art.engines.upscale import Waifu2xFiles, check_choice, registry_name

    stem = check_choice(model, noise=noise, scale=scale)
    paths = require(registry_name(model), models_dir=Path(models_dir))
    return Waifu2xFiles(model=model, noise=noise, scale=scale, param=paths[f"{stem}.param"], bin=paths[f"{stem}.bin"])


# ----------------------------------------------------------------------------- hashing, verify


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _judge(f: ModelFile, *, size: int, sha: str) -> tuple[ReportState, str]:
    """Check a file's size and hash against the registry: ok / known / unpinned / corrupt."""
    if f.size is not None and size != f.size:
        return "corrupt", f"{size} bytes, expected {f.size}"
    if f.sha256 is not None:
        if sha == f.sha256:
            return "ok", ""
        return "corrupt", f"sha256 {sha[:16]}..., expected {f.sha256[:16]}..."
    if sha in f.alternates:
        return "known", "matches a known-good conversion of the official weights"
    return "unpinned", "no official sha256 to check against"


def verify(names: Iterable[str] | None = None, *, models_dir: Path) -> list[FileReport]:
    """Hash every installed file of the given models (default: all) and judge it."""
    reports = []
    for spec in _specs(names):
        for f in spec.files:
            path = Path(models_dir) / f.relpath
            if not path.is_file():
                reports.append(FileReport(spec.name, f.key, f.relpath, path, "missing"))
                continue
            state, message = _judge(f, size=path.stat().st_size, sha=sha256_file(path))
            reports.append(FileReport(spec.name, f.key, f.relpath, path, state, message))
    return reports


_KNOWN_CACHE: dict[tuple[str, int, int], str] = {}


def check_known(path: Path) -> str | None:
    """``"name:key"`` of the registry file whose sha256 (or known-good alternate) ``path`` has.

    For the CLI to say whether a ``--vgg``/``--decoder`` file given by hand is a pinned one.
    None when it matches nothing. Files identical across models (the waifu2x .param files)
    give the first match.
    """
    path = Path(path)
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    sha = _KNOWN_CACHE.get(cache_key)
    if sha is None:
        sha = _KNOWN_CACHE[cache_key] = sha256_file(path)
    for spec in REGISTRY.values():
        for f in spec.files:
            if sha == f.sha256 or sha in f.alternates:
                return f"{spec.name}:{f.key}"
    return None


# ----------------------------------------------------------------------------- writing files


@contextmanager
def _temp_beside(dest: Path) -> Iterator[Path]:
    """A temporary file in ``dest``'s folder (so the final rename is atomic); always cleaned."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
    finally:
        with suppress(FileNotFoundError):
            temp.unlink()


def _install(temp: Path, dest: Path) -> None:
    os.chmod(temp, 0o644)
    os.replace(temp, dest)


# ----------------------------------------------------------------------------- download


class ModelUnreachableError(ModelError):
    """No source of a file could be reached at all (offline, DNS, refused, timeout): the other
    files would fail the same way, so ``atelier setup`` stops asking after the first."""


class _CutOff(ModelError):
    """A download the network cut off part-way; what arrived is kept to be continued."""


def download(
    names: Sequence[str] | None = None,
    *,
    models_dir: Path,
    progress: ProgressCallback | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> list[FileReport]:
    """Fetch models from their official sources into ``models_dir``.

    ``names`` defaults to every downloadable model; naming an import-only model is a
    :class:`ModelError`. Files already installed and passing their check are kept
    (``present``) unless ``force``. Each file is streamed to a temporary file beside its
    destination, hashed while streaming, checked against the pinned size and sha256, then
    renamed into place. Progress: ``Progress(stage=<file>, step=<bytes>, total=<bytes or 0>)``.
    Raises :class:`ModelError` on the first failure (earlier files stay installed).
    """
    models_dir = Path(models_dir)
    if names:
        specs = _specs(names)
        for spec in specs:
            if not spec.downloadable:
                raise ModelError(
                    f"{spec.name} cannot be downloaded: there is no official file in the format "
                    f"Atelier loads. Copy one in with `atelier models import DIR` "
                    f"(a folder with {spec.files[0].relpath})."
                )
    else:
        specs = _specs(downloadable_names())
    reports: list[FileReport] = []
    archives: dict[tuple[str, ...], Path] = {}
    scratch = models_dir / ".downloads"
    try:
        for spec in specs:
            for f in spec.files:
                dest = models_dir / f.relpath
                if not force and dest.is_file():
                    state, _ = _judge(f, size=dest.stat().st_size, sha=sha256_file(dest))
                    if state != "corrupt":
                        reports.append(FileReport(spec.name, f.key, f.relpath, dest, "present"))
                        continue
                    log.warning("replacing damaged %s", dest)
                if f.archive_member is None:
                    _download_file(f, dest, progress=progress, timeout=timeout)
                else:
                    archive = archives.get(f.urls)
                    if archive is None:
                        archive = archives[f.urls] = _download_archive(
                            f.urls, scratch, progress=progress, timeout=timeout
                        )
                    _extract_member(f, archive, dest)
                log.info("installed %s", dest)
                reports.append(FileReport(spec.name, f.key, f.relpath, dest, "downloaded"))
    finally:
        for archive in archives.values():
            with suppress(FileNotFoundError):
                archive.unlink()
        with suppress(OSError):
            scratch.rmdir()  # only when empty
    return reports


def partial_path(dest: Path) -> Path:
    """Where a download of ``dest`` that was cut off waits to be continued."""
    return dest.parent / f".{dest.name}.part"


def _download_file(
    f: ModelFile, dest: Path, *, progress: ProgressCallback | None, timeout: float
) -> None:
    # The bytes received so far stay in a partial file beside the destination when the network
    # goes away, and the next run asks only for the rest (an HTTP Range request): the 90 MB of
    # AdaIN's weights are not fetched twice because a train went into a tunnel. A file that
    # arrives whole is checked against its pinned size and sha256 before it is renamed in; one
    # that fails the check is deleted, never continued.
    failures: list[ModelError] = []
    partial = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for url in f.urls:
        try:
            size, sha = _fetch(
                url, partial, expected_size=f.size, stage=f.relpath, progress=progress, timeout=timeout, resume=True
            )
        except ModelError as exc:
            log.info("download of %s from %s failed: %s", f.relpath, url, exc)
            failures.append(exc)
            if not _worth_continuing(exc):
                partial.unlink(missing_ok=True)
            continue
        state, message = _judge(f, size=size, sha=sha)
        if state == "corrupt":
            partial.unlink(missing_ok=True)
            failures.append(
                ModelError(
                    f"the file downloaded from {_host(url)} for {f.relpath} does not match the "
                    f"pinned checksum ({message}); nothing was installed"
                )
            )
            continue
        _install(partial, dest)
        return
    raise _pick_failure(failures)


def _worth_continuing(exc: ModelError) -> bool:
    """A download cut off by the network (or never started) is continued next time; one the
    server refused or sent too much for is not."""
    return isinstance(exc, (ModelUnreachableError, _CutOff))


def _download_archive(
    urls: tuple[str, ...], scratch: Path, *, progress: ProgressCallback | None, timeout: float
) -> Path:
    """Fetch a zip archive to a scratch file (the caller deletes it) and check it is a zip."""
    failures: list[ModelError] = []
    for url in urls:
        stage = urlsplit(url).path.rsplit("/", 1)[-1] or "archive"
        scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=scratch, prefix=".archive.", suffix=".zip.part")
        os.close(fd)
        archive = Path(name)
        try:
            _fetch(url, archive, expected_size=None, stage=stage, progress=progress, timeout=timeout)
            if not zipfile.is_zipfile(archive):
                raise ModelError(
                    f"{_host(url)} did not send a zip archive for {stage} (a login or error page?)"
                )
        except ModelError as exc:
            archive.unlink(missing_ok=True)
            failures.append(exc)
            continue
        except BaseException:
            archive.unlink(missing_ok=True)
            raise
        return archive
    raise _pick_failure(failures)


def _extract_member(f: ModelFile, archive: Path, dest: Path) -> None:
    assert f.archive_member is not None
    with zipfile.ZipFile(archive) as zf:
        info = _find_member(zf, f.archive_member)
        if info is None:
            raise ModelError(
                f"the downloaded archive has no {f.archive_member}; the upstream archive changed. "
                "Copy the file in with `atelier models import DIR`."
            )
        limit = f.size if f.size is not None else _MAX_UNPINNED_BYTES
        if info.file_size > limit:
            raise ModelError(f"{f.archive_member} in the archive is {info.file_size} bytes; refusing it")
        with _temp_beside(dest) as temp:
            digest = hashlib.sha256()
            written = 0
            try:
                with zf.open(info) as src, temp.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise ModelError(f"{f.archive_member} in the archive is larger than it says")
                        digest.update(chunk)
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ModelError(f"the downloaded archive is damaged ({exc}); nothing was installed") from exc
            state, message = _judge(f, size=written, sha=digest.hexdigest())
            if state == "corrupt":
                raise ModelError(
                    f"{f.archive_member} from the archive does not match the pinned checksum "
                    f"({message}); nothing was installed"
                )
            _install(temp, dest)


def _find_member(zf: zipfile.ZipFile, member: str) -> zipfile.ZipInfo | None:
    with suppress(KeyError):
        return zf.getinfo(member)
    # Tolerate a different top folder, but only if exactly one entry has the file name.
    base = member.rsplit("/", 1)[-1]
    matches = [
        info
        for info in zf.infolist()
        if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == base and "__MACOSX" not in info.filename
    ]
    return matches[0] if len(matches) == 1 else None


def _fetch(
    url: str,
    temp: Path,
    *,
    expected_size: int | None,
    stage: str,
    progress: ProgressCallback | None,
    timeout: float,
    resume: bool = False,
) -> tuple[int, str]:
    """Stream ``url`` into ``temp``; return (bytes, sha256). Raises ModelError on any failure."""
    limit = expected_size if expected_size is not None else _MAX_UNPINNED_BYTES
    try:
        return fetch(
            url,
            temp,
            limit=limit,
            expected_size=expected_size,
            stage=stage,
            user_agent=_USER_AGENT,
            timeout=timeout,
            progress=progress,
            resume=resume,
        )
    except FetchError as exc:
        if exc.unreachable:
            raise ModelUnreachableError(f"{exc}: are you offline? copy the files with `atelier models import DIR`") from None
        if "interrupted" in str(exc) or "cut off" in str(exc):
            if resume:
                raise _CutOff(f"{exc}; nothing was installed yet: run the same command again to continue it") from None
            raise ModelError(f"{exc}; nothing was installed") from None
        raise ModelError(str(exc)) from None


def _pick_failure(failures: list[ModelError]) -> ModelError:
    # A real answer (a wrong checksum, an HTTP error) says more than "could not reach" from a
    # mirror; only when every source was unreachable is the offline message the right one.
    for failure in failures:
        if not isinstance(failure, ModelUnreachableError):
            return failure
    return failures[0] if failures else ModelError("no source to download from")


# ----------------------------------------------------------------------------- import


def import_dir(
    src: Path, *, models_dir: Path, names: Iterable[str] | None = None
) -> list[FileReport]:
    """Copy the model files found in ``src`` (laid out like a models folder) into ``models_dir``.

    Each file is checked while copied (pinned sha256 and size; ``refused`` and not copied when
    it fails), written to a temporary file and renamed into place. Files not in ``src`` are
    reported ``absent``. A folder with none of the registry's files is a :class:`ModelError`.
    """
    src, models_dir = Path(src), Path(models_dir)
    if not src.is_dir():
        raise ModelError(f"{src} is not a folder")
    reports: list[FileReport] = []
    for spec in _specs(names):
        for f in spec.files:
            source, dest = src / f.relpath, models_dir / f.relpath
            if not source.is_file():
                reports.append(FileReport(spec.name, f.key, f.relpath, dest, "absent"))
                continue
            if dest.is_file() and (dest.resolve() == source.resolve() or _same_content(source, dest)):
                state, message = _judge(f, size=dest.stat().st_size, sha=sha256_file(dest))
                if state != "corrupt":
                    reports.append(FileReport(spec.name, f.key, f.relpath, dest, "present", message))
                    continue
            reports.append(_copy_checked(spec.name, f, source, dest))
    if all(r.state == "absent" for r in reports):
        example = next(iter(REGISTRY.values())).files[0].relpath
        raise ModelError(
            f"found no model files in {src}; it should be laid out like the models folder, "
            f"<family>/<file name> (for example {example})"
        )
    return reports


def _same_content(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def _copy_checked(name: str, f: ModelFile, source: Path, dest: Path) -> FileReport:
    with _temp_beside(dest) as temp:
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as fin, temp.open("wb") as out:
            while chunk := fin.read(_CHUNK):
                size += len(chunk)
                digest.update(chunk)
                out.write(chunk)
        state, message = _judge(f, size=size, sha=digest.hexdigest())
        if state == "corrupt":
            return FileReport(name, f.key, f.relpath, dest, "refused", f"{source}: {message}")
        _install(temp, dest)
    note = message if state in ("known", "unpinned") else ""
    return FileReport(name, f.key, f.relpath, dest, "imported", note)
