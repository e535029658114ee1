"""The teacher LLM path, against an OpenAI-compatible server this test runs on loopback.

The server rewrites dialogues in a way the test chooses: faithfully, or losing / altering / inventing
a location, or replying with junk. Only the faithful rewrites may survive.
"""

import json
import random
import re

import pytest
from fake_chat_server import FakeChatServer
from typer.testing import CliRunner

from omniground.data import instruct
from omniground.data.cli import app
from omniground.data.schema import Sample, read_jsonl, write_jsonl
from omniground.data.teacher import Teacher, TeacherError, check_rewrite
from omniground.grounding import Box, Span


def faithful(turns):
    """Reworded, with one extra exchange; every location copied."""
    out = [{"role": t["role"], "content": ("Hi! " if t["role"] == "user" else "Sure. ") + t["content"]} for t in turns]
    return out + [{"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You're welcome."}]


def alter(turns):  # the first box's first corner nudged
    return [
        dict(t, content=re.sub(r"\[0\.(\d)", lambda m: f"[0.{(int(m.group(1)) + 1) % 10}", t["content"], count=1))
        if t["role"] == "assistant"
        else t
        for t in turns
    ]


def lose(turns):  # the assistant's locations dropped
    return [
        dict(t, content=re.sub(r"\[[\d.,]+\]|\{[\d.,]+\}", " somewhere", t["content"]))
        if t["role"] == "assistant"
        else t
        for t in turns
    ]


def invent(turns):
    return turns[:-1] + [dict(turns[-1], content=turns[-1]["content"] + " Also a cup[0.500,0.500,0.600,0.600].")]


def rounded(turns):  # locations written with fewer decimals: an altered location too
    return [
        dict(t, content=re.sub(r"(\d\.\d\d)\d", r"\1", t["content"])) if t["role"] == "assistant" else t for t in turns
    ]


def spaced(turns):  # same numbers, other notation: not our canonical text, so not accepted either
    return [
        dict(t, content=re.sub(r"(\d),(\d)", r"\1, \2", t["content"])) if t["role"] == "assistant" else t for t in turns
    ]


BEHAVIOUR = {"mode": faithful, "status": 200, "fence": False, "seen": []}


def reply(body):
    BEHAVIOUR["seen"].append(body)
    if BEHAVIOUR["status"] != 200:
        return BEHAVIOUR["status"]
    turns = json.loads(body["messages"][-1]["content"])["conversation"]
    mode = BEHAVIOUR["mode"]
    content = "I will not." if mode is None else json.dumps({"conversation": mode(turns)})
    return f"Here you go:\n```json\n{content}\n```" if BEHAVIOUR["fence"] else content


@pytest.fixture(scope="module")
def server():
    fake = BEHAVIOUR["server"] = FakeChatServer(reply)
    yield fake.url
    fake.close()


@pytest.fixture(autouse=True)
def reset():
    BEHAVIOUR.update(mode=faithful, status=200, fence=False, seen=[])  # "server" stays: module-scoped


def image_dialogue(k: int = 0) -> Sample:
    cat, dog = Box(0.123, 0.234, 0.345, 0.456), Box(0.5 + k / 100, 0.5, 0.9, 0.8)
    pairs = instruct.dialogue(
        [
            ("rec", {"phrase": "red cat", "items": [cat]}),
            ("reg", {"phrase": "dog", "items": [dog]}),
            ("rec", {"phrase": "dog", "items": [dog]}),
        ],
        random.Random(k),
    )
    return Sample(
        id=f"img{k}",
        media=[{"type": "image", "path": "a.png", "width": 64, "height": 48}],
        conversation=instruct.conversation(pairs, ["image"]),
        task="dialogue",
        stage=3,
        source="synth",
        license="CC0-1.0",
        boxes=[{"phrase": "red cat", "box": cat.xyxy}, {"phrase": "dog", "box": dog.xyxy}],
    )


def audio_grounding() -> Sample:
    q, a = instruct.render("audio_grounding", random.Random(1), query="the bell rings", items=[Span(0.2, 0.45)])
    return Sample(
        id="aud",
        media=[{"type": "audio", "path": "a.wav", "duration": 10.0}],
        conversation=instruct.conversation([(q, a)], ["audio"]),
        task="audio_grounding",
        stage=2,
        source="synth",
        license="CC0-1.0",
        spans=[{"phrase": "the bell rings", "start": 2.0, "end": 4.5}],
    )


