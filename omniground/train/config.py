"""A training stage as data: one YAML file, validated here, is the whole recipe of a run.

    stage: 2
    output_dir: runs/omniground-tiny/stage2
    model: {from_checkpoint: runs/omniground-tiny/stage1/model}
    train_data: [{path: runs/data/synth/train.jsonl, tasks: [rec, video_grounding]}]
    eval_data: [{path: runs/data/synth/val.jsonl, limit: 64}]
    batch_size: 16
    max_steps: 500

Relative paths are read from the current directory (the repository root in our scripts), so the
same file works on any machine that has the data.
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from omniground.data.schema import Task
from omniground.errors import UserError


class TrainConfigError(UserError):
    """A bad training config; str(e) is one line."""


class DataSource(BaseModel):
    """One JSONL of `Sample`s and which of its samples a stage uses."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    tasks: list[str] | None = None  # keep only these tasks (None: all)
    stages: list[int] | None = None  # keep only samples generated for these stages (None: all)
    splits: list[str] | None = None  # keep only these splits (None: all)
    limit: int | None = Field(default=None, gt=0)  # the first N kept samples: a replay share
    repeat: int = Field(default=1, ge=1)  # oversample a small source
    # its samples' words alone, without their media: placeholders dropped, the conversation cut before its
    # first answered box or span (which needs the media); what the LM learns of copying the question's phrase
    text_only: bool = False


class ModelInit(BaseModel):
    """Where the stage's weights come from: exactly one of the three."""

    model_config = ConfigDict(extra="forbid")

    from_checkpoint: str | None = None  # the previous stage's `model/` (or any omniground checkpoint)
    tiny: dict[str, Any] | None = None  # `build_tiny(**tiny)`: a fresh from-scratch model
    backbones: dict[str, Any] | None = None  # `from_backbones(**backbones)`: pretrained LM/encoders
    # with from_checkpoint: model-config fields to change, e.g. {span_pointers: true} to add a pointer head
    # (new weights start fresh) to a checkpoint that lacks one
    config_updates: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelInit:
        given = [k for k in ("from_checkpoint", "tiny", "backbones") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"model needs exactly one of from_checkpoint, tiny, backbones (got {given or 'none'})")
        if self.config_updates and self.from_checkpoint is None:
            raise ValueError("config_updates applies to from_checkpoint only (tiny and backbones take their own)")
        return self


