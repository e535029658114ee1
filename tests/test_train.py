"""The trainer on a very small model and a few hand-made samples: stages chain, resume equals uninterrupted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from media_files import write_video, write_wav
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from omniground.data.schema import BoxLabel, Media, Sample, SpanLabel, Turn, write_jsonl
from omniground.grounding import Box, Span, format_box, format_span
from omniground.train import TrainConfig, TrainConfigError, Trainer, load_config, train
from omniground.train.data import BatchPlan, shard

# A model small enough that a training step takes milliseconds.
MICRO_MODEL = dict(
    num_location_bins=16,
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=2),
    vision=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64),
    audio=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    resampler_hidden_size=32, resampler_num_heads=2, resampler_num_layers=1, video_num_queries=4,
    audio_num_queries=4, num_video_frames=2, max_audio_windows=2, audio_window_seconds=1.0,
)
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}


def _image_sample(root: Path, i: int) -> Sample:
    rng = np.random.default_rng(i)
    name = list(COLOURS)[i % 3]
    w, h = 40, 32
    x1, y1 = int(rng.integers(0, 20)), int(rng.integers(0, 16))
    x2, y2 = x1 + 12, y1 + 10
    img = np.full((h, w, 3), 240, np.uint8)
    img[y1:y2, x1:x2] = COLOURS[name]
    path = root / "media" / f"img{i}.png"
    Image.fromarray(img).save(path)
    box = Box.from_pixels((x1, y1, x2, y2), w, h)
    return Sample(
        id=f"img{i}", media=[Media(type="image", path=f"media/{path.name}", width=w, height=h)],
        conversation=[Turn(role="user", content=f"<image>\nWhere is the {name} square?"),
                      Turn(role="assistant", content=f"The {name} square{format_box(box)}.")],
        boxes=[BoxLabel(phrase=f"{name} square", box=box.xyxy)], task="rec", stage=2, source="test",
        license="CC0", split="train",
    )


def _audio_sample(root: Path, i: int) -> Sample:
    sr, seconds = 16000, 2.0
    t = np.arange(int(sr * seconds)) / sr
    start, end = 0.5 + 0.25 * (i % 3), 1.25 + 0.25 * (i % 3)
    x = 0.01 * np.random.default_rng(i).standard_normal(t.shape)
    x[(t >= start) & (t < end)] += 0.5 * np.sin(2 * np.pi * 880 * t[(t >= start) & (t < end)])
    path = root / "media" / f"aud{i}.wav"
    write_wav(path, (np.clip(x, -1, 1) * 32767).astype(np.int16), sr)
    span = Span.from_seconds(start, end, seconds)
    return Sample(
        id=f"aud{i}", media=[Media(type="audio", path=f"media/{path.name}", duration=seconds)],
        conversation=[Turn(role="user", content="<audio>\nWhen can you hear the beep?"),
                      Turn(role="assistant", content=f"The beep{format_span(span)}.")],
        spans=[SpanLabel(phrase="beep", start=start, end=end)], task="audio_grounding", stage=2, source="test",
        license="CC0", split="train",
    )


def _video_sample(root: Path, i: int) -> Sample:

    fps, n = 4, 8
    path = root / "media" / f"vid{i}.mp4"
    on = (2 + i % 3, 5 + i % 3)
    frames = np.full((n, 32, 32, 3), 20, np.uint8)
    frames[on[0] : on[1], 8:24, 8:24] = 230
    write_video(path, frames, fps)
    duration = n / fps
    span = Span.from_seconds(on[0] / fps, on[1] / fps, duration)
    return Sample(
        id=f"vid{i}", media=[Media(type="video", path=f"media/{path.name}", width=32, height=32, duration=duration)],
        conversation=[Turn(role="user", content="<video>\nWhen is the white square visible?"),
                      Turn(role="assistant", content=f"{format_span(span)}.")],
        spans=[SpanLabel(phrase="white square", start=on[0] / fps, end=on[1] / fps)], task="video_grounding",
        stage=2, source="test", license="CC0", split="train",
    )


def write_tiny_data(root: Path, images: int = 8, audios: int = 4, videos: int = 4) -> Path:
    """A JSONL of hand-made samples of all three modalities (media under root/media)."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    samples = [_image_sample(root, i) for i in range(images)]
    samples += [_audio_sample(root, i) for i in range(audios)]
    samples += [_video_sample(root, i) for i in range(videos)]
    write_jsonl(root / "train.jsonl", samples)
    return root / "train.jsonl"


