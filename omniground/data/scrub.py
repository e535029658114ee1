"""Desensitisation: personal data out of the text (typed placeholders) and faces out of the pixels.

Text: e-mail addresses, phone numbers (libphonenumber's matcher, so dates and measurements are not
taken for phones), payment-card numbers (Luhn-checked), IBANs (ISO 13616 mod-97 checked), IPv4/IPv6
addresses, secret-looking values in URLs (credentials, `token=`/`key=`/`sig=` parameters, long
random-looking parameter values), and person names when a spaCy pipeline with an NER component is
given (no English NER model ships in an official PyPI wheel, so none is bundled; bring your own with
`--names-model en_core_web_sm` or a path). Checksums keep order numbers and ids that merely look like
cards or IBANs. Every box/span notation is located first (omniground.grounding.parse(...).located)
and nothing inside one is touched, so the grounding text of a sample is never altered.

Pixels: faces found by OpenCV's Haar cascade (its weights ship inside opencv-python-headless) are
blurred in images and in every video frame; media are written to a new folder, never in place.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional
from urllib.parse import unquote_plus, urlsplit

import numpy as np
import typer

from omniground.data.schema import BadLine, Sample, read_jsonl
from omniground.errors import UserError
from omniground.files import atomic_output
from omniground.grounding import parse

PLACEHOLDER = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "card": "<CARD_NUMBER>",
    "iban": "<IBAN>",
    "ip": "<IP_ADDRESS>",
    "secret": "<SECRET>",
    "person": "<PERSON>",
}


class ScrubError(UserError):
    """Bad scrub input or option: one line for the user."""


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    kind: str  # a key of PLACEHOLDER


# --- detectors: text -> findings (candidates, before overlap resolution) -----------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
_CARD = re.compile(r"(?<![\d.,])\d(?:[ -]?\d){12,18}(?!\d)(?![.,]\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_URL = re.compile(r"\b(?:https?|ftp|s3|wss?)://[^\s<>\"'`]+", re.IGNORECASE)
_SECRET_KEY = re.compile(
    r"^(?:.*[_-])?(?:token|access[_-]?token|refresh[_-]?token|id[_-]?token|api[_-]?key|apikey|key|secret|"
    r"client[_-]?secret|password|passwd|pwd|pass|auth|authorization|session|sessionid|sid|sig|signature|"
    r"credential|x-amz-signature|x-amz-credential|x-amz-security-token|code)$",
    re.IGNORECASE,
)
_MIN_RANDOM_LEN = 20  # a parameter value this long that looks random is a secret whatever its name


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (ISO/IEC 7812): doubling every second digit from the right."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 is 1."""
    s = iban.replace(" ", "").upper()
    if not (15 <= len(s) <= 34 and s[:2].isalpha() and s[2:4].isdigit() and s.isalnum()):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _entropy_bits(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def looks_random(value: str) -> bool:
    """Long, mixed letters and digits, high per-character entropy: a key or signature, not a word."""
    return (len(value) >= _MIN_RANDOM_LEN and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
            and _entropy_bits(value) >= 3.5)


def find_emails(text: str) -> Iterator[Finding]:
    for m in _EMAIL.finditer(text):
        yield Finding(m.start(), m.end(), "email")


def find_cards(text: str) -> Iterator[Finding]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
            yield Finding(m.start(), m.end(), "card")


def find_ibans(text: str) -> Iterator[Finding]:
    for m in _IBAN.finditer(text):
        s = m.group(0)
        # The pattern may run on into a following code word ("... 3000 AB12"): try the longest valid prefix
        # that ends where a word ends.
        for end in range(len(s), 14, -1):
            cut = s[:end]
            if (end == len(s) or s[end] == " ") and not cut.endswith(" ") and iban_ok(cut):
                yield Finding(m.start(), m.start() + end, "iban")
                break


def find_ips(text: str) -> Iterator[Finding]:
    for rx, cls in ((_IPV4, ipaddress.IPv4Address), (_IPV6, ipaddress.IPv6Address)):
        for m in rx.finditer(text):
            try:
                cls(m.group(0))
            except ValueError:
                continue
            yield Finding(m.start(), m.end(), "ip")


def find_url_secrets(text: str) -> Iterator[Finding]:
    """Credentials in a URL's user-info, and the values of secret-named or random-looking query parameters."""
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?)]}")
        parts = urlsplit(url)
        if parts.password:
            at = url.index("@")
            yield Finding(m.start() + url.rindex(":", 0, at) + 1, m.start() + at, "secret")
        for sep in ("?", "#"):
            if sep not in url:
                continue
            pos = m.start() + url.index(sep) + 1
            tail = url[url.index(sep) + 1 :].split("#")[0] if sep == "?" else url[url.index("#") + 1 :]
            for param in tail.split("&"):
                key, eq, value = param.partition("=")
                if eq and value and (_SECRET_KEY.match(unquote_plus(key)) or looks_random(unquote_plus(value))):
                    yield Finding(pos + len(key) + 1, pos + len(param), "secret")
                pos += len(param) + 1


