"""The evaluation runner end to end: an OpenAI-compatible endpoint started by the test, resumable
predictions, metrics by group, baselines, report files, and `eval compare`."""

import json
from pathlib import Path

import numpy as np
import pytest
from fake_chat_server import FakeChatServer
from media_files import write_wav
from PIL import Image
from typer.testing import CliRunner

from omniground.data.schema import Sample, write_jsonl
from omniground.eval.cli import app  # the `omniground eval` sub-app (the top level imports torch)
from omniground.eval.predictors import EndpointPredictor, openai_messages
from omniground.eval.runner import baseline_scores, parse_prediction, predict_all, score

W, H = 200, 100


def make_benchmark(root: Path) -> list[Sample]:
    Image.new("RGB", (W, H), "white").save(root / "img.png")
    write_wav(root / "clip.wav", (np.sin(np.arange(16000 * 4) / 5) * 8000).astype(np.int16))
    samples = []
    for i in range(4):  # REC: target box [0.1,0.2,0.5,0.6] = pixels (20,20,100,60)
        samples.append(Sample(
            id=f"rec{i}", media=[{"type": "image", "path": "img.png", "width": W, "height": H}],
            conversation=[{"role": "user", "content": f"<image>\nq{i}: where is the cat?"},
                          {"role": "assistant", "content": "the cat[0.100,0.200,0.500,0.600]"}],
            boxes=[{"phrase": "the cat", "box": [0.1, 0.2, 0.5, 0.6]}], task="rec", stage=2, source="test",
            license="CC0-1.0", split="test"))
    for i in range(2):  # audio grounding: 1.0 - 2.0 s of a 4 s clip
        samples.append(Sample(
            id=f"aud{i}", media=[{"type": "audio", "path": "clip.wav", "duration": 4.0}],
            conversation=[{"role": "user", "content": f"<audio>\nq{4 + i}: when does the bell ring?"},
                          {"role": "assistant", "content": "the bell rings {0.25,0.50}"}],
            spans=[{"phrase": "the bell rings", "start": 1.0, "end": 2.0}], task="audio_grounding", stage=2,
            source="test", license="CC0-1.0", split="test"))
    write_jsonl(root / "bench.jsonl", samples)
    return samples


# What the scripted endpoint answers to each question (Qwen-style pixels and seconds, as a real peer would):
ANSWERS = {
    "q0": '```json\n[{"bbox_2d": [20, 20, 100, 60], "label": "cat"}]\n```',  # exact: IoU 1
    "q1": '[{"bbox_2d": [20, 20, 100, 40], "label": "cat"}]',  # half height: IoU 0.5 exactly
    "q2": "I cannot see a cat.",  # no box: counts as IoU 0
    "q3": '[{"bbox_2d": [120, 60, 200, 100], "label": "cat"}]',  # disjoint: IoU 0
    "q4": "The bell rings from 1.0s - 2.0s.",  # exact
    "q5": "It rings from 00:02 to 00:04.",  # IoU 0 (2-4 s vs 1-2 s)
}


class Endpoint(FakeChatServer):
    """Scripted answers (ANSWERS by the question's first word); can be told to fail after N answers."""

    def __init__(self):
        self.fail_after: int | None = None
        super().__init__(self.answer)

    def answer(self, body):
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            return 503
        return ANSWERS[body["messages"][0]["content"][-1]["text"].split(":")[0]]


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


