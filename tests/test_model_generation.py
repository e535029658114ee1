"""Generation on micro models: KV cache == no cache, encoders run once per request, left-padded batches
answer as single requests do, sampling/stop strings/streaming, answer scores, and `load` errors."""

import os

import pytest
import torch
from micro import audio, image, micro_model, video

import omniground
from omniground.errors import UserError
from omniground.model import OmniGround
from omniground.model import api as model_api


@pytest.fixture(scope="module")
def og() -> OmniGround:
    og = micro_model(text=dict(initializer_range=0.3))  # a peaked random LM: varied answers to compare
    og.model.eval()
    return og


def user(text):
    return [{"role": "user", "content": text}]


REQUESTS = [
    (user("<image>\nWhere is the cat?"), [image(0)]),
    (user("<video>\nWhen does the ball bounce, and where does it land in <image>?"), [video(seed=1), image(2)]),
    (user("<audio>\nWhen is the bell?"), [audio(seed=3)]),
    (user("Say hi."), None),
]


def generate_ids(og, conversations, media, **kw):
    inputs, _ = og.processor.prepare(conversations, media)
    out = og.model.generate(**inputs, max_new_tokens=8, do_sample=False, **kw)
    return out[:, inputs["input_ids"].shape[1] :]


def test_cached_generation_gives_the_same_tokens_as_uncached(og):
    convs, media = [c for c, _ in REQUESTS], [m for _, m in REQUESTS]
    cached = generate_ids(og, convs, media, use_cache=True)
    uncached = generate_ids(og, convs, media, use_cache=False)
    assert cached.shape[1] == 8
    assert torch.equal(cached, uncached)


def test_each_encoder_runs_once_per_request_during_generation(og):
    m = og.model
    convs, media = [c for c, _ in REQUESTS], [m for _, m in REQUESTS]
    m.reset_encoder_counters()
    out = generate_ids(og, convs, media, use_cache=True, min_new_tokens=8)
    assert out.shape[1] == 8
    # one batched call per modality: 2 images in one call, the video's 4 frames in another; 3 audio windows
    assert m.vision_tower.num_calls == 2 and m.vision_tower.num_items == 2 + 4
    assert m.audio_encoder.num_calls == 1 and m.audio_encoder.num_items == 3
    m.reset_encoder_counters()
    generate_ids(og, convs, media, use_cache=False, min_new_tokens=8)  # the original's way: every step
    assert m.vision_tower.num_calls == 2 * 8 and m.audio_encoder.num_calls == 8


def test_left_padded_batch_answers_like_single_requests(og):
    convs, media = [c for c, _ in REQUESTS], [m for _, m in REQUESTS]
    batch = og.chat_batch(convs, media, max_new_tokens=8)
    alone = [og.chat(c, m, max_new_tokens=8) for c, m in REQUESTS]
    assert [r.model_text for r in batch] == [r.model_text for r in alone]
    assert all(r.num_tokens > 0 for r in batch)


def test_sampling_is_seeded_and_differs_from_greedy(og):
    conv, media = REQUESTS[0]
    greedy = og.chat(conv, media, max_new_tokens=12)
    samples = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        samples.append(og.chat(conv, media, max_new_tokens=12, temperature=5.0).model_text)
    assert samples[0] == samples[1]
    assert len({samples[0], samples[2], greedy.model_text}) == 3


def test_stop_strings_end_and_are_cut_from_the_answer(og):
    conv, media = REQUESTS[3]
    full = og.chat(conv, media, max_new_tokens=12, min_new_tokens=12)
    assert full.finish_reason == "length" and len(full.model_text) > 6
    stop = full.model_text[3:5]
    cut = og.chat(conv, media, max_new_tokens=12, min_new_tokens=1, stop=[stop])
    assert cut.finish_reason == "stop"
    assert full.model_text.startswith(cut.model_text) and stop not in cut.model_text
    assert cut.num_tokens < full.num_tokens


def test_streaming_yields_the_answer_piece_by_piece(og):
    conv, media = REQUESTS[1]
    pieces = []
    result = og.chat(conv, media, max_new_tokens=10, stream=pieces.append)
    assert len(pieces) >= 2 and "".join(pieces).strip() == result.text
    assert "".join(og.stream_chat(conv, media, max_new_tokens=10)).strip() == result.text


def test_boxes_and_spans_come_back_with_their_token_probabilities(og):
    """Decode a hand-written answer: boxes/spans mapped to the original frames, each scored."""
    tok, meta = og.tokenizer, og.processor.encode(user("<image>"), [image(w=60, h=30)]).meta
    meta.duration = 10.0
    text = "the cat<|box|><loc_0><loc_4><loc_15><loc_11> rings <|span|><loc_3><loc_6>"
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id])
    probs = torch.linspace(0.1, 0.9, len(ids))
    result = og._result(ids, probs, meta, stop=[], max_new_tokens=50)
    (box,), (span,) = result.boxes, result.spans
    # y in the padded 60x60 square: 4/15 -> (0.267 - 0.25) / 0.5; x untouched
    assert box.xyxy == pytest.approx((0.0, (4 / 15 - 0.25) / 0.5, 1.0, (11 / 15 - 0.25) / 0.5), abs=2e-3)  # 3 decimals
    assert box.phrase == "the cat"
    assert span.start == pytest.approx(0.2) and span.end == pytest.approx(0.4)
    assert result.spans_seconds[0] == pytest.approx((2.0, 4.0))
    loc = [i for i, t in enumerate(ids.tolist()) if t >= og.model.config.box_token_id]
    box_ids = loc[:5]  # <|box|> + 4 location tokens, one token each
    assert box.score == pytest.approx(float(probs[box_ids].mean()), abs=1e-6)
    assert span.score == pytest.approx(float(probs[loc[5:]].mean()), abs=1e-6)
    assert result.finish_reason == "stop" and result.num_tokens == len(ids) - 2


