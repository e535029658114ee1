"""Audio decoding, resampling and windowing on tones made here, whose frequency and onset are known."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from omniground.media import Audio, MediaError, audio_windows, load_audio


def write_audio(path, channels: np.ndarray, rate: int, codec: str, **options) -> None:
    """Encode `channels` (C, T) float32 in [-1, 1] at `rate` Hz with `codec` into `path` (container from suffix)."""
    layout = {1: "mono", 2: "stereo"}[channels.shape[0]]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        stream.options = options
        if channels.shape[1] == 0:
            container.start_encoding()  # a valid header with no samples
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels, np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        container.mux(stream.encode(frame))  # PyAV re-chunks to the codec's frame size and sample format
        container.mux(stream.encode(None))


def tone(hz: float, seconds: float, rate: int, amplitude: float = 0.5, onset: float = 0.0, offset=None) -> np.ndarray:
    """(T,) sine of `hz` that sounds only between `onset` and `offset` seconds."""
    t = np.arange(round(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * hz * t)
    wave[(t < onset) | (t >= (seconds if offset is None else offset))] = 0.0
    return wave.astype(np.float32)


def dominant_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples))
    return float(np.fft.rfftfreq(audio.samples.size, 1 / audio.sample_rate)[spectrum.argmax()])


FORMATS = [  # (file name, codec, source rate): every encoder this PyAV build has, in its usual container
    ("pcm.wav", "pcm_s16le", 44100),
    ("lossless.flac", "flac", 44100),
    ("speech.ogg", "libopus", 48000),
    ("song.mp3", "libmp3lame", 44100),
    ("track.m4a", "aac", 44100),
]


@pytest.mark.parametrize("name,codec,rate", FORMATS)
def test_any_codec_becomes_mono_float32_at_16k(tmp_path, name, codec, rate):
    path = tmp_path / name
    write_audio(path, np.stack([tone(440, 1.5, rate), tone(440, 1.5, rate)]), rate, codec)
    audio = load_audio(path)
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration == audio.samples.size / 16000
    assert audio.duration == pytest.approx(1.5, abs=0.08)  # lossy codecs add up to a frame of padding
    assert dominant_hz(audio) == pytest.approx(440, abs=2)
    assert np.abs(audio.samples).max() <= 1.0
    assert np.percentile(np.abs(audio.samples), 99.5) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 48000])
def test_resamples_to_the_requested_rate(tmp_path, sample_rate):
    path = tmp_path / "tone.wav"
    write_audio(path, tone(1000, 2.0, 44100)[None], 44100, "pcm_s16le")
    audio = load_audio(path, sample_rate=sample_rate)
    assert audio.samples.size == pytest.approx(2.0 * sample_rate, abs=2)
    assert dominant_hz(audio) == pytest.approx(1000, abs=1)


def test_channels_are_averaged_without_clipping(tmp_path):
    path = tmp_path / "stereo.wav"
    loud = np.sign(tone(100, 1.0, 16000, amplitude=1.0)) * 0.99  # a full-scale square wave on both channels
    write_audio(path, np.stack([loud, loud * 0.5]), 16000, "pcm_s16le")
    audio = load_audio(path)  # same rate: the samples are the plain channel mean
    np.testing.assert_allclose(audio.samples, (loud + loud * 0.5) / 2, atol=1e-3)


def test_onset_survives_resampling_and_windows_report_it(tmp_path):
    path = tmp_path / "onset.flac"
    write_audio(path, tone(440, 2.0, 44100, onset=0.5, offset=1.0)[None], 44100, "flac")
    audio = load_audio(path)
    first_loud = np.flatnonzero(np.abs(audio.samples) > 0.1)[0]
    assert first_loud / 16000 == pytest.approx(0.5, abs=0.002)
    windows, starts = audio_windows(audio, window_s=0.25)
    np.testing.assert_allclose(starts, np.arange(8) * 0.25)
    loud = np.sqrt((windows**2).mean(axis=1)) > 0.1  # (W,) which windows hold the tone
    assert loud.tolist() == [False, False, True, True, False, False, False, False]


def test_windows_cover_the_whole_clip_and_pad_the_last():
    audio = Audio(samples=np.arange(1, 12, dtype=np.float32), sample_rate=10, duration=1.1)  # 11 samples
    windows, starts = audio_windows(audio, window_s=0.4, hop_s=0.3)  # L = 4, hop = 3
    assert windows.dtype == np.float32 and windows.shape == (4, 4)
    np.testing.assert_allclose(starts, [0.0, 0.3, 0.6, 0.9])
    np.testing.assert_array_equal(windows[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(windows[2], [7, 8, 9, 10])
    np.testing.assert_array_equal(windows[3], [10, 11, 0, 0])  # zero-padded past the end


def test_windows_stop_once_the_end_is_covered():
    audio = Audio(samples=np.ones(10, np.float32), sample_rate=10, duration=1.0)
    windows, starts = audio_windows(audio, window_s=0.4, hop_s=0.3)  # starts 0, 3, 6: the third ends at 10
    assert windows.shape == (3, 4) and windows.min() == 1.0
    windows, starts = audio_windows(audio, window_s=0.5)  # hop defaults to the window: no overlap
    np.testing.assert_allclose(starts, [0.0, 0.5])
    windows, starts = audio_windows(audio, window_s=2.0)  # longer than the clip: one padded window
    assert windows.shape == (1, 20) and windows[0, :10].sum() == 10 and windows[0, 10:].sum() == 0
    with pytest.raises(ValueError):
        audio_windows(audio, window_s=0.0)
    empty = Audio(samples=np.zeros(0, np.float32), sample_rate=10, duration=0.0)
    assert audio_windows(empty, window_s=0.5)[0].shape == (0, 5)


def test_limits_and_arguments(tmp_path):
    path = tmp_path / "tone.wav"
    write_audio(path, tone(440, 2.0, 16000)[None], 16000, "pcm_s16le")
    with pytest.raises(MediaError, match="too long"):
        load_audio(path, max_duration=1.0)
    with pytest.raises(MediaError, match="too large"):
        load_audio(path, max_bytes=1000)
    with pytest.raises(ValueError):
        load_audio(path, sample_rate=0)


def test_bad_files_raise_one_line_media_errors(tmp_path):
    wav = tmp_path / "good.wav"
    write_audio(wav, tone(440, 2.0, 16000)[None], 16000, "pcm_s16le")
    data = wav.read_bytes()
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) * 2 // 5])
    (tmp_path / "garbage.wav").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    (tmp_path / "text.mp3").write_text("lyrics, not audio\n" * 40)
    Image.new("RGB", (16, 16), "blue").save(tmp_path / "picture.png")
    write_audio(tmp_path / "silent.wav", np.zeros((1, 0), np.float32), 16000, "pcm_s16le")
    with av.open(str(tmp_path / "mute.mp4"), "w") as container:  # a video with no sound track
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    cases = {
        "missing.wav": "not found",
        "empty.wav": "empty",
        "truncated.wav": "truncated",
        "garbage.wav": "not a readable",
        "text.mp3": "not a readable",
        "picture.png": "still image",
        "silent.wav": "zero duration",
        "mute.mp4": "video without a sound track",
    }
    for name, problem in cases.items():
        with pytest.raises(MediaError) as caught:
            load_audio(tmp_path / name)
        message = str(caught.value)
        assert name in message and problem in message and "\n" not in message, message
