"""`omniground train CONFIG.yaml [--resume]`: one training stage from its YAML config.

Mounted by the main CLI as `app.add_typer(train_app, name="train")`. Multi-GPU/multi-node runs go
through accelerate's launcher: `accelerate launch -m omniground.train CONFIG.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
err_console = Console(stderr=True)


@app.command()
def train(
    config: Path = typer.Argument(..., help="A stage's YAML config (see configs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in output_dir."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set max_steps=10 (YAML value)."),
) -> None:
    """Train one stage (0 encoder pre-training, 1 alignment, 2 grounding, 3 instruction tuning, `pointers` the
    pointer refit) as its config says."""
    import yaml

    from omniground.errors import UserError
    from omniground.media.errors import MediaError
    from omniground.train.config import EncoderConfig, PointerConfig, load_config

    cfg = None
    try:
        overrides = {}
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"--set takes KEY=VALUE, got {item!r}")
            overrides[key] = yaml.safe_load(value)
        cfg = load_config(config, overrides)
        if isinstance(cfg, EncoderConfig):
            from omniground.train.encoders import pretrain_encoders

            pretrain_encoders(cfg, resume=resume)
        elif isinstance(cfg, PointerConfig):
            from omniground.train.pointers import refit_pointers

            refit_pointers(cfg, resume=resume)
        else:
            from omniground.train.trainer import train as run

            run(cfg, resume=resume)
    except (UserError, MediaError) as e:
        err_console.print(f"[red]omniground train: {e}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        said = f"interrupted; {resumable(cfg)}" if cfg is not None else "interrupted"
        err_console.print(f"[red]omniground train: {said}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def resumable(cfg) -> str:
    """What `--resume` would go on from, said after a stage is interrupted."""
    from omniground.train.config import PointerConfig, TrainConfig
    from omniground.train.encoders import progress_path
    from omniground.train.pointers import kept_record, progress_dir
    from omniground.train.trainer import latest_checkpoint

    if isinstance(cfg, TrainConfig):
        saved = latest_checkpoint(cfg)
    elif isinstance(cfg, PointerConfig):  # its work kept piece by piece in one folder
        saved = progress_dir(cfg) if kept_record(progress_dir(cfg)).is_file() else None
    else:
        saved = progress_path(cfg)
    if saved is None or not saved.exists():
        return "nothing was saved to resume from (save_every)"
    return f"--resume goes on from {saved}"


def main() -> None:
    app()