def test_ground_picks_the_modality_and_names_the_phrase(og):
    for media, kind in ((image(), "image"), (video(), "video"), (audio(), "audio")):
        items = og.ground(media, "the cat", max_new_tokens=6)
        assert isinstance(items, list)
        assert all(i.phrase for i in items)
    assert model_api._media_kind(video()) == "video" and model_api._media_kind(audio()) == "audio"


def test_an_answer_prefix_is_prefilled_and_continued(og):
    conv, media = user("<image>\nWhere is the cat?"), [image(0)]
    prefix = "The cat"
    (result,) = og.chat_batch([conv], [media], max_new_tokens=4, answer_prefixes=[prefix])
    assert result.text.startswith(prefix) and result.num_tokens <= 4  # the prefix is not counted as generated
    # the first generated token is the model's choice right after the prefix: prompt + prefix ids
    inputs, _ = og.processor.prepare([conv], [media], answer_prefixes=[prefix])
    plain, _ = og.processor.prepare([conv], [media])
    n_prefix = inputs["input_ids"].shape[1] - plain["input_ids"].shape[1]
    assert n_prefix > 0
    assert inputs["input_ids"][0, -n_prefix:].tolist() == og.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        first = og.model(**inputs).logits[0, -1].argmax().item()
    out = og.model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert out[0, -1].item() == first
    # ground() on an image starts from "The <phrase>"; on audio it does not
    assert og.processor.grounding_answer_prefix("image", "the dog") == "The dog"
    assert og.processor.grounding_answer_prefix("image", "A red car ") == "The red car"
    assert og.processor.grounding_answer_prefix("image", "bell at the left") == "The bell at the left"
    assert og.processor.grounding_answer_prefix("audio", "a bell") == ""  # nothing given, still a grounding answer


def test_load_finds_checkpoints_and_explains_what_is_missing(og, tmp_path, monkeypatch):
    monkeypatch.setattr(model_api, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    with pytest.raises(UserError, match="default model is not installed"):
        omniground.load("omniground-tiny")
    with pytest.raises(UserError, match="no model directory"):
        omniground.load(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an omniground checkpoint"):
        omniground.load(str(tmp_path / "empty"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="not a local directory nor in the Hugging Face cache") as e:
        omniground.load("nobody-here/no-such-model")
    assert "\n" not in str(e.value)

    og.save_pretrained(tmp_path / "checkpoints" / "omniground-tiny")
    shipped = omniground.load()
    conv, media = REQUESTS[0]
    assert shipped.chat(conv, media, max_new_tokens=6).model_text == og.chat(conv, media, max_new_tokens=6).model_text


def test_a_saved_model_is_readable_by_all_the_umask_lets_read(og, tmp_path):
    """safetensors >= 0.8 writes 0600 whatever the umask: a model a server or a container's user could not load."""
    before = os.umask(0o022)
    try:
        og.save_pretrained(tmp_path / "model")
    finally:
        os.umask(before)
    mode = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "model").iterdir()}
    assert mode["model.safetensors"] == mode["config.json"] == 0o644


def test_streamed_boxes_appear_whole_and_in_the_image_frame(og):
    """Location tokens arrive one by one; a box is shown only once whole, as `[..]` of the original image."""
    tok = og.tokenizer
    text = "the cat<|box|><loc_0><loc_4><loc_15><loc_11> and a dog"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for meta, box in ((None, "[0.000,0.267,1.000,0.733]"),  # no image size known: the model's frame
                      (model_api.RequestMeta(image_size=(60, 30)), "[0.000,0.034,1.000,0.966]")):  # padded 60x60
        pieces = []
        streamer = model_api._CallbackStreamer(og, pieces.append)
        streamer.meta = meta
        streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: not shown
        for t in ids:
            streamer.put(torch.tensor([t]))
        streamer.end()
        assert all("<" not in p for p in pieces) and len(pieces) > 3
        assert "".join(pieces) == f"the cat{box} and a dog"
        assert any(p.startswith(box) for p in pieces)


def test_digit_boxes_stream_whole_too():
    assert model_api._stable_prefix("the cat[0.100,0.2") == len("the cat")
    assert model_api._stable_prefix("the cat[0.100,0.200,0.300,0.400] at {0.1") == len(
        "the cat[0.100,0.200,0.300,0.400] at ")
    assert model_api._stable_prefix("a<|box|><loc_1><loc_2>") == 1


def test_chat_batch_checks_the_declines_of_answers_not_streamed_nor_started(og, monkeypatch):
    seen = []
    monkeypatch.setattr(og, "overrule_declines",
                        lambda conversations, media, results, rows=None, **kw: seen.append((rows, kw)) or results)
    question, media = user("<image>\nWhere is the cat?"), [image(0)]
    og.chat_batch([question, question], [media, media], max_new_tokens=2, answer_prefixes=[None, "The"])
    assert [rows for rows, _ in seen] == [[0]] and seen[0][1]["max_new_tokens"] == 2
    og.chat(question, media, max_new_tokens=2, stream=lambda piece: None)  # shown as it came: not re-asked
    og.chat(question, media, max_new_tokens=2, check_declines=False)
    assert len(seen) == 1
