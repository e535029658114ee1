"""`span_pointers`: a span on a clip is two pointers at its time slots, where it starts and where it ends."""

import pytest
import torch
from micro import audio, labelled_batch, micro_model, turn, video

from omniground.model import OmniGround
from omniground.model.api import load
from omniground.model.modeling_omniground import (SlotEdges, SpanPointer, merge_media_embeddings, span_bins, span_slots,
                                                 text_before, written_since)

SPANS = dict(span_pointers=True, time_anchored_queries=True, audio_num_queries=2)  # video 4 slots, audio 2
CONVS = [turn("<video>\nWhen does it move?", "{0.25,0.75}"),
         turn("Say hi.", "hi"),
         turn("<audio>\nWhen is the bell?", "At {0.50,1.00}, then {0.00,0.40}.")]
MEDIA = [[video()], None, [audio()]]
QUESTIONS = [[{"role": "user", "content": "<video>\nWhen does it move?"}],
             [{"role": "user", "content": "<audio>\nWhen is the bell?"}]]


def _media(m, inputs) -> dict[int, torch.Tensor]:
    cfg, media = m.config, {}
    if "video_pixel_values" in inputs:
        media[cfg.video_token_id] = m.encode_videos(inputs["video_pixel_values"], inputs["video_frame_mask"],
                                                    inputs["video_timestamps"], inputs["video_durations"])
    if "audio_features" in inputs:
        media[cfg.audio_token_id] = m.encode_audios(inputs["audio_features"], inputs["audio_window_mask"],
                                                    inputs["audio_starts"], inputs["audio_durations"])
    return media


