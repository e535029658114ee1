"""A micro model learns to box a square in a handful of generated images: the whole path (processor ->
location tokens -> loss -> generate -> grounding language -> Box in the original frame) works end to end."""

import torch
from PIL import Image, ImageDraw

from omniground.grounding import Box, box_iou, format_box
from omniground.model import build_model, tiny_config
from omniground.model.tokenizer import build_tiny_tokenizer

MICRO = dict(
    text=dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    vision=dict(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=96),
    audio=dict(num_mel_bins=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_source_positions=100),
    audio_window_seconds=1.0, video_num_queries=2, audio_num_queries=2, resampler_hidden_size=16,
    resampler_num_layers=1, resampler_num_heads=2,
)




def scene(box_px, size=(48, 32), colour=(230, 40, 40)) -> Image.Image:
    """A red rectangle at `box_px` on a grey, non-square canvas (so the padded square matters)."""
    img = Image.new("RGB", size, (90, 90, 90))
    ImageDraw.Draw(img).rectangle(box_px, fill=colour)
    return img


def test_tiny_model_learns_to_emit_the_right_box():
    torch.manual_seed(0)
    og = build_model(tiny_config(**MICRO), build_tiny_tokenizer(), num_location_bins=16)
    w, h = 48, 32
    boxes_px = [(2, 2, 17, 13), (30, 4, 45, 15), (4, 18, 19, 29), (28, 17, 43, 28)]  # one per quadrant
    images = [scene(b) for b in boxes_px]
    truths = [Box.from_pixels(b, w, h) for b in boxes_px]
    question = "<image>\nGive the bounding box of: the red square"
    convs = [[{"role": "user", "content": question},
              {"role": "assistant", "content": f"the red square{format_box(t)}"}] for t in truths]
    batch, _ = og.processor.prepare(convs, [[im] for im in images], add_generation_prompt=False,
                                    return_labels=True, padding_side="right")

    og.model.set_stage(2)
    og.model.train()
    opt = torch.optim.AdamW(og.model.parameter_groups(weight_decay=0.0), lr=1e-3)
    losses = []
    for _ in range(300):
        loss = og.model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.03:
            break
    assert losses[-1] < 0.1 * losses[0], losses[:: max(1, len(losses) // 10)]

    og.model.eval()
    for image, truth in zip(images, truths):
        (found,) = og.ground(image, "the red square", max_new_tokens=16)
        assert found.phrase == "the red square"
        assert box_iou(found, truth) > 0.6, (found, truth)
        assert found.score is not None and found.score > 0.5
