"""Tokenizers: the tiny offline one, omniground's added tokens, and chat templates per LM family.

Real backbones keep their own tokenizer and chat template; omniground only adds its tokens
(media pads, box/span markers, optional `<loc_k>` location bins) and a fallback template when the
tokenizer ships none.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import AddedToken

IMAGE_PAD, VIDEO_PAD, AUDIO_PAD = "<|image_pad|>", "<|video_pad|>", "<|audio_pad|>"
BOX_TOKEN, SPAN_TOKEN = "<|box|>", "<|span|>"


def loc_token(k: int) -> str:
    return f"<loc_{k}>"


# ChatML (Qwen2, SmolLM, the tiny default); assistant turns end with <|im_end|>, which is also EOS.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Vicuna v1.1 (Llama/Vicuna tokenizers ship no template); system text as the original's.
VICUNA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% set loop_messages = messages[1:] %}{% else %}A chat between a curious human and an artificial "
    "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions."
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %} USER: {{ message['content'] }}"
    "{% else %} ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
FALLBACK_TEMPLATES = {"llama": VICUNA_TEMPLATE}

# What the tiny tokenizer is trained on: enough words for prompts, captions and answers of the
# synthetic tasks; digits are always split one per token.
_TINY_CORPUS = [
    "Where is the red square in the image? Answer with its bounding box.",
    "Give the bounding box of: the blue circle on the left.",
    "When does this happen in the video: a person opens the door. When can you hear: a dog barks.",
    "Describe the image. Describe this video. What can you hear in this audio? The answer is yes or no.",
    "a green triangle, a yellow star, white black gray orange purple pink brown cyan magenta object shape",
    "top bottom left right middle center small large big first second third above below next to near",
    "the man woman child cat dog car bird ball tree house person people sound music speech noise beep tone",
    "0 1 2 3 4 5 6 7 8 9 . , [ ] { } ( ) : ; ? ! ' \" - + / user assistant system",
]


def build_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained in code (no download), with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator((corpus or _TINY_CORPUS) * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        unk_token=None, additional_special_tokens=special[1:],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def add_omniground_tokens(tokenizer: PreTrainedTokenizerBase, config, num_location_bins: int = 0) -> None:
    """Add media pads, box/span markers and location bins to `tokenizer`; write their ids into `config`.

    Media pads are special (never shown); box/span/location tokens are ordinary added tokens so that
    `decode(skip_special_tokens=True)` keeps them for the processor to render back into `[..]`/`{..}`.
    """
    start = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PAD, VIDEO_PAD, AUDIO_PAD]},
                                 replace_extra_special_tokens=False)
    plain = [BOX_TOKEN, SPAN_TOKEN] + [loc_token(k) for k in range(num_location_bins)]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not tokenizer.chat_template:
        family = getattr(config.text_config, "model_type", "")
        tokenizer.chat_template = FALLBACK_TEMPLATES.get(family, CHATML_TEMPLATE)

    ids = tokenizer.convert_tokens_to_ids
    config.image_token_id, config.video_token_id, config.audio_token_id = ids(IMAGE_PAD), ids(VIDEO_PAD), ids(AUDIO_PAD)
    config.box_token_id, config.span_token_id = ids(BOX_TOKEN), ids(SPAN_TOKEN)
    config.num_location_bins = num_location_bins
    config.loc_token_start_id = ids(loc_token(0)) if num_location_bins else -1
    config.new_token_start_id = start
