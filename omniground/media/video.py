"""Video probing and deterministic frame sampling with PyAV.

Temporal grounding answers in fractions of the clip, so every sampled frame comes with the exact time it is
shown (its presentation timestamp), never an index * (1 / fps) guess that is wrong for variable-frame-rate files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av
import numpy as np

from omniground.media.container import is_still_image, open_container, video_streams
from omniground.media.errors import MediaError
from omniground.media.image import MAX_PIXELS

MAX_VIDEO_BYTES = 16 * 1024**3
MAX_DURATION = 4 * 3600.0  # seconds; longer files are almost always a mistake in a grounding dataset

# Containers whose per-stream duration is written exactly by the muxer, so a shortfall in decoded frames
# means the file was cut short (elsewhere the duration may be an estimate and a shortfall proves nothing).
_EXACT_DURATION_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")
_TRUNCATED_BELOW = 0.9  # fraction of the promised duration that must decode


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, read from its header (plus one decoded frame, for the display rotation)."""

    duration: float  # seconds, from the stream's start to the end of its last frame
    fps: float  # average frames per second (the mean rate of a variable-frame-rate file)
    width: int  # display size: rotation metadata (phone videos) is already applied
    height: int
    num_frames: int
    has_audio: bool


@dataclass(frozen=True, eq=False)
class VideoFrames:
    """Frames sampled from a video, each with the time it is on screen."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (N,) float64 seconds since the video stream's start, non-decreasing
    info: VideoInfo


@dataclass(frozen=True)
class _StreamFacts:
    info: VideoInfo
    start: float  # seconds: the stream's first presentation time, our zero
    rotation: int  # quarter turns counter-clockwise needed for display (np.rot90's k)
    exact_duration: bool  # the duration came from an exact header, so a shortfall means truncation


def probe_video(
    path: str | os.PathLike,
    max_bytes: int = MAX_VIDEO_BYTES,
    max_duration: float = MAX_DURATION,
    max_pixels: int = MAX_PIXELS,
) -> VideoInfo:
    """Duration, frame rate, display size, frame count and audio presence of a video file.

    Cheap: reads the header and decodes a single frame (which also proves the stream is decodable). Files
    whose header lacks a frame count or duration (e.g. WebM) are demuxed once, without decoding, to count.
    """
    return _read_stream_facts(path, max_bytes, max_duration, max_pixels).info


def sample_frames(
    path: str | os.PathLike,
    num_frames: int,
    max_bytes: int = MAX_VIDEO_BYTES,
    max_duration: float = MAX_DURATION,
    max_pixels: int = MAX_PIXELS,
) -> VideoFrames:
    """`num_frames` frames spread uniformly over the whole clip, with their exact presentation timestamps.

    The clip is cut into `num_frames` equal segments and each segment's centre is a target time; the frame
    sampled for a target is the one on screen at that time (the last frame whose timestamp is <= target).
    The file is decoded once, front to back, so the result is identical on every run.

    A clip with at most `num_frames` frames returns all of them, each once, rather than padding with
    duplicates (the caller sees N < num_frames and can pad as it likes). A longer clip always returns
    exactly `num_frames`; two targets share a frame only when a variable-frame-rate file holds one frame
    on screen across both, since that frame is what a viewer sees at both times.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    facts = _read_stream_facts(path, max_bytes, max_duration, max_pixels)
    info = facts.info
    targets = (np.arange(num_frames) + 0.5) * (info.duration / num_frames)  # (N,) seconds since start

    chosen: list[np.ndarray] = []  # one (H, W, 3) per target, in target order
    chosen_times: list[float] = []
    head: list[tuple[float, av.VideoFrame]] = []  # the first N frames, kept in case the clip is that short
    converted: dict[int, np.ndarray] = {}  # frame index -> RGB, so a frame shared by targets converts once
    previous: tuple[int, float, av.VideoFrame] | None = None
    next_target = 0
    decoded = 0
    last_time = 0.0
    with open_container(path, max_bytes) as container:
        stream = video_streams(container)[0]
        stream.codec_context.thread_type = "AUTO"  # frame threads; output order and pixels are unchanged
        for frame in container.decode(stream):
            time = _frame_time(frame, facts.start, last_time, info.fps, decoded)
            # Every target before this frame's time is showing the previous frame (or, before the first
            # frame, this one): those targets are final.
            while next_target < num_frames and targets[next_target] < time:
                index, shown_time, shown = previous if previous is not None else (decoded, time, frame)
                if index not in converted:
                    converted = {index: _to_rgb(shown, info, facts.rotation)}  # older frames are never shown again
                chosen.append(converted[index])
                chosen_times.append(shown_time)
                next_target += 1
            if decoded < num_frames:
                head.append((time, frame))
            elif head:
                head.clear()  # more frames than targets: uniform sampling applies
            previous = (decoded, time, frame)
            decoded += 1
            last_time = time

    if decoded == 0:
        raise MediaError(path, "no video frame could be decoded")
    if facts.exact_duration and last_time + 1.0 / info.fps < _TRUNCATED_BELOW * info.duration:
        raise MediaError(path, f"truncated: frames end at {last_time:.2f}s but the header says {info.duration:.2f}s")
    if decoded <= num_frames:
        frames = [_to_rgb(frame, info, facts.rotation) for _, frame in head]
        times = [time for time, _ in head]
    else:
        index, shown_time, shown = previous  # targets after the last frame's time show the last frame
        last_rgb = converted.get(index)
        if last_rgb is None:
            last_rgb = _to_rgb(shown, info, facts.rotation)
        frames = chosen + [last_rgb] * (num_frames - next_target)
        times = chosen_times + [shown_time] * (num_frames - next_target)
    return VideoFrames(
        frames=np.stack(frames),  # (N, H, W, 3)
        timestamps=np.asarray(times, dtype=np.float64),  # (N,)
        info=info,
    )


