"""Charades-STA, DiDeMo, ActivityNet Captions and QVHighlights converters on files in the public layouts."""

import json

import pytest
from media_files import ramp_video

from omniground.data.formats import convert
from omniground.data.formats.didemo import consensus
from omniground.data.schema import read_jsonl
from omniground.grounding import parse


def _read(path):
    bad = []
    samples = list(read_jsonl(path, bad))
    assert bad == []
    return samples


def _answer_span(sample):
    d = sample.media[0].duration
    (span,) = parse(sample.conversation[1].content, duration=d).spans
    return span.start * d, span.end * d


def test_charades_sta_durations_clipping_and_bad_lines(tmp_path):
    txt = tmp_path / "charades_sta_train.txt"
    txt.write_text(
        "AO8RW 0.0 6.9##a person is putting a book on a shelf.\n"
        "AO8RW 5.0 40.0##person opens the door.\n"  # ends after the 30-s video: clipped
        "Y6R7T 3.0 3.0##a person sits.\n"  # empty span
        "Y6R7T 1.5 4.0##person eats a sandwich.\n"
        "broken line without separator\n"
        "ZZZZZ 1.0 2.0##nobody knows how long this is.\n"  # no video, no csv row
    )
    csv = tmp_path / "Charades_v1_train.csv"
    csv.write_text("id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
                   "AO8RW,s1,Kitchen,6,7,Yes,x,book,x,c001 0.0 6.9,30.0\n"
                   "Y6R7T,s2,Bedroom,6,7,Yes,x,sandwich,x,,99.0\n")
    media = tmp_path / "Charades_v1_480"
    ramp_video(media / "Y6R7T.mp4", 8.0)  # the file's duration (8 s) beats the csv's 99 s
    out = tmp_path / "charades.jsonl"
    report = convert("charades-sta", [txt], media, out, durations=csv)
    samples = {s.id: s for s in _read(out)}
    first, clipped, eats = samples["charades-train-1"], samples["charades-train-2"], samples["charades-train-4"]
    assert first.spans[0].start == 0.0 and first.spans[0].end == pytest.approx(6.9)
    assert first.media[0].duration == 30.0 and first.task == "video_grounding" and first.split == "train"
    assert _answer_span(first) == pytest.approx((0.0, 6.9), abs=0.15)
    assert clipped.spans[0].end == 30.0 and clipped.meta["end_clipped_s"] == pytest.approx(10.0)
    assert eats.media[0].duration == pytest.approx(8.0, abs=0.15)
    assert _answer_span(eats) == pytest.approx((1.5, 4.0), abs=0.05)
    assert report.skipped["empty or reversed span (end <= start)"] == 1
    assert report.skipped["line is not `vid start end##query`"] == 1
    assert report.skipped["video duration unknown (media missing, no --durations entry)"] == 1
    assert report.missing_media == 2  # AO8RW and ZZZZZ


def test_didemo_consensus_rule():
    assert consensus([[1, 2], [1, 2], [4, 4], [1, 1]]) == (1, 2)  # majority
    # no majority: each pair once -> the one agreeing most with the others ([1,2] overlaps [1,1] and [2,3])
    assert consensus([[1, 1], [1, 2], [2, 3], [5, 5]]) == (1, 2)
    assert consensus([[0, 0], [3, 3]]) == (0, 0)  # full tie: earliest


def test_didemo_segments_to_seconds(tmp_path):
    data = [
        {"annotation_id": 7, "description": "the cat jumps onto the table", "video": "a_b_c.mov",
         "times": [[1, 2], [1, 2], [2, 2], [1, 1]], "download_link": "http://x", "num_segments": 6},
        {"annotation_id": 8, "description": "the camera pans left", "video": "short.mp4",
         "times": [[4, 5], [4, 5], [5, 5], [4, 5]], "download_link": "http://y", "num_segments": 6},
        {"annotation_id": 9, "description": "broken", "video": "a_b_c.mov", "times": []},
    ]
    js = tmp_path / "val_data.json"
    js.write_text(json.dumps(data))
    media = tmp_path / "videos"
    ramp_video(media / "short.mp4", 27.0, fps=5)
    out = tmp_path / "didemo.jsonl"
    report = convert("didemo", [js], media, out)
    samples = {s.id: s for s in _read(out)}
    cat, pan = samples["didemo-7"], samples["didemo-8"]
    assert (cat.spans[0].start, cat.spans[0].end) == (5.0, 15.0)
    assert cat.media[0].duration == 30.0 and cat.meta["duration_assumed"] is True and cat.split == "val"
    assert pan.spans[0].start == 20.0 and pan.spans[0].end == pytest.approx(27.0, abs=0.25)  # clipped to the file
    assert "duration_assumed" not in pan.meta
    assert _answer_span(cat) == pytest.approx((5.0, 15.0), abs=0.15)
    assert report.skipped == {"no annotator times": 1} and report.missing_media == 1


