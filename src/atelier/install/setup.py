"""What the default product needs on disk, fetched on first start: ``atelier setup`` (which
``scripts/run`` calls before ``atelier serve``).

The default needs the weights of the engines the pages use (MicroAST for any painting, the
filters, AdaIN and the full VGG-19 of the classic commission recipe, waifu2x for the paid HD
picture) and the paintings of the shipped catalog. Each is fetched only when missing, checked
(sha256 where pinned) before it is renamed into place, so running it again goes on where it
stopped. On a machine without internet the first unreachable host ends the fetching (every other
file would wait out its own timeouts) and :meth:`SetupReport.summary` says in one line what is
missing; the server then serves what is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atelier.art.errors import ModelError
from atelier.art.progress import ProgressCallback
from atelier.install import models
from atelier.install import styles as catalog

__all__ = ["DEFAULT_MODELS", "SetupReport", "missing_defaults", "setup"]

#: The models the default product paints with (instant page, filters, commission, HD).
DEFAULT_MODELS: tuple[str, ...] = (
    "microast",
    "filter-candy",
    "filter-mosaic",
    "filter-rain_princess",
    "filter-udnie",
    "filter-pointilism",
    "adain",
    "waifu2x-upconv_7_photo",
)


@dataclass
class SetupReport:
    """What :func:`setup` found, fetched and could not get.

    ``missing_models`` / ``missing_styles`` map a name to the reason it is still missing;
    ``offline`` is the first "could not reach ..." message when the network was away.
    """

    present_models: list[str] = field(default_factory=list)
    fetched_models: list[str] = field(default_factory=list)
    missing_models: dict[str, str] = field(default_factory=dict)
    present_styles: list[str] = field(default_factory=list)
    fetched_styles: list[str] = field(default_factory=list)
    missing_styles: dict[str, str] = field(default_factory=dict)
    offline: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing_models and not self.missing_styles

    def summary(self) -> str:
        """One line: all there, or what is missing, why, and what still works."""
        if self.complete:
            fetched = len(self.fetched_models) + len(self.fetched_styles)
            return f"everything the default needs is installed ({fetched} fetched now)"
        parts = []
        if self.missing_models:
            parts.append(f"weights for {', '.join(self.missing_models)}")
        if self.missing_styles:
            parts.append(f"the paintings of {len(self.missing_styles)} catalog style(s) ({', '.join(self.missing_styles)})")
        why = f"offline ({self.offline.split(':')[0]})" if self.offline else "could not fetch them"
        works = self.working()
        serving = f"serving what works: {', '.join(works)}" if works else "nothing can paint yet"
        return (
            f"missing {'; '.join(parts)}: {why}; {serving}. "
            "Run `atelier setup` again when online, or copy them in with `atelier models import DIR` / `atelier styles import DIR`."
        )

    def working(self) -> list[str]:
        """What the installed weights let the product do, in a person's words."""
        have = set(self.present_models) | set(self.fetched_models)
        works = []
        if "microast" in have:
            works.append("any painting as the style (MicroAST)")
        filters = [name.removeprefix("filter-") for name in DEFAULT_MODELS if name.startswith("filter-") and name in have]
        if filters:
            works.append(f"the filters {', '.join(filters)}")
        return works


def missing_defaults(*, models_dir: Path, styles_dir: Path) -> SetupReport:
    """What is missing now, without fetching anything (cheap: no hashing)."""
    return setup(models_dir=models_dir, styles_dir=styles_dir, fetch=False)


def setup(
    *,
    models_dir: Path,
    styles_dir: Path,
    model_names: Sequence[str] = DEFAULT_MODELS,
    with_styles: bool = True,
    fetch: bool = True,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> SetupReport:
    """Fetch what the default is missing into ``models_dir`` and ``styles_dir``.

    Installed models are kept as they are (``atelier models verify`` hashes them). A model with
    no official download (the pointillism filter) can only be imported and is reported missing
    when absent. Never raises for a file that could not be had: the report says what and why.
    """
    report = SetupReport()
    for name in model_names:
        spec = models.get_spec(name)
        if not models.status(name, models_dir=models_dir).missing:
            report.present_models.append(name)
        elif not spec.downloadable:
            report.missing_models[name] = "no official download: `atelier models import DIR`"
        elif not fetch:
            report.missing_models[name] = "not fetched"
        elif report.offline:
            report.missing_models[name] = report.offline
        else:
            try:
                models.download([name], models_dir=models_dir, progress=progress, timeout=timeout)
            except models.ModelUnreachableError as exc:
                report.offline = str(exc)
                report.missing_models[name] = str(exc)
            except ModelError as exc:
                report.missing_models[name] = str(exc)
            else:
                report.fetched_models.append(name)
    if with_styles:
        _styles(report, styles_dir=Path(styles_dir), fetch=fetch, timeout=timeout, progress=progress)
    return report


def _styles(report: SetupReport, *, styles_dir: Path, fetch: bool, timeout: float, progress: ProgressCallback | None) -> None:
    installed = {style.name for style in catalog.load_catalog(styles_dir)}
    wanted = [style.name for style in catalog.shipped_styles()]
    report.present_styles.extend(name for name in wanted if name in installed)
    todo = [name for name in wanted if name not in installed]
    if not todo:
        return
    if not fetch or report.offline:
        for name in todo:
            report.missing_styles[name] = report.offline or "not fetched"
        return
    for done in catalog.download_styles(todo, styles_dir=styles_dir, timeout=timeout, progress=progress, stop_when_offline=True):
        if done.state in ("downloaded", "present"):
            report.fetched_styles.append(done.name)
        else:
            report.missing_styles[done.name] = done.message
            if done.state == "offline" and not report.offline:
                report.offline = done.message
