"""Desensitisation: each detector on hand-made text (with the look-alikes it must leave alone), boxes and
spans untouched, per-type counts, face blurring in images and video frames, and the command."""


import av
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from typer.testing import CliRunner

from omniground import media
from omniground.data.schema import Sample, read_jsonl, write_jsonl
from omniground.data.scrub import (
    ScrubError,
    TextScrubber,
    blur_faces,
    blur_video_file,
    detect_faces,
    iban_ok,
    luhn_ok,
    scrub,
)
from omniground.grounding import parse


@pytest.fixture(scope="module")
def scrubber():
    return TextScrubber(phone_region="GB")


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("79927398713")  # the textbook example
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and iban_ok("DE89370400440532013000")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33") and not iban_ok("DE8937040044")


def test_emails_phones_cards_ibans_ips(scrubber):
    text = ("Mail jane.o'neil@example.co.uk, call +44 20 7946 0958. Card 4111 1111 1111 1111; "
            "order no. 4111 1111 1111 1112 stays. Pay GB82 WEST 1234 5698 7654 32 now. "
            "Host 192.168.1.10 / 2001:db8::8a2e:370:7334, version 1.2.3.4.5, at 12:30:45 on 2024-05-01.")
    out = scrubber(text)
    assert "<EMAIL>" in out and "example.co.uk" not in out
    assert "<PHONE>" in out and "7946" not in out
    assert out.count("<CARD_NUMBER>") == 1 and "4111 1111 1111 1112" in out  # Luhn-invalid: an order number
    assert "<IBAN> now" in out
    assert out.count("<IP_ADDRESS>") == 2 and "1.2.3.4.5" in out and "12:30:45" in out and "2024-05-01" in out


def test_url_secrets_keep_the_rest_of_the_url(scrubber):
    text = ("get https://bob:hunter2@data.example.org/v1/x.jpg?page=2&api_key=abc123&"
            "X-Amz-Signature=9f8e7d6c5b4a39281706f5e4d3c2b1a0&lang=en and http://example.com/?q=cats")
    out = scrubber(text)
    assert "hunter2" not in out and "abc123" not in out and "9f8e7d6c" not in out
    assert ("https://bob:<SECRET>@data.example.org/v1/x.jpg?page=2&api_key=<SECRET>&X-Amz-Signature=<SECRET>&lang=en"
            in out)
    assert "http://example.com/?q=cats" in out  # an ordinary query is not a secret
    # a random-looking value is a secret whatever its parameter is called
    assert scrubber("https://x.org/a?v=Zk8sP2mQ9vT4rY7wL1nB6cX3") == "https://x.org/a?v=<SECRET>"


def test_boxes_and_spans_are_never_touched():
    text = ("the phone 020 7946 0958[0.100,0.200,0.300,0.400] rings from 12.5s - 17.0s and {0.16,0.36}; "
            "a Qwen box <box>(100,200),(300,400)</box> and pixels [1200, 3400, 4500, 4900]")
    s = TextScrubber(phone_region="GB")
    out = s(text)
    def values(t):
        found = parse(t, duration=30.0, image_size=(5000, 5000)).located
        return [x.item.xyxy if hasattr(x.item, "xyxy") else (x.item.start, x.item.end) for x in found]

    before = parse(text, duration=30.0, image_size=(5000, 5000))
    assert len(before.located) == 5 and values(out) == values(text)
    for loc in before.located:
        assert text[loc.start:loc.end] in out  # every notation is in the output character for character
    assert "<PHONE>" in out and s.counts == {"phone": 1}


def test_counts_per_type_and_only(scrubber):
    s = TextScrubber(kinds=["email"])
    assert s("a@b.io and c@d.io, +1 650 253 0000") == "<EMAIL> and <EMAIL>, +1 650 253 0000"
    assert s.counts == {"email": 2}
    with pytest.raises(ScrubError, match="unknown kind"):
        TextScrubber(kinds=["email", "shoe size"])
    with pytest.raises(ScrubError, match="region"):
        TextScrubber(phone_region="Narnia")


def test_person_names_with_a_spacy_pipeline(tmp_path):
    spacy = pytest.importorskip("spacy", reason="person names need the optional spaCy dependency")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "ada"}, {"LOWER": "lovelace"}]},
                        {"label": "ORG", "pattern": "Acme"}])
    nlp.to_disk(tmp_path / "names")
    s = TextScrubber(names_model=str(tmp_path / "names"))
    assert s("Ada Lovelace works at Acme[0.1,0.1,0.5,0.5].") == "<PERSON> works at Acme[0.1,0.1,0.5,0.5]."
    assert s.counts == {"person": 1}
    with pytest.raises(ScrubError, match="no such spaCy pipeline"):
        TextScrubber(names_model=str(tmp_path / "nowhere"))


