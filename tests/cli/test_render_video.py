"""`atelier render clip.mp4 -o out.mp4`: clips through the same command as photos, real weights."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from atelier.cli import _register, app
from atelier.cli.render_video import is_video_job, render_video

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    from atelier.config import get_settings

    get_settings.cache_clear()


def make_clip(path: Path, *, frames: int = 8, width: int = 64, height: int = 48, fps: int = 8) -> Path:
    """A small moving picture with a tone as long as it."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (height // 8 + 2, width // 8 + frames, 3), dtype=np.uint8)
    picture = np.kron(blocks, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks, panning 1 px a frame
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=44_100, layout="stereo")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:height, i : i + width]), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        total = 44_100 * frames // fps
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 44_100)).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = tone[start : start + 1024]
            samples = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            samples.sample_rate, samples.pts, samples.time_base = 44_100, start, Fraction(1, 44_100)
            for packet in sound.encode(samples):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    return path


def tracks(path: Path) -> dict[str, object]:
    with av.open(str(path)) as container:
        kinds = {s.type for s in container.streams}
        frames = sum(1 for _ in container.decode(video=0))
        video = container.streams.video[0]
        return {"kinds": kinds, "frames": frames, "size": (video.width, video.height)}


def one_line_error(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


def test_render_paints_a_clip_with_a_filter_and_keeps_frames_and_sound(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["render", str(clip), "-o", str(out), "--style", "candy", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert tracks(out) == {"kinds": {"video", "audio"}, "frames": 8, "size": (48, 36)}
    assert "8 frames, 8 fps, 1.00 s, sound: copied (aac)" in result.stderr
    assert "frames/s" in result.stderr
    assert "flicker" in result.stderr and "temporal consistency on" in result.stderr


def test_render_paints_a_clip_with_a_style_image(clip: Path, tmp_path: Path, style_dir: Path) -> None:
    out = tmp_path / "out.mov"
    result = runner.invoke(
        app,
        ["render", str(clip), "-o", str(out), "--style", str(style_dir / "mosaic.jpg"),
         "--max-seconds", "0.5", "--fps", "4", "--no-temporal"],
    )
    assert result.exit_code == 0, result.output
    assert tracks(out)["frames"] == 2
    assert "temporal consistency off" in result.stderr


def test_render_refuses_a_text_file_named_mp4_in_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video\n" * 50)
    result = runner.invoke(app, ["render", str(fake), "-o", str(tmp_path / "out.mp4"), "--style", "candy"])
    assert result.exit_code == 2
    assert "fake.mp4 is not a video" in one_line_error(result)


def test_render_refuses_an_unknown_video_output_format(clip: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", str(clip), "-o", str(tmp_path / "out.png"), "--style", "candy"])
    assert result.exit_code == 2
    assert "use a .mp4, .m4v, .mov or .gif output file" in one_line_error(result)


def test_render_names_the_command_that_installs_missing_weights(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    result = runner.invoke(
        app, ["render", str(clip), "-o", str(tmp_path / "o.mp4"), "--style", "candy", "--models-dir", str(empty)]
    )
    assert result.exit_code == 2
    assert "atelier models download" in one_line_error(result)


def test_render_refuses_a_filter_name_with_a_style_engine(clip: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["render", str(clip), "-o", str(tmp_path / "o.mp4"), "--style", "candy", "--engine", "microast"]
    )
    assert result.exit_code == 2
    assert "is a filter, not a style image" in one_line_error(result)


def test_a_gif_is_a_clip_when_the_output_is_a_clip() -> None:
    assert is_video_job(Path("a.mp4"), Path("b.mp4"))
    assert is_video_job(Path("a.MKV"), Path("b.gif"))
    assert is_video_job(Path("a.gif"), Path("b.gif"))
    assert is_video_job(Path("a.gif"), Path("b.mp4"))
    assert not is_video_job(Path("a.gif"), Path("b.png"))  # a photo: the first frame
    assert not is_video_job(Path("a.jpg"), Path("b.mp4"))


def test_render_video_turns_a_gif_into_a_gif(tmp_path: Path, models_dir: Path) -> None:
    from PIL import Image

    gif = tmp_path / "in.gif"
    frames = [Image.fromarray(np.full((32, 40, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[80, 80, 160, 80], loop=0)
    out = tmp_path / "out.gif"
    render_video(
        gif, out, style=["mosaic"], style_weights=None, engine="auto", alpha=1.0, preserve_color=False,
        size=None, style_size=256, device="cpu", models_dir=models_dir, fps=None, max_seconds=None, temporal=True,
    )
    with Image.open(out) as image:
        assert image.n_frames == 4 and image.size == (40, 32)


class SettingsWith:
    """The real settings with some video settings set (they live in config.py once added)."""

    def __init__(self, real: object, **overrides: object) -> None:
        self._real, self._overrides = real, overrides

    def __getattr__(self, name: str) -> object:
        return self._overrides[name] if name in self._overrides else getattr(self._real, name)


def test_render_video_takes_its_limits_and_temporal_default_from_the_settings(
    clip: Path, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    import atelier.config

    real = atelier.config.get_settings()
    options = dict(
        style=["candy"], style_weights=None, engine="auto", alpha=1.0, preserve_color=False, size=32,
        style_size=256, device="cpu", models_dir=models_dir, fps=None, max_seconds=None,
    )
    monkeypatch.setattr(atelier.config, "get_settings", lambda: SettingsWith(real, video_max_seconds=0.5))
    with pytest.raises(typer.Exit) as refused:
        render_video(clip, tmp_path / "long.mp4", temporal=None, **options)
    assert refused.value.exit_code == 2
    assert "clips of at most 0.5 s" in capsys.readouterr().err

    monkeypatch.setattr(atelier.config, "get_settings", lambda: SettingsWith(real, video_temporal=False))
    render_video(clip, tmp_path / "a.mp4", temporal=None, **options)
    assert "temporal consistency off" in capsys.readouterr().err
    render_video(clip, tmp_path / "b.mp4", temporal=True, **options)  # the flag wins
    assert "temporal consistency on" in capsys.readouterr().err
