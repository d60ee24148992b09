"""Clips in, clips out (art/engines/video.py): timing, sound, GIF, orientation, limits and errors.

Most tests write small clips with PyAV (a moving picture, a sine tone) and paint them with a
cheap painter (the negative): what is under test is the clip handling. The tests marked slow
paint the shared clips whole with MicroAST and its real weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from atelier.art.engines.video import (
    CorruptVideoError,
    NoVideoStreamError,
    VideoError,
    VideoLimitError,
    check_limits,
    join_video,
    output_size,
    probe,
    stylize_video,
)

# ----------------------------------------------------------------------------- making clips


def moving_frames(count: int, width: int, height: int, seed: int = 0) -> Iterator[np.ndarray]:
    """A smooth random picture panning right and down, one pixel pair per frame."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((height // 4 + 2, width // 4 + 2, 3)) * 255).astype(np.uint8)
    big = cv2.resize(coarse, (width * 2 + 2 * count, height * 2 + count), interpolation=cv2.INTER_CUBIC)
    for i in range(count):
        yield np.ascontiguousarray(big[i : i + height, 2 * i : 2 * i + width])


def make_clip(
    path: Path,
    *,
    frames: int = 12,
    width: int = 64,
    height: int = 48,
    fps: int = 12,
    audio: str | None = "aac",
    vcodec: str = "libx264",
    times: list[float] | None = None,
    rotation: int | None = None,
    sample_rate: int = 44_100,
) -> Path:
    """Write a clip: ``frames`` moving frames (at ``times`` seconds if given) and a 440 Hz tone
    lasting as long as the pictures, in ``audio`` (None: silent)."""
    container = av.open(str(path), "w")
    video = container.add_stream(vcodec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    base = Fraction(1, 1000) if times is not None else Fraction(1, fps)
    video.time_base = video.codec_context.time_base = base
    if rotation:
        video.set_display_rotation(rotation)
    sound = container.add_stream(audio, rate=sample_rate, layout="stereo") if audio else None
    for i, image in enumerate(moving_frames(frames, width, height)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i if times is None else round(times[i] * 1000)
        frame.time_base = base
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    if sound is not None:
        write_tone(container, sound, seconds=frames / fps if times is None else times[-1] + 0.1)
    container.close()
    return path


def write_tone(container: av.container.OutputContainer, stream: av.AudioStream, *, seconds: float) -> None:
    """A 440 Hz stereo tone of ``seconds`` into ``stream`` (added before any packet was written)."""
    rate = stream.codec_context.sample_rate
    total = int(seconds * rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, total, chunk):
        samples = tone[start : start + chunk]
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_gif(path: Path, delays_ms: list[int], *, width: int = 48, height: int = 32) -> Path:
    frames = [Image.fromarray(image) for image in moving_frames(len(delays_ms), width, height)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=delays_ms, loop=0)
    return path


def negative(frames: torch.Tensor) -> torch.Tensor:
    """A painter that costs nothing and changes every pixel."""
    return 1.0 - frames


def streams(path: Path) -> dict[str, dict[str, object]]:
    """Per track: codec, frame count (decoded, for video) and duration in seconds."""
    out: dict[str, dict[str, object]] = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            seconds = float(stream.duration * stream.time_base) if stream.duration else None
            out[stream.type] = {"codec": stream.codec_context.name, "duration": seconds}
        if container.streams.video:
            times = [frame.time for frame in container.decode(video=0)]
            out["video"]["frames"] = len(times)
            out["video"]["times"] = times
    return out


def decoded(path: Path, limit: int | None = None) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if limit is not None and len(frames) == limit:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


# ----------------------------------------------------------------------------- probing


def test_probe_describes_a_clip(clip: Path) -> None:
    info = probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(12)
    assert info.frames == 12 and info.frames_exact
    assert info.duration == pytest.approx(1.0, abs=0.01)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.codec == "h264" and not info.is_gif


def test_probe_counts_the_frames_of_a_gif_and_sums_its_delays(tmp_path: Path) -> None:
    info = probe(make_gif(tmp_path / "a.gif", [100, 100, 200, 50]))
    assert info.is_gif and info.frames == 4 and not info.has_audio
    assert info.duration == pytest.approx(0.45, abs=0.011)


def test_probe_shows_a_portrait_phone_clip_upright(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "portrait.mp4", rotation=90, audio=None))
    assert (info.width, info.height) == (48, 64)
    assert info.rotation == 90


# ----------------------------------------------------------------------------- errors


def test_a_text_file_named_mp4_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my holiday notes, not a video\n" * 20)
    with pytest.raises(CorruptVideoError, match="notes.mp4 is not a video"):
        probe(fake)


def test_a_truncated_clip_is_refused(clip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(CorruptVideoError, match="broken.mp4"):
        stylize_video(broken, tmp_path / "out.mp4", paint=negative)
    assert not (tmp_path / "out.mp4").exists()


def test_an_audio_only_file_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "song.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        write_tone(container, container.add_stream("aac", rate=44_100, layout="stereo"), seconds=0.5)
    with pytest.raises(NoVideoStreamError, match=r"song.m4a has sound \(aac\) but no pictures"):
        probe(path)


def test_a_photo_renamed_mp4_is_refused_as_a_still_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.mp4"
    Image.fromarray(next(moving_frames(1, 64, 48))).save(path, format="PNG")
    with pytest.raises(CorruptVideoError, match="still image"):
        probe(path)


def test_a_missing_file_is_a_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nowhere.mp4")


def test_clips_over_the_limits_are_refused_before_painting(clip: Path, tmp_path: Path) -> None:
    calls = []

    def paint(frames: torch.Tensor) -> torch.Tensor:
        calls.append(frames.shape[0])
        return frames

    out = tmp_path / "out.mp4"
    with pytest.raises(VideoLimitError, match=r"lasts 1\.0 s; clips of at most 0\.5 s.*--max-seconds"):
        stylize_video(clip, out, paint=paint, limit_seconds=0.5)
    with pytest.raises(VideoLimitError, match="has 12 frames to paint; at most 10"):
        stylize_video(clip, out, paint=paint, limit_frames=10)
    with pytest.raises(VideoLimitError, match="64x48; frames of at most"):
        stylize_video(clip, out, paint=paint, limit_pixels=1000)
    assert calls == [] and not out.exists()


def test_limits_apply_to_what_is_painted(clip: Path) -> None:
    info = probe(clip)
    check_limits(info, max_seconds=0.5, limit_seconds=0.5)  # only the first half is painted
    check_limits(info, fps=6, limit_frames=6)  # resampled to 6 frames
    with pytest.raises(VideoLimitError):
        check_limits(info, fps=24, limit_frames=20)


def test_a_header_that_lies_about_the_length_does_not_get_past_the_limit(tmp_path: Path) -> None:
    # GIF headers carry no frame count: the probe counts packets, but the decoder enforces too.
    gif = make_gif(tmp_path / "long.gif", [50] * 12)
    with pytest.raises(VideoLimitError):
        stylize_video(gif, tmp_path / "out.gif", paint=negative, limit_frames=8)


def test_unknown_output_formats_and_bad_options_are_refused(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"use a \.mp4, \.m4v, \.mov or \.gif"):
        stylize_video(clip, tmp_path / "out.avi", paint=negative)
    with pytest.raises(VideoError, match="frame rate"):
        stylize_video(clip, tmp_path / "out.mp4", paint=negative, fps=0)
    with pytest.raises(VideoError, match="max-seconds"):
        stylize_video(clip, tmp_path / "out.mp4", paint=negative, max_seconds=-1)


def test_a_painter_that_fails_leaves_no_half_written_file(clip: Path, tmp_path: Path) -> None:
    def broken(frames: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        stylize_video(clip, tmp_path / "out.mp4", paint=broken)
    assert list(tmp_path.iterdir()) == [clip]


def test_the_output_gets_the_usual_file_permissions(clip: Path, tmp_path: Path) -> None:
    import os
    import stat

    umask = os.umask(0o022)
    try:
        stylize_video(clip, tmp_path / "out.mp4", paint=negative, temporal=False, measure_flicker=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.mp4").stat().st_mode) == 0o644


def test_a_painter_that_changes_the_size_is_caught(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="painter returned shape"):
        stylize_video(clip, tmp_path / "out.mp4", paint=lambda x: x[..., :-4])


# ----------------------------------------------------------------------------- timing and sound


def test_the_output_keeps_frame_count_rate_duration_and_sound(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    report = stylize_video(clip, out, paint=negative)
    got, source = streams(out), streams(clip)
    assert got["video"]["codec"] == "h264" and got["video"]["frames"] == 12
    assert got["video"]["times"] == pytest.approx(source["video"]["times"], abs=1e-3)
    assert got["video"]["duration"] == pytest.approx(1.0, abs=1 / 12)
    assert got["audio"]["codec"] == "aac"
    assert got["audio"]["duration"] == pytest.approx(source["audio"]["duration"], abs=0.05)
    assert report.frames == report.painted == 12
    assert report.fps == pytest.approx(12) and report.duration == pytest.approx(1.0, abs=1e-6)
    assert report.audio == "copied (aac)"


def test_the_frames_are_painted_with_the_painter(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    stylize_video(clip, out, paint=negative, temporal=False)
    for source, painted in zip(decoded(clip), decoded(out)):
        error = np.abs((255 - source.astype(int)) - painted).mean()
        assert error < 6  # the negative, through two H.264 encodes


def test_an_unpainted_clip_comes_back_with_its_colours(tmp_path: Path, shared_dir: Path) -> None:
    # The identity painter: what comes out is the clip (YUV matrix and range handled right).
    out = tmp_path / "same.mp4"
    stylize_video(shared_dir / "video" / "cutBunny.mp4", out, paint=lambda x: x, temporal=False, max_seconds=0.3)
    source = decoded(shared_dir / "video" / "cutBunny.mp4", limit=8)
    for a, b in zip(source, decoded(out)):
        mse = np.mean((a.astype(float) - b) ** 2)
        assert 10 * np.log10(255**2 / mse) > 35
        assert np.abs(a.mean((0, 1)) - b.mean((0, 1))).max() < 2.5


def test_sound_in_another_codec_is_re_encoded_to_aac(tmp_path: Path) -> None:
    webm = make_clip(tmp_path / "clip.webm", vcodec="libvpx-vp9", audio="libopus", sample_rate=48_000)
    out = tmp_path / "out.mp4"
    report = stylize_video(webm, out, paint=negative)
    got = streams(out)
    assert report.audio == "re-encoded (opus -> aac)"
    assert got["audio"]["codec"] == "aac"
    assert got["audio"]["duration"] == pytest.approx(1.0, abs=0.05)
    assert got["video"]["frames"] == 12


def test_variable_frame_rate_timing_is_kept(tmp_path: Path) -> None:
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 0.9, 1.0]
    vfr = make_clip(tmp_path / "vfr.mp4", frames=8, times=times, fps=10)
    out = tmp_path / "out.mp4"
    stylize_video(vfr, out, paint=negative)
    assert streams(out)["video"]["times"] == pytest.approx(times, abs=1e-3)


def test_fps_resamples_and_paints_only_the_frames_shown(clip: Path, tmp_path: Path) -> None:
    painted = []

    def paint(frames: torch.Tensor) -> torch.Tensor:
        painted.append(frames.shape[0])
        return 1.0 - frames

    out = tmp_path / "out.mp4"
    report = stylize_video(clip, out, paint=paint, fps=6)
    got = streams(out)
    assert got["video"]["frames"] == 6 and sum(painted) == 6
    assert got["video"]["duration"] == pytest.approx(1.0, abs=1 / 6)
    assert report.fps == pytest.approx(6)

    painted.clear()
    stylize_video(clip, out, paint=paint, fps=24)
    got = streams(out)
    assert got["video"]["frames"] == 24 and sum(painted) == 12  # each frame painted once, shown twice


def test_max_seconds_keeps_only_the_start_of_pictures_and_sound(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    report = stylize_video(clip, out, paint=negative, max_seconds=0.5)
    got = streams(out)
    assert got["video"]["frames"] == 6 and report.duration == pytest.approx(0.5)
    assert got["audio"]["duration"] == pytest.approx(0.5, abs=0.05)


def test_frames_are_painted_in_small_batches(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=10, audio=None)
    batches = []

    def paint(frames: torch.Tensor) -> torch.Tensor:
        batches.append(frames.shape[0])
        return frames

    stylize_video(clip, tmp_path / "out.mp4", paint=paint, batch_size=4)
    assert batches == [4, 4, 2]


def test_progress_counts_frames(clip: Path, tmp_path: Path) -> None:
    seen = []
    stylize_video(clip, tmp_path / "out.mp4", paint=negative, progress=seen.append)
    assert {p.stage for p in seen} == {"frames"}
    assert [p.step for p in seen] == [4, 8, 12] and seen[-1].total == 12


# ----------------------------------------------------------------------------- size, shape, GIF


def test_size_sets_the_longest_side_and_dimensions_stay_even(tmp_path: Path) -> None:
    odd = make_clip(tmp_path / "odd.mp4", width=66, height=50, audio=None)
    info = probe(odd)
    assert output_size(info) == (66, 50)
    assert output_size(info, 33) == (32, 24)  # 33x25 rounded down to even for yuv420p
    report = stylize_video(odd, tmp_path / "out.mp4", paint=negative, size=33)
    assert (report.width, report.height) == (32, 24)
    assert decoded(tmp_path / "out.mp4")[0].shape == (24, 32, 3)


def test_a_portrait_phone_clip_is_painted_upright(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # shown turned a quarter counter-clockwise
        for i in range(3):
            image = np.zeros((32, 64, 3), np.uint8)
            image[:8, :8] = 255  # a white mark in the stored frame's top-left corner
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = tmp_path / "out.mp4"
    stylize_video(path, out, paint=lambda x: x, temporal=False)
    first = decoded(out)[0].mean(-1)
    assert first.shape == (64, 32)
    rows, cols = np.nonzero(first > 128)
    assert rows.min() >= 52 and cols.max() <= 11  # turned counter-clockwise: now bottom-left


def test_a_gif_becomes_a_gif_with_its_delays(tmp_path: Path) -> None:
    gif = make_gif(tmp_path / "in.gif", [100, 100, 200, 50, 100])
    out = tmp_path / "out.gif"
    report = stylize_video(gif, out, paint=negative)
    with Image.open(out) as image:
        assert image.n_frames == 5
        delays = []
        for index in range(image.n_frames):
            image.seek(index)
            delays.append(image.info["duration"])
        first = np.asarray(image.convert("RGB"))
    assert delays == [100, 100, 200, 50, 100]
    assert report.audio == "none" and report.frames == 5
    last_source = np.asarray(Image.open(gif).convert("RGB"))
    assert first.shape == last_source.shape


def test_a_gif_becomes_an_mp4(tmp_path: Path) -> None:
    gif = make_gif(tmp_path / "in.gif", [100, 100, 200, 50, 100])
    out = tmp_path / "out.mp4"
    stylize_video(gif, out, paint=negative)
    got = streams(out)
    assert got["video"]["frames"] == 5
    assert got["video"]["times"] == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.45], abs=1e-3)


def test_a_clip_becomes_a_gif_without_its_sound(clip: Path, tmp_path: Path) -> None:
    report = stylize_video(clip, tmp_path / "out.gif", paint=negative)
    assert report.frames == 12 and report.audio == "dropped (GIF has no sound)"
    with Image.open(tmp_path / "out.gif") as image:
        assert image.n_frames == 12


def test_a_transparent_gif_is_painted_on_white(tmp_path: Path) -> None:
    path = tmp_path / "logo.gif"
    frames = []
    for shift in range(3):
        image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
        image.paste((200, 30, 30, 255), (4 + shift, 4, 20 + shift, 20))
        frames.append(image)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, disposal=2)
    out = tmp_path / "out.mp4"
    stylize_video(path, out, paint=lambda x: x, temporal=False)
    corner = decoded(out)[0][-6:, -6:].mean((0, 1))
    assert (corner > 235).all()


# ----------------------------------------------------------------------------- the shared clips, painted


class CachedPainter:
    """MicroAST with one style; a frame painted once is remembered (on and off see the same)."""

    def __init__(self, models_dir: Path, style_dir: Path) -> None:
        from atelier.install import models
        from atelier.art.blocks.images import decode_image, fit_longest, to_tensor
        from atelier.art.engines.microast import load_microast

        self.engine = load_microast(**models.require("microast", models_dir=models_dir))
        painting = decode_image(style_dir / "starry_night.jpg", max_pixels=40_000_000, max_bytes=30 << 20)
        self.style = self.engine.encode_style(to_tensor(fit_longest(painting, 256)))
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(frames.numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.engine.decode(self.engine.encode_content(frames), [self.style])
        return self.cache[key]


@pytest.fixture(scope="module")
def painter(models_dir: Path, style_dir: Path) -> CachedPainter:
    return CachedPainter(models_dir, style_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "frames", "fps"),
    [("cutBunny.mp4", 128, 240, 24), ("gordic_example_1080p_1s.mp4", 192, 30, 30)],
)
def test_shared_clips_come_out_whole_with_sound_and_steadier(
    name: str, size: int, frames: int, fps: int, shared_dir: Path, tmp_path: Path, painter: CachedPainter
) -> None:
    clip = shared_dir / "video" / name
    source = streams(clip)
    reports = {}
    for temporal in (False, True):
        out = tmp_path / f"{temporal}.mp4"
        reports[temporal] = report = stylize_video(clip, out, paint=painter, size=size, temporal=temporal)
        got = streams(out)
        assert abs(got["video"]["frames"] - frames) <= 1
        assert got["video"]["duration"] == pytest.approx(source["video"]["duration"], abs=1 / fps)
        assert report.fps == pytest.approx(fps, rel=0.01)
        assert got["audio"]["codec"] == "aac"
        assert got["audio"]["duration"] == pytest.approx(source["audio"]["duration"], abs=0.05)
    off, on = reports[False], reports[True]
    assert off.flicker is not None and on.flicker is not None and on.input_flicker is not None
    # Clearly steadier: a quarter less flicker in all, and the flicker the painting adds on top
    # of the clip's own (compression noise, warping error) down by more than a third. (Measured
    # here: 3.24 -> 2.16 over 1.07 for the bunny, 1.86 -> 1.28 over 0.70 for the 1080p clip.)
    assert on.flicker < 0.75 * off.flicker
    assert on.flicker - on.input_flicker < 0.65 * (off.flicker - off.input_flicker)
    assert on.flicker > on.input_flicker  # ...but not by freezing the picture


# ----------------------------------------------------------------------------- parts and joins


def test_a_clip_painted_in_parts_and_joined_is_the_clip_painted_in_one_pass(tmp_path: Path) -> None:
    """Three parts (a lead-in of 4 frames each), joined: the same frames, timing and sound as
    one pass, and the steadied frames at each join within a compression step of one pass's."""
    clip = make_clip(tmp_path / "clip.mp4", frames=30, width=96, height=64)
    whole = tmp_path / "whole.mp4"
    stylize_video(clip, whole, paint=negative, crf=12)
    parts = []
    for k, (start, end) in enumerate([(0, 10), (10, 20), (20, None)]):
        part = tmp_path / f"part{k}.mp4"
        report = stylize_video(clip, part, paint=negative, frames=(start, end), lead_in=4, audio=False, crf=12)
        assert report.frames == 10 and report.audio == "none"
        parts.append(part)
    joined = tmp_path / "joined.mp4"
    join_video(clip, parts, joined, crf=12)
    got, one = streams(joined), streams(whole)
    assert got["video"]["frames"] == 30
    assert got["video"]["times"] == pytest.approx(one["video"]["times"], abs=1e-3)
    assert got["audio"]["codec"] == "aac" and got["audio"]["duration"] == pytest.approx(one["audio"]["duration"], abs=0.05)
    a, b = decoded(whole), decoded(joined)
    differences = [float(np.abs(x.astype(int) - y).mean()) for x, y in zip(a, b)]
    # The first frame of a part that started cold would be the raw painting, not the steadied one.
    assert max(differences) < 3, differences


def test_a_part_without_a_lead_in_starts_cold(tmp_path: Path) -> None:
    """What the lead-in is for: without it, a part's first frame is not blended with what came
    before, and differs from one pass's more than with it."""
    clip = make_clip(tmp_path / "clip.mp4", frames=16, width=96, height=64)

    def jittery(frames: torch.Tensor) -> torch.Tensor:
        # Brush strokes that boil: a different pattern every frame (what blending smooths).
        # Seeded by each frame's own content, so a frame gets the same strokes in any batch.
        noise = torch.stack([
            torch.rand(frame.shape, generator=torch.Generator().manual_seed(int(frame.sum().item() * 1000) % 2**31)) for frame in frames
        ])
        return (0.7 * frames + 0.3 * noise).clamp(0, 1)

    whole = tmp_path / "whole.mp4"
    stylize_video(clip, whole, paint=jittery, crf=10)
    first = {}
    for lead in (0, 6):
        part = tmp_path / f"part-{lead}.mp4"
        stylize_video(clip, part, paint=jittery, frames=(8, None), lead_in=lead, audio=False, crf=10)
        first[lead] = float(np.abs(decoded(whole)[8].astype(int) - decoded(part, limit=1)[0]).mean())
    assert first[6] < 0.5 * first[0], first


def test_parts_that_do_not_hold_the_clip_are_refused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    part = tmp_path / "part.mp4"
    stylize_video(clip, part, paint=negative, frames=(0, 6), audio=False)
    with pytest.raises(VideoError, match="fewer than the clip"):
        join_video(clip, [part], tmp_path / "short.mp4")
    with pytest.raises(VideoError, match="more than the clip"):
        join_video(clip, [part, part, part], tmp_path / "long.mp4")
    assert not (tmp_path / "short.mp4").exists() and not (tmp_path / "long.mp4").exists()
    with pytest.raises(ValueError):
        stylize_video(clip, part, paint=negative, frames=(6, 6))
