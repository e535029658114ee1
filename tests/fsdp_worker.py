"""Run by test_train_fsdp.py under torch.distributed.run, two processes over gloo: the micro model sharded by
accelerate's own FSDP2 preparation with the settings `accelerate launch --config_file configs/accelerate/fsdp.yaml`
gives, trained two SGD steps on one batch per process -- an image with a box on rank 0, an audio clip with a
span on rank 1, so each lacks media and a pointer the other uses. Rank 0 writes the gathered weights and losses.

argv: the accelerate config file, the output file, the mixed precision ("no" or "bf16", as accelerate
passes it to FSDP2's policy: bf16 compute, float32 weights) and "lora" to train LoRA adapters on the LM (`LORA`),
merged before the weights are gathered, as the trainer saves them. Without `every_branch` the processes' collectives
differ (gloo: "Is there a distributed collective mismatch in your code?")."""

import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from accelerate.utils.launch import prepare_multi_gpu_env
from micro import audio, image, labelled_batch, micro_model, turn
from peft import LoraConfig

BATCHES = ([turn("<image>\nWhere is the cat?", "the cat[0.100,0.200,0.500,0.600]")], [[image(0)]]), \
          ([turn("<audio>\nWhen is the bell?", "At {0.25,0.75}.")], [[audio()]])
MODEL = dict(region_boxes=True, span_pointers=True, time_anchored_queries=True, audio_num_queries=2)
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def launch_args(config_file: str):
    """The settings `accelerate launch --config_file` reads from the file."""
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", config_file, "x.py"]))
    return args


def fsdp_plugin(config_file: str) -> FullyShardedDataParallelPlugin:
    """The plugin accelerate's launcher sets up from the config file (through the environment it hands over)."""
    env = prepare_multi_gpu_env(launch_args(config_file))
    os.environ.update({k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))})
    return FullyShardedDataParallelPlugin()


def main(config_file: str, out: str, precision: str, lora: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    og = micro_model(**MODEL)
    og.model.set_stage(2, lora=LoraConfig(**LORA) if lora == "lora" else None)
    og.model.every_branch = True  # as the trainer sets it under FSDP
    inputs = labelled_batch(og, *BATCHES[rank])
    plugin = fsdp_plugin(config_file)
    assert plugin.fsdp_version == 2
    if precision != "no":
        plugin.set_mixed_precision(precision)  # what accelerate's state does with the config's mixed_precision
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), mixed_precision=precision,
                                  is_main_process=rank == 0, device=torch.device("cpu"))
    model = fsdp2_prepare_model(accelerator, og.model)
    units = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("FSDP")})
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(2):
        loss = model(**inputs).loss
        loss.backward()  # FSDP averages the processes' gradients
        og.model.keep_new_row_grads()  # as the trainer does under FSDP: the frozen rows' hooks died in sharding
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    if lora == "lora":
        og.model.merge_lora()
    weights = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
    gathered = [None, None]
    dist.all_gather_object(gathered, losses)
    if rank == 0:
        torch.save({"weights": weights, "losses": gathered, "units": units}, out)
        og.model.save_pretrained(out + ".model", state_dict=weights)  # the sharded model saves as the trainer saves it
    dist.barrier()  # neither leaves while the other still talks to it
    dist.destroy_process_group()
    # gloo work FSDP2 still references can abort the interpreter's finalisation ("terminate called without an
    # active exception", now and then; pytorch/pytorch#179291): everything is written, so leave without it
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:5])
