"""An omniground checkpoint as a system under evaluation: each batch of samples is one `chat_batch` call.

The model answers in the grounding language with boxes normalised to the original image
(`OmniGround` maps them out of its padded square), so the runner reads them as `norm1`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import torch

from omniground.data.schema import Sample
from omniground.eval.predictors import question_of


class ModelPredictor:
    """`omniground.load(path_or_name)` answering the first user turn of each sample, greedy, batched.

    `answer_start`: a referring expression's answer starts with the phrase given ("The <phrase>", the
    processor's `grounding_answer_prefix`), so the model writes only the box -- as Kosmos-2 is evaluated
    on REC, and as `omniground ground` asks. Without it the model must also echo the phrase itself.
    `check_declines`: declines in words are checked by the region pointer (`OmniGround.overrule_declines`),
    as the server does; off, the LM's words alone are scored.
    """

    box_frame = "norm1"

    def __init__(self, path_or_name: str, max_new_tokens: int = 64, device: str | None = None, og=None,
                 answer_start: bool = False, check_declines: bool = True):
        import omniground

        self.og = og if og is not None else omniground.load(path_or_name, device=device)
        self.name = (f"omniground:{Path(str(path_or_name)).name or path_or_name}" + ("+phrase" if answer_start else "")
                     + ("" if check_declines else "+words"))
        self.max_new_tokens = max_new_tokens
        self.answer_start = answer_start
        self.check_declines = check_declines

    @cached_property
    def weights(self) -> str:
        """The checkpoint's fingerprint (`weights_fingerprint`), computed only where an output folder is claimed --
        not for the trainer's periodic evaluation, which builds a predictor each time."""
        return weights_fingerprint(self.og.model)

    def _answer_start(self, sample: Sample) -> str | None:
        if not (self.answer_start and sample.task == "rec" and len(sample.boxes) == 1 and sample.media):
            return None
        return self.og.processor.grounding_answer_prefix(sample.media[0].type, sample.boxes[0].phrase)

    def predict(self, samples: Sequence[Sample], root: Path) -> list[str]:
        conversations = [[{"role": "user", "content": question_of(s)}] for s in samples]
        media = [[s.media_path(i, root) for i in range(len(s.media))] for s in samples]
        results = self.og.chat_batch(conversations, media, max_new_tokens=self.max_new_tokens,
                                     answer_prefixes=[self._answer_start(s) for s in samples],
                                     check_declines=self.check_declines)
        return [r.text for r in results]


def weights_fingerprint(model) -> str:
    """The first 16 hex digits of a SHA-256 over the model's parameters and buffers: what tells a retrained
    checkpoint from the one an output folder's predictions came from, where both have the same name."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
