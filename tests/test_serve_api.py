"""The OpenAI-compatible API, end to end on loopback: the official `openai` client, streaming, grounding,
batching, limits, auth and errors. The model is a real tiny random one with a scripted answer."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import openai
import pytest
from media_files import ramp_video
from test_serve_support import ScriptedOmniGround, data_url, png_bytes, running_server, wav_bytes

from omniground.grounding import Box
from omniground.serve import ServeSettings, create_app

ANSWER = "the red square [0.250,0.250,0.750,0.750] is here"
KEY = "sk-test-omniground"
W, H = 96, 64  # not square: the model's padded-square frame must be mapped back to this image


@pytest.fixture(scope="module")
def server():
    og = ScriptedOmniGround(ANSWER)
    app = create_app(og, ServeSettings(model_name="tiny", api_key=KEY, max_wait_ms=50, max_request_bytes=2_000_000))
    with running_server(app) as url:
        yield url, og, app


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def image_message(question: str = "where is the red square?") -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes(W, H), "image/png")}},
        {"type": "text", "text": question},
    ]}]


def expected_box() -> Box:
    return Box.from_padded_square((0.25, 0.25, 0.75, 0.75), W, H)


def test_openai_client_gets_answer_and_structured_grounding(client):
    resp = client.chat.completions.create(model="tiny", messages=image_message(), max_tokens=64)
    choice = resp.choices[0]
    box = expected_box()
    assert choice.finish_reason == "stop"
    assert choice.message.content == f"the red square [{box.x1:.3f},{box.y1:.3f},{box.x2:.3f},{box.y2:.3f}] is here"
    g = choice.message.grounding  # extra field, kept by the client's models
    assert g["image_size"] == [W, H]
    [b] = g["boxes"]
    assert b["phrase"] == "the red square"
    assert b["bbox"] == pytest.approx([24, 8, 72, 56], abs=0.01)  # pixels of the 96x64 original
    assert b["bbox_normalized"] == pytest.approx(list(box.xyxy), abs=1e-4)
    assert b["score"] is None or 0.0 <= b["score"] <= 1.0  # mean token probability, when the model gives one
    assert g["spans"] == []
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0
    assert resp.model == "tiny"
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_streaming_deltas_add_up_to_the_answer_and_end_with_grounding(client):
    stream = client.chat.completions.create(model="tiny", messages=image_message(), stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # really streamed
    box = expected_box()
    assert text == f"the red square [{box.x1:.3f},{box.y1:.3f},{box.x2:.3f},{box.y2:.3f}] is here"
    last = [c for c in chunks if c.choices][-1].choices[0]
    assert last.finish_reason == "stop"
    assert last.delta.grounding["boxes"][0]["bbox"] == pytest.approx([24, 8, 72, 56], abs=0.01)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_n_max_tokens_and_stop_are_honoured(client):
    resp = client.chat.completions.create(model="tiny", messages=image_message(), n=3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert len({c.message.content for c in resp.choices}) == 1  # greedy: the same answer thrice

    cut = client.chat.completions.create(model="tiny", messages=image_message(), max_tokens=3)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 3
    assert len(cut.choices[0].message.content) < len("the red square")

    stopped = client.chat.completions.create(model="tiny", messages=image_message(), stop=[" square"])
    assert stopped.choices[0].message.content == "the red"
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.grounding["boxes"] == []  # the box came after the stop


def test_concurrent_requests_share_forward_passes_and_keep_their_own_limits(server):
    url, og, app = server
    before = len(og.calls)

    async def main():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60) as c:
            return await asyncio.gather(*[
                c.chat.completions.create(model="tiny", messages=image_message(), max_tokens=2 + i)
                for i in range(8)
            ])

    answers = asyncio.run(main())
    batches = [c["batch"] for c in og.calls[before:]]
    assert sum(batches) == 8 and max(batches) > 1 and len(batches) < 8
    for i, a in enumerate(answers):  # a row stops at its own max_tokens even inside a bigger batch
        assert a.usage.completion_tokens == 2 + i
        assert a.choices[0].finish_reason == "length"
    metrics = httpx.get(url + "/metrics").text
    rows = float(re.search(r"^omniground_batch_size_sum (\S+)", metrics, re.M).group(1))
    passes = float(re.search(r"^omniground_batch_size_count (\S+)", metrics, re.M).group(1))
    assert rows > passes  # some forward pass carried more than one row
    assert 'omniground_requests_total{route="/v1/chat/completions",status="200"}' in metrics
    assert "omniground_request_latency_seconds_bucket" in metrics


def test_video_and_audio_answers_carry_spans_in_seconds(tmp_path):
    og = ScriptedOmniGround("the bell rings {0.25,0.75}")
    video = ramp_video(tmp_path / "clip.mp4", seconds=2.0)
    with running_server(create_app(og, ServeSettings(model_name="tiny"))) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        parts = [
            {"type": "video_url", "video_url": {"url": data_url(video.read_bytes(), "video/mp4")}},
            {"type": "input_audio", "input_audio": {"data": data_url(wav_bytes(4.0), "x").split(",")[1],
                                                    "format": "wav"}},
        ]
        for part, duration in zip(parts, (2.0, 4.0)):
            resp = c.chat.completions.create(model="tiny", messages=[
                {"role": "user", "content": [part, {"type": "text", "text": "when?"}]}])
            g = resp.choices[0].message.grounding
            assert g["duration"] == pytest.approx(duration, abs=0.11)
            [s] = g["spans"]
            assert s["phrase"] == "the bell rings"
            assert (s["start"], s["end"]) == pytest.approx((0.25 * g["duration"], 0.75 * g["duration"]), abs=1e-3)
            assert g["boxes"] == [] and g["image_size"] is None
    assert [call["conversations"][0][0]["content"] for call in og.calls] == ["<video>\nwhen?", "<audio>\nwhen?"]


def test_auth_is_required_on_the_api_but_not_on_health(server):
    url = server[0]
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="tiny", messages=image_message())
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    assert httpx.get(url + "/v1/models").status_code == 401
    health = httpx.get(url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"{not json", 400, None),
        (b'{"model": "tiny"}', 400, "messages"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]}]}).encode(),
         400, "messages[0].content[0].image_url"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}).encode(),
         400, "messages[0].content[0].image_url.url"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "bm90IGF1ZGlv", "format": "wav"}}]}]}).encode(),
         400, "messages[0].content[0].input_audio"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}).encode(),
         400, "messages[0].content[0].image_url.url"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]}).encode(),
         403, "messages[0].content[0].image_url.url"),
        (json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404, "model"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}).encode(),
         400, "temperature"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * 2_100_000 + b'"}]}', 413, None),
    ],
    ids=["malformed-json", "no-messages", "not-an-image", "bad-base64", "not-audio", "remote-url",
         "local-path-without-allow-dir", "unknown-model", "bad-temperature", "too-large"],
)
def test_bad_requests_get_openai_style_4xx_and_the_server_keeps_serving(server, client, body, status, param):
    r = httpx.post(server[0] + "/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"] and "\n" not in error["message"]
    assert error["param"] == param
    assert client.chat.completions.create(model="tiny", messages=image_message(), max_tokens=2).choices


def test_timeout_answers_504_and_frees_the_model():
    og = ScriptedOmniGround("x" * 400)  # long answer: generation outlives the time limit
    app = create_app(og, ServeSettings(model_name="tiny", request_timeout_s=0.3))
    with running_server(app) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        ok = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        assert ok.status_code == 200
        text = ok.json()["choices"][0]["message"]["content"]
        assert text and set(text) == {"x"} and ok.json()["usage"]["completion_tokens"] == 3


def test_a_full_queue_answers_503_at_once():
    og = ScriptedOmniGround("ok")
    app = create_app(og, ServeSettings(model_name="tiny", max_queue=2))
    with running_server(app) as url:
        r = httpx.post(url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 3})
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}).status_code == 200


def test_the_evaluators_endpoint_predictor_reads_our_answers(server, tmp_path):
    """The eval package's client for any OpenAI-compatible endpoint works against this server unchanged."""
    from omniground.data.schema import BoxLabel, Media, Sample, Turn
    from omniground.eval.predictors import EndpointPredictor

    (tmp_path / "scene.png").write_bytes(png_bytes(W, H))
    sample = Sample(id="s1", media=[Media(type="image", path="scene.png")], task="rec", stage=2,
                    source="test", license="CC0-1.0",
                    boxes=[BoxLabel(phrase="the red square", box=(0.25, 0.125, 0.75, 0.875))], conversation=[
                        Turn(role="user", content="<image>\nWhere is the red square?"),
                        Turn(role="assistant", content="[0.25,0.125,0.75,0.875]")])
    predictor = EndpointPredictor(server[0], "tiny", api_key=KEY)
    [text] = predictor.predict([sample], tmp_path)
    box = expected_box()
    assert text == f"the red square [{box.x1:.3f},{box.y1:.3f},{box.x2:.3f},{box.y2:.3f}] is here"