def test_openai_messages_carry_media_as_content_parts(tmp_path):
    s = make_benchmark(tmp_path)
    img = openai_messages(s[0], tmp_path)[0]["content"]
    assert img[0]["type"] == "image_url" and img[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert img[1] == {"type": "text", "text": "q0: where is the cat?"}  # placeholder removed
    aud = openai_messages(s[4], tmp_path)[0]["content"]
    assert aud[0]["type"] == "input_audio" and aud[0]["input_audio"]["format"] == "wav"


def test_endpoint_predictions_are_scored_with_the_benchmark_metrics(tmp_path, endpoint):
    samples = make_benchmark(tmp_path)
    p = EndpointPredictor(endpoint.url, "peer-vl", api_key="k")
    preds = predict_all(samples, tmp_path, p, tmp_path / "preds.jsonl", batch_size=2, show_progress=False)
    assert endpoint.requests[0]["path"] == "/v1/chat/completions"
    assert endpoint.requests[0]["auth"] == "Bearer k"
    m = score(samples, preds)
    assert m["rec/test"]["acc@0.5"] == pytest.approx(2 / 4)  # exact and IoU == 0.5; none and disjoint fail
    assert m["rec/test"]["miou"] == pytest.approx((1 + 0.5) / 4)
    assert m["audio_grounding/test"]["r1@0.5"] == pytest.approx(1 / 2)
    assert m["audio_grounding/test"]["event_f1"] == pytest.approx(0.5)
    base = baseline_scores(samples)
    assert base["whole image / whole clip"]["rec/test"]["miou"] == pytest.approx(0.4 * 0.4)
    assert base["whole image / whole clip"]["audio_grounding/test"]["miou"] == pytest.approx(0.25)


def test_predictions_resume_after_a_failure_without_redoing_work(tmp_path, endpoint):
    samples = make_benchmark(tmp_path)
    p = EndpointPredictor(endpoint.url, "peer-vl")
    endpoint.fail_after = 3
    with pytest.raises(Exception):
        predict_all(samples, tmp_path, p, tmp_path / "preds.jsonl", batch_size=1, show_progress=False)
    kept = (tmp_path / "preds.jsonl").read_text().splitlines()
    assert len(kept) == 3  # every answer received before the failure is on disk
    endpoint.fail_after = None
    n_before = len(endpoint.requests)
    preds = predict_all(samples, tmp_path, p, tmp_path / "preds.jsonl", batch_size=1, show_progress=False)
    assert len(preds) == 6 and len(endpoint.requests) - n_before == 3  # only the missing three were asked


def test_cli_run_writes_report_and_compare_shows_deltas(tmp_path, endpoint):
    make_benchmark(tmp_path)
    # a sample whose media is missing is counted and skipped, not fatal
    lines = (tmp_path / "bench.jsonl").read_text().splitlines()
    extra = json.loads(lines[0]) | {"id": "gone", "media": [{"type": "image", "path": "nope.png", "width": W,
                                                               "height": H}]}
    (tmp_path / "bench.jsonl").write_text("\n".join(lines + [json.dumps(extra)]) + "\n")
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "--data", str(tmp_path / "bench.jsonl"), "--out", str(out),
                            "--endpoint", endpoint.url, "--endpoint-model", "peer-vl"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["rec/test"]["acc@0.5"] == pytest.approx(0.5)
    assert any("1 samples skipped: media file missing" in n for n in metrics["notes"])
    report = (out / "report.md").read_text()
    assert "| **endpoint:peer-vl** |" in report and "centre box / middle half" in report
    assert (out / "iou_rec_test.png").stat().st_size > 1000
    assert "examples/rec0.png" in (out / "examples.md").read_text()
    assert (out / "examples" / "rec0.png").exists() and (out / "examples" / "aud0.png").exists()

    better = json.loads((out / "metrics.json").read_text())
    better["system"] = "B"
    better["metrics"]["rec/test"]["acc@0.5"] = 0.75
    (tmp_path / "b.json").write_text(json.dumps(better))
    r = runner.invoke(app, ["compare", str(out / "metrics.json"), str(tmp_path / "b.json")])
    assert r.exit_code == 0 and "+0.250" in r.output
    assert "deltas only, not paired" in r.output  # b.json has no per-sample IoUs beside it


def compared(output: str) -> dict[str, dict[str, list[str]]]:
    """`eval compare`'s tables: group -> metric -> its A only, B only and p cells."""
    out: dict[str, dict[str, list[str]]] = {}
    group = None
    for line in output.splitlines():
        if "│" not in line and "┃" not in line and "━" not in line and "─" not in line and line.strip():
            group = line.strip()  # a table's title
        elif line.count("│") == 8:
            cells = [c.strip() for c in line.split("│")[1:-1]]
            out.setdefault(group, {})[cells[0]] = cells[-3:]
    return out


def test_figures_carry_intervals_and_compare_pairs_the_samples(tmp_path, endpoint):
    from omniground.eval.metrics import wilson_interval

    make_benchmark(tmp_path)
    runner = CliRunner()
    out = tmp_path / "a"
    r = runner.invoke(app, ["run", "--data", str(tmp_path / "bench.jsonl"), "--out", str(out), "--endpoint",
                            endpoint.url, "--endpoint-model", "peer-vl", "--examples", "0"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["rec/test"]["ci95"]["acc@0.5"] == pytest.approx(wilson_interval(0.5, 4))
    assert "miou" not in metrics["rec/test"]["ci95"]
    lo, hi = wilson_interval(0.5, 4)
    assert f"| 95% interval | {lo:.3f}-{hi:.3f} |" in (out / "report.md").read_text()
    per_sample = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    ious = {r["id"]: r["iou"] for r in per_sample}
    assert ious["rec0"] == pytest.approx(1.0) and ious["rec2"] == 0.0 and ious["aud0"] == pytest.approx(1.0)
    assert {r["group"] for r in per_sample} == {"rec/test", "audio_grounding/test"}

    # B: right on rec2 and rec3, wrong on rec1 (right in A only at IoU exactly 0.5: a tie that counts)
    b = tmp_path / "b"
    b.mkdir()
    doc = json.loads((out / "metrics.json").read_text()) | {"system": "B"}
    doc["metrics"]["rec/test"]["acc@0.5"] = 0.75
    (b / "metrics.json").write_text(json.dumps(doc))
    changed = {"rec1": 0.2, "rec2": 0.9, "rec3": 0.8}
    (b / "per_sample.jsonl").write_text("".join(json.dumps(r | {"iou": changed.get(r["id"], r["iou"])}) + "\n"
                                                for r in per_sample))
    r = runner.invoke(app, ["compare", str(out / "metrics.json"), str(b / "metrics.json")])
    assert r.exit_code == 0, r.output
    assert compared(r.output)["rec/test"]["acc@0.5"] == ["1", "2", "1.000"]  # A only, B only, McNemar's p
    r = runner.invoke(app, ["compare", str(out), str(b)])  # the `eval run --out` folders do as well
    assert r.exit_code == 0, r.output
    assert compared(r.output)["rec/test"]["acc@0.5"] == ["1", "2", "1.000"]
    assert compared(r.output)["rec/test"]["miou"] == ["", "", ""]  # not a share of samples: not paired
    assert "McNemar" in r.output

    # REC scored on other samples (one missing from B): its deltas only; audio still paired
    (b / "per_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in per_sample if r["id"] != "rec3"))
    r = runner.invoke(app, ["compare", str(out / "metrics.json"), str(b / "metrics.json")])
    assert compared(r.output)["rec/test"]["acc@0.5"] == ["", "", ""]
    assert compared(r.output)["audio_grounding/test"]["r1@0.5"] == ["0", "0", "1.000"]
    (b / "per_sample.jsonl").unlink()
    r = runner.invoke(app, ["compare", str(out / "metrics.json"), str(b / "metrics.json")], terminal_width=200)
    assert r.exit_code == 0 and "deltas only, not paired" in r.output


def test_cli_errors_are_one_line(tmp_path):
    from omniground.eval.cli import EvalError

    runner = CliRunner()
    r = runner.invoke(app, ["run", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)])
    assert isinstance(r.exception, EvalError) and "no such benchmark file" in str(r.exception)


def test_negatives_are_scored_by_declining_to_ground():
    def negative(i, answer):
        return Sample(id=f"n{i}", media=[{"type": "image", "path": "x.png", "width": 10, "height": 10}],
                      conversation=[{"role": "user", "content": "<image>\nWhere is the purple clock?"},
                                    {"role": "assistant", "content": answer}], task="negative", stage=2,
                      source="test", license="CC0")

    samples = [negative(0, "No, there is no purple clock."), negative(1, "I cannot find a purple clock."),
               negative(2, "No purple clock here."), negative(3, "There is none.")]
    texts = ["No, there is none.", "It is here [0.1,0.1,0.2,0.2].", "", "Yes, there is one."]
    preds = {s.id: parse_prediction(s, t) for s, t in zip(samples, texts)}
    m = score(samples, preds)["negative/train"]
    assert m["rejection_acc"] == pytest.approx(2 / 4)  # the box and the empty answer fail
    assert m["yes_no_acc"] == pytest.approx(1 / 2)  # only the references with a yes/no word count
