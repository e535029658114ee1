"""Benchmark runners: a public release (RefCOCO layout) through the converters, and the one-command generated
benchmark, both against an OpenAI-compatible server the test starts; the reserved evaluation seeds."""

import json
import pickle

import pytest
from fake_chat_server import FakeChatServer
from media_files import write_video
from PIL import Image
from typer.testing import CliRunner

from omniground.data.schema import read_jsonl
from omniground.eval.benchmarks import BenchmarkError, prepare_public
from omniground.eval.cli import app  # the `omniground eval` sub-app (the top level imports torch)
from omniground.eval.heldout import BENCH_SEED, RESERVED_EVAL_SEEDS, check_training_seed


@pytest.fixture
def serve():
    servers = []

    def start(answer):
        servers.append(FakeChatServer(answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _text(body):
    return body["messages"][0]["content"][-1]["text"]


def _kinds(body):
    return {part["type"] for part in body["messages"][0]["content"]}


# --- a public benchmark: RefCOCO from its release files --------------------------------------------


def _refcoco(tmp_path):
    ann = tmp_path / "refcoco"
    ann.mkdir()
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": 200, "height": 100} for i in (1, 2, 3)]
    anns = [{"id": 10 + i, "image_id": i, "bbox": [20.0, 20.0, 80.0, 40.0], "category_id": 1} for i in (1, 2, 3)]
    (ann / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                    "categories": [{"id": 1, "name": "person"}]}))
    refs = [
        {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "val", "category_id": 1,
         "sentences": [{"sent_id": 1, "sent": "exact one"}, {"sent_id": 2, "sent": "half one"}]},
        {"ref_id": 2, "ann_id": 12, "image_id": 2, "split": "testA", "category_id": 1,
         "sentences": [{"sent_id": 3, "sent": "exact one"}]},
        {"ref_id": 3, "ann_id": 13, "image_id": 3, "split": "testB", "category_id": 1,
         "sentences": [{"sent_id": 4, "sent": "exact one"}]},
        {"ref_id": 4, "ann_id": 11, "image_id": 1, "split": "train", "category_id": 1,
         "sentences": [{"sent_id": 5, "sent": "exact one"}]},
    ]
    with open(ann / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    media = tmp_path / "train2014"
    media.mkdir()
    for i in (1, 2):  # image 3 (testB) is missing
        Image.new("RGB", (200, 100), "white").save(media / images[i - 1]["file_name"])
    return ann, media


def _refcoco_answer(body):
    # ground truth (20,20)-(100,60) in pixels; "half one" gets the top half of it: IoU exactly 0.5
    box = [20, 20, 100, 40] if "half one" in _text(body) else [20, 20, 100, 60]
    return json.dumps([{"bbox_2d": box, "label": "person"}])


def test_public_benchmark_through_the_converter(tmp_path, serve):
    ann, media = _refcoco(tmp_path)
    server = serve(_refcoco_answer)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--benchmark", "refcoco", "--ann", str(ann), "--media-root", str(media),
                                 "--out", str(out), "--endpoint", server.url, "--endpoint-model", "peer",
                                 "--examples", "1"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["metrics"]) == {"rec/val", "rec/testA"}  # train refs dropped; testB's only image is missing
    assert m["metrics"]["rec/val"]["acc@0.5"] == pytest.approx(1.0)  # IoU 1 and IoU exactly 0.5 both count
    assert m["metrics"]["rec/val"]["acc@0.75"] == pytest.approx(0.5)
    assert m["metrics"]["rec/testA"]["n"] == 1
    assert any("1 samples skipped: media file missing" in n for n in m["notes"])
    assert any("missing media files 1" in n for n in m["notes"])
    assert len(server.bodies) == 3
    kept = list(read_jsonl(out / "benchmark.jsonl"))
    assert sorted(s.split for s in kept) == ["testA", "testB", "val", "val"]


def test_public_benchmark_errors(tmp_path):
    ann, media = _refcoco(tmp_path)
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        prepare_public("refcocoo", [ann], media, tmp_path / "x")
    with pytest.raises(BenchmarkError, match="no sample in split"):
        prepare_public("refcoco", [ann], media, tmp_path / "y", splits=["testC"])
    r = CliRunner().invoke(app, ["run", "--benchmark", "refcoco", "--out", str(tmp_path / "z"),
                                 "--endpoint", "http://127.0.0.1:9", "--endpoint-model", "m"])
    assert "needs --ann" in str(r.exception)


