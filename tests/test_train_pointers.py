"""The pointer refit: the pointer heads alone, refitted on the inputs the frozen model records once."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file, save_file
from test_train import MICRO_MODEL
from typer.testing import CliRunner

from omniground.data.synth.build import run as synth
from omniground.data.synth.config import SynthConfig
from omniground.model.factory import build_tiny
from omniground.train import load_config
from omniground.train.config import DataSource, PointerConfig, TrainConfigError
from omniground.train.data import Collator, SampleDataset, load_sources
from omniground.train.pointers import (RaggedText, absent_as_rec, capture, cat_padded, in_own_words, mean_loss,
                                      read_pointer_inputs, recording_pointer_inputs, refit_pointers)

POINTERS = dict(MICRO_MODEL, region_boxes=True, span_pointers=True, time_anchored_queries=True)
TASKS = ["rec", "grounded_caption", "video_grounding", "audio_grounding"]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    for split, seed in (("train", 0), ("val", 1)):
        synth(SynthConfig(out=out, split=split, seed=seed, counts={"image": 12, "video": 3, "audio": 3}, stages=(2,),
                          image_size=64, audio_seconds=(2.0, 3.0)), progress=False)
    return out


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A saved micro model with both pointers: what stage 3 would hand over."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stage3") / "model"
    build_tiny(**POINTERS).save_pretrained(path)
    return path


def _config(tmp, data, start, **kw) -> PointerConfig:
    settings = {"stage": "pointers", "output_dir": tmp / "pointers", "model": {"from_checkpoint": str(start)},
                "train_data": [{"path": data / "train.jsonl", "tasks": TASKS}],
                "eval_data": [{"path": data / "val.jsonl", "tasks": TASKS}],
                "batch_size": 16, "capture_batch_size": 8, "max_steps": 150, "steps": {"span": 100}, "lr": 1e-2,
                "num_threads": 1}
    return PointerConfig.model_validate({**settings, **kw})


def test_recording_sees_every_target_box_and_span_and_changes_no_loss(synth_data, start):
    from omniground.model.api import load

    og = load(start)
    items = load_sources([DataSource(path=synth_data / "train.jsonl", tasks=TASKS)])
    data = SampleDataset(items, og.processor, cache_media=False)
    batch = Collator(og.processor)([data[i] for i in range(len(data))])
    model = og.model.eval()
    with torch.no_grad():
        plain = model(**batch).loss
        with recording_pointer_inputs(model) as seen:
            recorded = model(**batch).loss
    torch.testing.assert_close(recorded, plain)
    assert "loss" not in vars(model.region_pointer) and "loss" not in vars(model.span_pointer)  # restored
    boxes = sum(len(it.sample.boxes) for it in items if it.sample.task in ("rec", "grounded_caption"))
    spans = sum(len(it.sample.spans) for it in items if it.sample.task.endswith("_grounding"))
    assert boxes > 0 and spans > 0
    (region,), (span,) = seen["region"], seen["span"]
    assert len(region[0]) == boxes and len(span[0]) == spans
    _, patches, _, target = region
    assert patches.shape[1:] == (model.config.patch_grid**2, model.vision_tower.hidden_size)
    assert ((0 <= target) & (target <= 1)).all()


def test_the_refit_lowers_each_heads_loss_and_changes_only_the_heads(tmp_path, synth_data, start):
    cfg = _config(tmp_path, synth_data, start)
    summary = refit_pointers(cfg)
    for head, steps in (("region", 150), ("span", 100)):
        figures = summary["heads"][head]
        assert figures["steps"] == steps and len([r for r in summary["history"] if r["branch"] == head]) == steps
        assert figures["loss"]["after"] < 0.5 * figures["loss"]["before"]  # a fresh head fits what it is given
        assert 0 <= figures["after"]["held_out"] <= 1
    # spans: the choice gets better too (the micro model's box regressor is untrained, so its boxes are not)
    assert summary["heads"]["span"]["after"]["train"] > summary["heads"]["span"]["before"]["train"]
    assert (cfg.output_dir / "curve.png").stat().st_size > 0
    assert json.loads((cfg.output_dir / "metrics.json").read_text())["stage"] == "pointers"

    before = load_file(str(next(start.glob("*.safetensors"))))
    after = load_file(str(next(cfg.model_dir.glob("*.safetensors"))))
    assert before.keys() == after.keys()
    heads = ("region_pointer.query.", "region_pointer.key.", "span_pointer.")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(heads) for k in changed)
    assert any(k.startswith("region_pointer.") for k in changed) and any(k.startswith("span_pointer.") for k in changed)


def test_the_refit_through_the_cli_and_its_errors(tmp_path, synth_data, start):
    from omniground.cli import app

    path = tmp_path / "pointers.yaml"
    cfg = _config(tmp_path, synth_data, start, max_steps=2, steps={}).model_dump(mode="json")
    path.write_text(yaml.safe_dump(cfg))
    assert isinstance(load_config(path), PointerConfig)
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(path)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(path), "--resume"])
    assert r.exit_code == 0 and "already complete" in r.output
    # data with nothing to point at (spans, for a model without span pointers): one line, exit 2
    build_tiny(**dict(POINTERS, span_pointers=False)).save_pretrained(tmp_path / "boxes-only")
    cfg["model"] = {"from_checkpoint": str(tmp_path / "boxes-only")}
    cfg["train_data"] = [{"path": str(synth_data / "train.jsonl"), "tasks": ["video_grounding", "audio_grounding"]}]
    cfg["eval_data"] = []
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", str(path)])
    assert r.exit_code == 2 and "nothing to fit" in r.output and "Traceback" not in r.output
    # phrases the image lacks, for a region pointer without presence: one line, exit 2
    cfg["model"] = {"from_checkpoint": str(start)}
    cfg["train_data"] = [{"path": str(synth_data / "train.jsonl"), "tasks": ["rec", "negative"]}]
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", str(path)])
    assert r.exit_code == 2 and "region_presence" in r.output and "Traceback" not in r.output
    # answers in the model's own words for a task name that does not exist (misspelt): one line, exit 2
    cfg["own_words"] = ["sound_localisation"]
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", str(path)])
    assert r.exit_code == 2 and "own_words" in r.output and "Traceback" not in r.output


def test_the_refit_starts_the_heads_afresh_so_where_stage_3_left_them_does_not_matter(tmp_path, synth_data, start):
    from omniground.model.api import load

    moved = load(start)
    with torch.no_grad():
        for head in (moved.model.region_pointer, moved.model.span_pointer):
            for p in (*head.key.parameters(), *head.query.parameters()):
                p.add_(torch.randn_like(p))
    moved.save_pretrained(tmp_path / "moved")
    # and a checkpoint saved before slot edges: loading draws their weights at random, moving the random state
    older = tmp_path / "older"
    load(start).save_pretrained(older)
    weights = next(older.glob("*.safetensors"))
    save_file({k: v for k, v in load_file(str(weights)).items() if ".edges." not in k}, str(weights),
              metadata={"format": "pt"})
    runs = []
    for name, path in (("a", start), ("b", tmp_path / "moved"), ("c", older)):
        cfg = _config(tmp_path / name, synth_data, path, max_steps=5, steps={}, eval_data=[])
        refit_pointers(cfg)
        runs.append(load_file(str(next(cfg.model_dir.glob("*.safetensors")))))
    for other in runs[1:]:
        assert runs[0].keys() == other.keys()
        assert all(torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_negatives_are_read_as_rec_answers_worded_like_the_rec_samples(synth_data):
    items = load_sources([DataSource(path=synth_data / "train.jsonl", tasks=["rec", "negative"])])
    rec = [i for i in items if i.sample.task == "rec"]
    negatives = [i for i in items if i.sample.task == "negative"]
    assert rec and negatives
    read = absent_as_rec(negatives, rec)
    assert len(read) == len(negatives)
    for j, (neg, out) in enumerate(zip(negatives, read)):
        absent, like = neg.sample.meta["absent"], rec[j % len(rec)].sample
        assert out.sample.media == neg.sample.media and out.root == neg.root
        assert out.sample.boxes[0].phrase == absent and out.sample.task == "rec"
        question, answer = (t.content for t in out.sample.conversation)
        assert question == like.conversation[0].content.replace(like.boxes[0].phrase, absent)
        assert "[0.000,0.000,1.000,1.000]" in answer and answer.count("[") == 1
    with pytest.raises(TrainConfigError, match="REC samples"):
        absent_as_rec(negatives, [])
    bare = type(negatives[0])(negatives[0].sample.model_copy(update={"meta": {}}), negatives[0].root)
    with pytest.raises(TrainConfigError, match="meta.absent"):
        absent_as_rec([bare], rec)


def test_answers_of_the_listed_tasks_are_read_in_the_models_own_words_with_the_true_box(synth_data, start,
                                                                                          monkeypatch):
    """As for sound localisation in omniground-tiny's refit: the words before the box are what the model says
    (here REC's, with scripted answers), the box the true one; an own answer without a box, and other tasks,
    keep the true answer."""
    from omniground.model.api import ChatResult, load

    og = load(start)
    items = load_sources([DataSource(path=synth_data / "train.jsonl", tasks=["rec", "grounded_caption"])])
    rec = [j for j, i in enumerate(items)
           if i.sample.task == "rec" and len(i.sample.boxes) == 1 and i.sample.conversation[1].content.count("[") == 1]
    assert len(rec) >= 3 and any(i.sample.task == "grounded_caption" for i in items)
    asked = []

    def chat_batch(conversations, media, **kw):
        asked.extend(zip(conversations, media))
        return [ChatResult(text="There is none." if len(asked) - len(conversations) + k == 1 else
                           f"The bell number {len(asked) - len(conversations) + k}[0.100,0.100,0.200,0.200]")
                for k in range(len(conversations))]

    monkeypatch.setattr(og, "chat_batch", chat_batch)
    out = in_own_words(og, items, ["rec"], 2, Console(quiet=True), "t")
    assert len(out) == len(items) and len(asked) == len(rec)
    for n, ((conversation, media), j) in enumerate(zip(asked, rec)):
        sample, new = items[j].sample, out[j].sample
        assert conversation == [{"role": "user", "content": sample.conversation[0].content}]
        assert media == [sample.media_path(i, items[j].root) for i in range(len(sample.media))]
        true = sample.conversation[1].content
        answer = true if n == 1 else f"The bell number {n}" + true[true.index("["):]
        assert [t.content for t in new.conversation] == [sample.conversation[0].content, answer]
        assert new.boxes == sample.boxes and new.media == sample.media and out[j].root == items[j].root
    assert all(out[j] is items[j] for j in range(len(items)) if j not in rec)


def test_absent_phrases_borrow_the_true_rec_wording_when_rec_is_read_in_the_models_own_words(synth_data, start,
                                                                                             monkeypatch):
    """The model's own words name what the image holds: a negative worded like them would point at it."""
    from omniground.model.api import ChatResult, load
    from omniground.train import pointers

    og = load(start, region_presence=True)
    items = load_sources([DataSource(path=synth_data / "train.jsonl", tasks=["rec", "negative"])])
    monkeypatch.setattr(og, "chat_batch", lambda conversations, media, **kw: [
        ChatResult(text="The bell[0.100,0.100,0.200,0.200]") for _ in conversations])
    borrowed, captured = [], []
    real_absent_as_rec, real_capture = pointers.absent_as_rec, pointers.capture
    monkeypatch.setattr(pointers, "absent_as_rec", lambda negatives, rec: borrowed.extend(rec) or
                        real_absent_as_rec(negatives, rec))
    monkeypatch.setattr(pointers, "capture", lambda og, read, *a: captured.append(read) or real_capture(og, read, *a))
    read_pointer_inputs(og, items, 8, Console(quiet=True), "t", own_words=["rec"])
    rec = [i for i in items if i.sample.task == "rec"]
    assert [i.sample for i in borrowed] == [i.sample for i in rec]  # the true wording, not "The bell"
    own = [i for i in captured[0] if i.sample.task == "rec"]
    assert len(own) == len(rec) and any(i.sample.conversation[1].content.startswith("The bell[") for i in own)
    assert all("The bell" not in t.content for i in captured[1] for t in i.sample.conversation)


def test_the_refit_learns_nothing_here_from_phrases_the_image_lacks(tmp_path, synth_data, start):
    from omniground.model.api import load

    # every patch regresses one box, so a box's score is all the patches' probability: 1 - P(nothing here)
    og = load(start)
    with torch.no_grad():
        og.model.region_pointer.box[-1].weight.zero_()
        og.model.region_pointer.box[-1].bias.copy_(torch.logit(torch.tensor([0.2, 0.2, 0.8, 0.8])))
    og.save_pretrained(tmp_path / "one-box")
    with_negatives = [{"path": synth_data / "train.jsonl", "tasks": ["rec", "negative"]}]
    rec_only = [{"path": synth_data / "val.jsonl", "tasks": ["rec"]}]  # held out without absent phrases
    cfg = _config(tmp_path, synth_data, start, max_steps=150, steps={}, train_data=with_negatives, eval_data=rec_only,
                  model={"from_checkpoint": str(tmp_path / "one-box"), "config_updates": {"region_presence": True}})
    summary = refit_pointers(cfg)
    region = summary["heads"]["region"]
    negatives = sum(1 for i in load_sources([DataSource(**with_negatives[0])]) if i.sample.task == "negative")
    boxes = sum(len(i.sample.boxes) for i in load_sources([DataSource(path=synth_data / "train.jsonl", tasks=["rec"])]))
    assert region["examples"] == boxes + negatives
    declined = region["absent_declined"]
    assert declined["before"]["train"] < 0.5 and declined["after"]["train"] == 1.0
    assert set(declined["before"]) == set(declined["after"]) == {"train"}  # no share for a set without any
    assert region["loss"]["after"] < 0.5 * region["loss"]["before"]  # present phrases keep their patches
    back = load(cfg.model_dir).model
    assert back.config.region_presence and back.region_pointer.absent is not None


def test_recorded_inputs_of_unlike_lengths_are_padded_at_the_end():
    text = cat_padded([torch.ones(2, 3, 1), torch.full((1, 5, 1), 2.0)])
    assert text.shape == (3, 5, 1) and text[:2, 3:].eq(0).all() and text[2].eq(2).all()
    mask = cat_padded([torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)])
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert cat_padded([torch.ones(2, 4), torch.ones(3, 4)]).shape == (5, 4)  # alike: plain concatenation
    # padded in two dimensions (the joined tensor starts empty: every padding written as zeros)
    both = cat_padded([torch.ones(2, 3, 1), torch.ones(1, 1, 2), torch.ones(1, 2, 2)])
    assert both.tolist() == [[[1, 0], [1, 0], [1, 0]]] * 2 + [[[1, 1], [0, 0], [0, 0]], [[1, 1], [1, 1], [0, 0]]]
    parts = [torch.ones(2, 4), torch.full((3, 4), 2.0)]
    joined = cat_padded(parts)
    assert parts == [] and joined.sum() == 2 * 4 + 3 * 4 * 2  # each part dropped as it is copied


