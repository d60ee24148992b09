"""The two paintings of a commission as records: what differs between the preview and the HD job.

One job function (:func:`atelier.service.commission.job.paint_stage`) paints both; a
:class:`Stage` says what it does differently: the job kind, where the picture goes, whether it
is watermarked and doubled, which status moves it makes and which mail it sends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from atelier.service import i18n
from atelier.service.commission.status import Event
from atelier.service.lanes import priority_of
from atelier.store.queue import enqueue

PREVIEW_JOB = "artwork.preview"
HD_JOB = "artwork.hd"
#: The HD picture painted ahead of payment, while the workers are idle (the speculative lane:
#: handed back to the queue as soon as anything else waits; see atelier.service.lanes).
HD_AHEAD_JOB = "artwork.hd_ahead"


@dataclass(frozen=True)
class Stage:
    """One painting of a commission."""

    name: str
    job_kind: str
    #: Painting a commission is slow and retrying costs as much again: fewer attempts than the default.
    attempts: int
    #: Blobs go to ``{folder}/{public_id}.jpg``: fixed by the artwork, so a second run overwrites.
    folder: str
    watermark: bool
    #: waifu2x factor applied to the finished painting (1: none).
    upscale: int
    jpeg_quality: int
    #: Whether the status and receipt pages get the painting's intermediate pictures. They are
    #: watermarked like the preview (the HD job's too: the unmarked picture is what the buyer
    #: paid for, and the receipt page is not where it is handed over).
    progress_pictures: bool
    #: The share of the job's progress the painting takes (the rest: upscaling, storing).
    painting_share: float
    started: Event
    stopped: Event
    done: Event
    mail_template: str
    mail_event: str
    #: Painted before anyone paid for it: stored, never mailed, until a payment makes it the
    #: paid HD picture.
    speculative: bool = False

    def key(self, artwork: Any) -> str:
        """Where ``artwork``'s picture of this stage is stored."""
        return f"{self.folder}/{artwork.public_id}.jpg"

    def enqueue(self, session: Session, artwork: Any) -> int:
        """Queue this stage's job for ``artwork`` in the caller's transaction, in its kind's lane,
        with the stage's attempts and picture key; the job's id."""
        return enqueue(
            session,
            self.job_kind,
            {"artwork_id": artwork.id},
            priority=priority_of(self.job_kind),
            max_attempts=self.attempts,
            output_key=self.key(artwork),
        )


PREVIEW = Stage(
    name="preview",
    job_kind=PREVIEW_JOB,
    attempts=3,
    folder="previews",
    watermark=True,
    upscale=1,
    jpeg_quality=92,
    progress_pictures=True,
    painting_share=0.98,
    started=Event.PREVIEW_STARTED,
    stopped=Event.PREVIEW_STOPPED,
    done=Event.PREVIEW_DONE,
    mail_template="preview_ready",
    mail_event="preview",
)
HD = Stage(
    name="hd",
    job_kind=HD_JOB,
    attempts=3,
    folder="hd",
    watermark=False,
    upscale=2,
    jpeg_quality=95,
    progress_pictures=True,
    painting_share=0.85,
    started=Event.HD_STARTED,
    stopped=Event.HD_STOPPED,
    done=Event.HD_DONE,
    mail_template="download_ready",
    mail_event="download",
)
HD_AHEAD = replace(HD, name="hd_ahead", job_kind=HD_AHEAD_JOB, attempts=1, speculative=True)
STAGES = {stage.job_kind: stage for stage in (PREVIEW, HD, HD_AHEAD)}


def preview_key(artwork: Any) -> str:
    """Where an artwork's preview is stored."""
    return PREVIEW.key(artwork)


def hd_key(artwork: Any) -> str:
    """Where an artwork's HD picture is stored."""
    return HD.key(artwork)


def painting_key(public_id: str) -> str:
    """Where an artwork's preview painting is kept before its finishing and watermark (lossless):
    what the HD picture is painted on from."""
    return f"paintings/{public_id}.png"


def preview_link(public_url: str, token: str, locale: str) -> str:
    """The preview page the first mail links to."""
    return f"{public_url}/{i18n.normalize(locale)}/a/{token}"


def download_link(public_url: str, token: str) -> str:
    """The download the second mail links to."""
    return f"{public_url}/d/{token}"


def receipt_path(public_id: str, locale: str) -> str:
    """The buyer's receipt page (the HD job's progress, then the download)."""
    return f"/{i18n.normalize(locale)}/receipts/{public_id}"
