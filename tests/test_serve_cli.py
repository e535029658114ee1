"""`omniground ground` and `omniground chat` (the functions the top-level CLI registers), with a scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omniground.errors import UserError
from omniground.media.errors import MediaError
from omniground.serve import cli
from test_serve_support import ScriptedOmniGround, png_bytes, wav_bytes

runner = CliRunner()


@pytest.fixture
def scripted(monkeypatch):
    """Route the CLI's model loading to a scripted model; returns a setter for its answer."""
    holder = {}

    def use(answer: str) -> ScriptedOmniGround:
        holder["og"] = ScriptedOmniGround(answer)
        return holder["og"]

    monkeypatch.setattr(cli, "_load", lambda model, device: holder["og"])
    return use


def test_ground_image_json_gives_pixels_and_draws_the_box(tmp_path, scripted):
    scripted("[0.250,0.250,0.750,0.750]")
    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(96, 64))
    viz = tmp_path / "viz.png"
    result = runner.invoke(cli.app, ["ground", str(image), "the red square", "--json", "--save-viz", str(viz)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["type"] == "image" and out["query"] == "the red square"
    [box] = out["grounding"]["boxes"]
    assert box["phrase"] == "the red square"  # the query names an unnamed box
    assert box["bbox"] == pytest.approx([24, 8, 72, 56], abs=0.01)
    picture = np.asarray(Image.open(viz).convert("RGB")).reshape(-1, 3).astype(int)
    tab_blue = np.abs(picture - [31, 119, 180]).sum(1) < 30  # the first phrase colour of omniground.viz
    assert tab_blue.sum() > 100


def test_ground_min_score_drops_the_boxes_the_pointer_is_unsure_of(monkeypatch):
    import omniground

    og = omniground.load()  # the shipped model: a box's score is its pointer's confidence
    monkeypatch.setattr(cli, "_load", lambda model, device: og)
    ask = ["ground", str(Path(__file__).parents[1] / "examples" / "scene.jpg"), "the lowest pizza", "--json"]
    out = json.loads(runner.invoke(cli.app, ask).stdout)
    [box] = out["grounding"]["boxes"]
    assert 0 < box["score"] < 0.99
    below = json.loads(runner.invoke(cli.app, [*ask, "--min-score", str(box["score"] - 0.01)]).stdout)
    assert below["grounding"]["boxes"] == [box]
    above = json.loads(runner.invoke(cli.app, [*ask, "--min-score", str(box["score"] + 0.01)]).stdout)
    assert above["grounding"]["boxes"] == [] and above["answer"] == out["answer"]  # the text as written
    result = runner.invoke(cli.app, ask[:-1] + ["--min-score", "0.99"])
    assert result.exit_code == 0 and "nothing grounded with score >= 0.99" in result.stdout


def test_ground_audio_prints_seconds(tmp_path, scripted):
    scripted("{0.25,0.75}")
    clip = tmp_path / "tone.wav"
    clip.write_bytes(wav_bytes(4.0))
    result = runner.invoke(cli.app, ["ground", str(clip), "the tone"])
    assert result.exit_code == 0, result.output
    assert "span the tone: 1.00-3.00 s" in result.stdout


def test_ground_reports_bad_media_and_missing_model_as_user_errors(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    result = runner.invoke(cli.app, ["ground", str(bad), "x"])
    assert isinstance(result.exception, MediaError)  # the top-level entry prints it as one line, exit 2
    good = tmp_path / "ok.png"
    good.write_bytes(png_bytes())
    result = runner.invoke(cli.app, ["ground", str(good), "x", "--model", str(tmp_path / "no-such-model")])
    assert isinstance(result.exception, UserError)


def test_chat_attaches_media_keeps_history_streams_and_prints_units(tmp_path, scripted):
    og = scripted("the cat [0.250,0.250,0.750,0.750] meows {0.25,0.75}")
    image, clip = tmp_path / "cat.png", tmp_path / "meow.wav"
    image.write_bytes(png_bytes(96, 64))
    clip.write_bytes(wav_bytes(2.0))
    session = "\n".join([
        f"/image {image}",
        "where is the cat?",
        "/audio /does/not/exist.wav",
        f"/video {clip}",  # wrong kind: refused, session goes on
        f"/audio {clip}",
        "and when does it meow?",
        "/quit",
    ]) + "\n"
    result = runner.invoke(cli.app, ["chat"], input=session)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("the cat [0.250,0.125,0.750,0.875] meows") == 2  # answered twice, in the original frame
    assert "box  the cat: [24, 8, 72, 56] px" in out
    assert "span meows: 0.50-1.50 s" in out  # the first clip's duration: 2 s
    assert "file not found" in out and "is audio, not video" in out
    first, second = (call["conversations"][0] for call in og.calls)
    assert first == [{"role": "user", "content": "<image>\nwhere is the cat?"}]
    assert second[:2] == [first[0], {"role": "assistant", "content": "the cat [0.250,0.125,0.750,0.875] meows {0.25,0.75}"}]
    assert second[2] == {"role": "user", "content": "<audio>\nand when does it meow?"}


def test_chat_streams_piece_by_piece(tmp_path, scripted, monkeypatch):
    scripted("one two three four")
    pieces = []
    monkeypatch.setattr(cli.console, "out", lambda text, **kw: pieces.append(text))
    result = runner.invoke(cli.app, ["chat"], input="hello\n")  # EOF after one turn ends the session
    assert result.exit_code == 0, result.output
    assert "".join(pieces) == "one two three four" and len(pieces) > 2


def test_serve_builds_the_app_from_its_flags(tmp_path, scripted, monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient

    scripted("ok")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    result = runner.invoke(cli.app, ["serve", "--model", str(tmp_path / "ckpt"), "--port", "8123",
                                     "--api-key", "k", "--allow-media-dir", str(tmp_path), "--max-batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert started["port"] == 8123 and started["host"] == "127.0.0.1"
    settings = started["app"].state.settings
    assert (settings.model_name, settings.api_key, settings.max_batch_size) == ("ckpt", "k", 4)
    with TestClient(started["app"]) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).json()["data"][0]["id"] == "ckpt"
        assert "<title>omniground</title>" in client.get("/").text

    result = runner.invoke(cli.app, ["serve", "--allow-media-dir", str(tmp_path / "missing")])
    assert isinstance(result.exception, UserError)