_MIN_PHONE_DIGITS = 5  # no dialable number is shorter; most text has fewer digits and skips the (slow) matcher


def find_phones(text: str, region: str = "US") -> Iterator[Finding]:
    import phonenumbers

    if sum(c.isdigit() for c in text) < _MIN_PHONE_DIGITS:
        return

    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        yield Finding(m.start, m.end, "phone")


class PersonRecognizer:
    """Person names from a spaCy pipeline (a package name such as en_core_web_sm, or a saved folder)."""

    def __init__(self, model: str):
        try:
            import spacy
        except ImportError as e:
            raise ScrubError("person-name recognition needs spaCy (pip install 'spacy>=3.8,<4') and a pipeline") from e
        try:
            self.nlp = spacy.load(model)
        except OSError as e:
            raise ScrubError(f"--names-model {model}: no such spaCy pipeline installed or saved there") from e
        if not any(pipe in self.nlp.pipe_names for pipe in ("ner", "entity_ruler", "span_ruler")):
            raise ScrubError(f"--names-model {model}: the pipeline has no named-entity component")

    def __call__(self, text: str) -> Iterator[Finding]:
        for ent in self.nlp(text).ents:
            if ent.label_ in ("PERSON", "PER"):
                yield Finding(ent.start_char, ent.end_char, "person")


# Earlier detectors win an overlap: a URL secret may contain digits that look like a card, an e-mail
# a name, an IBAN a run of digits that a phone matcher would take.
Detector = Callable[[str], Iterable[Finding]]


class TextScrubber:
    """Replaces personal data in text with typed placeholders; counts what it replaced, per type."""

    def __init__(self, phone_region: str = "US", names_model: str | None = None, kinds: Iterable[str] | None = None):
        import phonenumbers

        if phone_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ScrubError(f"--phone-region {phone_region!r} is not a region code such as US, GB, DE, FR")
        kinds = set(kinds or PLACEHOLDER)
        unknown = kinds - set(PLACEHOLDER)
        if unknown:
            raise ScrubError(f"unknown kind(s) {', '.join(sorted(unknown))}; known: {', '.join(PLACEHOLDER)}")
        if "person" in kinds and names_model is None:
            kinds.discard("person")
        self.kinds = kinds
        self.detectors: list[tuple[str, Detector]] = [
            ("secret", find_url_secrets),
            ("email", find_emails),
            ("iban", find_ibans),
            ("card", find_cards),
            ("ip", find_ips),
            ("phone", lambda t: find_phones(t, phone_region.upper())),
        ]
        if "person" in kinds:
            self.detectors.append(("person", PersonRecognizer(names_model)))  # type: ignore[arg-type]
        self.counts: Counter = Counter()

    def findings(self, text: str) -> list[Finding]:
        """Non-overlapping findings, none touching a box/span notation."""
        taken = [(loc.start, loc.end) for loc in parse(text).located]
        # Detectors see every notation masked ("|" keeps offsets and matches no pattern), so a phone number
        # written right before its box is still found, and no match can reach into a notation.
        masked = list(text)
        for a, b in taken:
            masked[a:b] = "|" * (b - a)
        masked_text = "".join(masked)
        chosen: list[Finding] = []
        for kind, detect in self.detectors:
            if kind not in self.kinds:
                continue
            for f in detect(masked_text):
                if f.end > f.start and all(f.end <= a or f.start >= b for a, b in taken):
                    chosen.append(f)
                    taken.append((f.start, f.end))
        return sorted(chosen, key=lambda f: f.start)

    def __call__(self, text: str) -> str:
        findings = self.findings(text)
        out, pos = [], 0
        for f in findings:
            out += [text[pos : f.start], PLACEHOLDER[f.kind]]
            pos = f.end
            self.counts[f.kind] += 1
        out.append(text[pos:])
        return "".join(out)


# --- faces -------------------------------------------------------------------------------------------

_CASCADE = None


def _face_detector():
    global _CASCADE
    if _CASCADE is None:
        import cv2

        _CASCADE = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        if _CASCADE.empty():
            raise ScrubError("OpenCV's frontal-face cascade could not be loaded (opencv-python-headless<5 needed)")
    return _CASCADE


