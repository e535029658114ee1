"""One training stage on accelerate: the same loop on CPU, one GPU, or many (DDP/FSDP/ZeRO by accelerate config).

A stage: start from its `model` (the previous stage's output, or a fresh model), freeze/unfreeze with
`OmniGroundForCausalLM.set_stage`, run `max_steps` optimizer steps over planned global batches,
and write under `output_dir`:

    model/                  the stage's model + tokenizer (safetensors): the next stage starts here
    checkpoints/step-N/     resumable state (weights, optimizer, scheduler, RNG, trainer_state.json)
    metrics.json            loss/lr/throughput curve, held-out evaluations, wall time, the config
    loss.png                the curve
    config.yaml             the config as run

Resuming (`resume=True`) restores the latest checkpoint and replays the batch plan from its step:
the run then ends exactly as an uninterrupted one would (tested).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType, set_seed
from rich.console import Console
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from omniground.files import atomic_output, umask_modes
from omniground.model.api import OmniGround, transformers_bars_off
from omniground.train.config import ModelInit, StageConfig, TrainConfig, TrainConfigError
from omniground.train.data import BatchPlan, Collator, SampleDataset, load_sources, shard
from omniground.train.evaluate import eval_loss, grounding_metrics
from omniground.train.report import StageProgress, plot_curves, write_metrics

STATE_FILE = "trainer_state.json"


class _TiedWeightsSaved(logging.Filter):
    """Drops accelerate's "Removed shared tensor ... check ... that you don't receive any warning while
    reloading" on each checkpoint: a tied LM head (tiny, SmolLM2) is stored once, as safetensors must, and
    loading restores it into the tied weight (tests/test_train.py: resume equals uninterrupted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsSaved())


def build_start_model(init: ModelInit) -> OmniGround:
    """The stage's starting point: a saved checkpoint, a fresh tiny model, or pretrained backbones."""
    if init.from_checkpoint is not None:
        from omniground.model.api import ModelNotFoundError, load

        try:
            og = load(init.from_checkpoint, **(init.config_updates or {}))
        except ModelNotFoundError as e:  # most often the stage before has not been trained yet
            raise TrainConfigError(f"model.from_checkpoint: {e} (train the stage it comes from first, or "
                                   "--set model.from_checkpoint=DIR)") from None
        og.model.train()
        return og
    if init.tiny is not None:
        from omniground.model.factory import build_tiny

        return build_tiny(**init.tiny)
    from omniground.model.factory import from_backbones

    return from_backbones(**init.backbones)  # type: ignore[arg-type]


def finished_run(cfg: StageConfig, resume: bool, console: Console, what: str) -> dict[str, Any] | None:
    """Stage 0 and the pointer refit keep no trainer checkpoints (stage 0 saves its own state): with `resume`, a
    run that finished (its metrics and model saved) is kept and its metrics returned; otherwise None."""
    done = cfg.output_dir / "metrics.json"
    if resume and done.is_file() and (cfg.model_dir / "config.json").is_file():
        console.print(f"{what} already complete: {cfg.model_dir}")
        return json.loads(done.read_text())
    return None