def test_face_blurring_removes_the_face_and_nothing_else():
    img = skdata.astronaut()  # 512x512, one frontal face
    faces = detect_faces(img)
    assert len(faces) == 1
    x, y, w, h = faces[0]
    out, n = blur_faces(img)
    assert n == 1 and len(detect_faces(out)) == 0
    face_change = np.abs(out[y:y + h, x:x + w].astype(int) - img[y:y + h, x:x + w]).mean()
    assert face_change > 10
    assert np.array_equal(out[400:, :100], img[400:, :100])  # far from the face: untouched


def _face_video(path, frames=6, fps=5):
    face = np.asarray(Image.fromarray(skdata.astronaut()).resize((256, 256)))
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=fps)
        v.width = v.height = 256
        v.pix_fmt = "yuv420p"
        v.bit_rate = 4_000_000
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(frames):
            out.mux(v.encode(av.VideoFrame.from_ndarray(face, format="rgb24")))
        out.mux(v.encode())
        t = np.arange(int(16000 * frames / fps)) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, k:k + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k
            out.mux(a.encode(frame))
        out.mux(a.encode())
    return face


def test_video_face_blurring_keeps_timing_and_audio(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out" / "blurred.mp4"
    _face_video(src)
    n = blur_video_file(src, dst)
    assert n >= 5  # the face in (nearly) every one of the 6 frames
    before, after = media.probe_video(src), media.probe_video(dst)
    assert after.num_frames == before.num_frames and after.duration == pytest.approx(before.duration, abs=0.05)
    assert after.has_audio
    frames = media.sample_frames(dst, 3).frames
    assert all(len(detect_faces(f)) == 0 for f in frames)


def _sample(path_name, text_user, text_answer, **kw):
    return Sample(id=kw.pop("id", "s1"), media=[{"type": "image", "path": path_name, "width": 512, "height": 512}],
                  conversation=[{"role": "user", "content": text_user}, {"role": "assistant", "content": text_answer}],
                  boxes=[{"phrase": "the woman", "box": [0.1, 0.1, 0.6, 0.6]}], task="rec", stage=2, source="test",
                  license="CC0-1.0", **kw)


def test_scrub_command_end_to_end(tmp_path):
    Image.fromarray(skdata.astronaut()).save(tmp_path / "astro.png")
    samples = [
        _sample("astro.png", "<image>\nWho is this? Write to nasa.fan@example.com",
                "the woman[0.100,0.100,0.600,0.600]"),
        _sample("missing.png", "<image>\nCall +1 650 253 0000 about the woman", "the woman[0.100,0.100,0.600,0.600]",
                id="s2"),
        _sample("broken.png", "<image>\nWho?", "the woman[0.100,0.100,0.600,0.600]", id="s3"),
    ]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    write_jsonl(tmp_path / "in.jsonl", samples)
    with open(tmp_path / "in.jsonl", "a") as f:
        f.write("{not a sample}\n")
    out = tmp_path / "clean" / "out.jsonl"
    r = CliRunner().invoke(_app(), [str(tmp_path / "in.jsonl"), "--out", str(out),
                                    "--blur-faces", "--no-progress"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    got = {s.id: s for s in read_jsonl(out)}
    assert set(got) == {"s1", "s2"}  # s3's image cannot be decoded, so cannot be blurred: dropped, counted
    assert got["s1"].conversation[0].content.endswith("Write to <EMAIL>")
    assert "<PHONE>" in got["s2"].conversation[0].content
    assert got["s1"].conversation[1].content == samples[0].conversation[1].content  # the box text, untouched
    assert got["s1"].boxes == samples[0].boxes
    blurred = out.parent / got["s1"].media[0].path
    assert blurred.exists() and blurred.resolve() != (tmp_path / "astro.png").resolve()
    assert len(detect_faces(np.asarray(Image.open(blurred).convert("RGB")))) == 0
    assert (out.parent / got["s2"].media[0].path).resolve() == (tmp_path / "missing.png").resolve()
    for needle in ("<EMAIL> replaced", "<PHONE> replaced", "invalid lines skipped", "media missing",
                   "media unreadable: samples dropped"):
        assert needle in r.output
    r = CliRunner().invoke(_app(), [str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert isinstance(r.exception, ScrubError) and "no such file" in str(r.exception)


def _app():
    import typer

    app = typer.Typer()
    app.command()(scrub)
    return app