def test_activitynet_captions_grounding_and_dialogue(tmp_path):
    data = {
        "v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42]],
                          "sentences": ["A young woman is seen standing in a room.",
                                        " She then begins to dance around.", "She continues dancing."]},
        "v_bad": {"duration": 10.0, "timestamps": [[0, 1]], "sentences": []},
    }
    js = tmp_path / "train.json"
    js.write_text(json.dumps(data))
    media = tmp_path / "videos"
    out = tmp_path / "anet.jsonl"
    report = convert("activitynet", [js], media, out)
    samples = {s.id: s for s in _read(out)}
    s = samples["anet-v_QOlSCBRmfWY-1"]
    assert (s.spans[0].start, s.spans[0].end) == (17.37, 60.81) and s.media[0].duration == 82.73
    assert s.spans[0].phrase == "She then begins to dance around."
    assert _answer_span(s) == pytest.approx((17.37, 60.81), abs=0.42)
    assert report.skipped == {"timestamps and sentences differ in number": 1}
    assert report.missing_media == 1 and report.converted == 3

    out2 = tmp_path / "anet_dialogue.jsonl"
    convert("activitynet", [js], media, out2, task="dialogue")
    (d,) = _read(out2)
    assert d.task == "dialogue" and d.stage == 3 and len(d.conversation) == 6 and len(d.spans) == 3
    assert d.conversation[0].content.startswith("<video>\n")
    assert all("<video>" not in t.content for t in d.conversation[1:])


def test_qvhighlights_several_windows(tmp_path):
    lines = [
        {"qid": 8737, "query": "A family is playing basketball together on a green court outside.",
         "duration": 126, "vid": "bP5KfdFJzC4_660.0_810.0", "relevant_clip_ids": [0, 1, 2, 40, 41],
         "saliency_scores": [[4, 1, 1]] * 5, "relevant_windows": [[0, 6], [80, 84]]},
        {"qid": 9000, "query": "test query", "duration": 150, "vid": "abc_0.0_150.0"},
    ]
    jl = tmp_path / "highlight_val_release.jsonl"
    jl.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    out = tmp_path / "qvh.jsonl"
    report = convert("qvhighlights", [jl], tmp_path / "videos", out)
    (s,) = _read(out)
    assert [(x.start, x.end) for x in s.spans] == [(0, 6), (80, 84)] and s.split == "val"
    # The answer writes fractions with two decimals (the original's format), so each end is exact only
    # to half a hundredth of the duration: 80 s of 126 s is written 0.63 = 79.38 s, not 80 s.
    found = parse(s.conversation[1].content, duration=126).spans
    half_step_s = 0.005 * 126 + 1e-9
    written = [(x.start * 126, x.end * 126) for x in found]
    assert len(written) == 2
    for (start, end), (want_start, want_end) in zip(written, [(0, 6), (80, 84)]):
        assert abs(start - want_start) <= half_step_s and abs(end - want_end) <= half_step_s
    assert report.skipped == {"no relevant_windows (test split)": 1, "line is not JSON": 1}


def test_records_that_are_not_objects_are_skipped_not_fatal(tmp_path):
    js = tmp_path / "test_data.json"
    js.write_text(json.dumps([["not", "a", "record"], 7, {"annotation_id": 1, "description": "a dog runs",
                                                          "video": "v.mp4", "times": [[0, 0]]}]))
    out = tmp_path / "d.jsonl"
    report = convert("didemo", [js], tmp_path, out)
    assert report.converted == 1 and report.skipped == {"record is not a JSON object": 2}
    jl = tmp_path / "highlight_val_release.jsonl"
    jl.write_text("[1, 2]\n")
    assert convert("qvh", [jl], tmp_path, out).skipped == {"record is not a JSON object": 1}