def _hidden(m, inputs, media):
    """The LM's last hidden states for `inputs`, by hand: clip tokens written over their placeholders."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    embeds = merge_media_embeddings(ids, m.get_input_embeddings()(ids), media)
    return m.language_model.get_decoder()(inputs_embeds=embeds, attention_mask=mask,
                                          position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).last_hidden_state


def _prompts_ending_in_a_span(og):
    inputs, _ = og.processor.prepare(QUESTIONS, [[video()], [audio()]], add_generation_prompt=True,
                                     answer_prefixes=["<|span|>", "At <|span|>"], padding_side="left")
    assert (inputs["input_ids"][:, -1] == og.model.config.span_token_id).all()
    return inputs


def test_flag_adds_only_the_span_pointer_and_checks_its_needs():
    plain, spans = micro_model(time_anchored_queries=True), micro_model(**SPANS)
    assert plain.model.span_pointer is None
    extra = set(spans.model.state_dict()) - set(plain.model.state_dict())
    assert extra and all(k.startswith("span_pointer.") for k in extra)
    with pytest.raises(ValueError, match="time_anchored_queries"):
        micro_model(span_pointers=True)  # slots must stand for stretches of time
    with pytest.raises(ValueError, match="num_location_bins"):
        micro_model(**SPANS, num_location_bins=0)


@pytest.mark.parametrize("kinds", [["video"], ["audio"], True])
def test_span_key_mlp_reads_the_slots_of_the_kinds_of_clip_it_names(kinds):
    with pytest.raises(ValueError, match="need span_pointers"):
        micro_model(time_anchored_queries=True, span_key_mlp=kinds)
    og = micro_model(**SPANS, span_key_mlp=kinds)
    m, cfg, sp = og.model, og.model.config, og.model.span_pointer
    assert [type(x) for x in sp.key_mlp] == [torch.nn.LayerNorm, torch.nn.Linear, torch.nn.GELU, torch.nn.Linear]
    with torch.no_grad():
        for p in (*sp.key_mlp.parameters(), *sp.query.parameters()):
            p.normal_(0, 1.0)  # peaked scores: which key a clip's slots go through shows in what is chosen
        inputs = _prompts_ending_in_a_span(og)
        out = m.generate(**inputs, max_new_tokens=2, do_sample=False)[:, -2:]
        media = _media(m, inputs)
        hidden = _hidden(m, inputs, media)[:, -1]
        for r, (kind, tid, nq) in enumerate([("video", cfg.video_token_id, 4), ("audio", cfg.audio_token_id, 2)]):
            slots, ones, audio = media[tid][0], torch.ones(nq, dtype=torch.bool), torch.tensor(kind == "audio")
            bins, _ = sp.choose(hidden[r], slots, ones, cfg.num_location_bins, audio)
            assert out[r].tolist() == [cfg.loc_token_start_id + b for b in bins]
            logits = sp.logits(hidden[r][None], slots[None], ones[None], audio[None])
            key, sp.key_mlp = sp.key_mlp, None  # the linear key alone
            plain = sp.logits(hidden[r][None], slots[None], ones[None], audio[None])
            sp.key_mlp = key
            assert (not torch.allclose(logits, plain)) == (kind in cfg.span_key_mlp)
    for convs, media, kind in ((CONVS[:1], MEDIA[:1], "video"), (CONVS[2:], MEDIA[2:], "audio")):
        sp.zero_grad(set_to_none=True)
        m(**labelled_batch(og, convs, media)).loss.backward()  # training goes through the same key
        grad = sp.key_mlp[1].weight.grad
        assert (grad is not None and bool(grad.any())) == (kind in cfg.span_key_mlp)


def test_span_slots_round_to_the_nearest_slot_edges_and_bins_write_them_back():
    target = torch.tensor([[0.25, 0.75], [0.10, 0.14], [0.0, 1.0], [0.9, 0.95]])
    first, last = span_slots(target, torch.tensor([4, 4, 4, 2]))
    assert first.tolist() == [1, 0, 0, 1] and last.tolist() == [2, 0, 3, 1]  # at least one slot; clamped
    assert span_bins(1, 2, 4, 17) == [4, 12]  # slots 1..2 of 4 = [0.25, 0.75] -> bins of 16 steps
    assert span_bins(0, 3, 4, 16) == [0, 15]
    assert written_since([1, 9, 10], 9, 10, 4, 2) == 1 and written_since([1, 9, 10, 11], 9, 10, 4, 2) is None


def test_training_loss_adds_the_span_pointer_loss_and_reaches_the_resamplers():
    og = micro_model(**SPANS)
    m = og.model
    m.set_stage(1)
    assert all(p.requires_grad for p in m.span_pointer.parameters())
    inputs = labelled_batch(og, CONVS, MEDIA)
    out = m(**inputs)
    sp, cfg = m.span_pointer, m.config
    with torch.no_grad():  # by hand: LM loss + pointer loss over the three answer spans (rows 0, 2, 2)
        pointer, m.span_pointer = m.span_pointer, None
        lm_loss = m(**inputs).loss
        m.span_pointer = pointer
        media = _media(m, inputs)
        ids = inputs["input_ids"]
        hidden = _hidden(m, inputs, media)
        rows, pos = (ids == cfg.span_token_id).nonzero(as_tuple=True)
        assert rows.tolist() == [0, 2, 2]
        v, a = media[cfg.video_token_id][0], media[cfg.audio_token_id][0]  # (4, H), (2, H)
        slots = torch.stack([v, torch.cat([a, torch.zeros_like(a)]), torch.cat([a, torch.zeros_like(a)])])
        mask = torch.tensor([[True] * 4, [True, True, False, False], [True, True, False, False]])
        target = (torch.stack([ids[r, p + 1 : p + 3] for r, p in zip(rows, pos)]) - cfg.loc_token_start_id) / (
            cfg.num_location_bins - 1)
        want = lm_loss + sp.loss(hidden[rows, pos], slots, mask, target, torch.tensor([False, True, True]))
    torch.testing.assert_close(out.loss, want, rtol=1e-4, atol=1e-4)
    assert want > lm_loss + 0.5  # the pointer's share is there (about log 4 + log 4 for the video span)
    out.loss.backward()
    assert sp.query[1].weight.grad.abs().sum() > 0 and sp.key[1].weight.grad.abs().sum() > 0
    # the pointer teaches the resamplers (their tokens are the slots), not only the LM
    assert m.video_resampler.output_proj.weight.grad.abs().sum() > 0
    assert m.audio_resampler.output_proj.weight.grad.abs().sum() > 0


def test_generation_writes_the_span_of_the_slots_the_pointer_chooses(tmp_path):
    og = micro_model(**SPANS)
    m, cfg, n = og.model, og.model.config, og.model.config.num_location_bins
    with torch.no_grad():
        m.span_pointer.query[1].weight.normal_(0, 1.0)  # peaked scores, so the rows choose differently
    inputs = _prompts_ending_in_a_span(og)
    with torch.no_grad():
        out = m.generate(**inputs, max_new_tokens=2, do_sample=False)[:, -2:]
        confidences = [c["span"] for c in m.pointer_confidences()]
        media = _media(m, inputs)
        hidden = _hidden(m, inputs, media)[:, -1]
    chosen = []
    for r, (tid, nq) in enumerate([(cfg.video_token_id, 4), (cfg.audio_token_id, 2)]):
        slots = media[tid][0]
        p = m.span_pointer.logits(hidden[r][None], slots[None], torch.ones(1, nq, dtype=torch.bool),
                                  torch.tensor([r == 1]))[0].softmax(-1)
        # by hand: of the pairs first <= last, weighted by P(first) * P(last), the one of highest expected IoU
        pairs = [(float(p[0, i].detach() * p[1, j].detach()), i, j) for i in range(nq) for j in range(i, nq)]
        iou = lambda a, b, i, j: max(0, min(b, j) - max(a, i) + 1) / (max(b, j) - min(a, i) + 1)  # noqa: E731
        _, i, j = max((sum(q * iou(a, b, i, j) for q, a, b in pairs), i, j) for _, i, j in pairs)
        chosen.append(span_bins(i, j, nq, n))
        assert out[r].tolist() == [cfg.loc_token_start_id + b for b in chosen[r]]
        # its confidence: the pairs whose span overlaps the chosen one at IoU >= 0.5
        agree = sum(q for q, a, b in pairs if iou(a, b, i, j) >= 0.5)
        assert confidences[r] == [pytest.approx(agree, rel=1e-4)] and 0 < agree < 1
    # without a KV cache the same tokens; one row alone too
    with torch.no_grad():
        nocache = m.generate(**inputs, max_new_tokens=2, do_sample=False, use_cache=False)[:, -2:]
        one = {k: v[1:] for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        one.update({k: v for k, v in inputs.items() if k.startswith("audio_")})
        alone = m.generate(**one, max_new_tokens=2, do_sample=False)[:, -2:]
    assert nocache.tolist() == out.tolist() and alone[0].tolist() == out[1].tolist()
    # the answer carries the span, scored by the pointer; save and load keep the pointer
    result = og.chat(QUESTIONS[0], [video()], answer_prefixes=["<|span|>"], max_new_tokens=2)
    (span,) = result.spans
    assert (span.start, span.end) == pytest.approx(tuple(b / (n - 1) for b in chosen[0]), abs=0.006)
    assert span.score == pytest.approx(confidences[0][0], rel=1e-4)
    og.save_pretrained(tmp_path)
    back = OmniGround.from_pretrained(tmp_path)
    for k, v in m.span_pointer.state_dict().items():
        torch.testing.assert_close(back.model.span_pointer.state_dict()[k], v)


def test_the_written_span_is_the_one_most_of_the_pointers_probability_agrees_with():
    sp = SpanPointer(4)
    # 8 slots, every span ends at the last; it starts at slot 0 (0.3, the most probable pair), 4, 5 or 6
    first = torch.tensor([0.3, 0, 0, 0, 0.25, 0.25, 0.2, 0])
    sp.logits = lambda hidden, slots, mask, audio: torch.stack([first, torch.eye(8)[7]])[None].log()
    no = torch.tensor(False)
    bins, confidence = sp.choose(torch.zeros(4), torch.zeros(8, 4), torch.ones(8, dtype=torch.bool), 9, no)
    # expected IoU: slots 4-7 0.6875, 5-7 0.683, 0-7 0.569, 6-7 0.55; all four agree with 4-7 at IoU >= 0.5
    assert bins == span_bins(4, 7, 8, 9) == [4, 8] and confidence == pytest.approx(1.0)
    first = torch.tensor([0.7, 0, 0, 0, 0.1, 0.1, 0.1, 0])  # now the whole clip wins
    assert sp.choose(torch.zeros(4), torch.zeros(8, 4), torch.ones(8, dtype=torch.bool), 9, no)[0] == [0, 8]


def test_more_span_heads_answer_together_and_each_trains_on_its_own_loss():
    with pytest.raises(ValueError, match="span_heads 2: needs span_pointers"):
        micro_model(time_anchored_queries=True, span_heads=2)
    with pytest.raises(ValueError, match="span_heads 0"):
        micro_model(**SPANS, span_heads=0)
    assert not any(".more." in k for k in micro_model(**SPANS).model.state_dict())  # one head: as before
    sp = SpanPointer(4, heads=3)
    assert len(sp.members()) == 3 and not any(m.more for m in sp.more)
    # 4 slots: the first head puts all on slot 0 alone, the other two on slots 2-3
    for m, (first, last) in zip(sp.members(), ((0, 0), (2, 3), (2, 3))):
        m.logits = lambda hidden, slots, mask, audio, f=first, la=last: torch.stack(
            [torch.eye(4)[f], torch.eye(4)[la]])[None].log()
    args = (torch.zeros(4), torch.zeros(4, 4), torch.ones(4, dtype=torch.bool), 9, torch.tensor(False))
    alone = SpanPointer(4)
    alone.logits = sp.logits
    assert alone.choose(*args)[0] == span_bins(0, 0, 4, 9)
    assert sp.choose(*args) == (span_bins(2, 3, 4, 9), pytest.approx(2 / 3))

    og = micro_model(**SPANS, span_heads=2)
    m = og.model
    m.set_stage(1)
    inputs = labelled_batch(og, CONVS, MEDIA)
    both = m(**inputs).loss
    sp = m.span_pointer
    first, second = sp.members()
    with torch.no_grad():
        m.span_pointer = None
        lm = m(**inputs).loss
        sp.more = torch.nn.ModuleList()
        m.span_pointer = first
        with_first = m(**inputs).loss
        m.span_pointer = second
        with_second = m(**inputs).loss
    assert abs(float(with_first - with_second)) > 1e-4  # two heads, two starts
    torch.testing.assert_close(both, with_first + with_second - lm, rtol=1e-4, atol=1e-4)
    both.backward()
    assert second.query[1].weight.grad.abs().sum() > 0


def test_a_checkpoint_without_span_pointers_gains_fresh_ones_on_load(tmp_path):
    og = micro_model(time_anchored_queries=True)
    og.save_pretrained(tmp_path)
    grown = load(tmp_path, span_pointers=True)
    assert grown.model.config.span_pointers and grown.model.span_pointer is not None
    before = og.model.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in grown.model.state_dict().items() if k in before)
    assert load(tmp_path).model.span_pointer is None


def test_config_updates_that_resize_a_part_start_that_part_fresh(tmp_path):
    og = micro_model(**SPANS)
    og.save_pretrained(tmp_path)
    finer = load(tmp_path, audio_num_queries=4)  # twice the audio time slots
    assert finer.model.audio_resampler.queries.shape[0] == 4 and finer.model.config.audio_num_queries == 4
    before = og.model.state_dict()
    after = finer.model.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in after.items() if k != "audio_resampler.queries")
    inputs, _ = finer.processor.prepare([QUESTIONS[1]], [[audio()]], add_generation_prompt=True)
    assert (inputs["input_ids"] == finer.model.config.audio_token_id).sum() == 4  # the prompt has room for them
    assert finer.model(**inputs).logits.isfinite().all()


def test_slot_edges_see_each_slots_change_from_its_neighbours_and_start_at_zero():
    edges = SlotEdges(3)
    assert not edges.weight.any() and not edges.bias.any()  # a fresh one changes no key
    with torch.no_grad():
        torch.nn.init.normal_(edges.weight)
    flat = torch.ones(1, 6, 3)  # a clip that never changes: only its outer slots differ (from zeros beyond)
    out = edges(flat)
    assert out[0, 1:5].abs().max() < 1e-6 and out[0, [0, 5]].abs().min() > 0
    step = flat.clone()
    step[:, 3:5] = 2.0  # an event from slot 3 on: slots 2..5 see it, slots 0..1 do not
    changed = (edges(step) - out).abs().amax(-1)[0]
    assert changed[:2].max() < 1e-6 and changed[2:].min() > 0


def test_a_checkpoint_saved_before_slot_edges_points_as_it_did(tmp_path):
    from safetensors.torch import load_file, save_file

    og = micro_model(**SPANS)
    og.save_pretrained(tmp_path)
    weights = next(tmp_path.glob("*.safetensors"))
    save_file({k: v for k, v in load_file(str(weights)).items() if not k.startswith("span_pointer.edges.")},
              str(weights), metadata={"format": "pt"})
    old = load(tmp_path)
    assert not old.model.span_pointer.edges.weight.any()  # zero, not the LM's random init
    inputs = _prompts_ending_in_a_span(og)
    assert torch.equal(old.model.generate(**inputs, max_new_tokens=3, do_sample=False),
                       og.model.generate(**inputs, max_new_tokens=3, do_sample=False))


def _reread_spans(seed=3, kinds=True):
    """A span model whose query re-reads the text (on clips of `kinds`), its weights random and large enough
    that what it reads moves the slots' probabilities (`out` starts at zero)."""
    og = micro_model(**SPANS, span_reread=kinds)
    g = torch.Generator().manual_seed(seed)
    sp = og.model.span_pointer
    with torch.no_grad():
        for part, scale in ((sp.reread, 0.3), (sp.query, 1.0)):
            for p in part.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return og


