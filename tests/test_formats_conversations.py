"""The original GroundingGPT training JSON, LLaVA conversation JSON, VGG-SS and Clotho, on files the tests
write in the public layouts; and the `convert` command's summary and errors."""

import json

import numpy as np
import pytest
from media_files import ramp_video, write_wav
from PIL import Image
from typer.testing import CliRunner

from omniground.data.convert_cli import app as convert_app
from omniground.data.formats import FormatError, convert
from omniground.data.schema import read_jsonl
from omniground.grounding import parse


def _read(path):
    bad = []
    samples = list(read_jsonl(path, bad))
    assert bad == []
    return samples


def _image(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (20, 90, 160)).save(path)


def _wav(path, seconds, rate=16000):
    write_wav(path, (np.sin(np.arange(int(rate * seconds)) / 7) * 6000).astype(np.int16), rate)


def _turns(*pairs):
    return [{"from": who, "value": text} for who, text in pairs]


# --- GroundingGPT ----------------------------------------------------------------------------------


def _groundinggpt_release(tmp_path):
    records = [
        # Stage-2 RefCOCO style: the box is relative to the image padded to a centred square (200x100 -> 200x200,
        # the image pasted 50 px down), so [0.1,0.25,0.5,0.75] is x 0.1..0.5 and the full height of the image.
        {"id": "ref-1", "image": "coco/wide.jpg", "conversations": _turns(
            ("human", "<image>\nWhere is the man on the left? Answer with a box."),
            ("gpt", "The man on the left[0.100,0.250,0.500,0.750]."))},
        {"id": "charades-1", "video": "charades/AO8RW.mp4", "conversations": _turns(
            ("human", "<video>\nWhen does the person open the door?"), ("gpt", "It happens at {0.25,0.50}."))},
        {"id": "vggss-1", "image": "vggss/frame.jpg", "sound": "vggss/clip", "conversations": _turns(
            ("human", "<image>\n<sound>\nWhere is the sound coming from?"),
            ("gpt", "A dog barking[0.000,0.000,1.000,1.000]"))},
        {"id": "clotho-1", "sound": "clotho/rain.wav", "conversations": _turns(
            ("human", "<sound>\nWhat can you hear?"), ("gpt", "Rain falls on a tin roof."))},
        {"id": "gone-1", "image": "coco/missing.jpg", "conversations": _turns(
            ("human", "<image>\nFind the cat."), ("gpt", "the cat[0.100,0.100,0.200,0.200]"))},
        {"id": "bad-1", "image": "coco/wide.jpg", "conversations": _turns(
            ("human", "<image>\nFind the cat."), ("gpt", "the cat[0.100,0.100,0.200]"))},
        {"id": "broken"},
    ]
    js = tmp_path / "stage2.json"
    js.write_text(json.dumps(records))
    media = tmp_path / "data"
    _image(media / "coco" / "wide.jpg", 200, 100)
    ramp_video(media / "charades" / "AO8RW.mp4", 4.0)
    _image(media / "vggss" / "frame.jpg", 100, 100)
    _wav(media / "vggss" / "clip.wav", 2.0)
    _wav(media / "clotho" / "rain.wav", 3.0)
    return js, media


def test_groundinggpt_padded_boxes_spans_and_sound(tmp_path):
    js, media = _groundinggpt_release(tmp_path)
    out = tmp_path / "out" / "gg.jsonl"
    report = convert("groundinggpt", [js], media, out)
    got = {s.id: s for s in _read(out)}
    assert set(got) == {f"groundinggpt-{k}-1" for k in ("ref", "charades", "vggss", "clotho")}

    ref = got["groundinggpt-ref-1"]
    assert ref.task == "rec" and ref.stage == 2 and ref.source == "groundinggpt"
    assert ref.boxes[0].box == pytest.approx((0.1, 0.0, 0.5, 1.0))  # out of the padded square
    assert "[0.100,0.000,0.500,1.000]" in ref.conversation[1].content
    assert ref.boxes[0].phrase == "The man on the left"

    vid = got["groundinggpt-charades-1"]
    assert vid.task == "video_grounding" and vid.media[0].duration == pytest.approx(4.0, abs=0.15)
    d = vid.media[0].duration
    assert (vid.spans[0].start, vid.spans[0].end) == pytest.approx((0.25 * d, 0.5 * d))

    snd = got["groundinggpt-vggss-1"]
    assert [m.type for m in snd.media] == ["image", "audio"] and snd.task == "sound_localization"
    assert "<audio>" in snd.conversation[0].content and "<sound>" not in snd.conversation[0].content
    assert snd.media[1].path.endswith("clip.wav") and snd.media[1].duration == pytest.approx(2.0)

    cap = got["groundinggpt-clotho-1"]
    assert cap.task == "vqa" and cap.boxes == [] and cap.spans == []

    assert report.missing_media == 1
    assert report.skipped == {"image missing: its size is needed to place the boxes": 1,
                              "malformed location in answer: box needs 4 numbers, got 3": 1,
                              "record has no conversations list": 1}


