"""Images: every mode and orientation becomes upright 8-bit RGB; bad files give one-line MediaErrors."""

import io

import numpy as np
import pytest
from PIL import Image

from omniground.media import MediaError, load_image, media_type


def test_exif_orientation_is_applied(tmp_path):
    # A 40x20 picture stored sideways: red left half, blue right half; EXIF 6 = "rotate 90 degrees clockwise to view".
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "phone.jpg")
    assert image.size == (20, 40)  # width and height swapped
    top, bottom = np.asarray(image)[2, 10], np.asarray(image)[-3, 10]
    assert top[0] > 200 and top[2] < 60  # red came to the top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("L", 128, (128, 128, 128)),
        ("P", None, (0, 255, 0)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32896, (128, 128, 128)),  # scaled, not clipped at 255
        ("1", 1, (255, 255, 255)),
    ],
)
def test_any_mode_becomes_rgb(tmp_path, mode, value, expected):
    if mode == "P":
        image = Image.new("RGB", (8, 8), (0, 255, 0)).convert("P")
    else:
        image = Image.new(mode, (8, 8), value)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)
    assert tuple(np.asarray(rgb)[4, 4]) == pytest.approx(expected, abs=1)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(tmp_path / "a.png")
    pixels = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[3, 3]) == (255, 255, 255)


def test_bytes_source_and_first_frame_of_animations():
    frames = [Image.new("RGB", (6, 6), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    first = np.asarray(load_image(buf.getvalue()))
    assert first[0, 0, 0] > 200 and first[0, 0, 2] < 60


def test_pixel_limit_stops_decompression_bombs_before_decoding(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")  # compresses to a few KB
    with pytest.raises(MediaError, match="too many pixels"):
        load_image(tmp_path / "big.png", max_pixels=1_000_000)
    assert load_image(tmp_path / "big.png", max_pixels=9_000_000).size == (3000, 3000)


def test_bad_files_raise_one_line_media_errors(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(good, format="JPEG")
    data = good.getvalue()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.jpg").write_text("not a picture\n" * 20)
    (tmp_path / "folder.png").mkdir()
    cases = {
        "missing.jpg": "not found",
        "empty.jpg": "empty",
        "cut.jpg": "truncated",
        "notes.jpg": "not an image",
        "folder.png": "not a regular file",
    }
    for name, problem in cases.items():
        with pytest.raises(MediaError) as caught:
            load_image(tmp_path / name)
        message = str(caught.value)
        assert problem in message and name in message and "\n" not in message, message
    with pytest.raises(MediaError, match="empty"):
        load_image(b"")


def test_media_type_of_an_image_with_a_wrong_name(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "clip.mp4", format="PNG")
    assert media_type(tmp_path / "clip.mp4") == "image"