def test_text_kept_end_to_end_is_handed_out_as_the_padded_text_would_be():
    torch.manual_seed(0)
    texts = [torch.randn(2, 3, 4), torch.randn(3, 5, 4)]  # what lies past a row's text is not zero, as recorded
    masks = [torch.tensor([[1, 1, 0], [1, 1, 1]]).bool(), torch.tensor([[1, 0, 0, 0, 0], [0] * 5, [1] * 5]).bool()]
    padded = cat_padded([t.clone() for t in texts])
    mask = cat_padded([m.clone() for m in masks])
    text = RaggedText.join(texts, masks)
    assert texts == [] and torch.equal(text.mask, mask) and len(text) == 5 and text.values.shape == (11, 4)
    expected = padded * mask[..., None]  # the rows' text, zeros where the mask is not set (row 3: no text)
    for idx in (0, 4, slice(1, 4), torch.tensor([4, 0, 3, 2]), torch.tensor([2, 2])):
        assert torch.equal(text[idx], expected[idx])


def test_the_text_kept_end_to_end_gives_the_reread_the_losses_and_gradients_the_padded_text_gives(synth_data,
                                                                                                   start):
    """Padded, the recorded text holds other tokens' states past each row's own; kept end to end, zeros. The
    reread weighs those at exactly zero either way: the refit's losses and gradients are the same to the bit."""
    from omniground.model.api import load

    og = load(start, region_reread=True)
    torch.manual_seed(1)
    og.model.region_pointer.reread.out.weight.data.normal_()  # a reread that is not a no-op yet
    items = load_sources([DataSource(path=synth_data / "train.jsonl", tasks=["rec"])])
    ragged = read_pointer_inputs(og, items, 4, Console(quiet=True), "t")["region"]
    padded = tuple(cat_padded(parts) for parts in capture(og, items, 4, Console(quiet=True), "t")["region"])
    assert isinstance(ragged[4], RaggedText) and not padded[4][~padded[5]].eq(0).all()
    head = og.model.region_pointer.requires_grad_(True)
    grads = []
    for examples in (ragged, padded):
        head.zero_grad()
        head.loss(*(x[torch.arange(len(padded[0]))] for x in examples)).backward()
        grads.append([p.grad.clone() for p in head.parameters() if p.grad is not None])
    assert len(grads[1]) > 10 and all(torch.equal(a, b) for a, b in zip(*grads))
    assert mean_loss(head, ragged, batch=5) == mean_loss(head, padded, batch=5)


