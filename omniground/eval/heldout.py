"""Seeds reserved for evaluation: the one constant that training and the benchmark both import.

The synthetic generator already keeps splits apart (the split is part of every sample's seed), but a
user can still generate `--split test` data with any seed and train on it. The generated benchmark
is made from seeds in RESERVED_EVAL_SEEDS only, and training refuses them (`check_training_seed`),
so a benchmark sample can never have been a training sample, whatever flags were used.
"""

from __future__ import annotations

RESERVED_EVAL_SEEDS = range(1_000_000, 1_001_000)  # synth seeds no training run may use
BENCH_SEED = RESERVED_EVAL_SEEDS.start  # the seed of `omniground eval bench`
EVAL_SPLITS = ("test", "unseen")  # synth splits that are for evaluation only (in-distribution, unseen combinations)


def is_reserved(seed: int) -> bool:
    return seed in RESERVED_EVAL_SEEDS


def check_training_seed(seed: int, split: str = "train") -> None:
    """Raise ValueError if a synth run with this seed/split would overlap the evaluation data."""
    if is_reserved(seed):
        raise ValueError(f"seed {seed} is reserved for evaluation ({RESERVED_EVAL_SEEDS.start}.."
                         f"{RESERVED_EVAL_SEEDS.stop - 1}); pick another for training data")
    if split in EVAL_SPLITS:
        raise ValueError(f"split {split!r} is for evaluation only; train on 'train' (or 'val' for validation)")