def stage_config(tmp: Path, data: Path, stage: int, init: dict, **kw) -> TrainConfig:
    settings = dict(
        stage=stage, output_dir=tmp / f"stage{stage}", model=init, train_data=[{"path": data}],
        batch_size=4, grad_accum=2, max_steps=3, lr=3e-3, warmup_steps=1, log_every=1, num_threads=1, seed=3,
    )
    settings.update(kw)
    return TrainConfig.model_validate(settings)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


def _adapter_state(model) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(model.adapter_modules())
            for k, v in m.state_dict().items()}


def test_stages_chain_and_stage1_adapters_are_saved_and_loaded(tmp_path, data):
    cfg1 = stage_config(tmp_path, data, 1, {"tiny": MICRO_MODEL}, eval_data=[{"path": data, "limit": 4}],
                        eval_generate=2, eval_every=2, save_every=2)
    t1 = Trainer(cfg1)
    lm_before = {k: v.clone() for k, v in t1.og.model.language_model.model.layers.state_dict().items()}
    adapters_before = _adapter_state(t1.og.model)
    summary1 = t1.train()
    trained = _adapter_state(t1.accelerator.unwrap_model(t1.model))
    # stage 1: adapters learn, the LM's blocks stay frozen
    assert any(not torch.equal(adapters_before[k], trained[k]) for k in trained)
    lm_after = t1.og.model.language_model.model.layers.state_dict()
    assert all(torch.equal(lm_before[k], lm_after[k]) for k in lm_before)
    assert summary1["steps"] == 3 and len(summary1["history"]) == 3
    assert summary1["evals"] and "eval_loss" in summary1["evals"][-1] and "metrics" in summary1["evals"][-1]
    metrics = json.loads((cfg1.output_dir / "metrics.json").read_text())
    assert metrics["stage"] == 1 and metrics["samples_seen"] == 3 * 4 * 2
    assert (cfg1.output_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"

    # stage 2 starts from stage 1's saved model: its adapters are the trained ones, not fresh ones
    # (and may add a part to it: a span pointer, fresh, among the adapters)
    cfg2 = stage_config(tmp_path, data, 2, {"from_checkpoint": str(cfg1.model_dir),
                                            "config_updates": {"span_pointers": True, "time_anchored_queries": True}},
                        max_steps=2)
    t2 = Trainer(cfg2)
    loaded = _adapter_state(t2.og.model)
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert t2.og.model.config.num_location_bins == 16 and t2.og.model.span_pointer in t2.og.model.adapter_modules()
    # stage 2 trains the LM too
    lm_params = [p for p in t2.og.model.language_model.model.layers.parameters()]
    assert lm_params and all(p.requires_grad for p in lm_params)
    t2.train()
    # readable by whoever may read its config (safetensors alone writes 0600)
    mode = {f.name: f.stat().st_mode & 0o777 for f in cfg2.model_dir.iterdir()}
    assert mode["model.safetensors"] == mode["config.json"]


def test_a_stage_says_when_the_encoders_train_too(tmp_path, data):
    import io

    from rich.console import Console

    for train_encoders, said in ((True, True), (False, False)):
        out = io.StringIO()
        cfg = stage_config(tmp_path / str(train_encoders), data, 1,
                           {"tiny": {**MICRO_MODEL, "train_encoders": train_encoders}}, max_steps=1)
        Trainer(cfg, console=Console(file=out, width=200)).train()
        assert ("encoders train in this stage too" in out.getvalue()) is said


def test_resume_equals_uninterrupted(tmp_path, data, caplog):
    init = {"tiny": MICRO_MODEL}
    whole = stage_config(tmp_path / "a", data, 2, init, max_steps=4, save_every=2)
    train(whole)
    cut = stage_config(tmp_path / "b", data, 2, init, max_steps=4, save_every=2)
    Trainer(cut).train(stop_after=2)  # "killed" after step 2's checkpoint
    assert not cut.model_dir.exists()
    resumed = Trainer(cut)
    resumed.train(resume=True)
    lm = resumed.og.model.language_model  # its head, tied to the embeddings, is stored once and comes back tied
    assert lm.config.tie_word_embeddings and lm.lm_head.weight is lm.get_input_embeddings().weight
    assert "Removed shared tensor" not in caplog.text  # accelerate's alarm about exactly that, silenced
    a, b = load_file(whole.model_dir / "model.safetensors"), load_file(cut.model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    la = [r["loss"] for r in json.loads((whole.output_dir / "metrics.json").read_text())["history"]]
    lb = [r["loss"] for r in json.loads((cut.output_dir / "metrics.json").read_text())["history"]]
    assert la == pytest.approx(lb, abs=1e-6)
    # and training did something: the weights moved away from the initial ones
    fresh = stage_config(tmp_path / "c", data, 2, init, max_steps=1, lr=1e-12)
    train(fresh)
    c = load_file(fresh.model_dir / "model.safetensors")
    assert any(not torch.allclose(a[k], c[k], atol=1e-6) for k in a)


def test_a_text_only_source_teaches_the_words_before_the_location_without_the_media(tmp_path, data):
    from omniground.train.config import DataSource
    from omniground.train.data import Collator, SampleDataset, load_sources

    cfg = stage_config(tmp_path, data, 2, {"tiny": MICRO_MODEL}, max_steps=2,
                       train_data=[{"path": data, "text_only": True}])
    trainer = Trainer(cfg)
    items = trainer.train_set.items
    # the video answers start with their span: no words to learn, dropped; images and audio keep theirs
    assert sorted({it.sample.task for it in items}) == ["audio_grounding", "rec"] and len(items) == 12
    words = trainer.processor.tokenizer("Where is the red square?\nThe red square", add_special_tokens=False)
    assert trainer.train_set.lengths()[0] == len(words["input_ids"])  # what length grouping sorts by
    messages, media = trainer.train_set[0]
    assert media == [] and messages[0]["content"] == "Where is the red square?"
    batch = trainer.collate([trainer.train_set[i] for i in (0, 9)])
    assert "pixel_values" not in batch and "audio_values" not in batch
    tok = trainer.processor.tokenizer
    learned = [tok.decode(row[row != -100]) for row in batch["labels"]]
    assert learned == ["The red square", "The beep"]  # the cut answers' closing tokens are not learned
    # cut by max_length before its closing token ("<|im_end|>\n"), it keeps every word
    full = len(trainer.collate([trainer.train_set[0]])["input_ids"][0])
    short = Collator(trainer.processor, max_length=full - 2)([trainer.train_set[0]])["labels"][0]
    assert tok.decode(short[short != -100]) == "The red square"
    lm_before = {k: v.clone() for k, v in trainer.og.model.language_model.state_dict().items()}
    trainer.train()
    lm_after = trainer.og.model.language_model.state_dict()
    assert any(not torch.equal(lm_before[k], lm_after[k]) for k in lm_before)

    # a whole answer (no location in it) keeps its closing token; a question that holds a box is refused
    plain = Sample(id="no", media=[], conversation=[Turn(role="user", content="Is there a cat?"),
                                                    Turn(role="assistant", content="There is no cat.")],
                   task="negative", stage=2, source="test", license="CC0", split="train")
    write_jsonl(tmp_path / "plain.jsonl", [plain])
    ds = SampleDataset(load_sources([DataSource(path=tmp_path / "plain.jsonl", text_only=True)]), trainer.processor)
    labels = Collator(trainer.processor)([ds[0]])["labels"][0]
    assert tok.decode(labels[labels != -100]) == "There is no cat.<|im_end|>"
    reg = plain.model_copy(update={"conversation": [
        Turn(role="user", content=f"What is at {format_box(Box(0.1, 0.1, 0.5, 0.5))}?"),
        Turn(role="assistant", content="A cat.")]})
    write_jsonl(tmp_path / "reg.jsonl", [reg])
    with pytest.raises(TrainConfigError, match="text_only: sample no: a question holds a box") as e:
        load_sources([DataSource(path=tmp_path / "reg.jsonl", text_only=True)])
    assert "\n" not in str(e.value)


def test_batch_plan_is_deterministic_complete_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(10, 500, size=203)
    plan = BatchPlan(203, 8, seed=5, lengths=lengths)
    epoch0 = plan.plan_epoch(0)
    assert epoch0 == BatchPlan(203, 8, seed=5, lengths=lengths).plan_epoch(0)
    assert epoch0 != plan.plan_epoch(1)
    flat = [i for b in epoch0 for i in b]
    assert len(flat) == len(set(flat)) == 203 // 8 * 8  # each sample at most once; last partial batch dropped
    assert plan.global_batch_at(len(epoch0) + 3) == plan.plan_epoch(1)[3]

    def padding(batches):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    assert padding(epoch0) < 0.5 * padding(BatchPlan(203, 8, seed=5).plan_epoch(0))
    parts = [shard(epoch0[0], r, 2) for r in range(2)]
    assert parts[0] + parts[1] == epoch0[0] and len(parts[0]) == 4


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 4\noutput_dir: x\nmodel: {tiny: {}}\ntrain_data: [{path: a.jsonl}]\nmax_steps: 1\n")
    with pytest.raises(TrainConfigError) as e:
        load_config(bad)
    assert "stage" in str(e.value) and "\n" not in str(e.value)
    two = tmp_path / "two.yaml"
    two.write_text("stage: 1\noutput_dir: x\nmodel: {tiny: {}, from_checkpoint: y}\n"
                   "train_data: [{path: a.jsonl}]\nmax_steps: 1\n")
    with pytest.raises(TrainConfigError, match="exactly one"):
        load_config(two)
    ok = load_config(two, {"model": {"tiny": {}}, "max_steps": 7})
    assert ok.max_steps == 7 and ok.model.tiny == {}
    with pytest.raises(TrainConfigError, match="config_updates applies to from_checkpoint"):
        load_config(two, {"model": {"tiny": {}, "config_updates": {"span_pointers": True}}})


def test_config_errors_name_every_problem_at_once_and_the_key_a_typo_meant(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 1\noutput_dir: x\nmodel: {tiny: {}}\ntrain_data: [{path: a.jsonl, taks: [rec]}]\n"
                   "batchsize: 3\nlr: abc\nwibble: 1\n")
    with pytest.raises(TrainConfigError) as e:
        load_config(bad)
    message = str(e.value)
    assert "\n" not in message
    for problem in ("train_data.0.taks: not a config key (did you mean tasks?)", "max_steps: missing",
                    "lr: Input should be a valid number", "batchsize: not a config key (did you mean batch_size?)",
                    "wibble: not a config key"):
        assert problem in message
    assert "wibble: not a config key (" not in message  # nothing close to suggest
    for stage, said in (("", "stage: missing ("), ("stage: 7\n", "stage: 7 is not a stage (")):
        (tmp_path / "s.yaml").write_text(stage + "output_dir: x\n")
        with pytest.raises(TrainConfigError, match=re.escape(said) + ".*pointers the pointer refit"):
            load_config(tmp_path / "s.yaml")


def test_cli_reports_bad_input_in_one_line_with_exit_2(tmp_path):
    from omniground.train.cli import app

    missing_data = tmp_path / "c.yaml"
    missing_data.write_text(f"stage: 1\noutput_dir: {tmp_path / 'o'}\nmodel: {{tiny: {{}}}}\n"
                            f"train_data: [{{path: {tmp_path / 'nope.jsonl'}}}]\nmax_steps: 1\n")
    for args in (["no-such.yaml"], [str(missing_data)], [str(missing_data), "--set", "oops"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and r.output.strip().count("\n") == 0
    # the stage before not trained yet: where its model should be, and what to do
    r = CliRunner().invoke(app, [str(missing_data), "--set", f"model={{from_checkpoint: {tmp_path / 'stage0'}}}"])
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0, r.output
    assert f"model.from_checkpoint: no model directory at {tmp_path / 'stage0'} (train the stage" in r.output


def test_lora_stage_with_gradient_checkpointing_saves_a_plain_merged_checkpoint(tmp_path, data):
    cfg = stage_config(tmp_path, data, 2, {"tiny": MICRO_MODEL}, max_steps=2, gradient_checkpointing=True,
                       lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    t = Trainer(cfg)
    lm = t.og.model.language_model
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "embed_tokens" in n or "lm_head" in n for n in trainable)
    t.train()
    saved = load_file(cfg.model_dir / "model.safetensors")
    assert not any("lora_" in k for k in saved)
    from omniground.model import load

    reloaded = load(cfg.model_dir)
    assert reloaded.model.config.num_location_bins == 16


def test_a_stage_saves_without_transformers_bar_and_leaves_the_bars_as_they_were(tmp_path, data, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as for a user who has not turned them off (HF_HUB_DISABLE_PROGRESS_BARS)
    cfg = stage_config(tmp_path, data, 1, {"tiny": MICRO_MODEL}, max_steps=1)
    Trainer(cfg).train()
    assert (cfg.model_dir / "model.safetensors").is_file()
    assert "Writing model shards" not in capsys.readouterr().err  # transformers' bar for one small shard
    assert hf_logging.is_progress_bar_enabled()


def test_an_interrupted_stage_says_what_resume_goes_on_from(tmp_path, data, monkeypatch):
    import omniground.train.trainer as trainer_module
    from omniground.train.cli import app

    cfg = stage_config(tmp_path, data, 1, {"tiny": MICRO_MODEL}, max_steps=4, save_every=2)
    path = tmp_path / "stage1.yaml"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    real = trainer_module.Trainer.train

    def interrupted(self, resume=False, stop_after=None):
        real(self, resume, stop_after=2)  # its checkpoint at step 2 is written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "train", interrupted)
    r = CliRunner().invoke(app, [str(path)])
    assert r.exit_code == 130 and "Traceback" not in r.output
    assert f"interrupted; --resume goes on from {cfg.checkpoint_dir / 'step-2'}" in r.output.replace("\n", "")
    r = CliRunner().invoke(app, [str(path), "--set", f"output_dir={tmp_path / 'other'}", "--set", "save_every=0"])
    assert r.exit_code == 130 and "nothing was saved to resume from (save_every)" in r.output.replace("\n", "")


def test_the_loss_curve_grows_a_panel_of_held_out_figures_where_a_stage_measured_them(tmp_path):
    from omniground.train.report import headline, plot_curves

    assert headline({"acc@0.5": 0.7, "miou": 0.5}) == ("acc@0.5", 0.7)
    assert headline({"r1@0.3": 0.9, "r1@0.5": 0.6}) == ("r1@0.5", 0.6)
    assert headline({"miou": 0.5}) is None
    history = [{"step": s, "loss": 3.0 / s} for s in range(1, 11)]
    plain = [{"step": 10, "eval_loss": 0.5}]
    graded = [{"step": 5, "eval_loss": 0.6, "metrics": {"rec/val": {"acc@0.5": 0.4}}},
              {"step": 10, "eval_loss": 0.5, "metrics": {"rec/val": {"acc@0.5": 0.7}, "audio/val": {"r1@0.5": 0.6}}}]
    plot_curves(tmp_path / "plain.png", history, plain)
    plot_curves(tmp_path / "graded.png", history, graded)
    with Image.open(tmp_path / "plain.png") as a, Image.open(tmp_path / "graded.png") as b:
        assert a.size == (800, 400) and b.size == (800, 650)


def test_stage_progress_writes_lines_to_a_log_and_a_bar_to_a_terminal():
    import io

    from rich.console import Console

    from omniground.train.report import StageProgress

    log = io.StringIO()
    with StageProgress(Console(file=log, width=200), "stage 0 image", 25, unit="images", every=10) as bar:
        for step in range(1, 26):
            bar.step(step, loss=float(step), lr=1e-3, items=64, extra="acc 0.5")
    lines = log.getvalue().splitlines()
    assert [line.split(" loss")[0] for line in lines] == [f"stage 0 image step {s}/25" for s in (10, 20, 25)]
    assert lines[0].startswith("stage 0 image step 10/25 loss 5.5000 lr 1.00e-03 ")  # the mean of steps 1-10
    assert lines[2].startswith("stage 0 image step 25/25 loss 23.0000 ") and lines[2].endswith(" images/s acc 0.5")
    screen = io.StringIO()
    with StageProgress(Console(file=screen, force_terminal=True, width=200), "stage 1", 10) as bar:
        for step in range(1, 11):
            bar.step(step, loss=1.0, lr=1e-3, items=8)
    assert "stage 1 step" not in screen.getvalue() and "10/10" in screen.getvalue()  # the bar, not lines
    quiet = io.StringIO()
    with StageProgress(Console(file=quiet), "stage 1", 10, shown=False) as bar:  # another process than the main
        bar.step(10, loss=1.0, lr=1e-3, items=8)
    assert quiet.getvalue() == ""
    read = io.StringIO()  # a pass with no loss: a line at each tenth of the way
    with StageProgress(Console(file=read, width=200), "pointers: reading training data", 95) as bar:
        for _ in range(0, 95, 32):
            bar.advance(min(32, 95 - _))
    assert [line.split(" samples/s")[0].rsplit(" ", 1)[0] for line in read.getvalue().splitlines()] == \
        [f"pointers: reading training data {n}/95" for n in (32, 64, 95)]


def test_a_recipe_run_is_summed_up_beside_the_shipped_model_and_the_targets(tmp_path):
    import io

    from rich.console import Console

    from omniground.train.report import recipe_figures, recipe_table

    def evaluated(folder, groups):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text(json.dumps({"system": "x", "metrics": groups}))

    evaluated("eval-test", {"rec/test": {"acc@0.5": 0.84, "n": 276}, "video_grounding/test": {"r1@0.5": 0.8, "n": 200},
                            "negative/test": {"rejection_acc": 0.1, "n": 49}})
    evaluated("eval-test-rec-phrase", {"rec/test": {"acc@0.5": 0.86, "n": 276}})
    evaluated("eval-unseen", {"audio_grounding/unseen": {"r1@0.5": 0.6, "n": 100}})
    figures = recipe_figures(tmp_path)
    assert figures == {"REC Acc@0.5, test, phrase given": {"value": 0.86, "n": 276},
                       "REC Acc@0.5, test, free answer": {"value": 0.84, "n": 276},
                       "video R@1 at IoU 0.5, test": {"value": 0.8, "n": 200},
                       "audio, unseen combinations": {"value": 0.6, "n": 100}}
    shipped = {"REC Acc@0.5, test, free answer": {"value": 0.833, "n": 276},
               "audio R@1 at IoU 0.5, test": {"value": 0.865, "n": 200}}
    out = io.StringIO()
    Console(file=out, width=150).print(recipe_table(figures, shipped))
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.getvalue().splitlines() if line.count("│") == 7}
    # n, this run, its 95% interval (Wilson), shipped, target
    assert rows["REC Acc@0.5, test, phrase given"] == ["276", "0.860", "0.813-0.895", "-", "0.85 met"]
    assert rows["REC Acc@0.5, test, free answer"] == ["276", "0.840", "0.793-0.879", "0.833", "0.85 missed"]
    assert rows["audio R@1 at IoU 0.5, test"] == ["200", "-", "", "0.865", "0.75"]  # this run did not measure it
    assert rows["audio, unseen combinations"] == ["100", "0.600", "0.502-0.691", "-", ""]
    assert "sound localisation, large draw (seed 40)" not in rows  # measured by neither


def test_the_shipped_model_keeps_its_held_out_figures_for_reproductions_to_be_compared_with():
    from omniground.model.api import CHECKPOINT_DIR
    from omniground.train.report import RECIPE_FIGURES

    card = json.loads((CHECKPOINT_DIR / "omniground-tiny" / "eval.json").read_text())
    assert set(card) == {row[0] for row in RECIPE_FIGURES}
    assert all(0 < f["value"] <= 1 and f["n"] >= 51 for f in card.values())


def test_the_recipe_configs_load_and_each_starts_from_the_step_before_it():
    """What scripts/train_default.sh runs: every config valid, and each one's start the previous one's model."""
    root = Path(__file__).parent.parent
    loop = re.search(r'^STAGES="([\w ]+)"', (root / "scripts" / "train_default.sh").read_text(), re.M)
    steps = loop.group(1).split()
    assert steps[0] == "stage0" and steps[-1] == "pointers"
    configs = [load_config(root / "configs" / "omniground-tiny" / f"{step}.yaml") for step in steps]
    for before, after in zip(configs, configs[1:]):
        assert Path(after.model.from_checkpoint) == before.model_dir, after.output_dir
    assert all(load_config(p) for p in (root / "configs").glob("omniground-*/*.yaml"))
