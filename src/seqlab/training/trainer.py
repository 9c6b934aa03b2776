"""The one training loop for every model and task.

It owns: seeding, optimiser and schedule, gradient accumulation, clipping by global norm (the norm
before clipping is logged every step), evaluation every N steps, early stopping, metrics as JSON lines
and TensorBoard, a progress bar, atomic checkpoints with exact resume, DistributedDataParallel
when launched by ``torchrun``, and truncated BPTT over parallel streams when ``train.tbptt`` is set
(`tbptt_step`; the window arithmetic is in `seqlab.training.tbptt`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

from seqlab.config import ConfigError, RunConfig
from seqlab.data.base import IGNORE, Batch, Task
from seqlab.data.stream import StreamTask
from seqlab.models import build_model, count_parameters
from seqlab.registry import TASKS
from seqlab.training import checkpoint as ckpt
from seqlab.training.objectives import finalize, loss_sum, metric_sums, target_count
from seqlab.training.optim import build_optimizer, build_scheduler
from seqlab.training.tbptt import detach_state, map_state, window


class Callback:
    """Hooks into the training loop; override what you need."""

    def on_after_backward(self, trainer: "Trainer", step: int) -> dict[str, float]:
        """Called once gradients are complete, before clipping; returned figures are logged."""
        return {}

    def on_step_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        """Called after each optimiser step with that step's logged figures."""


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped_early: bool = False
    seconds: float = 0.0
    parameters: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop may draw from, in a form `torch.load(weights_only=True)` accepts."""
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_task(config: RunConfig) -> Task:
    return TASKS.build(config.task, config.seed)


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return {key: value[start:stop] for key, value in batch.items()}


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """Split along the batch dimension into `parts` nearly equal pieces (empty pieces dropped)."""
    n = next(iter(batch.values())).shape[0]
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice_batch(batch, a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def has_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware (CUDA: compute capability ≥ 8; CPU: AVX-512 BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that train.precision means on this device; None = plain fp32."""
    if precision == "bf16" and not has_bf16(device):
        raise ConfigError(
            f"train.precision = bf16, but {device} has no bf16 hardware, where bf16 runs many times slower "
            "than fp32; set train.precision to auto or fp32."
        )
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and has_bf16(device)):
        return torch.bfloat16
    return None