def test_span_reread_starts_as_a_no_op_and_needs_span_pointers():
    with pytest.raises(ValueError, match="span_reread and span_key_mlp need span_pointers"):
        micro_model(time_anchored_queries=True, span_reread=True)
    with pytest.raises(ValueError, match="no media with time"):
        micro_model(**SPANS, span_reread=["audio", "image"])
    assert micro_model(**SPANS, span_reread=True).model.config.span_reread == ["video", "audio"]
    plain, reread = micro_model(**SPANS), micro_model(**SPANS, span_reread=True)
    assert plain.model.config.span_reread == plain.model.config.span_key_mlp == []
    with torch.no_grad():
        plain.model.span_pointer.query[1].weight.normal_(0, 1.0)  # peaked scores, so the rows choose differently
    missing = reread.model.load_state_dict(plain.model.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("span_pointer.reread.") for k in missing)
    inputs = _prompts_ending_in_a_span(plain)
    with torch.no_grad():
        a, b = (og.model.generate(**inputs, max_new_tokens=2, do_sample=False) for og in (plain, reread))
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("kinds", [True, ["audio"]])
def test_span_reread_reads_the_text_up_to_the_span_in_generation_and_training(kinds):
    og = _reread_spans(kinds=kinds)
    m, cfg, sp = og.model, og.model.config, og.model.span_pointer
    inputs = _prompts_ending_in_a_span(og)  # left-padded: the rows' prompts differ in length
    with torch.no_grad():
        out = m.generate(**inputs, max_new_tokens=2, do_sample=False)[:, -2:]
        confidences = [c["span"] for c in m.pointer_confidences()]
        media = _media(m, inputs)
        hidden = _hidden(m, inputs, media)
        ids = inputs["input_ids"]
        clip_tokens = torch.tensor([cfg.video_token_id, cfg.audio_token_id])
        is_text = ~torch.isin(ids, clip_tokens) & inputs["attention_mask"].bool()
        text, mask = text_before(hidden, is_text, torch.arange(2), torch.full((2,), ids.shape[1] - 1))
        for r, (kind, tid, nq) in enumerate([("video", cfg.video_token_id, 4), ("audio", cfg.audio_token_id, 2)]):
            ones, audio = torch.ones(nq, dtype=torch.bool), torch.tensor(kind == "audio")
            bins, confidence = sp.choose(hidden[r, -1], media[tid][0], ones, cfg.num_location_bins, audio,
                                         text[r, mask[r]], mask[r, mask[r]])
            assert out[r].tolist() == [cfg.loc_token_start_id + b for b in bins]
            assert confidences[r] == [pytest.approx(confidence, rel=1e-4)]
            other = sp.choose(hidden[r, -1], media[tid][0], ones, cfg.num_location_bins, audio,
                              torch.zeros_like(text[r, :1]), mask[r, :1])[1]
            assert (other != confidences[r][0]) == (kind in cfg.span_reread)  # what it reads matters where it reads
    for convs, media, reads in ((CONVS, MEDIA, True), (CONVS[:1], MEDIA[:1], "video" in cfg.span_reread)):
        sp.zero_grad(set_to_none=True)
        m(**labelled_batch(og, convs, media)).loss.backward()  # training reads it too, on the same clips
        assert (sp.reread.q.weight.grad is not None and bool(sp.reread.q.weight.grad.any())) == reads


def test_a_load_that_starts_parts_fresh_says_which_in_one_line_not_transformers_table(tmp_path, caplog, capsys):
    og = micro_model(time_anchored_queries=True, audio_num_queries=2)
    og.save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="omniground.model.api"):
        load(tmp_path)
        assert not caplog.records  # everything loaded: nothing to say
        load(tmp_path, span_pointers=True, audio_num_queries=4)
    (record,) = caplog.records
    said = record.getMessage()
    assert said.startswith(f"{tmp_path}: new, so fresh: span_pointer (")
    assert said.endswith("; resized, so fresh: audio_resampler.queries ([2, 32] -> [4, 32])"), said
    err = capsys.readouterr().err
    assert "LOAD REPORT" not in err and "were not sharded" not in err
