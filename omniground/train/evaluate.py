"""Held-out evaluation during training: loss on the eval split, and grounding metrics by generation.

Grounding metrics go through the evaluation package (`omniground.eval.runner.score`), the same code
that scores a finished checkpoint, so the numbers in a run's metrics.json mean what the report's do.
"""

from __future__ import annotations


import torch

from omniground.eval.model_predictor import ModelPredictor
from omniground.eval.runner import Prediction, parse_prediction, score
from omniground.model.api import OmniGround
from omniground.train.data import Collator, SampleDataset


@torch.no_grad()
def eval_loss(model, dataset: SampleDataset, collate: Collator, batch_size: int, device) -> float:
    """Token-weighted mean loss over the whole eval set."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(dataset), batch_size):
        batch = collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))]).to(device)
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


@torch.no_grad()
def grounding_metrics(og: OmniGround, dataset: SampleDataset, limit: int, batch_size: int = 8) -> dict:
    """Answer the first `limit` eval samples by generation and score them per task/split group."""
    was_training = og.model.training
    og.model.eval()
    predictor = ModelPredictor("training model", max_new_tokens=48, og=og)  # in memory: no save/load round trip
    items = dataset.items[:limit]
    preds: dict[str, Prediction] = {}
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        # one root per item (sources may live in different folders): answer them one root at a time
        for root in dict.fromkeys(it.root for it in chunk):
            group = [it.sample for it in chunk if it.root == root]
            for s, text in zip(group, predictor.predict(group, root), strict=True):
                preds[s.id] = parse_prediction(s, text, predictor.box_frame)
    og.model.train(was_training)
    return score([it.sample for it in items], preds)
