"""Pictures are checked by their pixels: edges where the coordinates say, nothing where they don't."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from omniground.grounding import Box, Span
from omniground.viz import (
    draw_audio_spans,
    draw_boxes,
    draw_video_spans,
    figure_to_image,
    phrase_colors,
    to_png_bytes,
)
from omniground.viz.common import PALETTE, hex_to_rgb, label_text
from omniground.viz.timeline import _envelope

WHITE = (255, 255, 255)


def _close(pixel, color, tol=12) -> bool:
    return all(abs(int(p) - int(c)) <= tol for p, c in zip(pixel[:3], color[:3]))


def _blend(color: str, alpha: float) -> tuple[int, ...]:
    """`color` at `alpha` over white, as Agg composites it."""
    return tuple(round(alpha * c + (1 - alpha) * 255) for c in hex_to_rgb(color))


def _axes(fig: Figure, label: str):
    return next(ax for ax in fig.axes if ax.get_label() == label)


def _pixel(fig: Figure, image: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """Pixel of `image` (the rendered fig) at data (x, y) of `ax`; display y runs up, image rows down."""
    px, py = ax.transData.transform((x, y))
    return image[int(round(fig.bbox.height - py)), int(round(px))]


# ---------------------------------------------------------------------------------------------
# Boxes on images.


def test_box_edges_are_drawn_where_the_box_is_and_nowhere_else():
    image = Image.new("RGB", (400, 300), "white")
    out = np.asarray(draw_boxes(image, [Box(0.25, 0.25, 0.75, 0.75)]))
    assert out.shape == (300, 400, 3)  # no title, no gt: no header band, no rescale
    color = hex_to_rgb(PALETTE[0])
    for x, y in [(100, 150), (299, 150), (200, 75), (200, 224), (100, 75)]:  # on the four edges and a corner
        assert _close(out[y, x], color, tol=0), (x, y, out[y, x])
    for x, y in [(200, 150), (20, 280), (390, 10), (96, 150), (200, 229)]:  # inside, far away, just outside
        assert tuple(out[y, x]) == WHITE, (x, y, out[y, x])
    assert np.asarray(image).min() == 255  # the caller's image is never drawn on


def test_box_touching_the_border_is_drawn_on_the_last_pixels():
    out = np.asarray(draw_boxes(Image.new("RGB", (400, 300), "white"), [Box(0.0, 0.0, 1.0, 1.0)]))
    color = hex_to_rgb(PALETTE[0])
    for x, y in [(0, 150), (399, 150), (200, 0), (200, 299)]:
        assert _close(out[y, x], color, tol=0)
    assert tuple(out[150, 200]) == WHITE


def test_each_phrase_gets_its_own_colour_and_gt_shares_its_phrase_colour():
    boxes = [Box(0.1, 0.3, 0.3, 0.9, "cat"), Box(0.6, 0.3, 0.9, 0.9, "dog")]
    gt = [Box(0.05, 0.2, 0.35, 0.95, "dog")]
    colors = phrase_colors(["cat", "dog", "dog", "bird"])
    assert colors == {"cat": PALETTE[0], "dog": PALETTE[1], "bird": PALETTE[2]}
    out = draw_boxes(Image.new("RGB", (400, 300), "white"), boxes, gt=gt)
    band = out.height - 300  # gt given: a legend band sits on top
    assert band > 0
    px = np.asarray(out)[band:]
    assert _close(px[180, 40], hex_to_rgb(PALETTE[0]), tol=0)  # cat's left edge (x=40)
    assert _close(px[180, 240], hex_to_rgb(PALETTE[1]), tol=0)  # dog's left edge (x=240)
    gt_right_edge = [tuple(px[y, 140]) for y in range(60, 285)]  # gt dog: dashed, in dog's colour
    assert 0.3 < np.mean([_close(p, hex_to_rgb(PALETTE[1]), tol=0) for p in gt_right_edge]) < 0.7
    assert all(_close(p, hex_to_rgb(PALETTE[1]), tol=0) or p == WHITE for p in gt_right_edge)


def test_ground_truth_is_dashed_and_prediction_solid():
    image = Image.new("RGB", (400, 300), "white")
    gt_only = np.asarray(draw_boxes(image, [], gt=[Box(0.1, 0.2, 0.9, 0.8)]))[-300:]
    pred_only = np.asarray(draw_boxes(image, [Box(0.1, 0.2, 0.9, 0.8)]))
    color = hex_to_rgb(PALETTE[0])
    left_edge_gt = [_close(gt_only[y, 40], color, tol=0) for y in range(70, 230)]
    left_edge_pred = [_close(pred_only[y, 40], color, tol=0) for y in range(70, 230)]
    assert all(left_edge_pred)
    assert 0.3 < np.mean(left_edge_gt) < 0.7  # dashes: about half the edge is drawn


def test_label_is_drawn_above_the_box_and_fits_the_image_however_long():
    image = Image.new("RGB", (400, 300), "white")
    plain = np.asarray(draw_boxes(image, [Box(0.25, 0.5, 0.75, 0.9)]))
    labelled = np.asarray(draw_boxes(image, [Box(0.25, 0.5, 0.75, 0.9, "a cat", 0.87)]))
    above = (slice(130, 149), slice(100, 160))  # just above the top edge (y=150), from its left corner
    assert (plain[above] == 255).all()
    assert (labelled[above] != 255).any()  # the filled label tag
    long = np.asarray(draw_boxes(image, [Box(0.9, 0.0, 1.0, 0.1, "word " * 400, 0.5)]))
    assert long.shape == (300, 400, 3)  # a huge label at the border neither grows nor breaks the picture
    assert (long[:25, :200] != 255).any()  # the label was pulled left to stay inside the image
    assert label_text("x " * 100, 0.5).endswith("… 0.50")


def test_empty_boxes_give_the_image_back_and_title_adds_a_band(tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(draw_boxes(image, [])), np.asarray(image))
    titled = draw_boxes(image, [], out=tmp_path / "t.png", title="a title")
    assert titled.width == 400 and titled.height > 300
    assert np.array_equal(np.asarray(titled)[-300:], np.asarray(image))


def test_tiny_images_are_enlarged_and_huge_ones_shrunk():
    assert max(draw_boxes(Image.new("RGB", (64, 48)), [Box(0, 0, 1, 1, "all")]).size) == 384
    assert draw_boxes(Image.new("RGB", (4000, 1000)), []).size == (1600, 400)
    assert draw_boxes(np.zeros((50, 100, 3), np.uint8), []).size == (384, 192)  # arrays are accepted too


def test_saved_png_exists_decodes_and_matches_the_returned_image(tmp_path):
    out = tmp_path / "sub" / "boxes.png"
    picture = draw_boxes(Image.new("RGB", (320, 200), "white"), [Box(0.1, 0.1, 0.5, 0.5, "x")], out=out)
    with Image.open(out) as saved:
        assert saved.format == "PNG"
        assert saved.size == picture.size
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(picture))
    assert sorted(p.name for p in out.parent.iterdir()) == ["boxes.png"]  # no temp files left behind
    assert Image.open(io.BytesIO(to_png_bytes(picture))).size == picture.size


# ---------------------------------------------------------------------------------------------
# Spans on video frames.


def _frames(n: int, color=(200, 30, 30), h=90, w=160) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:] = color
    return frames


def test_video_span_colours_exactly_its_seconds_on_the_timeline():
    spans = [Span.from_seconds(3.0, 7.0, 10.0)]  # no phrase: no label covers the bar
    fig = draw_video_spans(_frames(2), [0.5, 9.5], 10.0, spans)
    image = np.asarray(figure_to_image(fig))
    timeline = _axes(fig, "timeline")
    bar = _blend(PALETTE[0], 0.9)
    row = 0.5  # centre of the first predicted lane
    for t in (3.2, 5.0, 6.8):
        assert _close(_pixel(fig, image, timeline, t, row), bar), t
    for t in (1.5, 2.8, 7.2, 8.5):
        assert not _close(_pixel(fig, image, timeline, t, row), bar, tol=60), t
    # The bar starts within a pixel or two of where the axis says 3 s is.
    px_row = int(round(fig.bbox.height - timeline.transData.transform((0, row))[1]))
    coloured = [x for x in range(image.shape[1]) if _close(image[px_row, x], bar)]
    assert abs(coloured[0] - timeline.transData.transform((3.0, row))[0]) <= 2
    assert abs(coloured[-1] - timeline.transData.transform((7.0, row))[0]) <= 2


def test_video_frames_are_shown_with_their_timestamps_and_span_borders():
    spans = [Span.from_seconds(4.0, 6.0, 10.0, "event")]
    fig = draw_video_spans(_frames(3), [1.0, 5.0, 9.0], 10.0, spans, title="t")
    image = np.asarray(figure_to_image(fig))
    frame_axes = [ax for ax in fig.axes if ax.get_label().startswith("frame ")]
    assert len(frame_axes) == 3
    assert [ax.texts[0].get_text() for ax in frame_axes] == ["1.0s", "5.0s", "9.0s"]
    centre = frame_axes[0].transAxes.transform((0.5, 0.5))
    assert _close(image[int(fig.bbox.height - centre[1]), int(centre[0])], (200, 30, 30), tol=3)
    # Only the frame at 5 s is inside the span, so only it is framed in the span's colour.
    assert [ax.spines["top"].get_edgecolor()[:3] for ax in frame_axes][1] == pytest.approx(
        [c / 255 for c in hex_to_rgb(PALETTE[0])]
    )
    assert frame_axes[0].spines["top"].get_linewidth() < frame_axes[1].spines["top"].get_linewidth()


def test_video_ground_truth_gets_its_own_lane_group():
    spans = [Span.from_seconds(1.0, 3.0, 10.0, "a")]
    gt = [Span.from_seconds(6.0, 9.0, 10.0, "a")]
    fig = draw_video_spans(_frames(1), [5.0], 10.0, spans, gt=gt)
    timeline = _axes(fig, "timeline")
    assert [t.get_text() for t in timeline.get_yticklabels()] == ["predicted", "ground truth"]
    image = np.asarray(figure_to_image(fig))
    gt_row = 1 + 0.4 + 0.5  # one predicted lane, the group gap, the middle of the gt lane
    hatched = [_pixel(fig, image, timeline, t, gt_row) for t in np.linspace(8.0, 8.9, 12)]
    assert any(not _close(p, WHITE, tol=30) for p in hatched)
    assert all(_close(_pixel(fig, image, timeline, t, gt_row), WHITE, tol=3) for t in (2.3, 4.3))


def test_video_edge_cases_one_frame_many_frames_no_spans_long_labels(tmp_path):
    fig = draw_video_spans(_frames(1), [0.0], 0.04, [], out=tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").size == (int(fig.bbox.width), int(fig.bbox.height))
    fig = draw_video_spans(_frames(40, h=8, w=200), np.linspace(0, 3600, 40), 3600.0, [Span(0.1, 0.9, "y" * 500)])
    assert sum(ax.get_label().startswith("frame ") for ax in fig.axes) == 16
    assert len(to_png_bytes(fig)) > 0
    spans = [Span(0.1 + 0.01 * i, 0.2, f"overlapping {i}") for i in range(5)]
    fig = draw_video_spans(_frames(2), [1.0, 2.0], 3.0, spans)
    rows = {round(p.get_y()) for p in _axes(fig, "timeline").patches}
    assert len(rows) == 5  # overlapping spans are stacked, never drawn over each other


@pytest.mark.parametrize(
    "frames, timestamps, duration",
    [
        (np.zeros((0, 4, 4, 3), np.uint8), [], 1.0),
        (np.zeros((2, 4, 4), np.uint8), [0, 1], 1.0),
        (np.zeros((2, 4, 4, 3), np.uint8), [0], 1.0),
        (np.zeros((1, 4, 4, 3), np.uint8), [0], 0.0),
    ],
)
def test_video_bad_input_is_a_clear_value_error(frames, timestamps, duration):
    with pytest.raises(ValueError):
        draw_video_spans(frames, timestamps, duration, [])


# ---------------------------------------------------------------------------------------------
# Spans on audio.


def test_audio_span_is_shaded_at_its_seconds_on_the_waveform():
    sr = 8000
    samples = np.zeros(10 * sr, np.float32)  # silence: the shading is the only thing at the top of the plot
    fig = draw_audio_spans(samples, sr, [Span.from_seconds(3.0, 5.0, 10.0, "beep")], spectrogram=False)
    image = np.asarray(figure_to_image(fig))
    wave = _axes(fig, "waveform")
    assert wave.get_xlim() == pytest.approx((0.0, 10.0))
    shade = _blend(PALETTE[0], 0.3)
    assert _close(_pixel(fig, image, wave, 4.0, 0.8), shade)
    for t in (1.0, 2.7, 5.3, 8.0):
        assert _close(_pixel(fig, image, wave, t, 0.8), WHITE, tol=3), t
    assert not any(ax.get_label() == "spectrogram" for ax in fig.axes)


def test_audio_with_spectrogram_ground_truth_and_file(tmp_path):
    sr = 16000
    t = np.arange(2 * sr) / sr
    samples = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = tmp_path / "audio.png"
    fig = draw_audio_spans(samples, sr, [Span(0.25, 0.5, "tone")], out=out, gt=[Span(0.2, 0.5, "tone")], title="x")
    spec = _axes(fig, "spectrogram")
    db = spec.images[0].get_array()  # (freq, time): the 1 kHz tone is the loudest row
    peak_khz = np.argmax(db.mean(axis=1)) / (db.shape[0] - 1) * sr / 2000
    assert peak_khz == pytest.approx(1.0, abs=0.05)
    with Image.open(out) as saved:
        assert saved.size == (1200, int(fig.bbox.height))


def test_long_audio_is_plotted_as_a_small_envelope_that_keeps_peaks():
    sr = 16000
    samples = np.zeros(600 * sr, np.float32)  # ten minutes: 9.6 M samples
    samples[123_457] = 1.0
    samples[7_654_321] = -0.5
    times, low, high = _envelope(samples, sr, max_points=2000)
    assert len(times) == len(low) == len(high) == 2000
    assert high.max() == 1.0 and low.min() == -0.5  # a one-sample click still shows
    fig = draw_audio_spans(samples, sr, [], spectrogram=True)
    wave = _axes(fig, "waveform")
    assert sum(len(p.vertices) for c in wave.collections for p in c.get_paths()) < 10_000


@pytest.mark.parametrize("samples, sr", [(np.zeros(0, np.float32), 16000), (np.zeros((2, 10)), 16000), (np.ones(5), 0)])
def test_audio_bad_input_is_a_clear_value_error(samples, sr):
    with pytest.raises(ValueError):
        draw_audio_spans(samples, sr, [])


# ---------------------------------------------------------------------------------------------
# Output: atomic files, bytes, no pyplot state.


def test_failed_save_leaves_no_file_and_keeps_an_old_one(tmp_path, monkeypatch):
    def half_write_then_fail(self, target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_write_then_fail)
    monkeypatch.setattr(Figure, "savefig", half_write_then_fail)
    with pytest.raises(OSError):
        draw_boxes(Image.new("RGB", (100, 100)), [], out=tmp_path / "boxes.png")
    (tmp_path / "audio.png").write_bytes(b"old")
    with pytest.raises(OSError):
        draw_audio_spans(np.zeros(100, np.float32), 100, [], out=tmp_path / "audio.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.png"]
    assert (tmp_path / "audio.png").read_bytes() == b"old"


def test_unwritable_output_path_raises_and_writes_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        draw_video_spans(_frames(1), [0.0], 1.0, [], out=blocker / "video.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_png_bytes_match_the_figure_and_no_pyplot_figures_leak():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = draw_video_spans(_frames(2), [0.0, 1.0], 2.0, [Span(0.0, 0.5, "a")])
    draw_audio_spans(np.zeros(1000, np.float32), 1000, [])
    assert plt.get_fignums() == before
    decoded = Image.open(io.BytesIO(to_png_bytes(fig)))
    assert decoded.format == "PNG"
    assert decoded.size == figure_to_image(fig).size == (1200, int(fig.bbox.height))
    with pytest.raises(TypeError):
        to_png_bytes("not a picture")