class Trainer:
    """Train `model` on `task` as `config.train` says; with `out_dir`, log and checkpoint there."""

    def __init__(
        self,
        config: RunConfig,
        task: Task | None = None,
        model: nn.Module | None = None,
        out_dir: str | Path | None = None,
        callbacks: tuple[Callback, ...] = (),
    ) -> None:
        self.config = config
        self.train_cfg = config.train
        if self.train_cfg.threads:
            torch.set_num_threads(self.train_cfg.threads)
        self.world_size, self.rank = self._init_distributed()
        seed_everything(config.seed)
        self.task = task if task is not None else build_task(config)
        if self.train_cfg.batch_tokens is not None:
            if not hasattr(self.task, "batch_tokens"):
                raise ConfigError("train.batch_tokens applies to corpus tasks that batch by token count "
                                  "(translation); set train.batch_size for this task instead.")
            self.task.batch_tokens = self.train_cfg.batch_tokens
        self.kind = self.task.info.kind
        self.device = self._pick_device()
        self.autocast_dtype = autocast_dtype(self.train_cfg.precision, self.device)
        parts = self.world_size * self.train_cfg.grad_accum
        if self.train_cfg.batch_tokens is None and self.train_cfg.batch_size < parts:
            raise ConfigError(
                f"train.batch_size = {self.train_cfg.batch_size} cannot be split over {self.world_size} process(es) "
                f"x {self.train_cfg.grad_accum} accumulation step(s); use a batch of at least {parts}."
            )
        self.model = (model if model is not None else build_model(config.model, self.task.info)).to(self.device)
        self.module: nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(self.model, self.train_cfg)
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = callbacks
        self.best: float | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.train_seconds = 0.0
        self._writer: Any = None
        self.stream_state: Any = None  # truncated BPTT: the detached state where the next window starts
        if self.train_cfg.tbptt is not None:
            self._check_tbptt()

    @staticmethod
    def _init_distributed() -> tuple[int, int]:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return 1, 0
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and os.environ.get("SEQLAB_BACKEND") != "gloo" else "gloo"
            dist.init_process_group(backend=backend)
        return dist.get_world_size(), dist.get_rank()

    def _pick_device(self) -> torch.device:
        """The configured device; under torchrun with CUDA, this process's own GPU (LOCAL_RANK)."""
        device = torch.device(self.train_cfg.device)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        return device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> torch.autocast:
        """Mixed precision for a forward pass as train.precision asks (losses are then taken in fp32)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _to_device(self, batch: Batch) -> Batch:
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def _local_batch(self, step: int) -> Batch:
        """This process's share of the global batch for `step`."""
        batch = self.task.train_batch(step, self.train_cfg.batch_size)
        if self.world_size == 1:
            return batch
        return split_batch(batch, self.world_size)[self.rank]

    def _all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(value)
        return value

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser update over the global batch of `step`; returns its logged figures."""
        if self.train_cfg.tbptt is not None:
            return self.tbptt_step(step)
        self.module.train()
        local = self._to_device(self._local_batch(step))
        micro_batches = split_batch(local, self.train_cfg.grad_accum)
        count = self._all_reduce(torch.tensor(float(target_count(self.kind, local)), device=self.device))
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (last or self.world_size == 1) else self.module.no_sync()
            with sync:
                with self.autocast():
                    output = self.module(micro)
                summed = loss_sum(self.kind, output.float(), micro, self.train_cfg.label_smoothing)
                (summed * self.world_size / count).backward()
            total += summed.detach()
        return self._apply_update(step, total, count)

    def _apply_update(self, step: int, total: torch.Tensor, count: torch.Tensor) -> dict[str, float]:
        """Callbacks, clipping and the optimiser step once the gradients of `step` are complete."""
        logs: dict[str, float] = {}
        for callback in self.callbacks:
            logs.update(callback.on_after_backward(self, step))
        max_norm = self.train_cfg.grad_clip if self.train_cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        logs["loss"] = float(self._all_reduce(total) / count)
        logs["grad_norm"] = float(grad_norm)
        logs["targets"] = float(count)
        return logs

    def _check_tbptt(self) -> None:
        problems = []
        if not isinstance(self.task, StreamTask):
            problems.append(f"the task {self.config.task.name!r} serves no streams (use e.g. lm with format text)")
        elif self.kind != "tokens":
            problems.append(f"the task's kind is {self.kind!r}; truncated BPTT needs a loss at every step (tokens)")
        if not hasattr(self.model, "forward_with_state"):
            problems.append(f"the model {self.config.model.name!r} has no forward_with_state (use a recurrent model)")
        if self.train_cfg.grad_accum != 1 or self.world_size != 1:
            problems.append("it runs in one process without gradient accumulation")
        if problems:
            raise ConfigError("train.tbptt: " + "; ".join(problems) + ".")

    def tbptt_step(self, step: int) -> dict[str, float]:
        """One update of truncated BPTT (seed 004): k1 new stream steps, each loss's gradient reaching back
        at most k2 steps, the state carried from update to update and detached (see `training.tbptt`)."""
        assert self.train_cfg.tbptt is not None
        self.module.train()
        plan = window(step, self.train_cfg.tbptt.k1, self.train_cfg.tbptt.k2)
        batch = self._to_device(self.task.stream_window(self.train_cfg.batch_size, plan.start, plan.stop))
        targets = batch["targets"].clone()
        targets[:, : plan.first_loss - plan.start] = IGNORE  # steps before the k1 new ones carry no loss
        state = self.stream_state
        carried = state if plan.carry_at == plan.start else None
        outputs = []
        self.optimizer.zero_grad(set_to_none=True)
        for a, b in plan.segments():
            if a in plan.detach_at:
                state = detach_state(state)
            piece = {"inputs": batch["inputs"][:, a - plan.start : b - plan.start]}
            with self.autocast():
                output, state = self.model.forward_with_state(piece, state)
            outputs.append(output.float())
            if b == plan.carry_at:
                carried = detach_state(state)
        self.stream_state = carried
        window_batch = {"targets": targets}
        count = torch.tensor(float(max(target_count(self.kind, window_batch), 1)), device=self.device)
        summed = loss_sum(self.kind, torch.cat(outputs, dim=1), window_batch, self.train_cfg.label_smoothing)
        (summed / count).backward()
        return self._apply_update(step, summed.detach(), count)

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Mean loss (and accuracy where it applies) over a fixed evaluation split."""
        self.module.eval()
        sums: dict[str, float] = {}
        batches: Iterator[Batch] = self.task.eval_batches(split, self.train_cfg.batch_size)
        for index, batch in enumerate(batches):
            if self.train_cfg.eval_batches is not None and index >= self.train_cfg.eval_batches:
                break
            batch = self._to_device(batch)
            with self.autocast():
                output = self.model(batch)
            for key, value in metric_sums(self.kind, output.float(), batch).items():
                sums[key] = sums.get(key, 0.0) + value
        return finalize(sums)

    def _improved(self, metrics: dict[str, float]) -> bool:
        rule = self.train_cfg.early_stopping
        metric, mode, delta = (rule.metric, rule.mode, rule.min_delta) if rule else ("loss", "min", 0.0)
        if metric not in metrics:
            raise ConfigError(
                f"train.early_stopping.metric = {metric!r} is not measured on this task; "
                f"choose one of {sorted(metrics)}."
            )
        value = metrics[metric]
        better = self.best is None or (value < self.best - delta if mode == "min" else value > self.best + delta)
        if better:
            self.best = value
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return better

    def _meta(self, step: int, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "step": step,
            "config": self.config.to_dict(),
            "task_state": self.task.state_dict(),
            "metrics": metrics or {},
            "train_seconds": self.train_seconds,
        }

    def _training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "stream_state": self.stream_state,
        }

    def save(self, step: int, metrics: dict[str, float] | None = None, best: bool = False) -> None:
        assert self.out_dir is not None
        folder = self.out_dir / "checkpoints"
        if best:
            ckpt.save_checkpoint(folder / "best", self.model, self._meta(step, metrics), None)
            return
        ckpt.save_checkpoint(folder / f"step_{step:08d}", self.model, self._meta(step, metrics), self._training_state())
        ckpt.prune_checkpoints(self.out_dir, self.train_cfg.checkpoint.keep_last)

    def _resume(self) -> int:
        """Restore the latest checkpoint in out_dir; returns the step to continue from."""
        assert self.out_dir is not None
        latest = ckpt.latest_checkpoint(self.out_dir)
        if latest is None:
            return 0
        meta = ckpt.read_meta(latest)
        saved = meta["config"]
        for section in ("task", "model"):
            if saved[section] != getattr(self.config, section).model_dump(mode="json"):
                raise ConfigError(
                    f"cannot resume {self.out_dir}: its '{section}' section differs from this config "
                    f"(saved {saved[section]}); use the original config or a new out_dir."
                )
        ckpt.load_weights(latest, self.model)
        state = ckpt.load_training_state(latest)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        self.stopped_early = bool(state.get("stopped_early", False))
        self.stream_state = map_state(state.get("stream_state"), lambda tensor: tensor.to(self.device))
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        return int(meta["step"])

    def _prepare_out_dir(self, resume: bool) -> int:
        assert self.out_dir is not None
        if self.is_main:
            ckpt.recover_interrupted_saves(self.out_dir)
        if ckpt.list_checkpoints(self.out_dir) and not resume:
            raise ConfigError(
                f"{self.out_dir} already holds checkpoints of a run: pass --resume to continue it, "
                "or choose a new out_dir (--set out_dir=...)."
            )
        start = self._resume() if resume else 0
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            self._truncate_metrics(start)
            if self.train_cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start + 1)
        return start

    def _truncate_metrics(self, start: int) -> None:
        """Keep only the records written before the checkpoint we resume from (none on a fresh start)."""
        metrics_file = self.out_dir / "metrics.jsonl" if self.out_dir is not None else None
        if metrics_file is None or not metrics_file.exists():
            return
        kept = []
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if record["step"] < start or (record["step"] == start and not record.get("final")):
                kept.append(line)
        metrics_file.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def _log(self, record: dict[str, Any]) -> None:
        if self.out_dir is None or not self.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            split = record["split"]
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{split}/{key}", value, record["step"])

    def _over_budget(self) -> bool:
        """Whether train.time_budget_s is spent (every process agrees, so none waits for another)."""
        budget = self.train_cfg.time_budget_s
        if budget is None:
            return False
        spent = torch.tensor(float(self.train_seconds >= budget), device=self.device)
        return bool(self._all_reduce(spent) > 0)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to `train.steps` (or early stop / time budget) and evaluate every split at the end."""
        cfg = self.train_cfg
        start = self._prepare_out_dir(resume) if self.out_dir is not None else 0
        result = TrainResult(model=self.model, steps=start, parameters=count_parameters(self.model))
        bar = tqdm(
            total=cfg.steps, initial=start, disable=not (cfg.progress and self.is_main), unit="step", mininterval=0.5
        )
        step = start
        over_budget = self._over_budget()
        while step < cfg.steps and not self.stopped_early and not over_budget:
            began = time.perf_counter()
            logs = self.train_step(step)
            elapsed = time.perf_counter() - began
            self.train_seconds += elapsed
            step += 1
            logs["targets_per_s"] = logs["targets"] / max(elapsed, 1e-9)
            for callback in self.callbacks:
                callback.on_step_end(self, step, logs)
            result.history.append({"step": step, **logs})
            if step % cfg.log_every == 0 or step == cfg.steps:
                self._log({"step": step, "split": "train", **logs})
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", targets_per_s=f"{logs['targets_per_s']:.0f}", refresh=False)
            if not math.isfinite(logs["loss"]):
                bar.write(f"step {step}: loss is {logs['loss']}; stopping.")
                break
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                metrics = self.evaluate("val")
                result.evals.append({"step": step, **metrics})
                self._log({"step": step, "split": "val", **metrics})
                improved = self._improved(metrics)
                if self.out_dir is not None and self.is_main and improved and cfg.checkpoint.keep_best:
                    self.save(step, metrics, best=True)
                self.stopped_early = cfg.early_stopping is not None and self.bad_evals >= cfg.early_stopping.patience
            over_budget = self._over_budget()
            if self.out_dir is not None and self.is_main:
                if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or self.stopped_early or over_budget:
                    self.save(step)
        bar.close()
        result.stopped_early = self.stopped_early
        result.steps = step
        result.seconds = self.train_seconds
        for split in self.task.splits():
            result.final[split] = self.evaluate(split)
            self._log({"step": step, "split": split, "final": True, **result.final[split]})
        if self.out_dir is not None and self.is_main:
            if ckpt.latest_checkpoint(self.out_dir) is None or ckpt.latest_checkpoint(self.out_dir).name != f"step_{step:08d}":
                self.save(step, result.final.get("val"))
            if cfg.checkpoint.keep_best and "val" in result.final and self._improved(result.final["val"]):
                self.save(step, result.final["val"], best=True)
            (self.out_dir / "final_metrics.json").write_text(json.dumps({"step": step, **result.final}, indent=1))
        if self._writer is not None:
            self._writer.close()
        return result


def train(config: RunConfig, out_dir: str | Path | None = None, resume: bool = False, **kwargs: Any) -> TrainResult:
    """Build the task and model a config names and train them (the library's one-call entry point)."""
    return Trainer(config, out_dir=out_dir, **kwargs).fit(resume=resume)