def test_faithful_rewrites_are_accepted_with_placeholders_restored(server):
    teacher = Teacher(server, model="tiny-teacher", api_key="k")
    for sample in (image_dialogue(), audio_grounding()):
        new, verdict = teacher.rewrite(sample)
        assert verdict == "accepted"
        assert new.conversation[0].content.startswith(sample.conversation[0].content.split("\n")[0] + "\nHi! ")
        assert len(new.conversation) == len(sample.conversation) + 2 and new.meta["teacher"] is True
        assert new.boxes == sample.boxes and new.spans == sample.spans
    body = BEHAVIOUR["seen"][0]
    assert body["model"] == "tiny-teacher"
    assert {r["path"] for r in BEHAVIOUR["server"].requests} == {"/v1/chat/completions"}
    assert "<image>" not in body["messages"][-1]["content"]  # the teacher sees text only
    BEHAVIOUR["fence"] = True
    assert teacher.rewrite(image_dialogue())[1] == "accepted"


@pytest.mark.parametrize(
    "mode, reason",
    [
        (alter, "assistant locations"),
        (lose, "assistant locations"),
        (invent, "assistant locations"),
        (rounded, "assistant locations"),
        (spaced, "assistant locations"),
        (None, "not the JSON"),
    ],
)
def test_answers_that_lose_or_alter_a_location_are_rejected(server, mode, reason):
    BEHAVIOUR["mode"] = mode
    original = image_dialogue()
    kept, verdict = Teacher(server).rewrite(original)
    assert verdict.startswith("rejected") and reason in verdict
    assert kept is original


def test_structural_checks():
    s = image_dialogue()
    turns = [t.model_dump() for t in s.conversation]
    assert check_rewrite(s, json.dumps({"conversation": turns[::-1]}))[1] == "turns do not alternate user/assistant"
    assert "turns for an original" in check_rewrite(s, json.dumps({"conversation": turns[:2]}))[1]
    swapped = [dict(t, role="assistant" if t["role"] == "user" else "user") for t in turns]
    assert check_rewrite(s, json.dumps({"conversation": [swapped[1], swapped[0], *swapped[2:]]}))[0] is None


def test_http_failures_keep_the_original_and_unreachable_is_a_user_error(server):
    BEHAVIOUR["status"] = 500
    kept, verdict = Teacher(server).rewrite(image_dialogue())
    assert verdict.startswith("failed") and kept.id == "img0"
    with pytest.raises(TeacherError, match="unreachable"):
        Teacher("http://127.0.0.1:9/v1", timeout=2).rewrite(image_dialogue())
    with pytest.raises(TeacherError, match="http"):
        Teacher("localhost:8000")


def test_teach_command_rewrites_a_file(server, tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [image_dialogue(0), audio_grounding(), image_dialogue(1)])
    BEHAVIOUR["mode"] = faithful
    result = CliRunner().invoke(
        app, ["teach", "--in", str(src), "--out", str(tmp_path / "out.jsonl"), "--teacher-url", server, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    out = list(read_jsonl(tmp_path / "out.jsonl"))
    assert [s.id for s in out] == ["img0", "aud", "img1"]
    assert [bool(s.meta.get("teacher")) for s in out] == [True, False, True]  # only dialogues by default
    assert "accepted" in result.output and "skipped" in result.output
    # Written elsewhere, relative media paths are re-expressed from the new folder.
    (tmp_path / "sub").mkdir()
    result = CliRunner().invoke(
        app,
        ["teach", "--in", str(src), "--out", str(tmp_path / "sub/out.jsonl"), "--teacher-url", server, "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    moved = next(read_jsonl(tmp_path / "sub/out.jsonl"))
    assert moved.media[0].path == "../a.png" and moved.media_path(0, tmp_path / "sub").resolve() == tmp_path / "a.png"


def test_synth_with_teacher_url(server, tmp_path):
    args = [
        "synth",
        "--out",
        str(tmp_path),
        "--images",
        "2",
        "--audios",
        "1",
        "--stages",
        "3",
        "--image-size",
        "64",
        "--audio-seconds",
        "3,4",
        "--teacher-url",
        server,
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    samples = list(read_jsonl(tmp_path / "train.jsonl"))
    assert len(samples) == 3 and all(s.meta.get("teacher") for s in samples)
    assert all(s.conversation[1].content.startswith("Sure. ") for s in samples)