def test_llava_boxes_are_image_relative_unless_told_padded(tmp_path):
    records = [{"id": "000001", "image": "wide.jpg", "conversations": _turns(
        ("human", "<image>\nWhat is in the region [0.100,0.250,0.500,0.750]?"), ("gpt", "A red kite."),
        ("human", "Where is the kite?"), ("gpt", "the kite[0.100,0.250,0.500,0.750]"))}]
    js = tmp_path / "llava.json"
    js.write_text(json.dumps(records))
    _image(tmp_path / "imgs" / "wide.jpg", 200, 100)
    out = tmp_path / "llava.jsonl"
    convert("llava", [js], tmp_path / "imgs", out)
    (s,) = _read(out)
    assert s.task == "dialogue" and s.stage == 3 and len(s.conversation) == 4
    assert s.boxes[0].box == pytest.approx((0.1, 0.25, 0.5, 0.75))
    convert("llava", [js], tmp_path / "imgs", out, box_frame="padded")
    (s,) = _read(out)
    assert s.boxes[0].box == pytest.approx((0.1, 0.0, 0.5, 1.0))
    # the user's box is rewritten into the same frame as the answer's
    assert parse(s.conversation[0].content).boxes[0].xyxy == pytest.approx((0.1, 0.0, 0.5, 1.0))


def test_groundinggpt_separate_media_folders(tmp_path):
    records = [{"id": "a", "sound": "rain.wav", "conversations": _turns(("human", "<sound>\nWhat is this?"),
                                                                       ("gpt", "Rain."))}]
    js = tmp_path / "x.json"
    js.write_text(json.dumps(records))
    _wav(tmp_path / "sounds" / "rain.wav", 1.5)
    out = tmp_path / "x.jsonl"
    report = convert("lego", [js], tmp_path / "elsewhere", out, audio_root=tmp_path / "sounds")
    (s,) = _read(out)
    assert s.media[0].duration == pytest.approx(1.5) and report.missing_media == 0


# --- VGG-SS and Clotho ----------------------------------------------------------------------------


def test_vggss_boxes_clip_duration_and_missing_audio(tmp_path):
    js = tmp_path / "vggss.json"
    js.write_text(json.dumps([
        {"file": "abc_30000", "class": "dog_barking", "bbox": [[0.1, 0.2, 0.5, 1.02], [0.6, 0.6, 0.9, 0.9]]},
        {"file": "def_10000", "class": "playing violin", "bbox": [[0.2, 0.2, 0.4, 0.4]]},
        {"file": "ghi_0", "class": "x", "bbox": [[0.3, 0.3, 0.3, 0.5]]},
    ]))
    media = tmp_path / "vggss"
    _image(media / "frames" / "abc_30000.jpg", 224, 224)
    _wav(media / "audio" / "abc_30000.wav", 10.0)
    _image(media / "frames" / "def_10000.jpg", 224, 224)  # its audio is missing: 10 s assumed
    out = tmp_path / "vggss.jsonl"
    report = convert("vggss", [js], media, out)
    got = {s.id: s for s in _read(out)}
    dog = got["vggss-abc_30000"]
    assert dog.task == "sound_localization" and dog.split == "test"
    assert [m.type for m in dog.media] == ["image", "audio"]
    assert [b.box for b in dog.boxes] == [pytest.approx((0.1, 0.2, 0.5, 1.0)), pytest.approx((0.6, 0.6, 0.9, 0.9))]
    assert dog.boxes[0].phrase == "dog barking" and "duration_assumed" not in dog.meta
    violin = got["vggss-def_10000"]
    assert violin.media[1].duration == 10.0 and violin.meta["duration_assumed"] is True
    assert report.skipped == {"no non-empty box": 1} and report.missing_media == 1


def test_clotho_captions(tmp_path):
    csv = tmp_path / "clotho_captions_evaluation.csv"
    csv.write_text("file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
                   "rain.wav,Rain falls on a roof.,Heavy rain,\"Rain, then thunder\",,Water drips\n"
                   "gone.wav,a,b,c,d,e\n")
    _wav(tmp_path / "eval" / "rain.wav", 3.0)
    out = tmp_path / "clotho.jsonl"
    report = convert("clotho", [csv], tmp_path / "eval", out)
    got = _read(out)
    assert len(got) == 4 and all(s.task == "caption" and s.stage == 1 and s.split == "test" for s in got)
    assert got[2].conversation[1].content == "Rain, then thunder"
    assert got[0].media[0].duration == pytest.approx(3.0)
    assert report.skipped == {"empty caption": 1,
                              "audio duration unknown (media missing, no --durations entry)": 5}


# --- the command ----------------------------------------------------------------------------------


def test_convert_command_summary_and_errors(tmp_path):
    js, media = _groundinggpt_release(tmp_path)
    out, summary = tmp_path / "gg.jsonl", tmp_path / "report.json"
    runner = CliRunner()
    r = runner.invoke(convert_app, [str(js), "--format", "groundinggpt", "--media-root", str(media), "--out", str(out),
                                    "--report-json", str(summary), "--no-progress"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "converted" in r.output and "missing media files" in r.output and "record has no conversations" in r.output
    rep = json.loads(summary.read_text())
    assert rep["converted"] == 4 and rep["missing_media"] == 1 and rep["missing_examples"][0].endswith("missing.jpg")
    assert len(_read(out)) == 4

    r = runner.invoke(convert_app, [str(js), "--format", "nonsense", "--out", str(out)])
    assert isinstance(r.exception, FormatError) and "unknown format" in str(r.exception)
    r = runner.invoke(convert_app, [str(tmp_path / "nope.json"), "--format", "llava", "--out", str(out)])
    assert isinstance(r.exception, FormatError) and "no such file" in str(r.exception)
    r = runner.invoke(convert_app, [str(js), "--format", "refcoco", "--task", "caption", "--out", str(out)])
    assert isinstance(r.exception, FormatError)
    (tmp_path / "notjson.json").write_text("{oops")
    r = runner.invoke(convert_app, [str(tmp_path / "notjson.json"), "-f", "llava", "-o", str(tmp_path / "n.jsonl")])
    assert isinstance(r.exception, FormatError) and "not valid JSON" in str(r.exception)
    assert not (tmp_path / "n.jsonl").exists()  # nothing half-written