def test_the_refit_fits_the_text_reread_with_absent_phrases_too(tmp_path, synth_data, start):
    from omniground.model.api import load

    data = [{"path": synth_data / "train.jsonl", "tasks": ["rec", "negative"]}]
    cfg = _config(tmp_path, synth_data, start, steps={}, train_data=data, capture_batch_size=2,
                  eval_data=[{"path": synth_data / "val.jsonl", "tasks": ["rec"]}],
                  model={"from_checkpoint": str(start),
                         "config_updates": {"region_presence": True, "region_reread": True}})
    region = refit_pointers(cfg)["heads"]["region"]
    assert region["loss"]["after"] < 0.5 * region["loss"]["before"]
    back = load(cfg.model_dir).model
    assert back.config.region_reread and back.region_pointer.reread.out.weight.abs().sum() > 0  # fitted, saved


def test_the_refit_records_each_spans_kind_of_clip_and_fits_the_reread_and_key_mlp(tmp_path, synth_data, start):
    from omniground.model.api import load
    from omniground.train.trainer import build_start_model

    data = [{"path": synth_data / "train.jsonl", "tasks": ["video_grounding", "audio_grounding"]}]
    cfg = _config(tmp_path, synth_data, start, train_data=data, eval_data=[],
                  model={"from_checkpoint": str(start),
                         "config_updates": {"span_reread": ["audio"], "span_key_mlp": ["video"]}})
    items = load_sources(cfg.train_data)
    span = read_pointer_inputs(build_start_model(cfg.model), items, 4, Console(quiet=True), "clips")["span"]
    on_audio = span[4]  # hidden, slots, mask, target, whether the clip is audio, text, text mask
    audio = sum(len(it.sample.spans) for it in items if it.sample.task == "audio_grounding")
    assert on_audio.dtype == torch.bool and 0 < audio == int(on_audio.sum()) < len(on_audio) and len(span) == 7
    fitted = refit_pointers(cfg)["heads"]["span"]
    assert fitted["loss"]["after"] < fitted["loss"]["before"]
    back = load(cfg.model_dir).model
    assert back.config.span_reread == ["audio"] and back.config.span_key_mlp == ["video"]
    assert back.span_pointer.reread.out.weight.abs().sum() > 0 and back.span_pointer.key_mlp is not None


