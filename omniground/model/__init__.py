"""The grounding model: encoders -> adapters -> any causal LM, as a Hugging Face model + processor.

    import omniground
    og = omniground.load("path/to/checkpoint")
    og.ground("dog.jpg", "the dog")           # -> [Box(..., score=...)]
    og.chat([{"role": "user", "content": "<video>\\nWhen does the dog jump?"}], ["clip.mp4"])
    og.chat_batch([conv1, conv2], [media1, media2])  # several requests, one padded batch

Training side: `OmniGroundProcessor.build_training_example(sample, root)` -> `ModelExample` (ids +
labels masked on the prompt), `processor.collate(examples, "right")` -> batch; `model.set_stage(k)`
then `model.parameter_groups(weight_decay)` for the optimizer.
"""

from omniground.model.api import ChatResult, ModelNotFoundError, OmniGround, load
from omniground.model.factory import DEFAULT_LOCATION_BINS, build_model, build_tiny, from_backbones, tiny_config
from omniground.model.modeling_omniground import (
    OmniGroundAudioEncoderConfig,
    OmniGroundConfig,
    OmniGroundForCausalLM,
    OmniGroundViTConfig,
)
from omniground.model.processing_omniground import (
    IGNORE_INDEX,
    Grounding,
    ModelExample,
    OmniGroundProcessor,
    RequestMeta,
)
from omniground.model.tokenizer import add_omniground_tokens, build_tiny_tokenizer

__all__ = [
    "DEFAULT_LOCATION_BINS",
    "IGNORE_INDEX",
    "ChatResult",
    "Grounding",
    "ModelExample",
    "ModelNotFoundError",
    "OmniGround",
    "OmniGroundAudioEncoderConfig",
    "OmniGroundConfig",
    "OmniGroundForCausalLM",
    "OmniGroundProcessor",
    "OmniGroundViTConfig",
    "RequestMeta",
    "add_omniground_tokens",
    "build_model",
    "build_tiny",
    "build_tiny_tokenizer",
    "from_backbones",
    "load",
    "tiny_config",
]
