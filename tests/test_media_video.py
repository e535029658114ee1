"""Video probing and frame sampling on videos made here, whose frames carry their own index as a bar code."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from omniground.media import MediaError, load_audio, media_type, probe_video, sample_frames

WIDTH, HEIGHT = 64, 48
BITS = 8  # vertical bars, 8 px wide each: bar b is white when bit b of the frame index is set


def index_pattern(index: int) -> np.ndarray:
    """(H, W, 3) uint8 frame whose bars spell `index` in binary; survives lossy codecs unlike a grey level."""
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    bar = WIDTH // BITS
    for b in range(BITS):
        if index >> b & 1:
            frame[:, b * bar : (b + 1) * bar] = 255
    return frame


def read_index(frame: np.ndarray) -> int:
    bar = WIDTH // BITS
    bits = [frame[8:-8, b * bar + 2 : (b + 1) * bar - 2].mean() > 127 for b in range(BITS)]
    return sum(int(bit) << b for b, bit in enumerate(bits))


def write_video(
    path,
    num_frames: int,
    fps: int = 10,
    codec: str = "libx264",
    pts_ms: list[int] | None = None,
    tone_hz: float | None = None,
    rotation: int | None = None,
):
    """Encode frames 0..num_frames-1; `pts_ms` sets each frame's time by hand (variable frame rate)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        rate = 16000
        sound = container.add_stream("aac", rate=rate, layout="mono") if tone_hz is not None else None
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_pattern(i), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if tone_hz is not None:
            t = np.arange(int(rate * num_frames / fps)) / rate
            wave = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None, :]  # (1, T)
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate = rate
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3 s at 10 fps: 30 frames, frame i shown during [i/10, (i+1)/10)."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", 30)


def test_probe_reads_header_facts(clip):
    info = probe_video(clip)
    assert info.duration == pytest.approx(3.0, abs=1e-6)
    assert info.fps == pytest.approx(10.0)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (WIDTH, HEIGHT, 30, False)


def test_uniform_sampling_takes_the_frame_on_screen_at_each_segment_centre(clip):
    result = sample_frames(clip, 8)
    targets = (np.arange(8) + 0.5) * 3.0 / 8  # 0.1875, 0.5625, ...
    expected = np.floor(targets * 10).astype(int)  # frame i is on screen during [i/10, (i+1)/10)
    assert result.frames.shape == (8, HEIGHT, WIDTH, 3) and result.frames.dtype == np.uint8
    assert result.timestamps.dtype == np.float64
    assert [read_index(f) for f in result.frames] == expected.tolist()
    np.testing.assert_allclose(result.timestamps, expected / 10, atol=1e-9)
    assert result.info == probe_video(clip)


def test_sampling_is_identical_run_to_run(clip):
    first, second = sample_frames(clip, 5), sample_frames(clip, 5)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.timestamps, second.timestamps)


def test_as_many_targets_as_frames_gives_every_frame_once(clip):
    result = sample_frames(clip, 30)
    assert [read_index(f) for f in result.frames] == list(range(30))
    np.testing.assert_allclose(result.timestamps, np.arange(30) / 10, atol=1e-9)


def test_fewer_frames_than_requested_returns_each_frame_once(tmp_path):
    path = write_video(tmp_path / "short.mp4", 5)
    result = sample_frames(path, 8)
    assert [read_index(f) for f in result.frames] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(result.timestamps, np.arange(5) / 10, atol=1e-9)


def test_variable_frame_rate_gives_true_timestamps(tmp_path):
    pts_ms = [0, 40, 80, 500, 520, 1400, 1450, 2000, 2900, 2950]
    path = write_video(tmp_path / "vfr.mp4", len(pts_ms), pts_ms=pts_ms)
    info = probe_video(path)
    assert info.num_frames == len(pts_ms)
    assert 2.95 <= info.duration <= 3.1  # last frame starts at 2.95 s and lasts a short while
    result = sample_frames(path, 6)
    pts = np.array(pts_ms) / 1000
    targets = (np.arange(6) + 0.5) * info.duration / 6
    expected = [int(np.searchsorted(pts, t, side="right") - 1) for t in targets]  # last frame with pts <= t
    assert [read_index(f) for f in result.frames] == expected
    np.testing.assert_allclose(result.timestamps, pts[expected], atol=1e-9)
    # a constant-rate guess (index / fps) would have put the 4th frame at 0.3 s, not 0.5 s
    assert 0.5 in np.round(sample_frames(path, len(pts_ms)).timestamps, 6)