def _frame_time(frame: av.VideoFrame, start: float, last_time: float, fps: float, decoded: int) -> float:
    """Presentation time in seconds since the stream start; a frame without a timestamp follows the last one."""
    if frame.pts is None or frame.time is None:
        return last_time + 1.0 / fps if decoded else 0.0
    return float(frame.time) - start


def _to_rgb(frame: av.VideoFrame, info: VideoInfo, rotation: int) -> np.ndarray:
    """Decoded frame -> (H, W, 3) uint8 at the stream's display size (also evens out mid-stream size changes)."""
    coded_w, coded_h = (info.height, info.width) if rotation % 2 else (info.width, info.height)
    rgb = frame.to_ndarray(format="rgb24", width=coded_w, height=coded_h)  # (coded_h, coded_w, 3)
    return np.ascontiguousarray(np.rot90(rgb, k=rotation)) if rotation else rgb


def _read_stream_facts(path, max_bytes: int, max_duration: float, max_pixels: int) -> _StreamFacts:
    """Header facts, then one demux pass (no decoding) for the exact frame count and end time.

    Headers are not trusted for the duration: MP4 derives it from decode timestamps, which undershoot the
    last frame's presentation time by the B-frame delay (seconds, in a variable-frame-rate file).
    """
    with open_container(path, max_bytes) as container:
        if is_still_image(container):
            raise MediaError(path, f"a still image ({container.format.name}), not a video")
        streams = video_streams(container)
        if not streams:
            kind = "an audio-only file" if container.streams.audio else "no video stream"
            raise MediaError(path, f"not a video: {kind}")
        stream = streams[0]
        time_base = stream.time_base
        header_duration = float(stream.duration * time_base) if stream.duration else None
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise MediaError(path, f"frames too large ({width}x{height} > limit {max_pixels:,} pixels)")
        if header_duration is not None and header_duration > max_duration:
            raise MediaError(path, f"too long ({header_duration:.1f}s > limit {max_duration:.0f}s)")

        has_audio = bool(container.streams.audio)
        # a packet that does not say how long it is shown (WebM's last one) counts as one average frame
        frame_ticks = round(1 / (fps * time_base)) if fps else 0
        num_frames, first_pts, end_pts, first = 0, None, None, None
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at end of stream
                continue
            num_frames += 1
            if packet.pts is not None:
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                end = packet.pts + (packet.duration or frame_ticks)
                end_pts = end if end_pts is None else max(end_pts, end)
            if first is None:  # decode just enough for one frame: it proves the stream decodes, and rotation
                first = next(iter(packet.decode()), None)
        if first is None:
            first = next(iter(stream.codec_context.decode(None)), None)  # frames held back by reordering
        if first is None:
            raise MediaError(path, "no video frame could be decoded (zero duration)")
        exact_duration = header_duration is not None and container.format.name.split(",")[0] in _EXACT_DURATION_FORMATS

    if stream.start_time is not None:
        start = float(stream.start_time * time_base)
    else:
        start = float(first_pts * time_base) if first_pts is not None else 0.0
    if end_pts is not None:
        duration = float(end_pts * time_base) - start
    else:
        duration = header_duration
    if not duration or duration <= 0:
        raise MediaError(path, "zero duration")
    if duration > max_duration:
        raise MediaError(path, f"too long ({duration:.1f}s > limit {max_duration:.0f}s)")
    # frame.rotation is the counter-clockwise angle the display matrix asks for; rot90 also turns ccw.
    rotation = round(first.rotation / 90) % 4
    width, height = (first.height, first.width) if rotation % 2 else (first.width, first.height)
    info = VideoInfo(
        duration=duration,
        fps=fps if fps else num_frames / duration,
        width=width,
        height=height,
        num_frames=num_frames,
        has_audio=has_audio,
    )
    return _StreamFacts(info=info, start=start, rotation=rotation, exact_duration=exact_duration)
