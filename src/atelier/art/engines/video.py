"""Clips in, clips out: stylize every frame of a video, keep its timing and its sound.

:func:`probe` describes a clip (and refuses what is not one); :func:`stylize_video` streams it
through any instant engine and writes the result. The engine is not known here: the caller
passes ``paint``, a function from a batch of frames (N, 3, H, W) RGB 0..1 to the painted batch,
which closes over the engine and the style statistics it encoded once. Keeping the style fixed
across frames matters: an engine that re-encoded the style per frame, or took statistics from
each frame, would add flicker of its own.

Decisions worth knowing:

* **Streaming.** Frames are decoded, painted in small batches, steadied, encoded and written as
  they come; memory does not grow with the clip's length. The sound is copied (or re-encoded)
  alongside, interleaved with the pictures.
* **Timing.** Every frame keeps its own timestamp and duration (shifted so the clip starts at 0),
  so variable-frame-rate phone clips and GIFs with per-frame delays come out in step with their
  sound; the output has the source's frame count and duration. ``fps=`` resamples to a constant
  rate instead (the frame shown at the middle of each output interval, like FFmpeg's ``fps``
  filter); frames nobody will see are not painted, repeated ones are painted once.
* **Output.** ``.mp4``/``.m4v``/``.mov``: H.264 (libx264, yuv420p, CRF 20) at even dimensions,
  tagged with the colour matrix it was converted with, ``+faststart`` so browsers play it while it
  downloads. AAC and MP3 sound is copied untouched; anything else (Opus, Vorbis, PCM, ...) is
  re-encoded to AAC. ``.gif``: one 256-colour palette taken from the first painted frames and
  kept for the whole clip (a palette per frame would make the colours flicker), no dithering
  (error diffusion "boils" from frame to frame); GIF has no sound and no frame shorter than
  2/100 s (browsers slow such frames down), so faster frames are dropped.
* **Orientation and pixel shape.** A rotation in the container's display matrix (portrait phone
  clips) is applied, and non-square pixels are resampled to square ones, so the painting looks
  like what the player showed.
* **Colour.** YUV is converted with the clip's own matrix, or, when the clip does not say, BT.709
  for HD (720 lines and more) and BT.601 below, as players do. HDR transfer functions (PQ, HLG)
  are not tone-mapped.
* **Limits.** Duration, frame count and frame size are checked from the header first and again
  while decoding, so a header that lies does not get past them.
* **Temporal consistency** (on by default): see :mod:`atelier.art.blocks.flow`.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
import torch
from PIL import Image

from atelier.art.errors import ArtError
from atelier.art.blocks.flow import DEFAULT_WEIGHT, FlickerMeter, TemporalBlender
from atelier.art.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LIMIT_FRAMES",
    "DEFAULT_LIMIT_PIXELS",
    "DEFAULT_LIMIT_SECONDS",
    "OUTPUT_SUFFIXES",
    "CorruptVideoError",
    "NoVideoStreamError",
    "Painter",
    "VideoError",
    "VideoInfo",
    "VideoLimitError",
    "VideoReport",
    "check_limits",
    "join_video",
    "output_size",
    "probe",
    "stylize_video",
]

#: Longest clip accepted, in seconds (ATELIER_VIDEO_MAX_SECONDS).
DEFAULT_LIMIT_SECONDS = 120.0
#: Most frames accepted (ATELIER_VIDEO_MAX_FRAMES): two minutes at 30 fps, one at 60.
DEFAULT_LIMIT_FRAMES = 3600
#: Largest frame accepted, in pixels (ATELIER_VIDEO_MAX_PIXELS): 3840x2160, 4K UHD.
DEFAULT_LIMIT_PIXELS = 3840 * 2160

#: Output formats by suffix.
OUTPUT_SUFFIXES: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".gif": "gif"}

#: A batch of frames is at most this many pixels (frames x width x height): at 640x360 that is
#: the full batch of 4, at 1080p one frame at a time, which keeps the filters' full-resolution
#: activations (~1 GB per 1080p frame) in memory.
#: (The CPU figure of :data:`atelier.art.blocks.devices.VIDEO_BATCH`; a GPU takes bigger batches.)
BATCH_PIXELS = 1_000_000

#: Sound copied as it is into MP4/MOV; other codecs are re-encoded to AAC.
_COPY_AUDIO = frozenset({"aac", "mp3"})
#: AAC sample rates; anything else is resampled to 48 kHz.
_AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
#: Container formats FFmpeg reports for single still images (a photo renamed .mp4).
_IMAGE_FORMATS = ("_pipe", "image2")
#: GIF frames shorter than this many hundredths of a second are dropped (see the docstring).
_GIF_MIN_DELAY = 2

Painter = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- errors


class VideoError(ArtError):
    """A clip could not be accepted or written."""


class CorruptVideoError(VideoError):
    """Not a video FFmpeg can read: damaged, truncated, or some other kind of file."""


class NoVideoStreamError(VideoError):
    """The file holds no pictures (an audio file, say)."""


class VideoLimitError(VideoError):
    """The clip is longer, has more frames, or has bigger frames than allowed."""


# ----------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    """What a clip holds, from its header and its first frame.

    ``width`` x ``height`` is the picture as shown (rotation and pixel shape applied);
    ``frames`` is exact when the container says, else counted from the packets (GIF, WebM) or
    estimated from the duration (``frames_exact`` False).
    """

    path: Path
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int
    frames_exact: bool
    duration: float
    has_audio: bool
    audio_codec: str | None = None
    rotation: int = 0
    coded_width: int = 0
    coded_height: int = 0
    time_base: Fraction | None = None

    @property
    def is_gif(self) -> bool:
        return self.container == "gif"

    @property
    def pixels(self) -> int:
        return self.coded_width * self.coded_height


def probe(path: Path) -> VideoInfo:
    """Open ``path`` and describe it; decode its first frame to be sure it is a video.

    Raises :class:`CorruptVideoError` (not a readable video), :class:`NoVideoStreamError`
    (sound only), FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(path))
        raise FileNotFoundError(2, "No such file", str(path))
    container = _open(path)
    try:
        fmt = container.format.name
        if fmt.endswith(_IMAGE_FORMATS):
            raise CorruptVideoError(
                f"{path.name} is a still image ({fmt.split('_')[0].upper()}), not a video: "
                "render it as a photo with an image file name"
            )
        audio = container.streams.audio[0] if container.streams.audio else None
        if not container.streams.video:
            if audio is not None:
                raise NoVideoStreamError(
                    f"{path.name} has sound ({audio.codec_context.name}) but no pictures: "
                    "give a video with a picture track"
                )
            raise NoVideoStreamError(f"{path.name} has no video track")
        stream = container.streams.video[0]
        first = _first_frame(container, stream, path)
        coded_w, coded_h = first.width, first.height
        rotation = _quarter_turns(first.rotation) * 90
        width, height = _display_size(coded_w, coded_h, stream.sample_aspect_ratio, rotation)
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0) or 25.0
        duration = _duration(container, stream)
        frames, exact = int(stream.frames or 0), bool(stream.frames)
        if not frames:
            frames, exact = _count_packets(path), True
        if not frames and duration:
            frames, exact = max(1, round(duration * fps)), False
        if not duration and frames:
            duration = frames / fps
        return VideoInfo(
            path=path,
            container=fmt.split(",")[0],
            codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=fps,
            frames=frames,
            frames_exact=exact,
            duration=duration,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            rotation=rotation,
            coded_width=coded_w,
            coded_height=coded_h,
            time_base=Fraction(stream.time_base) if stream.time_base else None,
        )
    finally:
        container.close()


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise CorruptVideoError(
            f"{path.name} is not a video that can be read (damaged, truncated, or not a video "
            f"file: {_reason(exc)})"
        ) from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip().rstrip(".").lower() or type(exc).__name__


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise CorruptVideoError(f"{path.name} is damaged: its first frame cannot be decoded ({_reason(exc)})") from None
    raise CorruptVideoError(f"{path.name} has a video track with no frame that can be decoded")


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _count_packets(path: Path, cap: int = 1_000_000) -> int:
    """Frames of a container that does not say (GIF, WebM, MKV): count the packets, no decoding."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            count = 0
            for packet in container.demux(video=0):
                if packet.size:
                    count += 1
                    if count >= cap:
                        break
            return count
    except av.error.FFmpegError:
        return 0


def _quarter_turns(rotation: float | int | None) -> int:
    return round((rotation or 0) / 90) % 4


def _display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    if sar and sar > 0 and sar != 1:
        width = max(1, round(width * sar))
    return (height, width) if rotation % 180 else (width, height)


def check_limits(
    info: VideoInfo,
    *,
    max_seconds: float | None = None,
    fps: float | None = None,
    limit_seconds: float = DEFAULT_LIMIT_SECONDS,
    limit_frames: int = DEFAULT_LIMIT_FRAMES,
    limit_pixels: int = DEFAULT_LIMIT_PIXELS,
) -> None:
    """Refuse a clip over the limits (:class:`VideoLimitError`), before any decoding.

    The limits apply to what will be painted: ``max_seconds`` (keep only the start) and ``fps``
    (resample) are taken into account, so a long clip can still be painted in part.
    """
    name = info.path.name
    if info.pixels > limit_pixels:
        raise VideoLimitError(
            f"{name} is {info.coded_width}x{info.coded_height}; frames of at most "
            f"{_megapixels(limit_pixels)} are accepted (3840x2160 by default)"
        )
    seconds = info.duration if max_seconds is None else min(info.duration, max_seconds)
    if seconds > limit_seconds + 1e-6:
        hint = "" if max_seconds is not None else " (use --max-seconds to paint only the start)"
        raise VideoLimitError(
            f"{name} lasts {seconds:.1f} s; clips of at most {limit_seconds:g} s are accepted{hint}"
        )
    if fps is not None:
        frames = math.ceil(seconds * fps)
    elif max_seconds is not None and info.duration > 0:
        frames = math.ceil(info.frames * min(1.0, max_seconds / info.duration))
    else:
        frames = info.frames
    if frames > limit_frames:
        raise VideoLimitError(
            f"{name} has {frames} frames to paint; at most {limit_frames} are accepted "
            "(lower the frame rate with --fps, or paint only the start with --max-seconds)"
        )


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def output_size(info: VideoInfo, size: int | None = None, *, even: bool = True) -> tuple[int, int]:
    """(width, height) of the painted frames: the clip's shown size, or ``size`` on the longest
    side, keeping the aspect ratio; rounded to even numbers for yuv420p (``even``)."""
    width, height = info.width, info.height
    if size is not None:
        if size < 16:
            raise VideoError(f"the video size must be at least 16 pixels, got {size}")
        scale = size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    if even:
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    return width, height


# ----------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _Frame:
    """A decoded frame, scaled and turned to the output size, with its time in seconds."""

    image: np.ndarray
    time: Fraction
    duration: Fraction


@dataclass(slots=True)
class _Shot:
    """A frame to paint and where it goes in the output: ``repeat`` ticks from ``pts``."""

    image: np.ndarray
    pts: int
    duration: int
    repeat: int = 1
    #: False for a lead-in shot of a part (painted and steadied, not written).
    write: bool = True


class _Reader:
    """Decodes the video track as RGB frames at the output size, enforcing the limits."""

    def __init__(
        self,
        info: VideoInfo,
        *,
        width: int,
        height: int,
        max_seconds: float | None,
        limit_seconds: float,
        limit_frames: int,
        limit_pixels: int,
    ) -> None:
        self.info = info
        self.width, self.height = width, height
        self.max_seconds = None if max_seconds is None else Fraction(max_seconds).limit_denominator(1_000_000)
        self.limit_seconds = limit_seconds
        self.limit_frames = limit_frames
        self.limit_pixels = limit_pixels
        self.origin: Fraction | None = None  # time of the first frame; the output starts there
        self.decoded = 0

    def frames(self) -> Iterator[_Frame]:
        """Frames in presentation order with their durations; the last one's from the header."""
        pending: _Frame | None = None
        for frame in self._decoded():
            if pending is not None:
                if frame.time <= pending.time:
                    # A repeated or backwards timestamp (broken muxers): keep the order, nudge it.
                    frame.time = pending.time + Fraction(1, 1000)
                pending.duration = frame.time - pending.time
                yield pending
            pending = frame
        if pending is not None:
            yield pending
        if pending is None:
            raise CorruptVideoError(f"{self.info.path.name} has no frame that can be decoded")

    def _decoded(self) -> Iterator[_Frame]:
        info = self.info
        container = _open(info.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = stream.time_base or Fraction(1, 90_000)
            step = Fraction(1) / Fraction(info.fps).limit_denominator(1001)
            last: Fraction | None = None
            turns = _quarter_turns(info.rotation)
            # swscale's target is the coded orientation; the quarter turn comes after.
            target = (self.height, self.width) if turns % 2 else (self.width, self.height)
            try:
                for frame in container.decode(stream):
                    if frame.width * frame.height > self.limit_pixels:
                        raise VideoLimitError(
                            f"{info.path.name} has a {frame.width}x{frame.height} frame; frames of at "
                            f"most {_megapixels(self.limit_pixels)} are accepted"
                        )
                    if frame.pts is not None:
                        at = Fraction(frame.pts) * base
                    else:
                        at = Fraction(0) if last is None else last + step
                    if self.origin is None:
                        self.origin = at
                    t = at - self.origin
                    if self.max_seconds is not None and t >= self.max_seconds:
                        return
                    if t > self.limit_seconds:
                        raise VideoLimitError(
                            f"{info.path.name} runs past {self.limit_seconds:g} s (its header said "
                            f"{info.duration:.1f} s); clips of at most {self.limit_seconds:g} s are accepted"
                        )
                    self.decoded += 1
                    if self.decoded > self.limit_frames:
                        raise VideoLimitError(
                            f"{info.path.name} has more than {self.limit_frames} frames (its header said "
                            f"{info.frames}); at most {self.limit_frames} are accepted"
                        )
                    last = at
                    duration = Fraction(frame.duration) * base if frame.duration else step
                    yield _Frame(self._rgb(frame, target, turns), t, duration)
            except av.error.FFmpegError as exc:
                raise CorruptVideoError(
                    f"{info.path.name} is damaged: decoding stopped after {self.decoded} frames ({_reason(exc)})"
                ) from None
        finally:
            container.close()

    def _rgb(self, frame: av.VideoFrame, target: tuple[int, int], turns: int) -> np.ndarray:
        width, height = target
        if any(c.is_alpha for c in frame.format.components) or frame.format.name == "pal8":
            # GIF and PNG-in-MOV frames may be transparent: composite onto white, as for photos.
            rgba = frame.to_ndarray(format="rgba", width=width, height=height, interpolation="AREA")
            alpha = rgba[..., 3:4].astype(np.float32) / 255.0
            image = (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
        else:
            image = frame.to_ndarray(
                format="rgb24",
                width=width,
                height=height,
                interpolation="AREA",
                src_colorspace=_colorspace(frame, self.info),
                src_color_range="JPEG" if _full_range(frame) else "MPEG",
            )
        if turns:
            image = np.ascontiguousarray(np.rot90(image, k=turns))
        return image


def _colorspace(frame: av.VideoFrame, info: VideoInfo) -> str:
    """The YUV matrix to convert with: the clip's own, else what players assume by size."""
    spc = int(frame.colorspace or 2)
    if spc == 1:
        return "itu709"
    if spc in (5, 6):
        return "itu601"
    if spc == 7:
        return "smpte240m"
    if spc in (9, 10):
        return "bt2020"
    return "itu709" if min(info.coded_width, info.coded_height) >= 720 else "itu601"


def _full_range(frame: av.VideoFrame) -> bool:
    return int(frame.color_range or 0) == 2 or frame.format.name.startswith("yuvj")


def _resampled(frames: Iterator[_Frame], fps: Fraction, max_seconds: Fraction | None) -> Iterator[_Shot]:
    """Constant ``fps``: output tick k shows the frame on screen at the middle of the tick."""
    tick = 0
    for frame in frames:
        end = frame.time + frame.duration
        if max_seconds is not None:
            end = min(end, max_seconds)
        first = tick
        while (tick + Fraction(1, 2)) / fps < end:
            tick += 1
        if tick > first:
            yield _Shot(frame.image, first, 1, tick - first)


def _passthrough(frames: Iterator[_Frame], time_base: Fraction) -> Iterator[_Shot]:
    """Every frame once, at its own time (in ``time_base`` ticks), so VFR timing survives."""
    last = -1
    for frame in frames:
        pts = max(round(frame.time / time_base), last + 1)
        end = max(round((frame.time + frame.duration) / time_base), pts + 1)
        last = pts
        yield _Shot(frame.image, pts, end - pts)


# ----------------------------------------------------------------------------- writing


class _Sink:
    def write(self, image: np.ndarray, pts: int, duration: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover
        raise NotImplementedError

    frames: int = 0
    audio: str = "none"


class _VideoSink(_Sink):
    """H.264 in MP4/MOV, with the source's sound interleaved."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        *,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        colorspace: str,
        info: VideoInfo,
        origin: Callable[[], Fraction | None],
        end: Fraction | None,
        crf: int,
        preset: str,
    ) -> None:
        self.path = path
        self.time_base = time_base
        self.container = av.open(str(path), "w", format=fmt, options={"movflags": "+faststart"})
        stream = self.container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"crf": str(crf), "preset": preset}
        self.colorspace = colorspace
        tag = 1 if colorspace == "itu709" else 6  # AVCOL_SPC_BT709 / SMPTE170M (BT.601)
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = tag, tag, tag, 1
        self.stream = stream
        self.frames = 0
        self.audio_pass: _AudioPass | None = None
        self.audio = "none"
        if info.has_audio:
            try:
                self.audio_pass = _AudioPass(info.path, self.container, origin=origin, end=end)
                self.audio = self.audio_pass.describe()
            except (av.error.FFmpegError, ValueError) as exc:
                log.warning("%s: the sound cannot be carried over (%s); writing the video silent", info.path.name, exc)
                self.audio = f"dropped ({_reason(exc)})"

    def write(self, image: np.ndarray, pts: int, duration: int) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=self.colorspace, dst_color_range="MPEG")
        frame.pts, frame.time_base, frame.duration = pts, self.time_base, duration
        if self.audio_pass is not None:
            self._audio_until(Fraction(pts) * self.time_base)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def _audio_until(self, t: Fraction | None) -> None:
        assert self.audio_pass is not None
        try:
            self.audio_pass.until(t)
        except av.error.FFmpegError as exc:
            log.warning("%s: the sound stopped early (%s)", self.path.name, exc)
            self.audio = f"{self.audio}, cut short ({_reason(exc)})"
            self.audio_pass.close()
            self.audio_pass = None

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        if self.audio_pass is not None:
            self._audio_until(None)
            if self.audio_pass is not None:
                self.audio_pass.finish()
                self.audio_pass.close()
        self.container.close()

    def abort(self) -> None:
        if self.audio_pass is not None:
            self.audio_pass.close()
        try:
            self.container.close()
        except av.error.FFmpegError:
            pass


class _AudioPass:
    """The source's first sound track, fed into the output as the pictures advance.

    A second demuxer reads the sound, so pictures and sound are written interleaved without
    holding either back. AAC and MP3 packets are copied; anything else is decoded and encoded to
    AAC. Times are shifted by the same origin as the pictures (the first frame's time).
    """

    def __init__(
        self,
        src: Path,
        output: av.container.OutputContainer,
        *,
        origin: Callable[[], Fraction | None],
        end: Fraction | None,
    ) -> None:
        self.source = av.open(str(src), metadata_errors="ignore")
        self.input = self.source.streams.audio[0]
        self.origin = origin
        self.end = end
        self.codec = self.input.codec_context.name
        self.copy = self.codec in _COPY_AUDIO
        if self.copy:
            self.output = output.add_stream_from_template(self.input)
        else:
            ctx = self.input.codec_context
            rate = ctx.sample_rate if ctx.sample_rate in _AAC_RATES else 48_000
            layout = "mono" if ctx.channels == 1 else "stereo"
            self.output = output.add_stream("aac", rate=rate, layout=layout)
            self.output.bit_rate = 160_000 if layout == "stereo" else 96_000
        self.container = output
        self.packets = self.source.demux(self.input)
        self.done = False
        self.last_dts: int | None = None

    def describe(self) -> str:
        return f"copied ({self.codec})" if self.copy else f"re-encoded ({self.codec} -> aac)"

    def until(self, t: Fraction | None) -> None:
        """Write the sound that starts before ``t`` seconds (all of it for None)."""
        if self.done:
            return
        origin = self.origin() or Fraction(0)
        for packet in self.packets:
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's final empty packet
            base = packet.time_base
            at = Fraction(packet.pts if packet.pts is not None else packet.dts) * base - origin
            if self.end is not None and at >= self.end:
                self.done = True
                return
            if self.copy:
                self._copy(packet, origin)
            else:
                self._transcode(packet, origin)
            if t is not None and at >= t:
                return
        self.done = True

    def _copy(self, packet: av.Packet, origin: Fraction) -> None:
        shift = round(origin / packet.time_base)
        end = (packet.pts or 0) - shift + (packet.duration or 0)
        if end <= 0:
            return  # sound from before the first picture
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
            if self.last_dts is not None and packet.dts <= self.last_dts:
                return
            self.last_dts = packet.dts
        packet.stream = self.output
        self.container.mux(packet)

    def _transcode(self, packet: av.Packet, origin: Fraction) -> None:
        for frame in self.input.decode(packet):
            at = frame.time - float(origin) if frame.time is not None else 0.0
            if at + frame.samples / frame.sample_rate <= 0:
                continue
            if self.end is not None and at >= float(self.end):
                continue
            # PyAV's encoder resamples and re-chunks into AAC's 1024-sample frames itself; the
            # timestamps it then counts from the first frame (sound starts with the pictures).
            frame.pts = None
            for out in self.output.encode(frame):
                self.container.mux(out)

    def finish(self) -> None:
        if not self.copy:
            for out in self.output.encode(None):
                self.container.mux(out)

    def close(self) -> None:
        self.source.close()


class _GifSink(_Sink):
    """An animated GIF: one palette from the first painted frames, delays in 1/100 s."""

    def __init__(self, path: Path, *, width: int, height: int, time_base: Fraction, has_audio: bool) -> None:
        self.path = path
        self.time_base = time_base
        self.container = av.open(str(path), "w", format="gif")
        stream = self.container.add_stream("gif", rate=Fraction(100))
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        stream.time_base = Fraction(1, 100)
        stream.codec_context.time_base = Fraction(1, 100)
        self.stream = stream
        self.palette: Image.Image | None = None
        self.argb: np.ndarray | None = None
        self.pending: list[np.ndarray] = []
        self.frames = 0
        self.dropped = 0
        self.last_cs: int | None = None
        self.audio = "dropped (GIF has no sound)" if has_audio else "none"

    def prime(self, images: list[np.ndarray]) -> None:
        """Take the palette from these frames (the first painted batch)."""
        if self.palette is not None or not images:
            return
        montage = Image.fromarray(np.concatenate(images[:8], axis=0))
        self.palette = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        rgb = np.zeros(768, np.uint8)
        values = self.palette.getpalette() or []
        rgb[: len(values)] = values[:768]
        self.argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb.reshape(256, 3)], axis=1)

    def write(self, image: np.ndarray, pts: int, duration: int) -> None:
        if self.palette is None:
            self.prime([image])
        assert self.palette is not None and self.argb is not None
        start_cs = round(Fraction(pts) * self.time_base * 100)
        if self.last_cs is not None and start_cs - self.last_cs < _GIF_MIN_DELAY:
            self.dropped += 1
            return
        end_cs = max(start_cs + _GIF_MIN_DELAY, round(Fraction(pts + duration) * self.time_base * 100))
        indexed = Image.fromarray(image).quantize(palette=self.palette, dither=Image.Dither.NONE)
        frame = av.VideoFrame.from_ndarray((np.asarray(indexed), self.argb), format="pal8")
        frame.pts, frame.time_base, frame.duration = start_cs, Fraction(1, 100), end_cs - start_cs
        for packet in self.stream.encode(frame):
            # The GIF encoder has no delay (a packet per frame) but drops the duration, and the
            # muxer takes the last frame's delay from it.
            packet.duration = end_cs - start_cs
            self.container.mux(packet)
        self.last_cs = start_cs
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        if self.dropped:
            log.info("%s: %d frames shorter than 2/100 s were dropped (GIF)", self.path.name, self.dropped)

    def abort(self) -> None:
        try:
            self.container.close()
        except av.error.FFmpegError:
            pass


# ----------------------------------------------------------------------------- the pipeline


@dataclass
class VideoReport:
    """What :func:`stylize_video` wrote and how long it took.

    ``flicker`` is the warping error of the output (see :mod:`atelier.art.blocks.flow`; 8-bit levels,
    lower is steadier), ``input_flicker`` the same measure on the input frames -- the floor.
    """

    source: VideoInfo
    output: Path
    width: int
    height: int
    frames: int
    painted: int
    fps: float
    duration: float
    audio: str
    temporal: bool
    flicker: float | None = None
    input_flicker: float | None = None
    seconds: float = 0.0
    #: CPU time of this process (all threads): on a busy shared machine a steadier figure of
    #: the work than the wall time.
    cpu_seconds: float = 0.0
    #: Wall seconds spent painting, steadying ("temporal") and measuring flicker ("measure").
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        """Painted frames per second of wall time (decode, paint, steady, encode)."""
        return self.painted / self.seconds if self.seconds > 0 else float("inf")


def stylize_video(
    src: Path,
    dst: Path,
    *,
    paint: Painter,
    batch_size: int | None = None,
    size: int | None = None,
    fps: float | None = None,
    max_seconds: float | None = None,
    temporal: bool = True,
    temporal_weight: float = DEFAULT_WEIGHT,
    measure_flicker: bool = True,
    limit_seconds: float = DEFAULT_LIMIT_SECONDS,
    limit_frames: int = DEFAULT_LIMIT_FRAMES,
    limit_pixels: int = DEFAULT_LIMIT_PIXELS,
    crf: int = 20,
    preset: str = "fast",
    progress: ProgressCallback | None = None,
    device: torch.device | str | None = None,
    frames: tuple[int, int | None] | None = None,
    lead_in: int = 0,
    audio: bool = True,
) -> VideoReport:
    """Paint every frame of ``src`` with ``paint`` and write the clip to ``dst``.

    ``paint`` takes a float batch (N, 3, H, W) in 0..1 on the CPU and returns the painted batch
    of the same shape (on any device). ``dst``'s suffix picks the format: ``.mp4``, ``.m4v``,
    ``.mov`` (H.264, sound kept) or ``.gif``. ``size`` is the longest side of the output
    (default: the clip's); ``fps`` resamples to a constant frame rate (default: the clip's own
    timing); ``max_seconds`` paints only the start. ``temporal`` steadies the frames with
    optical flow (:class:`atelier.art.blocks.flow.TemporalBlender`, weight ``temporal_weight``);
    ``measure_flicker`` reports the warping error (costs about a Farneback flow pair per frame).
    Progress is reported as stage ``"frames"``, counting written frames.

    Frames are painted in batches of ``batch_size`` frames and at most
    :data:`atelier.art.blocks.devices.VIDEO_BATCH` pixels, both by the type of ``device`` (where
    ``paint`` runs; the CPU when not given): 4 frames and 1 Mpx on the CPU, 16 and 16 Mpx on a
    GPU.

    ``frames=(start, end)`` paints one part of the clip (for several machines to share a long
    one, see :func:`join_video`): only the output frames ``start`` to ``end - 1`` (``end`` None:
    to the last) are written; the ``lead_in`` frames before ``start`` are painted and steadied
    but not written, so that the temporal blending arrives at the part's first frame carrying
    what it would have carried in one pass (its state is an average over about ``1 / (1 - w)``
    frames; a part that started cold would jump at the join). ``audio=False`` writes no sound.

    The file appears at ``dst`` only when complete (written next to it, then renamed).
    """
    src, dst = Path(src), Path(dst)
    if frames is not None and (frames[0] < 0 or (frames[1] is not None and frames[1] <= frames[0]) or lead_in < 0):
        raise ValueError(f"frames must be (start, end) with 0 <= start < end and lead_in >= 0, got {frames}, {lead_in}")
    fmt = OUTPUT_SUFFIXES.get(dst.suffix.lower())
    if fmt is None:
        raise VideoError(f"cannot write {dst.name}: use a .mp4, .m4v, .mov or .gif output file")
    if fps is not None and not 0 < fps <= 240:
        raise VideoError(f"the frame rate must be between 0 and 240 frames per second, got {fps:g}")
    if max_seconds is not None and max_seconds <= 0:
        raise VideoError(f"--max-seconds must be positive, got {max_seconds:g}")
    from atelier.art.blocks.devices import VIDEO_BATCH

    default_batch, batch_pixels = VIDEO_BATCH.get(torch.device(device).type if device is not None else "cpu", VIDEO_BATCH["cpu"])
    batch_size = default_batch if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started, cpu_started = time.perf_counter(), time.process_time()
    info = probe(src)
    check_limits(
        info, max_seconds=max_seconds, fps=fps,
        limit_seconds=limit_seconds, limit_frames=limit_frames, limit_pixels=limit_pixels,
    )
    width, height = output_size(info, size)
    reader = _Reader(
        info, width=width, height=height, max_seconds=max_seconds,
        limit_seconds=limit_seconds, limit_frames=limit_frames, limit_pixels=limit_pixels,
    )
    trim = reader.max_seconds
    if fps is not None:
        rate = Fraction(fps).limit_denominator(1001)
        time_base = 1 / rate
        shots = _resampled(reader.frames(), rate, trim)
        seconds = min(info.duration, max_seconds) if max_seconds is not None else info.duration
        expected = max(1, round(seconds * fps))
    else:
        rate = Fraction(info.fps).limit_denominator(1001)
        time_base = _source_time_base(info)
        shots = _passthrough(reader.frames(), time_base)
        expected = info.frames
        if max_seconds is not None and info.duration > 0:
            expected = min(info.frames, math.ceil(info.frames * max_seconds / info.duration))
    if frames is not None:
        start, stop = frames
        shots = _window(shots, start=start, end=stop, lead_in=lead_in)
        expected = max(1, (min(stop, expected) if stop is not None else expected) - start)
    if not audio:
        info = replace(info, has_audio=False)

    dst.parent.mkdir(parents=True, exist_ok=True)
    # A hidden name next to dst, created by the muxer itself so the file gets the usual
    # permissions (mkstemp would make it private to the user).
    temp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.partial{dst.suffix}")
    sink: _Sink
    try:
        if fmt == "gif":
            sink = _GifSink(temp, width=width, height=height, time_base=time_base, has_audio=info.has_audio)
        else:
            sink = _VideoSink(
                temp, fmt, width=width, height=height, rate=rate, time_base=time_base,
                # Tagged either way; the choice by size suits players that ignore the tag.
                colorspace="itu709" if min(width, height) >= 720 else "itu601",
                info=info, origin=lambda: reader.origin, end=trim, crf=crf, preset=preset,
            )
    except BaseException:
        temp.unlink(missing_ok=True)
        raise

    blender = TemporalBlender(weight=temporal_weight) if temporal else None
    meter = FlickerMeter() if measure_flicker else None
    timings = {"paint": 0.0, "temporal": 0.0, "measure": 0.0}
    per_batch = max(1, min(batch_size, batch_pixels // (width * height)))
    painted = written = end = 0
    begin: int | None = None
    try:
        for batch in _batches(shots, per_batch):
            images = [shot.image for shot in batch]
            tick = time.perf_counter()
            outputs = _paint(paint, images)
            timings["paint"] += time.perf_counter() - tick
            if isinstance(sink, _GifSink):
                sink.prime([_to_uint8(o) for o in outputs])
            for shot, output in zip(batch, outputs):
                if blender is not None:
                    tick = time.perf_counter()
                    output = blender(shot.image, output)
                    timings["temporal"] += time.perf_counter() - tick
                if not shot.write:
                    continue  # a lead-in frame: it only primes the blender
                if begin is None:
                    begin = shot.pts
                if meter is not None:
                    tick = time.perf_counter()
                    meter.add(shot.image, output)
                    timings["measure"] += time.perf_counter() - tick
                image = _to_uint8(output)
                for k in range(shot.repeat):
                    sink.write(image, shot.pts + k * shot.duration, shot.duration)
                    written += 1
                end = max(end, shot.pts + shot.repeat * shot.duration)
                painted += 1
            if progress is not None:
                progress(Progress("frames", written, max(expected, written)))
        sink.close()
        temp.replace(dst)
    except BaseException:
        sink.abort()
        temp.unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - started
    out_frames = sink.frames
    duration = float((end - (begin or 0)) * time_base) if frames is not None else float(end * time_base)
    report = VideoReport(
        source=info,
        output=dst,
        width=width,
        height=height,
        frames=out_frames,
        painted=painted,
        fps=out_frames / duration if duration > 0 else float(rate),
        duration=duration,
        audio=sink.audio,
        temporal=temporal,
        flicker=meter.flicker if meter is not None else None,
        input_flicker=meter.input_flicker if meter is not None else None,
        seconds=elapsed,
        cpu_seconds=time.process_time() - cpu_started,
        timings=timings,
    )
    log.info(
        "%s -> %s: %d frames %dx%d in %.1f s (%.2f frames/s), flicker %s",
        src.name, dst.name, out_frames, width, height, elapsed, report.frames_per_second, report.flicker,
    )
    return report


def _window(shots: Iterator[_Shot], *, start: int, end: int | None, lead_in: int) -> Iterator[_Shot]:
    """The shots ``start - lead_in`` to ``end - 1``, those before ``start`` marked not to be
    written; decoding stops after ``end``."""
    for index, shot in enumerate(shots):
        if end is not None and index >= end:
            return
        if index >= start - lead_in:
            shot.write = index >= start
            yield shot


class _PartFrames:
    """A painter that paints nothing: it hands out the frames of already painted parts, in
    order (what :func:`join_video` feeds through :func:`stylize_video`)."""

    def __init__(self, parts: list[Path], *, width: int, height: int) -> None:
        self.parts = parts
        self.width, self.height = width, height
        self._frames = self._read()
        self.served = 0

    def _read(self) -> Iterator[np.ndarray]:
        for part in self.parts:
            info = probe(part)
            if (info.width, info.height) != (self.width, self.height):
                raise VideoError(f"{part.name} is {info.width}x{info.height}, not the {self.width}x{self.height} of the clip")
            reader = _Reader(info, width=self.width, height=self.height, max_seconds=None,
                             limit_seconds=math.inf, limit_frames=10**9, limit_pixels=10**12)
            for frame in reader.frames():
                yield frame.image

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        images = []
        for _ in range(batch.shape[0]):
            image = next(self._frames, None)
            if image is None:
                raise VideoError(f"the parts hold {self.served} frames, fewer than the clip")
            images.append(image)
            self.served += 1
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)

    def left_over(self) -> int:
        return sum(1 for _ in self._frames)


def join_video(
    src: Path,
    parts: list[Path],
    dst: Path,
    *,
    size: int | None = None,
    fps: float | None = None,
    max_seconds: float | None = None,
    limit_seconds: float = DEFAULT_LIMIT_SECONDS,
    limit_frames: int = DEFAULT_LIMIT_FRAMES,
    limit_pixels: int = DEFAULT_LIMIT_PIXELS,
    crf: int = 20,
    preset: str = "fast",
    progress: ProgressCallback | None = None,
) -> VideoReport:
    """The painted clip from its parts (each written by :func:`stylize_video` with ``frames=``,
    in order, covering every frame once): the frames of the parts with the timing and the sound
    of ``src``, as one :func:`stylize_video` of ``src`` with the same ``size``/``fps``/
    ``max_seconds`` would have written them (the source is decoded again for its timestamps;
    nothing is painted or steadied here). :class:`VideoError` when the parts do not hold exactly
    the clip's frames."""
    info = probe(Path(src))
    check_limits(info, max_seconds=max_seconds, fps=fps, limit_seconds=limit_seconds, limit_frames=limit_frames, limit_pixels=limit_pixels)
    width, height = output_size(info, size)
    frames = _PartFrames([Path(p) for p in parts], width=width, height=height)
    report = stylize_video(
        src, dst, paint=frames, size=size, fps=fps, max_seconds=max_seconds, temporal=False, measure_flicker=False,
        limit_seconds=limit_seconds, limit_frames=limit_frames, limit_pixels=limit_pixels, crf=crf, preset=preset,
        progress=progress,
    )
    extra = frames.left_over()
    if extra:
        Path(dst).unlink(missing_ok=True)
        raise VideoError(f"the parts hold {extra} frames more than the clip")
    return report


def _source_time_base(info: VideoInfo) -> Fraction:
    """The output keeps the source's clock when it is fine enough (exact timestamps)."""
    base = info.time_base
    if base is None or base > Fraction(1, 100):
        return Fraction(1, 90_000)
    return base


def _batches(shots: Iterator[_Shot], size: int) -> Iterator[list[_Shot]]:
    batch: list[_Shot] = []
    for shot in shots:
        batch.append(shot)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _paint(paint: Painter, images: list[np.ndarray]) -> list[np.ndarray]:
    """Run the painter on a batch; (H, W, 3) float32 0..1 arrays back."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        result = paint(batch)
    if tuple(result.shape) != tuple(batch.shape):
        raise ValueError(f"the painter returned shape {tuple(result.shape)} for a batch of {tuple(batch.shape)}")
    array = result.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(frame) for frame in array]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