def test_webm_vp9(tmp_path):
    path = write_video(tmp_path / "clip.webm", 20, codec="libvpx-vp9")
    info = probe_video(path)
    assert info.num_frames == 20 and info.duration == pytest.approx(2.0, abs=0.01)
    result = sample_frames(path, 4)  # targets 0.25, 0.75, 1.25, 1.75 s
    assert [read_index(f) for f in result.frames] == [2, 7, 12, 17]
    np.testing.assert_allclose(result.timestamps, [0.2, 0.7, 1.2, 1.7], atol=1e-6)


def test_mpeg4_codec(tmp_path):
    path = write_video(tmp_path / "clip.avi", 10, codec="mpeg4")
    result = sample_frames(path, 2)  # targets 0.25, 0.75 s
    assert [read_index(f) for f in result.frames] == [2, 7]


def test_rotation_metadata_is_applied(tmp_path):
    path = write_video(tmp_path / "phone.mp4", 3, rotation=90)  # display: turn 90 degrees counter-clockwise
    info = probe_video(path)
    assert (info.width, info.height) == (HEIGHT, WIDTH)
    frame = sample_frames(path, 1).frames[0]  # frame 1: only bar 0 (left edge) is white
    assert frame.shape == (WIDTH, HEIGHT, 3)
    # turned counter-clockwise, the stored left edge becomes the bottom edge
    assert frame[-4:, :].mean() > 200 and frame[:8, :].mean() < 50


def test_audio_track_of_a_video(tmp_path):
    path = write_video(tmp_path / "talking.mp4", 20, tone_hz=440.0)
    assert probe_video(path).has_audio
    audio = load_audio(path)
    assert audio.duration == pytest.approx(2.0, abs=0.1)
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.fft.rfftfreq(audio.samples.size, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_limits(clip):
    with pytest.raises(MediaError, match="too long"):
        sample_frames(clip, 4, max_duration=2.0)
    with pytest.raises(MediaError, match="too large"):
        probe_video(clip, max_bytes=100)
    with pytest.raises(MediaError, match="frames too large"):
        probe_video(clip, max_pixels=1000)
    with pytest.raises(ValueError):
        sample_frames(clip, 0)


def test_bad_files_raise_one_line_media_errors(tmp_path, clip):
    data = clip.read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    Image.new("RGB", (32, 32), "red").save(tmp_path / "picture.mp4", format="PNG")
    with av.open(str(tmp_path / "nothing.mp4"), "w") as container:  # a valid file with no frames
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = WIDTH, HEIGHT
        container.start_encoding()  # header and trailer, zero samples
    cases = {
        "missing.mp4": "not found",
        "empty.mp4": "empty",
        "truncated.mp4": "not a readable",
        "garbage.mp4": "not a readable",
        "text.mp4": "not a readable",
        "picture.mp4": "still image",
        "nothing.mp4": "no video stream",  # FFmpeg drops a track with zero samples
    }
    for name, problem in cases.items():
        for call in (probe_video, lambda p: sample_frames(p, 4)):
            with pytest.raises(MediaError) as caught:
                call(tmp_path / name)
            message = str(caught.value)
            assert name in message and problem in message and "\n" not in message


def test_audio_file_is_not_a_video(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(MediaError, match="audio-only"):
        probe_video(path)


def test_media_type_looks_at_content_not_name(tmp_path, clip):
    (tmp_path / "video.dat").write_bytes(clip.read_bytes())
    Image.new("RGB", (8, 8)).save(tmp_path / "image.mp4", format="PNG")
    with av.open(str(tmp_path / "sound.png"), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    (tmp_path / "notes.jpg").write_text("shopping list\n" * 20)
    assert media_type(tmp_path / "video.dat") == "video"
    assert media_type(tmp_path / "image.mp4") == "image"
    assert media_type(tmp_path / "sound.png") == "audio"
    with pytest.raises(MediaError, match="notes.jpg"):
        media_type(tmp_path / "notes.jpg")
    with pytest.raises(MediaError, match="not found"):
        media_type(tmp_path / "missing.jpg")
