"""The real pictures and sounds the generator is built from, each shipped by a Debian or PyPI package.

Objects are glyphs of the Noto Color Emoji font (Debian `fonts-noto-color-emoji`) named by hand;
backgrounds are scikit-image's sample photographs (PyPI `scikit-image`); sound events come from the
freedesktop sound theme (Debian `sound-theme-freedesktop`), real recorded speech and pink noise
from ALSA's test sounds (Debian `alsa-utils`), and speech with exactly known text from `espeak-ng`.

Every loader is cached per process (workers each build their own small cache) and raises
`AssetMissing` with one line naming the package to install when a file is absent.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from omniground.errors import UserError

SAMPLE_RATE = 16_000  # every sound is mono float32 at this rate
TRIM_DB = -30.0  # a clip starts at its first and ends at its last sample within 30 dB of its peak

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FREEDESKTOP_SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")


class AssetMissing(UserError):
    """A packaged asset is not installed; str(e) is one line that names the package."""


# --------------------------------------------------------------------------------------------------
# Objects: emoji glyphs with their names.


@dataclass(frozen=True)
class ObjectKind:
    name: str  # singular noun used in expressions
    plural: str
    glyph: str


OBJECTS: tuple[ObjectKind, ...] = tuple(
    ObjectKind(n, p, g)
    for n, p, g in [
        ("cat", "cats", "\U0001f408"),
        ("dog", "dogs", "\U0001f415"),
        ("cow", "cows", "\U0001f404"),
        ("pig", "pigs", "\U0001f416"),
        ("rabbit", "rabbits", "\U0001f407"),
        ("turtle", "turtles", "\U0001f422"),
        ("frog", "frogs", "\U0001f438"),
        ("fish", "fish", "\U0001f41f"),
        ("bird", "birds", "\U0001f426"),
        ("duck", "ducks", "\U0001f986"),
        ("elephant", "elephants", "\U0001f418"),
        ("snail", "snails", "\U0001f40c"),
        ("butterfly", "butterflies", "\U0001f98b"),
        ("penguin", "penguins", "\U0001f427"),
        ("owl", "owls", "\U0001f989"),
        ("apple", "apples", "\U0001f34e"),
        ("banana", "bananas", "\U0001f34c"),
        ("lemon", "lemons", "\U0001f34b"),
        ("pear", "pears", "\U0001f350"),
        ("strawberry", "strawberries", "\U0001f353"),
        ("pizza", "pizzas", "\U0001f355"),
        ("cake", "cakes", "\U0001f382"),
        ("doughnut", "doughnuts", "\U0001f369"),
        ("carrot", "carrots", "\U0001f955"),
        ("car", "cars", "\U0001f697"),
        ("bus", "buses", "\U0001f68c"),
        ("bicycle", "bicycles", "\U0001f6b2"),
        ("sailboat", "sailboats", "\u26f5"),
        ("ball", "balls", "\u26bd"),
        ("umbrella", "umbrellas", "\U0001f302"),
        ("alarm clock", "alarm clocks", "\u23f0"),
        ("key", "keys", "\U0001f511"),
        ("book", "books", "\U0001f4d5"),
        ("guitar", "guitars", "\U0001f3b8"),
        ("house", "houses", "\U0001f3e0"),
        ("tree", "trees", "\U0001f333"),
        ("sunflower", "sunflowers", "\U0001f33b"),
        ("mushroom", "mushrooms", "\U0001f344"),
        ("shoe", "shoes", "\U0001f45f"),
        ("hat", "hats", "\U0001f3a9"),
        ("cup", "cups", "\u2615"),
        ("phone", "phones", "\U0001f4f1"),
        ("laptop", "laptops", "\U0001f4bb"),
        ("light bulb", "light bulbs", "\U0001f4a1"),
        ("chair", "chairs", "\U0001fa91"),
        ("balloon", "balloons", "\U0001f388"),
        ("bell", "bells", "\U0001f514"),
        ("camera", "cameras", "\U0001f4f7"),
        ("anchor", "anchors", "\u2693"),
        ("drum", "drums", "\U0001f941"),
        ("trumpet", "trumpets", "\U0001f3ba"),
    ]
)
OBJECT_BY_NAME = {o.name: o for o in OBJECTS}

# Exact tints for colour attributes: the glyph's luminance scaled onto one colour (see `tint`).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 80, 230),
    "yellow": (240, 210, 20),
    "purple": (140, 50, 200),
    "orange": (245, 130, 15),
}


@functools.lru_cache(maxsize=1)
def _emoji_font() -> ImageFont.FreeTypeFont:
    if not EMOJI_FONT.exists():
        raise AssetMissing(f"emoji font {EMOJI_FONT} not found: install the Debian package fonts-noto-color-emoji")
    return ImageFont.truetype(str(EMOJI_FONT), 109)  # CBDT bitmap font: 109 px is its only size


@functools.lru_cache(maxsize=None)
def object_sprite(name: str) -> Image.Image:
    """The glyph of object `name` as RGBA, cropped to its opaque pixels (about 120x120)."""
    glyph = OBJECT_BY_NAME[name].glyph
    im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((8, 8), glyph, font=_emoji_font(), embedded_color=True)
    return im.crop(im.getbbox())


def tint(sprite: Image.Image, colour: str | None) -> Image.Image:
    """The sprite recoloured to one exact colour: out = colour * (0.35 + 0.65 * luminance); alpha kept."""
    if colour is None:
        return sprite
    rgba = np.asarray(sprite, dtype=np.float32)  # (h, w, 4)
    lum = (rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0  # (h, w)
    rgb = np.asarray(COLOURS[colour], np.float32) * (0.35 + 0.65 * lum[..., None])
    out = np.concatenate([rgb, rgba[..., 3:]], axis=-1)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGBA")


# Hue ranges (degrees) a person would still call by the word, made generous at the edges: a yellow-green
# frog (67 deg) is "green" and "yellow". Start may exceed end (red wraps around 0).
NATURAL_HUES = {"red": (335, 25), "orange": (5, 50), "yellow": (30, 75), "green": (55, 180), "blue": (175, 265),
                "purple": (240, 320)}  # fmt: skip
NATURAL_SHARE = 0.15  # of a glyph's opaque pixels, saturated and not dark


@functools.lru_cache(maxsize=None)
def natural_colours(name: str) -> frozenset[str]:
    """Colour words an untinted glyph could be called (an apple is red, a frog green), generously.

    A word counts when pixels of its hue range cover NATURAL_SHARE of the glyph. Expressions, negatives
    and video colour events use it, so "the red apple" never has an untinted (red) apple beside it and
    "is there a red apple?" is never asked where one is.
    """
    rgba = np.asarray(object_sprite(name))
    opaque = rgba[..., 3] >= 128  # (h, w)
    hsv = np.asarray(Image.fromarray(rgba[..., :3]).convert("HSV")).astype(np.float32)[opaque]  # (n, 3), 0..255
    hue, strong = hsv[:, 0] * 360 / 256, (hsv[:, 1] > 0.35 * 255) & (hsv[:, 2] > 0.3 * 255)
    out = set()
    for word, (lo, hi) in NATURAL_HUES.items():
        inside = (hue >= lo) & (hue <= hi) if lo <= hi else (hue >= lo) | (hue <= hi)
        if (strong & inside).mean() >= NATURAL_SHARE:
            out.add(word)
    return frozenset(out)


def looks(name: str, tint_colour: str | None) -> frozenset[str]:
    """Colour words an object drawn with this tint (None: its own colours) could be called."""
    return frozenset({tint_colour}) if tint_colour else natural_colours(name)


# --------------------------------------------------------------------------------------------------
# Backgrounds: scikit-image sample photographs. `contains` lists object names the photo shows, which
# a scene on it then never uses (neither pasted nor asked about), so a negative is never wrong.


@dataclass(frozen=True)
class Background:
    file: str
    description: str
    contains: tuple[str, ...] = ()


BACKGROUNDS: tuple[Background, ...] = (
    Background("brick.png", "a brick wall"),
    Background("grass.png", "grass"),
    Background("gravel.png", "gravel"),
    Background("hubble_deep_field.jpg", "a starry sky"),
    Background("moon.png", "the surface of the moon"),
    Background("coins.png", "old coins"),
    Background("astronaut.png", "an astronaut"),
    Background("chelsea.png", "a cat", ("cat",)),
    Background("coffee.png", "a cup of coffee", ("cup",)),
    Background("rocket.jpg", "a rocket launch"),
    Background("motorcycle_left.png", "a motorcycle"),
    Background("camera.png", "a photographer", ("camera",)),
    Background("color.png", "coloured paper"),
    Background("text.png", "printed text"),
    Background("page.png", "a printed page"),
    Background("ihc.png", "a stained tissue sample"),
)
BACKGROUND_BY_FILE = {b.file: b for b in BACKGROUNDS}


def _skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise AssetMissing(
            "scikit-image is not installed: pip install scikit-image (its sample photos are backgrounds)"
        )
    return Path(spec.origin).parent / "data"


@functools.lru_cache(maxsize=None)
def background_photo(file: str) -> Image.Image:
    path = _skimage_data_dir() / file
    if not path.exists():
        raise AssetMissing(f"background photo {path} not found: reinstall the PyPI package scikit-image")
    with Image.open(path) as im:
        return im.convert("RGB")


def background(file: str, crop: tuple[float, float, float, float], size: tuple[int, int], flip: bool) -> Image.Image:
    """Crop (normalised x1,y1,x2,y2) of a sample photo resized to size (w, h), optionally mirrored."""
    photo = background_photo(file)
    w, h = photo.size
    box = (round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h))
    out = photo.resize(size, Image.Resampling.BILINEAR, box=box)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out


# --------------------------------------------------------------------------------------------------
# Sounds.


@dataclass(frozen=True)
class SoundKind:
    name: str
    file: str
    clause: str  # present-tense event, used in queries and answers: "the bell rings"
    repeats: tuple[int, int] = (1, 1)  # short sounds are struck several times to make one event
    held_out: bool = False


SOUNDS: tuple[SoundKind, ...] = (
    SoundKind("bell", "bell.oga", "the bell rings", (4, 7)),
    SoundKind("alarm clock", "alarm-clock-elapsed.oga", "the alarm clock goes off"),
    SoundKind("phone", "phone-incoming-call.oga", "the phone rings"),
    SoundKind("busy signal", "phone-outgoing-busy.oga", "a busy signal sounds"),
    SoundKind("calling tone", "phone-outgoing-calling.oga", "a calling tone sounds"),
    SoundKind("camera", "camera-shutter.oga", "a camera shutter clicks", (2, 3)),
    SoundKind("chime", "complete.oga", "a chime plays"),
    SoundKind("message alert", "message-new-instant.oga", "a message alert sounds"),
    SoundKind("paper", "trash-empty.oga", "paper is crumpled"),
    SoundKind("error sound", "suspend-error.oga", "an error sound plays"),
    SoundKind("login melody", "service-login.oga", "a login melody plays"),
    SoundKind("logout melody", "service-logout.oga", "a logout melody plays"),
    SoundKind("warning beep", "dialog-warning.oga", "a warning beep sounds", (2, 3)),
)
SOUND_BY_NAME = {s.name: s for s in SOUNDS}
# Objects that make one of the sounds: the sound-localization task pairs a picture with that sound.
SOUNDING_OBJECTS = {"bell": "bell", "alarm clock": "alarm clock", "phone": "phone", "camera": "camera"}

# Recorded human speech shipped by alsa-utils: file -> exact words.
ALSA_SPEECH: dict[str, str] = {
    "Front_Center.wav": "front center",
    "Front_Left.wav": "front left",
    "Front_Right.wav": "front right",
    "Rear_Center.wav": "rear center",
    "Rear_Left.wav": "rear left",
    "Rear_Right.wav": "rear right",
    "Side_Left.wav": "side left",
    "Side_Right.wav": "side right",
}
ALSA_NOISE = "Noise.wav"

ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-gb+f2", "en-us+m3")
ESPEAK_SPEEDS = (140, 165, 190)  # words per minute


def _decode(path: Path) -> np.ndarray:
    """Any audio file -> mono float32 at SAMPLE_RATE (PyAV decode + FFmpeg's resampler)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)  # (T,)


def trim(x: np.ndarray) -> np.ndarray:
    """Cut leading/trailing quiet: keep first..last sample with |x| >= peak * 10^(TRIM_DB/20)."""
    a = np.abs(x)
    loud = np.flatnonzero(a >= a.max() * 10 ** (TRIM_DB / 20))
    return x[loud[0] : loud[-1] + 1].copy()


def _sound_file(folder: Path, file: str, package: str) -> Path:
    path = folder / file
    if not path.exists():
        raise AssetMissing(f"sound {path} not found: install the Debian package {package}")
    return path


@functools.lru_cache(maxsize=None)
def sound_clip(name: str) -> np.ndarray:
    """A named freedesktop sound event, trimmed, (T,) float32 at SAMPLE_RATE."""
    return trim(_decode(_sound_file(FREEDESKTOP_SOUNDS, SOUND_BY_NAME[name].file, "sound-theme-freedesktop")))


@functools.lru_cache(maxsize=None)
def alsa_speech(file: str) -> np.ndarray:
    """Recorded speech with known words (ALSA channel test), trimmed."""
    return trim(_decode(_sound_file(ALSA_SOUNDS, file, "alsa-utils")))


@functools.lru_cache(maxsize=1)
def alsa_noise() -> np.ndarray:
    """ALSA's recorded pink-noise test signal, untrimmed, peak-normalised."""
    x = _decode(_sound_file(ALSA_SOUNDS, ALSA_NOISE, "alsa-utils"))
    return x / np.abs(x).max()


def _espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AssetMissing("espeak-ng not found: install the Debian package espeak-ng")
    return exe


@functools.lru_cache(maxsize=512)
def speech(text: str, voice: str, speed: int) -> np.ndarray:
    """`text` spoken by espeak-ng, trimmed, (T,) float32 at SAMPLE_RATE. Deterministic for one espeak build."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(
            [_espeak_binary(), "-v", voice, "-s", str(speed), "-w", str(out), text], check=True, capture_output=True
        )
        return trim(_decode(out))


def check_assets(modalities: tuple[str, ...] | list[str]) -> None:
    """Fail fast, with one line naming the missing package, before any worker starts."""
    if "image" in modalities or "video" in modalities:
        _emoji_font()
        background_photo(BACKGROUNDS[0].file)
    if "audio" in modalities:
        _sound_file(FREEDESKTOP_SOUNDS, SOUNDS[0].file, "sound-theme-freedesktop")
        _sound_file(ALSA_SOUNDS, ALSA_NOISE, "alsa-utils")
        _espeak_binary()