# --- the generated benchmark in one command ----------------------------------------------------------


def _centre_answer(body):
    """Always the centre box / the middle half: the system must score exactly as that baseline does."""
    return "[0.250,0.250,0.750,0.750]" if "image_url" in _kinds(body) else "{0.25,0.75}"


def test_generated_benchmark_one_command(tmp_path, serve):
    server = serve(_centre_answer)
    out = tmp_path / "bench"
    args = ["bench", "--out", str(out), "--n", "2", "--endpoint", server.url, "--endpoint-model", "centre",
            "--examples", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    groups = doc["metrics"]
    assert {g.split("/")[1] for g in groups} == {"test", "unseen"}  # in-distribution and unseen combinations
    assert any(g.startswith("video_grounding/") for g in groups)
    assert any(g.startswith("audio_grounding/") for g in groups)
    centre = doc["baselines"]["centre box / middle half"]
    located = [g for g in groups if g in centre]
    assert located
    for g in located:  # same answers, same metrics: the runner and the baseline score identically
        for k, v in centre[g].items():
            assert groups[g][k] == (v if k == "ci95" else pytest.approx(v)), (g, k)  # ci95: intervals, exactly alike
    samples = list(read_jsonl(out / "data" / "benchmark.jsonl"))
    assert len(samples) == 2 * 3 * 2 and all(f"-s{BENCH_SEED}-" in s.id for s in samples)
    assert len(server.bodies) == len(samples)
    assert "centre box / middle half" in (out / "report.md").read_text()

    # a second run reuses the generated data and every prediction: nothing is asked again
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(server.bodies) == len(samples)


def test_reserved_seeds_are_refused_for_training():
    check_training_seed(0)
    with pytest.raises(ValueError, match="reserved for evaluation"):
        check_training_seed(BENCH_SEED)
    with pytest.raises(ValueError, match="reserved"):
        check_training_seed(RESERVED_EVAL_SEEDS.stop - 1)
    check_training_seed(RESERVED_EVAL_SEEDS.stop)
    with pytest.raises(ValueError, match="evaluation only"):
        check_training_seed(7, split="unseen")


def test_one_output_folder_holds_one_system(tmp_path, serve):
    ann, media = _refcoco(tmp_path)
    server = serve(_refcoco_answer)
    out = tmp_path / "run"
    base = ["run", "--benchmark", "refcoco", "--ann", str(ann), "--media-root", str(media), "--out", str(out),
            "--endpoint", server.url, "--examples", "0", "--endpoint-model"]
    assert CliRunner().invoke(app, base + ["peer-a"]).exit_code == 0
    r = CliRunner().invoke(app, base + ["peer-b"])
    assert "holds predictions of endpoint:peer-a" in str(r.exception)  # resuming would mix two systems' answers


def test_temporal_benchmark_scores_against_the_best_matching_window(tmp_path, serve):
    import numpy as np

    lines = [
        {"qid": 1, "query": "a family plays basketball", "duration": 126, "vid": "vidA_0.0_126.0",
         "relevant_windows": [[0, 6], [80, 84]]},
        {"qid": 2, "query": "a man cooks", "duration": 150, "vid": "vidB_0.0_150.0", "relevant_windows": [[30, 60]]},
    ]
    jl = tmp_path / "highlight_val_release.jsonl"
    jl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in ("vidA_0.0_126.0", "vidB_0.0_150.0"):  # stand-ins: the annotation's duration is the one used
        write_video(videos / f"{vid}.mp4", np.zeros((1, 16, 16, 3), np.uint8), 2)
    # query 1: the second window in seconds (IoU 1 with it, 0 with the first); query 2: 45-60 s of 30-60 s (IoU 0.5)
    server = serve(lambda body: "from 80.0s to 84.0s" if "basketball" in _text(body) else "between 45 s and 60 s.")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--benchmark", "qvh", "--ann", str(jl), "--media-root", str(videos),
                                 "--out", str(out), "--endpoint", server.url, "--endpoint-model", "p",
                                 "--examples", "0"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())["metrics"]["video_grounding/val"]
    assert (m["r1@0.3"], m["r1@0.5"], m["r1@0.7"]) == pytest.approx((1.0, 1.0, 0.5))
    assert m["miou"] == pytest.approx((1.0 + 0.5) / 2) and m["no_location"] == 0.0
