"""Train any registered anytime architecture: CPU or CUDA (AMP), one process or DDP under torchrun.

    python -m training.train --arch resann --dataset gtsrb32 --epochs 6 --out runs/gtsrb-resann
    torchrun --nproc_per_node 4 -m training.train --arch resann --dataset cifar10 --epochs 300 --out runs/c10

Writes to RUN_DIR (rank 0 only): `checkpoint.pt` (tensors and plain JSON-able values,
loadable with `torch.load(..., weights_only=True)`; rewritten after every epoch, and
`--resume` continues from it), `log.jsonl` (one JSON line per epoch) and `metrics.json`
(per-exit test accuracy, calibration, temperatures, FLOPs; see training/evaluate.py).

>>> model, config = load_checkpoint("runs/gtsrb-resann/checkpoint.pt")   # doctest: +SKIP
>>> config["normalisation"], config["temperatures"]                     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .augment import RECIPES
from .data import dataset_info, validation_seed
from .loaders import LoaderOptions, make_loader
from .models import create_model, list_models
from .weighting import WEIGHTINGS, make_weighting

CHECKPOINT_FORMAT = "edge_anytime.checkpoint/1"
#: Constructor defaults that changed after checkpoints were written without them (they store every argument
#: since): a checkpoint lacking the argument was trained with the old default.
LEGACY_DEFAULTS = {"anytimenet": {"iteration_bn": "shared"}}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; stored in the checkpoint (as JSON-able values)."""

    arch: str
    dataset: str
    epochs: int
    out: str
    arch_kwargs: dict = field(default_factory=dict)
    data_dir: str | None = None
    weighting: str = "const"
    device: str = "auto"
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    seed: int = 0
    split_seed: int | None = None   # the validation split's seed (None: `seed`)
    val_fraction: float = 0.1
    resume: bool = False
    limit_train: int | None = None
    limit_eval: int | None = None
    workers: int = 0
    amp: bool = True
    log_every: int = 50
    threads: int | None = None
    channels_last: bool = False
    label_smoothing: float = 0.0
    augment: str = "standard"
    weighting_scope: str = "member"
    init_from: str | None = None
    freeze: tuple[str, ...] = ()

    @property
    def validation_seed(self) -> int:
        """The seed of the train/validation split: `split_seed`, else `seed`."""
        return validation_seed(self.seed, self.split_seed)

    def loader_options(self, pin_memory: bool = False) -> LoaderOptions:
        return LoaderOptions(batch_size=self.batch_size, workers=self.workers, limit_train=self.limit_train,
                             limit_eval=self.limit_eval, seed=self.seed, split_seed=self.validation_seed,
                             val_fraction=self.val_fraction,
                             data_dir=self.data_dir, pin_memory=pin_memory, augment=self.augment)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, help=f"registered architecture: {', '.join(list_models())}")
    p.add_argument("--dataset", required=True, choices=("gtsrb32", "cifar10"))
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="run folder (RUN_DIR)")
    p.add_argument("--arch-kwargs", default="{}", help='JSON constructor arguments, e.g. \'{"blocks_per_section": 3}\'')
    p.add_argument("--data-dir", default=None, help="folder holding gtsrb32/ and cifar10/ (else $EDGE_ANYTIME_DATA)")
    p.add_argument("--weighting", default="const", choices=WEIGHTINGS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--eval-batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", default="cosine", choices=("step", "cosine"),
                   help="step: /10 at 1/2 and 3/4 of the epochs (adaloss-hu-2019 Sec. 5.1); cosine: to 0 per step")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear learning-rate warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/validation split (default: --seed); give the same one to runs whose "
                        "validation accuracies you compare, e.g. seeds of one recipe")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--limit-train", type=int, default=None, help="train on N images only (smoke runs)")
    p.add_argument("--limit-eval", type=int, default=None, help="evaluate on N val/test images only")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on CUDA")
    p.add_argument("--log-every", type=int, default=50, help="batches between log lines when not on a TTY")
    p.add_argument("--weighting-scope", default="member", choices=("member", "all"),
                   help="member: models made of several anytime networks (EANN) weight each member's exits on "
                        "their own, its final exit at 1 (adaloss Sec. 4); all: one weighting over every exit")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (same architecture), e.g. to fine-tune")
    p.add_argument("--freeze", default="", metavar="PREFIXES",
                   help="comma-separated module names kept fixed (no gradient, BatchNorm statistics frozen), "
                        "e.g. 'segments.0,heads.0,segments.1,heads.1' to fine-tune a ResANN's last section only")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, one per core); see docs/training.md")
    p.add_argument("--channels-last", action="store_true",
                   help="train in channels_last memory format (faster convolutions on CPU; see docs/training.md)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of every exit's loss")
    p.add_argument("--augment", default="standard", choices=RECIPES,
                   help="training augmentation: standard (crop, flip/brightness), signs (+ rotation, scale, "
                        "perspective, contrast; GTSRB), none")
    args = vars(p.parse_args(argv))
    try:
        args["arch_kwargs"] = json.loads(args["arch_kwargs"])
    except json.JSONDecodeError as err:
        p.error(f"--arch-kwargs is not valid JSON ({err}); write e.g. '{{\"blocks_per_section\": 3}}'")
    if not isinstance(args["arch_kwargs"], dict):
        p.error("--arch-kwargs must be a JSON object")
    args["freeze"] = tuple(name.strip() for name in args["freeze"].split(",") if name.strip())
    if args["threads"] is not None and args["threads"] < 1:
        p.error(f"--threads must be >= 1, got {args['threads']}")
    if not 0 <= args["label_smoothing"] < 1:
        p.error(f"--label-smoothing must be in [0, 1), got {args['label_smoothing']}")
    return TrainConfig(**args)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device; use --device cpu or install a CUDA build of torch")
    return torch.device(name)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun); init gloo (CPU) or nccl (CUDA)."""
    env = Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if env.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env, device


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate for global step `step` (warm-up, then step or cosine schedule)."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    epoch = step / steps_per_epoch
    return config.lr * (0.1 ** (int(epoch >= config.epochs / 2) + int(epoch >= 3 * config.epochs / 4)))


def arch_kwargs_of(model, config: TrainConfig) -> dict:
    """The model's full constructor arguments (defaults included) minus num_classes."""
    return {k: v for k, v in getattr(model, "config", config.arch_kwargs).items() if k != "num_classes"}