class StageConfig(BaseModel):
    """What every stage's YAML has: where it starts and writes, its data, steps and AdamW schedule."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    model: ModelInit
    train_data: list[DataSource] = Field(min_length=1)
    eval_data: list[DataSource] = Field(default_factory=list)
    max_steps: int = Field(gt=0)  # optimizer steps; epochs follow from the data size

    # optimiser: AdamW, linear warm-up then cosine to min_lr_ratio * lr
    lr: float = Field(default=1e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)

    seed: int = 0
    num_threads: int | None = Field(default=None, gt=0)  # torch CPU threads per process
    log_every: int = Field(default=10, gt=0)

    @property
    def model_dir(self) -> Path:
        """The stage's output model, what the next stage's `from_checkpoint` names."""
        return self.output_dir / "model"


class TrainConfig(StageConfig):
    """Stages 1-3 (omniground.train.trainer): the LM-side stages."""

    stage: Literal[1, 2, 3]
    lora: dict[str, Any] | None = None  # peft LoraConfig kwargs for stages 2-3 (None: the full LM trains)

    # batches: `batch_size` per process, `grad_accum` micro-batches per optimizer step
    batch_size: int = Field(default=8, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    group_by_length: bool = True
    max_length: int | None = Field(default=None, gt=0)
    gradient_checkpointing: bool = False  # recompute LM activations in backward: less memory, ~30% slower

    betas: tuple[float, float] = (0.9, 0.98)
    max_grad_norm: float | None = 1.0

    # runtime
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    cache_media: bool = True  # keep decoded media in memory (small synthetic sets)

    # bookkeeping
    eval_every: int = Field(default=0, ge=0)  # 0: only at the end
    eval_generate: int = Field(default=0, ge=0)  # held-out samples answered by generation for grounding metrics
    save_every: int = Field(default=0, ge=0)  # resumable checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = Field(default=2, gt=0)

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"


class EncoderConfig(StageConfig):
    """Stage 0 (omniground.train.encoders): the from-scratch encoders pre-trained on dense synthetic labels."""

    stage: Literal[0]
    modalities: list[Literal["image", "audio"]] = ["image", "audio"]
    batch_size: int = Field(default=64, gt=0)  # max_steps counts per modality
    steps: dict[Literal["image", "audio"], int] = {}  # a modality's own step count instead of max_steps
    freeze_after: bool = True  # the saved model's encoders stay frozen in stages 1-3 (train_encoders=False)
    save_every: int = Field(default=0, ge=0)  # resumable state every N steps of a branch and at its end (0: never)
    # image patches also learn their object's rank among its kind from each side and its size among them
    # (`patch_targets`' order and size): what "the second cat from the left" and "the big cat" ask
    relational_targets: bool = False


class PointerConfig(StageConfig):
    """The pointer refit after stage 3 (omniground.train.pointers): the pointer heads alone, many epochs on
    inputs the frozen model computes once. max_steps counts per head."""

    stage: Literal["pointers"]
    batch_size: int = Field(default=64, gt=0)  # pointer examples (boxes / spans) per optimizer step
    capture_batch_size: int = Field(default=32, gt=0)  # samples per forward pass of the frozen model
    steps: dict[Literal["region", "span"], int] = {}  # a head's own step count instead of max_steps
    # tasks whose answers are read with the words before their box written by the model itself (greedy), the
    # box still the true one (omniground.train.pointers.in_own_words), e.g. [sound_localization]
    own_words: list[Task] = []
    # resumable work kept every N batches of the frozen model's read, and at the end of each pass (the answers in
    # the model's own words, each head's fit); 0: none, a stopped refit starts over
    save_every: int = Field(default=0, ge=0)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None
                ) -> TrainConfig | EncoderConfig | PointerConfig:
    """Read and validate a stage YAML; `overrides` (dotted keys allowed: `model.tiny`) win over the file.

    `stage: 0` gives an EncoderConfig (encoder pre-training), stages 1-3 a TrainConfig, `stage: pointers`
    a PointerConfig.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainConfigError(f"{path}: no such config file") from None
    except (OSError, yaml.YAMLError) as e:
        raise TrainConfigError(f"{path}: not readable YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{path}: a training config is a YAML mapping")
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    kinds = {0: EncoderConfig, 1: TrainConfig, 2: TrainConfig, 3: TrainConfig, "pointers": PointerConfig}
    stage = raw.get("stage")
    if isinstance(stage, bool) or stage not in kinds:
        stages = "0 encoder pre-training, 1 alignment, 2 grounding, 3 instruction tuning, pointers the pointer refit"
        raise TrainConfigError(f"{path}: stage: {'missing' if stage is None else f'{stage!r} is not a stage'} "
                               f"({stages})")
    try:
        return kinds[stage].model_validate(raw)
    except ValidationError as e:
        raise TrainConfigError(f"{path}: {'; '.join(config_problem(err) for err in e.errors())}") from None


# every key a config may hold, at any depth: what an unknown key is compared with
KNOWN_KEYS = {name for kind in (EncoderConfig, TrainConfig, PointerConfig, DataSource, ModelInit)
              for name in kind.model_fields}


def config_problem(err: dict) -> str:
    """One pydantic error -> "where: what", an unknown key with the known one it is closest to, if any: a
    mistyped key ("batchsize") is the commonest slip in a YAML config, and pydantic only says it is extra."""
    where = ".".join(str(x) for x in err.get("loc", ()))
    what = "missing" if err.get("type") == "missing" else err["msg"]
    if err.get("type") == "extra_forbidden":
        close = get_close_matches(str(err["loc"][-1]), sorted(KNOWN_KEYS), n=1)
        what = "not a config key" + (f" (did you mean {close[0]}?)" if close else "")
    return f"{where}: {what}" if where else what
