"""`omniground data synth` as a user runs it: flags, determinism by seed, splits, errors, the summary."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from omniground.data.cli import app
from omniground.data.schema import read_jsonl
from omniground.data.synth import assets
from omniground.data.synth.build import run
from omniground.data.synth.config import SynthConfig, SynthConfigError, split_count
from omniground.errors import UserError

TINY = [
    "--image-size",
    "64",
    "--video-size",
    "64",
    "--video-seconds",
    "1,2",
    "--fps",
    "4,6",
    "--audio-seconds",
    "2,3",
    "--no-progress",
]


def _digest(folder) -> dict[str, str]:
    """sha256 of every file under folder, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cfg(out, **over):
    base = dict(
        out=out,
        counts={"image": 4, "video": 2, "audio": 2},
        image_size=64,
        video_size=64,
        video_seconds=(1.0, 2.0),
        fps=(4, 6),
        audio_seconds=(2.0, 3.0),
    )
    base.update(over)
    return SynthConfig(**base)


def test_a_clip_encodes_to_the_same_bytes_every_time(tmp_path, monkeypatch):
    """x264's assembly read memory the run left as it happened to be: 64x36 and 48x64 clips came out different
    from one encoding to the next, the frames alike (of 300 clips encoded four times after other allocations,
    2 to 7 each time; these three in nearly every such run). Encoded again so, each must give the same bytes."""
    import os

    from omniground.data.synth import video
    from omniground.data.synth.build import make_sample

    encode, clips = video.encode_mp4, []

    def keep(path, frames, *size_and_fps):
        clips.append((list(frames), *size_and_fps))
        encode(path, clips[-1][0], *size_and_fps)

    monkeypatch.setattr(video, "encode_mp4", keep)
    cfg = SynthConfig(out=tmp_path, split="train", seed=99, counts={"video": 300}, stages=(2,), image_size=64,
                      video_size=64, video_seconds=(2.0, 8.0), fps=(4, 6, 8), audio_seconds=(3.0, 8.0))
    for index in (115, 181, 294):
        make_sample(cfg, "video", index)
    assert {tuple(c[1:3]) for c in clips} == {(48, 64)}  # the kind of clip that showed it
    for n, (frames, *size_and_fps) in enumerate(clips):
        digests = set()
        for k in range(6):
            litter = [os.urandom(1000 + 37_000 * j) for j in range(k + 4)]  # the heap left otherwise each time
            encode(tmp_path / f"{n}-{k}.mp4", frames, *size_and_fps)
            digests.add(hashlib.sha256((tmp_path / f"{n}-{k}.mp4").read_bytes()).hexdigest())
            del litter
        assert len(digests) == 1


def test_split_count_shares_n_and_lets_flags_override():
    assert split_count(1000, {}) == {"image": 334, "video": 333, "audio": 333}
    assert split_count(1000, {"video": 0}) == {"image": 334, "video": 0, "audio": 333}
    assert split_count(0, {"image": 5}) == {"image": 5, "video": 0, "audio": 0}


def test_same_seed_same_bytes_for_any_workers(tmp_path):
    run(_cfg(tmp_path / "a", seed=11, workers=1), progress=False)
    run(_cfg(tmp_path / "b", seed=11, workers=2), progress=False)
    run(_cfg(tmp_path / "c", seed=12, workers=2), progress=False)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b and len(a) == 10  # 8 media files, train.jsonl, train.synth.json
    settings = json.loads((tmp_path / "a" / "train.synth.json").read_text())
    assert settings["config"]["seed"] == 11 and settings["samples"] == 8
    assert a["train.jsonl"] != c["train.jsonl"]
    assert sum(a[k] == c.get(k.replace("s11", "s12")) for k in a) == 0  # a new seed changes every file


def test_splits_are_disjoint_streams(tmp_path):
    run(_cfg(tmp_path, seed=0, split="train"), progress=False)
    run(_cfg(tmp_path, seed=0, split="val"), progress=False)
    train = {s.id: s for s in read_jsonl(tmp_path / "train.jsonl")}
    val = list(read_jsonl(tmp_path / "val.jsonl"))
    assert len(train) == len(val) == 8 and all(s.split == "val" for s in val)
    assert not {json.dumps(s.meta, sort_keys=True) for s in val} & {
        json.dumps(s.meta, sort_keys=True) for s in train.values()
    }


def test_stages_flag_limits_what_is_made(tmp_path):
    run(_cfg(tmp_path, counts={"image": 6, "video": 3, "audio": 3}, stages=(1,)), progress=False)
    samples = list(read_jsonl(tmp_path / "train.jsonl"))
    assert {s.stage for s in samples} == {1} and {s.task for s in samples} == {"caption"}
    assert all(not s.boxes and not s.spans for s in samples)


def test_cli_writes_valid_jsonl_with_a_summary(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--n", "6", "--seed", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert "6 samples" in result.output and "samples/s" in result.output
    bad: list = []
    samples = list(read_jsonl(tmp_path / "train.jsonl", bad))
    assert not bad and [s.media[0].type for s in samples] == ["image"] * 2 + ["video"] * 2 + ["audio"] * 2
    assert all((tmp_path / s.media[0].path).is_file() for s in samples)
    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path), "--n", "9", "--videos", "0", "--audios", "1", "--split", "test", *TINY]
    )
    assert result.exit_code == 0, result.output
    assert [s.media[0].type for s in read_jsonl(tmp_path / "test.jsonl")] == ["image"] * 3 + ["audio"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "holdout"], "--split must be one of"),
        (["--video-seconds", "5"], "--video-seconds takes 2"),
        (["--fps", "0"], "--fps takes frame rates"),
        (["--n", "0"], "nothing to generate"),
        (["--stages", "4"], "--stages takes"),
        (["--seed", "1000000"], "reserved for the evaluation benchmark"),
    ],
)
def test_bad_flags_are_one_line_user_errors(tmp_path, args, message):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), *args, "--no-progress"])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "train.jsonl").exists()


def test_missing_asset_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "EMOJI_FONT", tmp_path / "none.ttf")
    assets._emoji_font.cache_clear()
    try:
        with pytest.raises(assets.AssetMissing, match="fonts-noto-color-emoji"):
            run(_cfg(tmp_path / "x"), progress=False)
    finally:
        assets._emoji_font.cache_clear()
    monkeypatch.setattr(assets, "FREEDESKTOP_SOUNDS", tmp_path)
    with pytest.raises(assets.AssetMissing, match="sound-theme-freedesktop"):
        run(_cfg(tmp_path / "y", counts={"image": 0, "video": 0, "audio": 1}), progress=False)
    monkeypatch.setattr(assets.shutil, "which", lambda _: None)
    monkeypatch.setattr(assets, "FREEDESKTOP_SOUNDS", assets.Path("/usr/share/sounds/freedesktop/stereo"))
    with pytest.raises(assets.AssetMissing, match="espeak-ng"):
        run(_cfg(tmp_path / "z", counts={"image": 0, "video": 0, "audio": 1}), progress=False)


def test_config_rejects_everything_wrong_at_once(tmp_path):
    with pytest.raises(SynthConfigError) as e:
        SynthConfig(out=tmp_path, split="x", workers=0, image_size=10)
    assert "--split" in str(e.value) and "--workers" in str(e.value) and "--image-size" in str(e.value)
