"""Stage 0: dense targets from the generator's metadata, and a pre-training run on a tiny synth set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import MICRO_MODEL
from typer.testing import CliRunner

from omniground.data.synth.build import run as synth
from omniground.data.synth.config import SynthConfig
from omniground.train import load_config
from omniground.train.config import EncoderConfig
from omniground.train.encoders import (
    COLOUR_NAMES,
    OBJECT_NAMES,
    ORDER_SIDES,
    SIZES,
    ImageSet,
    frame_targets,
    object_relations,
    patch_targets,
    pretrain_encoders,
)


def _obj(name, colour, box):
    return {"name": name, "colour": colour, "box": list(box)}


def _mirrored(objs, width=64):
    """The same objects in the scene mirrored left to right."""
    return [_obj(o["name"], o["colour"], (width - o["box"][2], o["box"][1], width - o["box"][0], o["box"][3]))
            for o in objs]


def test_patch_targets_follow_the_processors_padding_and_the_front_object():
    # 48 x 64 portrait: padded to a 64 square, 8 px of fill on the left; grid 8 -> 8 px patches
    scene = {
        "width": 48,
        "height": 64,
        "objects": [
            _obj("cat", None, (0, 0, 16, 16)),  # square frame x 8..24, y 0..16 -> columns 1-2, rows 0-1
            _obj("dog", "red", (8, 8, 16, 16)),  # in front, x 16..24, y 8..16 -> column 2, row 1
        ],
    }
    t = patch_targets(scene, grid=8)
    cat = t["category"].reshape(8, 8)
    assert cat[0, 1] == cat[0, 2] == cat[1, 1] == 1 + OBJECT_NAMES.index("cat")
    assert cat[1, 2] == 1 + OBJECT_NAMES.index("dog")  # the front object owns the overlap
    assert cat[0, 0] == 0 and cat[2, 1] == 0 and (cat > 0).sum() == 4
    assert t["colour"].reshape(8, 8)[1, 2] == COLOUR_NAMES.index("red")
    assert t["colour"].reshape(8, 8)[0, 1] == COLOUR_NAMES.index("natural")
    assert t["colour"].reshape(8, 8)[4, 4] == -1
    np.testing.assert_allclose(t["box"].reshape(8, 8, 4)[0, 1], [8 / 64, 0, 24 / 64, 16 / 64])
    # stretched instead of padded: the box is relative to the image itself
    t = patch_targets(scene, grid=8, pad_to_square=False)
    np.testing.assert_allclose(t["box"].reshape(8, 8, 4)[0, 0], [0, 0, 16 / 48, 16 / 64])


def test_a_tiny_object_still_owns_the_patch_of_its_centre():
    t = patch_targets({"width": 64, "height": 64, "objects": [_obj("cat", None, (33, 33, 35, 35))]}, grid=8)
    assert np.flatnonzero(t["category"]).tolist() == [4 * 8 + 4]


def test_a_mirrored_batch_has_the_targets_of_the_mirrored_scene():
    objs = [_obj("cat", "blue", (2, 10, 20, 30)), _obj("dog", None, (40, 0, 64, 20))]
    mirrored = _mirrored(objs)
    t = {
        k: torch.from_numpy(v)[None] for k, v in patch_targets({"width": 64, "height": 64, "objects": objs}, 8).items()
    }
    want = patch_targets({"width": 64, "height": 64, "objects": mirrored}, 8)
    px = torch.arange(3 * 64 * 64, dtype=torch.float32).view(1, 3, 64, 64)
    got_px, got = ImageSet(px, t).batch([0], [True])
    assert torch.equal(got_px, px.flip(-1))
    assert torch.equal(got["category"][0], torch.from_numpy(want["category"]))
    assert torch.equal(got["colour"][0], torch.from_numpy(want["colour"]))
    torch.testing.assert_close(got["box"][0], torch.from_numpy(want["box"]))
    assert torch.equal(ImageSet(px, t).batch([0], [False])[1]["category"], t["category"])  # no flip, no change


# three cats in a row (the left one big, their centres too close in height to rank top / bottom), a dog alone
RANKED = {"width": 64, "height": 64, "objects": [
    _obj("cat", None, (0, 0, 24, 24)), _obj("cat", None, (24, 2, 40, 18)), _obj("cat", None, (48, 4, 64, 20)),
    _obj("dog", None, (20, 40, 40, 60)),
]}  # fmt: skip


def test_relations_are_what_the_generators_ordinals_and_sizes_say():
    order, size = object_relations(RANKED)
    assert order.tolist() == [[0, 2, -1, -1], [1, 1, -1, -1], [2, 0, -1, -1], [0, 0, 0, 0]]  # left right top bottom
    assert [SIZES[k] for k in size] == ["big", "neither", "neither", "alone"]
    t = patch_targets(RANKED, grid=8, relations=True)
    # patch (row 0, column 4) lies in the middle cat; (row 6, column 3) in the dog; (7, 7) is background
    assert t["order"].reshape(8, 8, 4)[0, 4].tolist() == [1, 1, -1, -1]
    assert t["order"].reshape(8, 8, 4)[6, 3].tolist() == [0, 0, 0, 0]
    assert t["order"].reshape(8, 8, 4)[7, 7].tolist() == [-1] * 4 and t["size"].reshape(8, 8)[7, 7] == -1
    assert SIZES[t["size"].reshape(8, 8)[0, 0]] == "big"
    assert "order" not in patch_targets(RANKED, grid=8)  # only when asked
    # a fifth cat is still "fourth or later"
    five = {**RANKED, "objects": [_obj("cat", None, (x, 40, x + 8, 48)) for x in range(0, 64, 12)]}
    assert object_relations(five)[0][:, 0].tolist() == [0, 1, 2, 3, 3, 3]


def test_a_mirrored_batch_swaps_left_and_right_ranks():
    mirrored = {**RANKED, "objects": _mirrored(RANKED["objects"])}
    t = {k: torch.from_numpy(v)[None] for k, v in patch_targets(RANKED, 8, relations=True).items()}
    want = patch_targets(mirrored, 8, relations=True)
    _, got = ImageSet(torch.zeros(1, 3, 64, 64), t).batch([0], [True])
    assert ORDER_SIDES[:2] == ("left", "right")
    for k in ("order", "size", "category"):
        assert torch.equal(got[k][0], torch.from_numpy(want[k])), k


def test_frame_targets_mark_what_is_on_at_each_frame_centre():
    vocab = {"sound:bell": 0, "espeak:hello": 1}
    events = [
        {"kind": "sound", "label": "bell", "start": 0.25, "end": 0.75},
        {"kind": "espeak", "label": "hello", "start": 1.2, "end": 2.0},
        {"kind": "sound", "label": "not in vocab", "start": 0.0, "end": 2.0},
    ]
    t = frame_targets(events, np.array([0.0, 1.0]), frames=4, seconds_per_frame=0.25, vocab=vocab)  # (2, 4, 2)
    assert t.shape == (2, 4, 2)
    assert t[0, :, 0].tolist() == [0, 1, 1, 0]  # centres 0.125, 0.375, 0.625, 0.875
    assert t[1, :, 1].tolist() == [0, 1, 1, 1]  # centres 1.125 ...
    assert t[0, :, 1].sum() == 0 and t[1, :, 0].sum() == 0


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    for split, seed in (("train", 0), ("val", 1)):
        synth(
            SynthConfig(
                out=out,
                split=split,
                seed=seed,
                counts={"image": 24, "video": 0, "audio": 6},
                stages=(2,),
                image_size=64,
                audio_seconds=(2.0, 3.0),
            ),
            progress=False,
        )
    return out


def _config(tmp, data, **kw) -> EncoderConfig:
    model = dict(MICRO_MODEL, vision=dict(MICRO_MODEL["vision"], image_size=64))
    settings = dict(
        stage=0,
        output_dir=tmp / "stage0",
        model={"tiny": model},
        train_data=[{"path": data / "train.jsonl"}],
        eval_data=[{"path": data / "val.jsonl"}],
        batch_size=8,
        max_steps=40,
        lr=3e-3,
        num_threads=1,
        seed=0,
    )
    return EncoderConfig.model_validate({**settings, **kw})


def test_stage0_learns_the_dense_labels_saves_frozen_encoders_and_keeps_the_rest(tmp_path, synth_data):
    from omniground.model.factory import build_tiny
    from omniground.model.modeling_omniground import OmniGroundConfig

    cfg = _config(tmp_path, synth_data, steps={"audio": 30})  # audio's own step count, image max_steps
    cfg.model.tiny["region_boxes"] = True  # the model's own box regressor is the box head, and is kept
    summary = pretrain_encoders(cfg)
    assert summary["branches"] == ["image", "audio"]
    for branch, steps in (("image", 40), ("audio", 30)):
        rows = [r for r in summary["history"] if r["branch"] == branch]
        assert len(rows) == steps
        assert np.mean([r["loss"] for r in rows[-5:]]) < 0.7 * np.mean([r["loss"] for r in rows[:5]])
    assert {e["branch"] for e in summary["evals"]} == {"image", "audio"}
    assert (cfg.output_dir / "curve.png").stat().st_size > 0
    assert json.loads((cfg.output_dir / "metrics.json").read_text())["stage"] == 0

    saved = load_file(str(next(cfg.model_dir.glob("*.safetensors"))))
    assert OmniGroundConfig.from_pretrained(cfg.model_dir).train_encoders is False  # frozen from now on
    torch.manual_seed(cfg.seed)
    fresh = build_tiny(**cfg.model.tiny).model.state_dict()
    vit = [k for k in saved if ".vision_tower." in k or k.startswith("vision_tower.")]
    lm = [k for k in saved if k.startswith("language_model.")]
    assert vit and lm
    assert any(not torch.equal(saved[k], fresh[k]) for k in vit)  # the encoder learned
    assert all(torch.equal(saved[k], fresh[k]) for k in lm)  # the LM was not touched
    assert not torch.equal(saved["region_pointer.box.2.weight"], fresh["region_pointer.box.2.weight"])
    assert torch.equal(saved["region_pointer.query.1.weight"], fresh["region_pointer.query.1.weight"])
    image_eval = next(e for e in summary["evals"] if e["branch"] == "image")
    assert 0.0 <= image_eval["box_iou50"] <= 1.0

    # a later stage's set_stage leaves them frozen
    from omniground.model.api import load

    model = load(cfg.model_dir).model
    model.set_stage(2)
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert any(p.requires_grad for p in model.language_model.parameters())


def test_stage0_trains_a_conv_stem_and_saves_it(tmp_path, synth_data):
    from omniground.model.api import load
    from omniground.model.factory import build_tiny

    cfg = _config(tmp_path, synth_data, modalities=["image"])
    cfg.model.tiny["vision"] = {**cfg.model.tiny["vision"], "conv_stem": True}
    rows = pretrain_encoders(cfg)["history"]
    assert np.mean([r["loss"] for r in rows[-5:]]) < 0.7 * np.mean([r["loss"] for r in rows[:5]])
    model = load(cfg.model_dir).model
    assert model.config.vision_config.conv_stem is True
    stem = model.vision_tower.encoder.patch_embed
    torch.manual_seed(cfg.seed)
    fresh = build_tiny(**cfg.model.tiny).model.vision_tower.encoder.patch_embed
    assert not torch.equal(stem[0].weight, fresh[0].weight)  # the first conv learned and was saved


def test_stage0_with_relational_targets_learns_ranks_and_sizes(tmp_path, synth_data):
    cfg = _config(tmp_path, synth_data, modalities=["image"], relational_targets=True)
    summary = pretrain_encoders(cfg)
    rows = summary["history"]
    assert all("order_acc" in r and "size_acc" in r for r in rows)
    assert np.mean([r["loss"] for r in rows[-5:]]) < 0.7 * np.mean([r["loss"] for r in rows[:5]])
    image_eval = next(e for e in summary["evals"] if e["branch"] == "image")
    assert 0.0 < image_eval["order_acc"] <= 1.0 and 0.0 < image_eval["size_acc"] <= 1.0
    # without them the heads and figures are not there
    plain = pretrain_encoders(_config(tmp_path / "plain", synth_data, modalities=["image"], max_steps=2))
    assert "order_acc" not in plain["history"][-1]


def test_stage0_through_the_cli_and_its_errors(tmp_path, synth_data):
    from omniground.cli import app

    path = tmp_path / "stage0.yaml"
    cfg = _config(tmp_path, synth_data, modalities=["audio"], max_steps=3).model_dump(mode="json")
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    assert isinstance(load_config(path), EncoderConfig)
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(path)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(path), "--resume"])
    assert r.exit_code == 0 and "already complete" in r.output
    # data without scene metadata or audio events: one line, exit 2
    cfg["train_data"] = [{"path": str(synth_data / "train.jsonl"), "tasks": ["rec"]}]
    cfg["modalities"] = ["audio"]
    cfg["output_dir"] = str(tmp_path / "other")
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", str(path)])
    assert r.exit_code == 2 and "nothing to pre-train" in r.output and "Traceback" not in r.output


def test_stage0_stopped_mid_branch_or_between_branches_resumes_to_the_uninterrupted_weights(tmp_path, synth_data):
    whole = _config(tmp_path / "whole", synth_data, steps={"audio": 12}, max_steps=14, save_every=5)
    pretrain_encoders(whole)
    assert not (whole.output_dir / "checkpoints").exists()  # finished: nothing left to resume
    reference = load_file(str(next(whole.model_dir.glob("*.safetensors"))))
    reference_history = json.loads((whole.output_dir / "metrics.json").read_text())["history"]
    # image 14 steps, then audio 12: stopped at image step 12 (last saved at 10), then at audio step 7 (saved at 5)
    cut = _config(tmp_path / "cut", synth_data, steps={"audio": 12}, max_steps=14, save_every=5)
    assert pretrain_encoders(cut, stop_after=12)["stopped_at"] == {"branch": "image", "step": 12}
    half_written = cut.output_dir / "checkpoints" / ".stage0.pt.4242.part.pt"  # by a run killed while saving
    half_written.write_bytes(b"half")
    assert pretrain_encoders(cut, resume=True, stop_after=14 + 7)["stopped_at"] == {"branch": "audio", "step": 7}
    assert not half_written.exists()
    assert torch.load(cut.output_dir / "checkpoints" / "stage0.pt", weights_only=False)["step"] == 5
    from omniground.train.cli import resumable  # what `omniground train` says when interrupted here

    assert resumable(cut) == f"--resume goes on from {cut.output_dir / 'checkpoints' / 'stage0.pt'}"
    summary = pretrain_encoders(cut, resume=True)
    resumed = load_file(str(next(cut.model_dir.glob("*.safetensors"))))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(summary["history"]) == strip(reference_history)  # each step logged once, as uninterrupted
    # without --resume it starts over; without save_every nothing is saved to resume from
    fresh = _config(tmp_path / "fresh", synth_data, modalities=["audio"], max_steps=4)
    pretrain_encoders(fresh, stop_after=2)
    assert not (fresh.output_dir / "checkpoints").exists()