def test_a_heads_fit_does_not_depend_on_the_other_heads_data(tmp_path, synth_data, start):
    """More REC for the region head leaves the span head's fit as it was (each head draws its own batches)."""
    base = [{"path": synth_data / "train.jsonl", "tasks": TASKS}]
    more = base + [{"path": synth_data / "val.jsonl", "tasks": ["rec"]}]
    heads = []
    for name, data in (("a", base), ("b", more)):
        cfg = _config(tmp_path / name, synth_data, start, train_data=data, max_steps=5, steps={}, eval_data=[])
        refit_pointers(cfg)
        heads.append(load_file(str(next(cfg.model_dir.glob("*.safetensors")))))
    span = [k for k in heads[0] if k.startswith("span_pointer.")]
    assert span and all(torch.equal(heads[0][k], heads[1][k]) for k in span)
    region = [k for k in heads[0] if k.startswith("region_pointer.query")]
    assert not all(torch.equal(heads[0][k], heads[1][k]) for k in region)  # the region head did see more


@pytest.mark.parametrize("name, tasks", [("region", ["rec"]), ("span", ["video_grounding", "audio_grounding"])])
def test_with_more_heads_the_refit_fits_each_from_its_own_start(tmp_path, synth_data, start, name, tasks):
    from omniground.model.api import load

    data = [{"path": synth_data / "train.jsonl", "tasks": tasks}]
    cfg = _config(tmp_path, synth_data, start, steps={}, max_steps=60, train_data=data, eval_data=[],
                  model={"from_checkpoint": str(start), "config_updates": {f"{name}_heads": 2}})
    summary = refit_pointers(cfg)
    assert summary["heads"][name]["heads"] == 2
    assert [len([r for r in summary["history"] if r["branch"] == b]) for b in (name, f"{name}1")] == [60, 60]
    og = load(cfg.model_dir)
    first, second = getattr(og.model, f"{name}_pointer").members()
    examples = read_pointer_inputs(og, load_sources([DataSource(**data[0])]), 8, Console(quiet=True), "t")[name]
    fresh = getattr(load(start, **{f"{name}_heads": 2}).model, f"{name}_pointer")
    for fitted in (first, second):  # each fitted, and apart: different starts and batches
        assert mean_loss(fitted, examples) < 0.5 * mean_loss(fresh, examples)
    assert not torch.equal(first.query[1].weight, second.query[1].weight)
    if name == "region":
        assert torch.equal(first.box[0].weight, fresh.box[0].weight)  # stage 0's regressor, shared and kept


