"""Long clips in parts: the clip job cuts a clip longer than 1.5 x ATELIER_VIDEO_CHUNK_SECONDS
into parts (video.chunk jobs any worker claims), waits for them in the queue without holding a
worker, and joins them in order -- the same frames and timing as one job, the temporal blending
carried across each join by the parts' lead-in frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from atelier.service import videos
from atelier.service.context import Services
from atelier.service.uploads import store_upload
from atelier.service.worker import Worker
from atelier.store.db import JobStatus

from tests.service.service_fixtures import make_settings, tiny_clip


@pytest.fixture
def services(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    # A 2 s clip in parts of about 0.5 s: four parts.
    services = Services.open(make_settings(tmp_path, models_dir, video_chunk_seconds=0.5, video_chunk_lead_frames=8))
    monkeypatch.setattr(videos, "PARTS_POLL_SECONDS", 0.05)
    yield services
    services.close()


@pytest.fixture
def clip(tmp_path: Path, content_dir: Path) -> bytes:
    return tiny_clip(tmp_path / "pan.mp4", content_dir / "dog.jpg", frames=24, fps=12).read_bytes()


def frames_of(data: bytes, tmp_path: Path) -> list[np.ndarray]:
    path = tmp_path / "decoded.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def run_until_done(services: Services, video_id: str, workers: list[Worker]) -> list[str]:
    """Let the workers take turns until the clip is finished; what each run did, in order."""
    outcomes: list[str] = []
    for _ in range(200):
        view = videos.get_video(services, video_id)
        assert view is not None
        if view.status in ("done", "failed"):
            return outcomes
        for worker in workers:
            outcomes.append(f"{worker.worker_id}:{worker.run_once() or 'idle'}")
    raise AssertionError(f"the clip did not finish: {outcomes[-12:]}")


def test_plan_parts_cuts_only_long_clips_with_an_exact_frame_count() -> None:
    from atelier.art.engines.video import VideoInfo

    def info(seconds: float, frames: int, *, exact: bool = True, container: str = "mov,mp4") -> VideoInfo:
        return VideoInfo(path=Path("x.mp4"), container=container, codec="h264", width=64, height=48, fps=frames / seconds,
                         frames=frames, frames_exact=exact, duration=seconds, has_audio=False)

    assert videos.plan_parts(info(60, 1440), chunk_seconds=20) == [(0, 480), (480, 960), (960, None)]
    assert videos.plan_parts(info(29, 696), chunk_seconds=20) is None  # under 1.5 parts: one job
    assert videos.plan_parts(info(60, 1440), chunk_seconds=0) is None  # turned off
    assert videos.plan_parts(info(60, 1440, exact=False), chunk_seconds=20) is None
    assert videos.plan_parts(info(60, 600, container="gif"), chunk_seconds=20) is None
    parts = videos.plan_parts(info(10, 101), chunk_seconds=3)
    assert parts is not None and parts[0][0] == 0 and parts[-1][1] is None
    assert all(end == nxt for (_, end), (nxt, _) in zip(parts, parts[1:]))  # every frame once


def test_a_long_clip_is_painted_in_parts_by_several_workers_and_joined_in_order(
    services: Services, clip: bytes, tmp_path: Path
) -> None:
    upload, _ = store_upload(services, clip, kind="video")
    whole = videos.order_video(services, upload=upload, style_name="candy", size=96)
    services.settings.video_chunk_seconds = 0  # the same clip as one job, for comparison
    assert Worker(services, worker_id="alone").run_once() == "done"
    services.settings.video_chunk_seconds = 0.5
    split = videos.order_video(services, upload=upload, style_name="candy", size=96)

    first = Worker(services, worker_id="w1")
    assert first.run_once() == "deferred"  # cut into parts, then back to the queue
    parts = videos.video_parts(services, split.id)
    assert [part.payload["frames"] for part in parts] == [[0, 6], [6, 12], [12, 18], [18, None]]
    assert all(part.status == JobStatus.QUEUED and part.payload["lead_in"] == 8 for part in parts)
    assert videos.get_video(services, split.id).status == "processing"  # type: ignore[union-attr]
    outcomes = run_until_done(services, split.id, [first, Worker(services, worker_id="w2"), Worker(services, worker_id="w3")])
    painted_by = {part.result["worker"] for part in videos.video_parts(services, split.id)}  # type: ignore[index]
    assert painted_by == {"w1", "w2", "w3"}, outcomes

    view = videos.get_video(services, split.id)
    assert view is not None and view.status == "done" and view.progress == 1.0
    one = frames_of(services.blobs.read(videos.video_key(whole.id)), tmp_path)
    joined = frames_of(services.blobs.read(videos.video_key(split.id)), tmp_path)
    assert len(joined) == len(one) == 24
    differences = [float(np.abs(a.astype(int) - b).mean()) for a, b in zip(one, joined)]
    # The same painting through one more encode (another painting would differ by tens of
    # levels), and no worse at the joins (frames 6, 12, 18) than inside the parts: with the
    # lead-in the blending arrives there as in one pass (measured: 4.0-4.2 at the joins, 3.7-4.4
    # inside; with a 3-frame lead-in the joins stood out at 4.9-5.4). After other tests in the
    # same process (another torch thread count) one join measured 5.07 against a median of
    # 4.34 inside (1.17x): the bar is 1.25x the median, and the mean of the joins 1.15x.
    joins = [differences[i] for i in (6, 12, 18)]
    inside = sorted(d for i, d in enumerate(differences) if i not in (6, 12, 18))
    assert max(differences) < 6, differences
    assert max(joins) < 1.25 * inside[len(inside) // 2], differences
    assert sum(joins) / len(joins) < 1.15 * inside[len(inside) // 2], differences
    for index in range(4):  # the parts are gone once joined
        assert not services.blobs.exists(videos.part_key(split.id, index))


def test_a_part_that_fails_for_good_fails_the_clip(services: Services, clip: bytes) -> None:
    upload, _ = store_upload(services, clip, kind="video")
    view = videos.order_video(services, upload=upload, style_name="candy", size=96)
    worker = Worker(services, worker_id="w1")
    assert worker.run_once() == "deferred"
    doomed = videos.video_parts(services, view.id)[1]
    services.queue.cancel(doomed.id)
    run_until_done(services, view.id, [worker])
    assert videos.get_video(services, view.id).status == "failed"  # type: ignore[union-attr]
    # The other parts are stopped (or were done) and nothing they painted is left behind.
    assert all(part.status in (JobStatus.CANCELLED, JobStatus.DONE) for part in videos.video_parts(services, view.id))
    assert not any(services.blobs.exists(videos.part_key(view.id, index)) for index in range(4))


def test_parts_of_a_clip_the_operator_cancelled_are_not_painted(services: Services, clip: bytes) -> None:
    upload, _ = store_upload(services, clip, kind="video")
    view = videos.order_video(services, upload=upload, style_name="candy", size=96)
    worker = Worker(services, worker_id="w1")
    assert worker.run_once() == "deferred"
    clip_job = services.queue.find(videos.VIDEO_JOB, videos.video_key(view.id))
    assert clip_job is not None and services.queue.cancel(clip_job.id)
    outcomes = [worker.run_once() for _ in range(4)]
    assert outcomes == ["failed"] * 4  # each part refuses at once: nobody would join it
    assert not any(services.blobs.exists(videos.part_key(view.id, index)) for index in range(4))


def test_a_long_clip_over_the_limits_is_refused_before_it_is_cut(services: Services, clip: bytes) -> None:
    services.settings.video_max_seconds = 1.0  # the clip is 2 s
    upload, _ = store_upload(services, clip, kind="video")
    view = videos.order_video(services, upload=upload, style_name="candy", size=96)
    assert Worker(services, worker_id="w1").run_once() == "failed"
    assert videos.video_parts(services, view.id) == []
    assert videos.get_video(services, view.id).status == "failed"  # type: ignore[union-attr]