def detect_faces(rgb: np.ndarray) -> np.ndarray:
    """Face boxes (N, 4) as pixel x, y, w, h in an (H, W, 3) uint8 RGB image."""
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    side = min(rgb.shape[:2])
    found = _face_detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(max(12, side // 40),) * 2)
    return np.asarray(found, dtype=np.int64).reshape(-1, 4)


def blur_faces(rgb: np.ndarray, margin: float = 0.2) -> tuple[np.ndarray, int]:
    """A copy of an (H, W, 3) uint8 image with every detected face (plus a margin) blurred beyond recognition."""
    import cv2

    faces = detect_faces(rgb)
    out = rgb.copy()
    h, w = rgb.shape[:2]
    for x, y, fw, fh in faces:
        dx, dy = int(fw * margin), int(fh * margin)
        x1, y1, x2, y2 = max(0, x - dx), max(0, y - dy), min(w, x + fw + dx), min(h, y + fh + dy)
        region = out[y1:y2, x1:x2]
        # Down to a 4x4 mosaic, then a blur as wide as a cell: no eye/mouth structure is left for a person
        # (or a detector) to find, and no hard block edges are left for a model to latch onto.
        small = cv2.resize(region, (4, 4), interpolation=cv2.INTER_AREA)
        sigma = max(1.0, min(x2 - x1, y2 - y1) / 8)
        mosaic = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        region[:] = cv2.GaussianBlur(mosaic, (0, 0), sigma)
    return out, len(faces)


def blur_image_file(src: Path, dst: Path) -> int:
    """Write `src` with faces blurred to `dst` (format from its suffix); returns the number of faces."""
    from PIL import Image

    from omniground.media import load_image

    image = load_image(src)  # EXIF-oriented: the labels' frame
    blurred, n = blur_faces(np.asarray(image))
    with atomic_output(dst) as tmp:
        Image.fromarray(blurred).save(tmp, format=Image.registered_extensions().get(dst.suffix.lower(), "PNG"),
                                      **({"quality": 95} if dst.suffix.lower() in (".jpg", ".jpeg") else {}))
    return n


def blurred_video_name(src: Path) -> str:
    """mp4 for mp4-family sources, Matroska otherwise (it takes any audio codec the source may carry)."""
    return src.stem + (".mp4" if src.suffix.lower() in (".mp4", ".m4v", ".mov") else ".mkv")


def blur_video_file(src: Path, dst: Path) -> int:
    """Re-encode `src` to `dst` (.mp4 or .mkv) with faces blurred in every frame; the audio stream is copied as is.

    Frame timestamps are kept, so every time span labelled on the original holds on the copy.
    Returns the number of face detections over all frames.
    """
    import av

    from omniground.media import MediaError

    total = 0
    try:
        container = "mp4" if dst.suffix.lower() == ".mp4" else "matroska"
        with av.open(str(src)) as inp, atomic_output(dst) as tmp, av.open(str(tmp), "w", format=container) as out:
            vin = inp.streams.video[0]
            ain = inp.streams.audio[0] if inp.streams.audio else None
            rate = vin.average_rate or vin.guessed_rate or 25
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            vout = out.add_stream(codec, rate=rate)
            vout.width, vout.height = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2
            vout.pix_fmt = "yuv420p"
            vout.time_base = vin.time_base
            aout = out.add_stream_from_template(ain) if ain is not None else None
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream is ain:
                    if packet.dts is not None:
                        packet.stream = aout
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    rgb = frame.to_ndarray(format="rgb24")[: vout.height, : vout.width]
                    blurred, n = blur_faces(rgb)
                    total += n
                    new = av.VideoFrame.from_ndarray(blurred, format="rgb24")
                    new.pts, new.time_base = frame.pts, frame.time_base
                    out.mux(vout.encode(new))
            out.mux(vout.encode())
    except av.FFmpegError as e:
        raise MediaError(src, f"cannot re-encode for face blurring ({type(e).__name__})") from e
    return total


# --- samples -----------------------------------------------------------------------------------------


@dataclass
class ScrubReport:
    samples: int = 0
    bad_lines: int = 0
    counts: Counter = field(default_factory=Counter)  # type -> replacements
    faces: int = 0  # face detections blurred (video: summed over frames)
    media_blurred: int = 0
    media_missing: int = 0
    media_unreadable: int = 0
    dropped: int = 0  # samples left out: their image/video could not be decoded, so not blurred


def scrub_sample(sample: Sample, text: TextScrubber) -> Sample:
    """The sample with every turn and label phrase scrubbed; boxes, spans and media untouched."""
    data = sample.model_dump(mode="python")
    for turn in data["conversation"]:
        turn["content"] = text(turn["content"])
    for label in [*data["boxes"], *data["spans"]]:
        label["phrase"] = text(label["phrase"])
    return Sample.model_validate(data)  # the schema re-checks that every written location is a label


def scrub_file(
    src: Path,
    dst: Path,
    text: TextScrubber,
    blur: bool = False,
    media_out: Path | None = None,
    media_root: Path | None = None,
    progress: bool = True,
) -> ScrubReport:
    """Scrub a schema JSONL into `dst` (atomic). Media paths are rewritten relative to `dst`'s folder;
    with `blur`, images and videos are copied with faces blurred into `media_out`. A sample whose image or
    video cannot be decoded is dropped (its faces could not be blurred) and counted."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from omniground.media import MediaError

    root = media_root or src.parent
    media_out = media_out or dst.parent / "media_scrubbed"
    report = ScrubReport()
    bad: list[BadLine] = []
    done: dict[Path, Path | None] = {}  # original -> blurred copy (None: undecodable); shared files blurred once

    def blurred(path: Path, kind: str) -> Path | None:
        if path not in done:
            name = blurred_video_name(path) if kind == "video" else path.name
            target = media_out / kind / f"{len(done):07d}_{name}"
            try:
                report.faces += (blur_image_file if kind == "image" else blur_video_file)(path, target)
                report.media_blurred += 1
                done[path] = target
            except MediaError:
                report.media_unreadable += 1
                done[path] = None
        return done[path]

    with open(src, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    with atomic_output(dst) as tmp, open(tmp, "w", encoding="utf-8") as f, \
            Progress(TextColumn("scrub"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     disable=not progress, transient=True) as bar:
        job = bar.add_task("scrub", total=total)
        for sample in read_jsonl(src, bad):
            bar.advance(job)
            s = scrub_sample(sample, text)
            keep = True
            for i, m in enumerate(s.media):
                path = sample.media_path(i, root)
                if blur and m.type in ("image", "video"):
                    if not path.exists():
                        report.media_missing += 1
                    else:
                        path = blurred(path, m.type)
                        if path is None:
                            keep = False
                            break
                m.path = os.path.relpath(path.resolve(), dst.parent.resolve())
            if keep:
                f.write(json.dumps(s.model_dump(mode="json"), ensure_ascii=False) + "\n")
                report.samples += 1
            else:
                report.dropped += 1
    report.bad_lines = len(bad)
    report.counts = text.counts
    return report


def scrub(
    input: Path = typer.Argument(..., help="Schema JSONL to scrub."),
    out: Path = typer.Option(..., "--out", "-o", help="Scrubbed JSONL (atomic; media paths relative to it)."),
    blur_faces_: bool = typer.Option(False, "--blur-faces", help="Blur faces in images and video frames."),
    media_out: Optional[Path] = typer.Option(None, help="Blurred copies (default: OUT's folder/media_scrubbed)."),
    media_root: Optional[Path] = typer.Option(None, help="Folder the input's media paths are relative to."),
    phone_region: str = typer.Option("US", help="Region of phone numbers written without +country (US, GB, DE...)."),
    names_model: Optional[str] = typer.Option(None, help="spaCy pipeline (name or folder) for person names; else off."),
    only: Optional[List[str]] = typer.Option(None, "--only", help=f"Only these kinds ({', '.join(PLACEHOLDER)})."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Replace personal data with typed placeholders (and optionally blur faces); boxes and spans are never altered."""
    from rich.console import Console
    from rich.table import Table

    if not input.is_file():
        raise ScrubError(f"{input}: no such file")
    if input.resolve() == out.resolve():
        raise ScrubError("--out must differ from the input (the input is kept as it is)")
    text = TextScrubber(phone_region=phone_region, names_model=names_model, kinds=only)
    report = scrub_file(input, out, text, blur=blur_faces_, media_out=media_out, media_root=media_root,
                        progress=progress)
    console = Console(stderr=True)
    table = Table(title=f"scrub {input} -> {out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("samples written", str(report.samples))
    if report.bad_lines:
        table.add_row("[yellow]invalid lines skipped[/yellow]", str(report.bad_lines))
    for kind, placeholder in PLACEHOLDER.items():
        if kind in text.kinds:
            table.add_row(f"{placeholder} replaced", str(report.counts.get(kind, 0)))
    if "person" not in text.kinds:
        table.add_row("person names", "off (no --names-model)")
    if blur_faces_:
        table.add_row("media blurred (faces found)", f"{report.media_blurred} ({report.faces})")
        table.add_row("media missing", str(report.media_missing))
        if report.media_unreadable:
            table.add_row("[yellow]media unreadable: samples dropped[/yellow]",
                          f"{report.media_unreadable} ({report.dropped})")
    console.print(table)
