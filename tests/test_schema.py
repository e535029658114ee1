"""The one sample schema and its validator: bad lines are reported with their number and skipped."""

import json

import pytest
from pydantic import ValidationError

from omniground.data.schema import Sample, read_jsonl, write_jsonl


def image_sample(**over):
    base = {
        "id": "s1",
        "media": [{"type": "image", "path": "a.jpg", "width": 640, "height": 480}],
        "conversation": [
            {"role": "user", "content": "<image>\nWhere is the red car?"},
            {"role": "assistant", "content": "the red car[0.100,0.200,0.300,0.400]"},
        ],
        "boxes": [{"phrase": "the red car", "box": [0.1, 0.2, 0.3, 0.4]}],
        "task": "rec",
        "stage": 2,
        "source": "synth",
        "license": "CC0-1.0",
    }
    base.update(over)
    return base


def video_sample(**over):
    base = {
        "id": "v1",
        "media": [{"type": "video", "path": "v.mp4", "duration": 20.0}],
        "conversation": [
            {"role": "user", "content": "<video>\nWhen does the dog jump?"},
            {"role": "assistant", "content": "It jumps in {0.25,0.50}."},
        ],
        "spans": [{"phrase": "the dog jumps", "start": 5.0, "end": 10.0}],
        "task": "video_grounding",
        "stage": 2,
        "source": "synth",
        "license": "CC0-1.0",
    }
    base.update(over)
    return base


def test_valid_samples_pass():
    Sample.model_validate(image_sample())
    Sample.model_validate(video_sample())


@pytest.mark.parametrize(
    "over, why",
    [
        ({"boxes": [{"phrase": "x", "box": [0.5, 0.2, 0.3, 0.4]}]}, "reversed"),
        ({"boxes": [{"phrase": "x", "box": [0.1, 0.2, 0.3, 1.4]}]}, "outside 0..1"),
        ({"boxes": [{"phrase": "the red car", "box": [0.1, 0.2, 0.35, 0.4]}]}, "not a label"),  # text != label
        ({"conversation": [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "x"}]},
         "placeholder"),
        ({"conversation": [{"role": "user", "content": "<image> a"}, {"role": "user", "content": "b"}]},
         "no assistant"),
        ({"task": "juggling"}, "task"),
        ({"stage": 4}, "stage"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"conversation": [{"role": "user", "content": "<image> q"},
                           {"role": "assistant", "content": "car[0.1,0.2,0.3"}]}, "malformed"),
    ],
)
def test_invalid_image_samples_are_rejected(over, why):
    with pytest.raises(ValidationError) as e:
        Sample.model_validate(image_sample(**over))
    assert why in str(e.value)


def test_span_checks_use_seconds_and_duration():
    with pytest.raises(ValidationError, match="after the media"):
        Sample.model_validate(video_sample(spans=[{"phrase": "x", "start": 5.0, "end": 25.0}]))
    with pytest.raises(ValidationError, match="not a label"):  # text says 5-10 s, label 6-12 s
        Sample.model_validate(video_sample(spans=[{"phrase": "x", "start": 6.0, "end": 12.0}]))
    with pytest.raises(ValidationError, match="duration"):
        Sample.model_validate(video_sample(media=[{"type": "video", "path": "v.mp4"}]))


def test_read_jsonl_reports_bad_lines_with_numbers_and_keeps_good_ones(tmp_path):
    p = tmp_path / "d.jsonl"
    lines = [
        json.dumps(image_sample()),
        "{not json",
        "",
        json.dumps(image_sample(id="s2", stage=9)),
        json.dumps(video_sample()),
    ]
    p.write_text("\n".join(lines) + "\n")
    bad = []
    good = list(read_jsonl(p, bad))
    assert [s.id for s in good] == ["s1", "v1"]
    assert [b.line for b in bad] == [2, 4]
    assert "JSON" in bad[0].error and "stage" in bad[1].error


def test_write_then_read_round_trip_and_atomicity(tmp_path):
    samples = [Sample.model_validate(image_sample()), Sample.model_validate(video_sample())]
    out = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(out, samples) == 2
    assert list(read_jsonl(out)) == samples

    def boom():
        yield samples[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "fail.jsonl", boom())
    assert not (tmp_path / "fail.jsonl").exists()
    assert [f.name for f in tmp_path.iterdir()] == ["sub"]  # no temp file left either


def test_media_path_resolves_relative_to_the_jsonl_folder(tmp_path):
    s = Sample.model_validate(image_sample())
    assert s.media_path(0, tmp_path) == tmp_path / "a.jpg"