def checkpoint_config(config: TrainConfig, model, epoch: int, extra: dict | None = None) -> dict:
    info = dataset_info(config.dataset)
    arch_kwargs = arch_kwargs_of(model, config)
    out = {"format": CHECKPOINT_FORMAT, "arch": config.arch, "arch_kwargs": arch_kwargs, "dataset": config.dataset,
           "num_classes": info.num_classes, "class_names": list(info.class_names),
           "normalisation": {"mean": list(info.mean), "std": list(info.std), "scale": 1 / 255, "layout": "NCHW"},
           "epoch": epoch, "epochs": config.epochs, "seed": config.seed,
           "split_seed": config.validation_seed, "val_fraction": config.val_fraction,
           "weighting": config.weighting, "train_config": dataclasses.asdict(config)}
    out.update(extra or {})
    return out


def save_checkpoint(path: Path, model, optimizer, scaler, weighting, config: dict) -> None:
    state = {"config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
             "weighting": weighting.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    """(model in eval mode, config dict) from a checkpoint written by this trainer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m training.train ... --out {path.parent}`")
    state = torch.load(path, map_location=map_location, weights_only=True)
    config = state["config"]
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an edge_anytime checkpoint (format {config.get('format')!r})")
    kwargs = {**LEGACY_DEFAULTS.get(config["arch"], {}), **config["arch_kwargs"]}
    model = create_model(config["arch"], num_classes=config["num_classes"], **kwargs)
    model.load_state_dict(state["model"])
    return model.eval(), config


class TrainView(torch.nn.Module):
    """What the optimiser sees: (fine logits per output, coarse logits per output or []).

    Hierarchical models (`num_coarse` > 0, e.g. is-resnext with hierarchical=True) are run through
    `forward_hierarchical` so their coarse heads train too. A module, so DDP can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.hierarchical = int(getattr(model, "num_coarse", 0) or 0) > 0

    def forward(self, x: torch.Tensor):
        if self.hierarchical:
            pairs = self.model.forward_hierarchical(x)
            return [fine for fine, _ in pairs], [coarse for _, coarse in pairs]
        return self.model(x), []


def frozen_modules(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.nn.Module]:
    """The modules named in `names` with gradients switched off (train() keeps them in eval mode)."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        examples = ", ".join([n for n in modules if n.count(".") == 1][:8])
        raise ValueError(f"--freeze {','.join(missing)}: no such module in {type(model).__name__}; "
                         f"module names look like {examples}")
    frozen = [modules[n] for n in names]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def _log(line: str, env: Dist) -> None:
    if env.main:
        print(line, flush=True)


def train(config: TrainConfig) -> dict:
    """Run the training described by `config`; returns the metrics (empty dict on ranks > 0)."""
    from tqdm import tqdm

    from .evaluate import accuracy, collect_logits, evaluate_model, exit_costs

    env, device = init_distributed(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    out = Path(config.out)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
    info = dataset_info(config.dataset)
    model = create_model(config.arch, num_classes=info.num_classes, **config.arch_kwargs).to(device)
    model.to(memory_format=memory_format)  # parameters only; checkpoints hold the same values either way
    if config.init_from:
        model.load_state_dict(torch.load(config.init_from, map_location=device, weights_only=True)["model"])
    frozen = frozen_modules(model, config.freeze)
    view = TrainView(model)
    if view.hierarchical and not info.fine_to_coarse:
        raise ValueError(f"{config.arch} has coarse heads but {config.dataset} has no fine->coarse mapping; "
                         f"build it without hierarchical=True")
    coarse_map = torch.tensor(info.fine_to_coarse or (0,), device=device)
    flops, _ = exit_costs(model)
    if config.weighting.startswith("impatient-") and len(flops) != model.num_exits:
        raise ValueError(f"{config.weighting} needs one cost per model output, but the {config.arch} stage program "
                         f"has {len(flops)} exits for {model.num_exits} outputs (keep_exits set?); train with all "
                         f"exits kept or choose another --weighting")
    groups = model.exit_groups() if config.weighting_scope == "member" and hasattr(model, "exit_groups") else None
    weighting = make_weighting(config.weighting, model.num_exits, exit_costs=flops, seed=config.seed, groups=groups)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    options = config.loader_options(pin_memory=device.type == "cuda")
    train_loader = make_loader(config.dataset, "train", options, train=True, rank=env.rank, world_size=env.world_size)
    eval_options = dataclasses.replace(options, batch_size=config.eval_batch_size)
    val_loader = make_loader(config.dataset, "val", eval_options) if env.main else None

    start_epoch, log_path, ckpt_path = 0, out / "log.jsonl", out / "checkpoint.pt"
    if config.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved = state["config"]
        if (saved["arch"], saved["dataset"]) != (config.arch, config.dataset):
            raise ValueError(f"{ckpt_path} is a {saved['arch']} on {saved['dataset']}, not {config.arch} on "
                             f"{config.dataset}; use another --out or drop --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and use_amp:
            scaler.load_state_dict(state["scaler"])
        weighting.load_state_dict(state["weighting"])
        start_epoch = saved["epoch"] + 1
        _log(f"resumed from {ckpt_path} after epoch {saved['epoch']}", env)
    elif env.main and log_path.exists():
        log_path.unlink()
    net = view
    if env.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(view, device_ids=[device.index] if device.type == "cuda" else None)

    steps_per_epoch = len(train_loader)
    started = time.time()
    show_bar = env.main and sys.stderr.isatty()
    for epoch in range(start_epoch, config.epochs):
        train_loader.sampler.sampler.set_epoch(epoch)
        torch.manual_seed(config.seed * 1_000_003 + epoch * 1009 + env.rank)  # augmentation; resumable
        net.train()
        for module in frozen:  # frozen BatchNorm statistics: the frozen exits stay exactly as they were
            module.eval()
        sums = torch.zeros(2, model.num_exits, dtype=torch.float64)
        seen, epoch_start, weights = 0, time.time(), []
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show_bar, leave=False)
        for i, (images, labels) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step, steps_per_epoch)
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits, coarse = net(images)
            losses = torch.stack([F.cross_entropy(z.float(), labels, label_smoothing=config.label_smoothing)
                                  for z in logits])
            if coarse:  # coarse heads: the same exit weight as their fine twin
                losses = losses + torch.stack([F.cross_entropy(z.float(), coarse_map[labels]) for z in coarse])
            observed = losses.detach().clone()
            if env.world_size > 1:
                dist.all_reduce(observed)
                observed /= env.world_size
            weights = weighting.step(observed.tolist())
            loss = (losses * torch.tensor(weights, device=device)).sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                sums[0] += losses.detach().double().cpu() * len(labels)
                sums[1] += torch.stack([(z.argmax(1) == labels).sum() for z in logits]).double().cpu()
            seen += len(labels)
            if show_bar:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{sums[1, -1].item() / seen:.3f}")
            elif config.log_every and (i + 1) % config.log_every == 0:
                _log(f"epoch {epoch + 1} batch {i + 1}/{steps_per_epoch} loss {loss.item():.4f} "
                     f"final-exit acc {sums[1, -1].item() / seen:.4f} {time.time() - epoch_start:.0f}s", env)
        if env.world_size > 1:  # the log shows all ranks' training statistics
            totals = torch.cat([sums.flatten(), torch.tensor([float(seen)], dtype=torch.float64)]).to(device)
            dist.all_reduce(totals)
            sums, seen = totals[:-1].cpu().view_as(sums), int(totals[-1].item())
        if env.main:
            val_logits, val_labels = collect_logits(model, val_loader, device)
            record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - epoch_start,
                      "train_loss": (sums[0] / max(seen, 1)).tolist(), "train_accuracy": (sums[1] / max(seen, 1)).tolist(),
                      "val_accuracy": [accuracy(z, val_labels) for z in val_logits] if len(val_labels) else [],
                      "weights": weights, "images": seen}
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            _log(json.dumps(record), env)
            save_checkpoint(ckpt_path, model, optimizer, scaler, weighting, checkpoint_config(config, model, epoch))
        if env.world_size > 1:
            dist.barrier()

    metrics: dict = {}
    if env.main:
        metrics = evaluate_model(model, config.dataset, eval_options, device)
        metrics.update(arch=config.arch, arch_kwargs=arch_kwargs_of(model, config),
                       weighting=config.weighting, epochs=config.epochs, train_seconds=time.time() - started)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        extra = {"temperatures": metrics["temperatures"], "val_accuracy": metrics["val_accuracy"],
                 "test_accuracy": metrics["test_accuracy"], "flops": metrics["flops"]}
        save_checkpoint(ckpt_path, model, optimizer, scaler, weighting,
                        checkpoint_config(config, model, config.epochs - 1, extra))
        _log(json.dumps({"test_accuracy": metrics["test_accuracy"], "temperatures": metrics["temperatures"]}), env)
    if env.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
