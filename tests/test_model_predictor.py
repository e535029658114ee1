"""`omniground eval run --model CHECKPOINT`: a micro checkpoint saved here answers a small benchmark in
batches, its answers are exactly what the Python API says, and the run is scored and reported."""

import json

import numpy as np
import pytest
import torch
from media_files import write_wav
from micro import micro_model
from PIL import Image
from typer.testing import CliRunner

from omniground.data.schema import Sample, write_jsonl
from omniground.errors import UserError
from omniground.eval.cli import app
from omniground.eval.model_predictor import ModelPredictor
from omniground.model import OmniGround


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    micro_model(text=dict(initializer_range=0.3), num_video_frames=8).save_pretrained(root / "ckpt")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        samples.append(Sample(
            id=f"rec{i}", media=[{"type": "image", "path": f"img{i}.png", "width": 50, "height": 30}],
            conversation=[{"role": "user", "content": f"<image>\nWhere is the cat {i}?"},
                          {"role": "assistant", "content": "the cat[0.100,0.200,0.500,0.600]"}],
            boxes=[{"phrase": "the cat", "box": [0.1, 0.2, 0.5, 0.6]}], task="rec", stage=2, source="test",
            license="CC0-1.0", split="test"))
    write_wav(root / "clip.wav", (np.sin(np.arange(16000 * 3) / 5) * 8000).astype(np.int16))
    samples.append(Sample(
        id="aud0", media=[{"type": "audio", "path": "clip.wav", "duration": 3.0}],
        conversation=[{"role": "user", "content": "<audio>\nWhen does the bell ring?"},
                      {"role": "assistant", "content": "the bell {0.33,0.67}"}],
        spans=[{"phrase": "the bell", "start": 1.0, "end": 2.0}], task="audio_grounding", stage=2, source="test",
        license="CC0-1.0", split="test"))
    write_jsonl(root / "bench.jsonl", samples)
    return root, samples


def test_eval_run_with_a_checkpoint(bench):
    root, samples = bench
    result = CliRunner().invoke(app, ["run", "--data", str(root / "bench.jsonl"), "--out", str(root / "out"),
                                      "--model", str(root / "ckpt"), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (root / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in lines] == [s.id for s in samples]
    # the predictor's answers are the API's answers to the same questions and media
    og = OmniGround.from_pretrained(root / "ckpt")
    for s, p in zip(samples, lines):
        expected = og.chat([{"role": "user", "content": s.conversation[0].content}],
                           [s.media_path(0, root)], max_new_tokens=64)
        assert p["text"] == expected.text
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    text = json.dumps(metrics)
    assert "rec/test" in text and "audio_grounding/test" in text
    assert (root / "out" / "report.md").is_file()


def test_predictor_batches_and_reads_boxes_in_the_image_frame(bench):
    root, samples = bench
    predictor = ModelPredictor(str(root / "ckpt"), max_new_tokens=8)
    assert predictor.box_frame == "norm1" and predictor.name == "omniground:ckpt"
    calls = []
    original = predictor.og.chat_batch
    predictor.og.chat_batch = lambda convs, media, **kw: calls.append(len(convs)) or original(convs, media, **kw)
    answers = predictor.predict(samples, root)
    assert calls == [len(samples)] and len(answers) == len(samples)
    assert all(isinstance(a, str) for a in answers)


def test_a_missing_checkpoint_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="no model directory"):
        ModelPredictor(str(tmp_path / "missing"))


def test_answer_start_gives_rec_answers_the_phrase_and_leaves_the_rest(bench):
    root, samples = bench
    predictor = ModelPredictor(str(root / "ckpt"), max_new_tokens=8, answer_start=True)
    assert predictor.name == "omniground:ckpt+phrase"
    answers = predictor.predict(samples, root)
    og = predictor.og
    for s, a in zip(samples, answers):
        media = [s.media_path(0, root)]
        question = [{"role": "user", "content": s.conversation[0].content}]
        if s.task == "rec":  # "The cat ..." given, the model writes on from there: the API's answer with that start
            assert a.startswith("The cat")
            assert a == og.chat(question, media, max_new_tokens=8, answer_prefixes=["The cat"]).text
        else:  # audio grounding: the model writes its whole answer
            assert a == og.chat(question, media, max_new_tokens=8).text
    from omniground.eval.cli import EvalError

    result = CliRunner().invoke(app, ["run", "--data", str(root / "bench.jsonl"), "--out", str(root / "o2"),
                                      "--endpoint", "http://localhost:9", "--endpoint-model", "x", "--answer-start"])
    assert isinstance(result.exception, EvalError) and "--answer-start needs --model" in str(result.exception)


def test_eval_run_can_keep_only_some_tasks(bench):
    root, samples = bench
    result = CliRunner().invoke(app, ["run", "--data", str(root / "bench.jsonl"), "--out", str(root / "rec-only"),
                                      "--model", str(root / "ckpt"), "--task", "rec", "--answer-start"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (root / "rec-only" / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in lines] == [s.id for s in samples if s.task == "rec"]
    metrics = json.dumps(json.loads((root / "rec-only" / "metrics.json").read_text()))
    assert "rec/test" in metrics and "audio_grounding" not in metrics


def test_an_output_folder_refuses_predictions_of_a_checkpoint_retrained_in_place(bench, tmp_path):
    """Same path, same name, other weights: resuming would score the old model's answers as the new one's."""
    root, _ = bench
    ckpt, out = tmp_path / "model", tmp_path / "out"
    OmniGround.from_pretrained(root / "ckpt").save_pretrained(ckpt)
    args = ["run", "--data", str(root / "bench.jsonl"), "--out", str(out), "--model", str(ckpt), "--task", "rec"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, args).exit_code == 0  # the same weights resume
    og = OmniGround.from_pretrained(ckpt)
    with torch.no_grad():
        next(og.model.parameters()).add_(1e-3)
    og.save_pretrained(ckpt)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "with other weights" in str(result.exception)