def latest_checkpoint(cfg: TrainConfig) -> Path | None:
    found = sorted(
        (p for p in cfg.checkpoint_dir.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return found[-1] if found else None


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; norms, biases and 1-d embeddings of time are left alone (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class Trainer:
    def __init__(self, cfg: TrainConfig, console: Console | None = None):
        self.cfg = cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),  # lets torchrun/accelerate start CPU processes as DDP over gloo
            gradient_accumulation_steps=cfg.grad_accum,
            mixed_precision=_mixed_precision(cfg.mixed_precision),
            # a batch of images leaves the audio branch without gradients: DDP must allow that
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.console = console or Console()
        set_seed(cfg.seed)

        self.og = build_start_model(cfg.model)
        self.processor = self.og.processor
        # weights sharded across processes (FSDP, DeepSpeed): each process must run what the others run
        self.sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        self.og.model.every_branch = self.sharded
        lora = None
        if cfg.lora is not None:
            from peft import LoraConfig

            lora = LoraConfig(**cfg.lora)
        self.og.model.set_stage(cfg.stage, lora=lora)
        if cfg.gradient_checkpointing:
            self.og.model.language_model.activation_checkpointing_enable({"use_reentrant": False})

        self.train_set = SampleDataset(load_sources(cfg.train_data), self.processor, cfg.cache_media)
        self.eval_set = (SampleDataset(load_sources(cfg.eval_data), self.processor, cfg.cache_media)
                         if cfg.eval_data else None)
        self.collate = Collator(self.processor, cfg.max_length)
        world = self.accelerator.num_processes
        self.plan = BatchPlan(
            len(self.train_set), cfg.batch_size * world, cfg.seed,
            self.train_set.lengths() if cfg.group_by_length else None,
        )

        optimizer = torch.optim.AdamW(_param_groups(self.og.model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        # the scheduler is stepped once per optimizer step by us (not prepared: accelerate would step it
        # once per process, assuming per-process data loaders)
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, cfg.warmup_steps, cfg.max_steps, min_lr_rate=cfg.min_lr_ratio
        )
        self.model, self.optimizer = self.accelerator.prepare(self.og.model, optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

        self.step = 0
        self.history: list[dict[str, Any]] = []  # one row per logged step
        self.evals: list[dict[str, Any]] = []
        self.samples_seen = 0
        self.train_seconds = 0.0

    # ---- state ----
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "history": self.history, "evals": self.evals, "samples_seen": self.samples_seen,
                "train_seconds": self.train_seconds}

    def save_checkpoint(self) -> Path:
        final = self.cfg.checkpoint_dir / f"step-{self.step}"
        tmp = final.with_name(final.name + ".tmp")
        if self.accelerator.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)  # before any process writes its RNG state into it
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(self.state()), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)  # a checkpoint exists whole or not at all
            older = sorted((p for p in self.cfg.checkpoint_dir.glob("step-*") if p.is_dir() and p != final
                            and not p.name.endswith(".tmp")), key=lambda p: int(p.name.split("-")[1]))
            for p in older[: max(0, len(older) - (self.cfg.keep_checkpoints - 1))]:
                shutil.rmtree(p)
        self.accelerator.wait_for_everyone()
        return final

    def resume(self) -> Path | None:
        ckpt = latest_checkpoint(self.cfg)
        if ckpt is None:
            return None
        self.accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        self.step, self.history, self.evals = state["step"], state["history"], state["evals"]
        self.samples_seen, self.train_seconds = state["samples_seen"], state["train_seconds"]
        return ckpt

    # ---- evaluation ----
    def evaluate(self) -> dict[str, Any] | None:
        if self.eval_set is None:
            return None
        row: dict[str, Any] = {"step": self.step}
        # with sharded weights every process takes part in each forward (the same data); else the main one alone
        if self.accelerator.is_main_process or self.sharded:
            model = self.accelerator.unwrap_model(self.model)
            with self.accelerator.autocast():
                row["eval_loss"] = eval_loss(model, self.eval_set, self.collate, self.cfg.batch_size,
                                             self.accelerator.device)
                if self.cfg.eval_generate:
                    row["metrics"] = grounding_metrics(OmniGround(model, self.processor), self.eval_set,
                                                       self.cfg.eval_generate)
            if self.accelerator.is_main_process:
                self.evals.append(row)
        self.accelerator.wait_for_everyone()
        return row

    # ---- the loop ----
    def train(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Run to `max_steps` (`stop_after`: stop early at that step, as if killed after its checkpoint)."""
        cfg, acc = self.cfg, self.accelerator
        if resume:
            ckpt = self.resume()
            if acc.is_main_process:
                self.console.print(f"resumed from {ckpt} at step {self.step}" if ckpt else
                                   "no checkpoint to resume from: starting at step 0")
            done = cfg.output_dir / "metrics.json"
            if self.step >= cfg.max_steps and cfg.model_dir.is_dir() and done.is_file():
                if acc.is_main_process:
                    self.console.print(f"stage {cfg.stage} already complete: {cfg.model_dir}")
                return json.loads(done.read_text(encoding="utf-8"))
        if acc.is_main_process:
            cfg.output_dir.mkdir(parents=True, exist_ok=True)
            with atomic_output(cfg.output_dir / "config.yaml") as tmp:
                Path(tmp).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
            n_train = sum(p.numel() for p in self.trainable)
            self.console.print(
                f"stage {cfg.stage}: {len(self.train_set)} samples, {self.plan.batches_per_epoch} batches/epoch, "
                f"{n_train / 1e6:.2f}M trainable params, {acc.num_processes} process(es) on {acc.device}, "
                f"precision {acc.mixed_precision}"
            )
            if self.og.model.config.train_encoders:  # stages 1-3; wanted only for from-scratch encoders
                self.console.print("[yellow]the encoders train in this stage too (train_encoders is on: no stage 0 "
                                   "froze them)[/]")
        self.model.train()
        micro = cfg.grad_accum
        window_loss, window_steps, window_start, window_samples = 0.0, 0, time.perf_counter(), 0
        with StageProgress(self.console, f"stage {cfg.stage}", cfg.max_steps, self.step,
                          shown=acc.is_main_process) as progress:
            while self.step < cfg.max_steps:
                t0 = time.perf_counter()
                step_loss = torch.zeros((), device=acc.device)
                for m in range(micro):
                    global_batch = self.plan.global_batch_at(self.step * micro + m)
                    mine = shard(global_batch, acc.process_index, acc.num_processes)
                    batch = self.collate([self.train_set[i] for i in mine]).to(acc.device)
                    with acc.accumulate(self.model):
                        loss = self.model(**batch).loss  # mean over this micro-batch's label tokens
                        acc.backward(loss)
                        if self.sharded:  # the frozen embedding rows' gradient hooks did not survive sharding
                            self.og.model.keep_new_row_grads()
                        if acc.sync_gradients and cfg.max_grad_norm:
                            acc.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    step_loss += loss.detach() / micro
                self.scheduler.step()
                self.step += 1
                step_samples = cfg.batch_size * acc.num_processes * micro
                self.samples_seen += step_samples
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                window_loss += float(acc.reduce(step_loss, "mean"))
                window_steps += 1
                window_samples += step_samples
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    row = {"step": self.step, "loss": window_loss / window_steps,
                           "lr": self.scheduler.get_last_lr()[0], "samples_per_s": window_samples / max(elapsed, 1e-9),
                           "samples_seen": self.samples_seen}
                    self.history.append(row)
                    progress.report(self.step, row["loss"], row["lr"], row["samples_per_s"])
                    window_loss, window_steps, window_start, window_samples = 0.0, 0, time.perf_counter(), 0
                progress.advance_to(self.step)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    self._log_eval(self.evaluate())
                    window_start = time.perf_counter()  # evaluation time is not training throughput
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                    self.save_checkpoint()
                    window_start = time.perf_counter()
                if stop_after is not None and self.step >= stop_after:
                    return self.state()
        self._log_eval(self.evaluate())
        self.save_checkpoint()
        return self.finish()

    def _log_eval(self, row: dict[str, Any] | None) -> None:
        if row is None or not self.accelerator.is_main_process:
            return
        parts = [f"eval @ step {row['step']}: loss {row['eval_loss']:.4f}"]
        for group, m in sorted(row.get("metrics", {}).items()):
            shown = {k: v for k, v in m.items() if k in ("acc@0.5", "r1@0.5", "miou", "yes_no_acc", "recall@0.5")}
            parts.append(f"{group} " + " ".join(f"{k}={v:.3f}" for k, v in shown.items()))
        self.console.print("; ".join(parts), highlight=False)

    def finish(self) -> dict[str, Any]:
        """Save the stage's model, metrics.json and loss.png (main process)."""
        acc = self.accelerator
        summary = {
            "stage": self.cfg.stage, "steps": self.step, "samples_seen": self.samples_seen,
            "train_seconds": self.train_seconds,
            "samples_per_s": self.samples_seen / self.train_seconds if self.train_seconds else None,
            "processes": acc.num_processes, "device": str(acc.device), "mixed_precision": acc.mixed_precision,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "final_eval": self.evals[-1] if self.evals else None,
            "history": self.history, "evals": self.evals, "config": self.cfg.model_dump(mode="json"),
        }
        model = acc.unwrap_model(self.model)
        if self.cfg.lora is not None:
            model.merge_lora()  # the next stage and users load a plain checkpoint
        state_dict = acc.get_state_dict(self.model)  # gathered from shards under FSDP / ZeRO
        if acc.is_main_process:
            with transformers_bars_off():
                model.save_pretrained(self.cfg.model_dir, state_dict=state_dict)
            umask_modes(self.cfg.model_dir)
            self.processor.save_pretrained(self.cfg.model_dir)
            write_metrics(self.cfg.output_dir / "metrics.json", summary)
            plot_curves(self.cfg.output_dir / "loss.png", self.history, self.evals, title=f"stage {self.cfg.stage}")
            self.console.print(f"saved {self.cfg.model_dir} ({self.step} steps, "
                               f"{summary['samples_per_s'] or 0:.1f} samples/s)")
        acc.wait_for_everyone()
        return summary


def train(cfg: TrainConfig, resume: bool = False, console: Console | None = None,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run one stage from its config; returns the summary also written to metrics.json."""
    return Trainer(cfg, console).train(resume=resume, stop_after=stop_after)