def test_a_stopped_refit_resumes_to_what_an_uninterrupted_one_gives(tmp_path, synth_data, start, monkeypatch):
    """Stopped after each piece of work it keeps (the answers in its own words, each part of each read, each
    head's fit) and resumed each time, the refit ends with the weights, figures and history of one that ran
    through without keeping anything, and asks each question in its own words once."""
    from omniground.model.api import ChatResult, OmniGround
    from omniground.train.cli import resumable
    from omniground.train.pointers import progress_dir

    asked = []

    def chat_batch(self, conversations, media, **kw):  # own words with a box (the micro model's seldom have one)
        asked.extend(c[0]["content"] for c in conversations)
        return [ChatResult(text=f"The bell {len(c[0]['content'])}[0.100,0.100,0.200,0.200]") for c in conversations]

    monkeypatch.setattr(OmniGround, "chat_batch", chat_batch)

    kw = dict(train_data=[{"path": synth_data / "train.jsonl",
                           "tasks": ["rec", "negative", "video_grounding", "audio_grounding"]}],
              model={"from_checkpoint": str(start),
                     "config_updates": {"region_presence": True, "region_reread": True, "region_heads": 2}},
              own_words=["rec"], max_steps=20, steps={"span": 10})
    whole = _config(tmp_path / "whole", synth_data, start, **kw)
    reference = refit_pointers(whole)
    assert resumable(whole) == "nothing was saved to resume from (save_every)"
    questions, asked[:] = list(asked), []
    assert questions
    cut = _config(tmp_path / "cut", synth_data, start, save_every=1, **kw)
    stops, resume, half_written = [], False, None
    while "stopped_at" in (summary := refit_pointers(cut, resume=resume, stop_after=1)):
        assert half_written is None or not half_written.exists()  # dropped by the resumed run
        stops.append(summary["stopped_at"])
        half_written = progress_dir(cut) / f".{stops[-1]}.pt.4242.part.pt"  # as by a run killed while keeping it
        half_written.write_bytes(b"half")
        assert resumable(cut) == f"--resume goes on from {progress_dir(cut)}"
        resume = True
        assert len(stops) < 40
    kinds = ("own-words-training-data", "read-training-data-1-", "read-training-data-2-",
             "read-training-data-absent-phrases-", "own-words-held-out-data", "read-held-out-data-", "fit-region",
             "fit-span")
    assert all(any(s.startswith(kind) for s in stops) for kind in kinds), stops
    assert stops.count("fit-region") == 2  # each of the two region heads' fits kept on its own
    assert not (cut.output_dir / "checkpoints").exists()  # finished: nothing left to resume
    weights = [load_file(str(next(c.model_dir.glob("*.safetensors")))) for c in (whole, cut)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert summary["history"] == reference["history"]
    for name, figures in reference["heads"].items():
        strip = lambda f: {k: v for k, v in f.items() if k != "fit_seconds"}  # noqa: E731
        assert strip(summary["heads"][name]) == strip(figures)
    assert summary["resumed"] and not reference["resumed"]
    assert asked == questions


def test_a_refit_resumed_on_other_settings_or_data_says_so_and_one_run_again_starts_over(tmp_path, synth_data,
                                                                                          start):
    from omniground.train.pointers import progress_dir

    data = synth_data / "train-resumed.jsonl"  # beside the media it names
    lines = (synth_data / "train.jsonl").read_text().splitlines(keepends=True)
    data.write_text("".join(lines))
    cfg = _config(tmp_path, synth_data, start, save_every=1, eval_data=[], train_data=[{"path": data, "tasks": TASKS}])
    assert "stopped_at" in refit_pointers(cfg, stop_after=2)  # the training data's read kept, both batches
    other = cfg.model_copy(update={"capture_batch_size": 5})
    with pytest.raises(TrainConfigError, match=r"other settings \(capture_batch_size\).*without --resume"):
        refit_pointers(other, resume=True)
    refit_pointers(cfg.model_copy(update={"log_every": 3, "save_every": 2}), resume=True, stop_after=1)  # as it was
    data.write_text("".join(lines[: len(lines) // 2]))  # the same settings, other data
    with pytest.raises(TrainConfigError, match="other data.*not 1 batches.*without --resume"):
        refit_pointers(cfg, resume=True)
    assert len(list(progress_dir(cfg).glob("read-*.pt"))) == 2  # nothing lost by the refusals
    console = Console(record=True, width=400)
    assert "stopped_at" in refit_pointers(cfg, console=console, stop_after=1)  # without --resume: the kept work goes
    assert f"starting over; dropped the work a stopped refit kept in {progress_dir(cfg)}" in console.export_text()
    kept = [p.name for p in progress_dir(cfg).glob("*.pt")]
    assert len(kept) == 1 and kept[0].startswith("read-training-data-1-of-")
