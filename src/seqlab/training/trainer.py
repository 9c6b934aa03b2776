"""The one training loop for every model and task.

`Trainer.fit` is the loop: take the step's batch, forward under the run's precision, backward, clip by
global norm (the pre-clip norm is logged), step, log, evaluate every N steps, checkpoint, stop. Its parts
live beside it, each in its own module: `precision` (autocast dtype by hardware), `distributed` (torchrun /
DDP), `run_dir` (the run lock, metrics log, atomic files), `stopping` (best value, early stopping,
divergence), `checkpoint` (atomic save, exact resume, `init_from`), `rng`, and `tbptt` (the window
arithmetic of truncated BPTT, used by `tbptt_step`).

A diverged run (a NaN or infinite loss, gradient norm or validation figure) stops before the bad update
is applied, never writes a `best` or step checkpoint from it, records ``stop_reason: diverged`` in
``final_metrics.json``, and `seqlab train` exits non-zero.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm import tqdm

from seqlab.config import ConfigError, RunConfig
from seqlab.data.base import IGNORE, Batch, Task
from seqlab.data.stream import StreamTask
from seqlab.errors import UserError, warn
from seqlab.models import build_model, count_parameters
from seqlab.registry import TASKS
from seqlab.training import checkpoint as ckpt
from seqlab.training.distributed import Distributed, split_batch
from seqlab.training.objectives import auxiliary_loss, auxiliary_loss_modules, finalize, loss_sum, metric_names, metric_sums, target_count
from seqlab.training.optim import build_optimizer, build_scheduler
from seqlab.training.precision import autocast_dtype, resolve_precision
from seqlab.training.rng import rng_state, seed_everything, set_rng_state
from seqlab.training.run_dir import RunDirectory
from seqlab.training.stopping import BestTracker, StopReason, diverged
from seqlab.training.tbptt import detach_state, map_state, window


class Callback:
    """Hooks into the training loop; override what you need."""

    def on_after_backward(self, trainer: "Trainer", step: int) -> dict[str, float]:
        """Called once gradients are complete, before clipping; returned figures are logged."""
        return {}

    def on_step_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        """Called after each optimiser step with that step's logged figures; setting
        `trainer.stopped_early = True` ends training after this step."""


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
    stop_reason: StopReason = "steps"
    message: str = ""  # why a diverged run stopped
    precision: str = "fp32"  # the precision the run actually used


class TrainingDiverged(UserError):
    """A run stopped on a NaN or infinite figure; its last finite checkpoint is kept."""


def build_task(config: RunConfig) -> Task:
    return TASKS.build(config.task, config.seed)


def check_task_fits(config: RunConfig, task: Task) -> None:
    """Refuse, before any training, settings this task cannot serve (the config alone cannot tell)."""
    train_cfg = config.train
    if train_cfg.batch_tokens is not None and not task.token_batching:
        raise ConfigError(f"train.batch_tokens applies to corpus tasks that batch by token count (translation), "
                          f"not {config.task.name!r}; set train.batch_size for this task instead.")
    rule = train_cfg.early_stopping
    if rule is not None and rule.metric not in metric_names(task.info.kind):
        raise ConfigError(f"train.early_stopping.metric = {rule.metric!r} is not measured on {task.info.kind!r} "
                          f"tasks; choose one of {metric_names(task.info.kind)}.")
    for split in task.splits():
        if next(iter(task.eval_batches(split, train_cfg.batch_size)), None) is None:
            raise ConfigError(f"the task {config.task.name!r} has an empty {split!r} split (no examples to evaluate "
                              "on); give it more data or change how it splits the data.")


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
        self.dist = Distributed()
        seed_everything(config.seed)
        self.task = task if task is not None else build_task(config)
        check_task_fits(config, self.task)
        if self.train_cfg.batch_tokens is not None:
            self.task.batch_tokens = self.train_cfg.batch_tokens
        self.kind = self.task.info.kind
        self.device = self.dist.device(self.train_cfg.device)
        self.precision = resolve_precision(self.train_cfg.precision, self.device)
        self.autocast_dtype = autocast_dtype(self.precision, self.device)
        parts = self.dist.world_size * self.train_cfg.grad_accum
        if self.train_cfg.batch_tokens is None and self.train_cfg.batch_size < parts:
            raise ConfigError(
                f"train.batch_size = {self.train_cfg.batch_size} cannot be split over {self.dist.world_size} "
                f"process(es) x {self.train_cfg.grad_accum} accumulation step(s); use a batch of at least {parts}."
            )
        self.model = (model if model is not None else build_model(config.model, self.task.info)).to(self.device)
        if self.train_cfg.init_from is not None:
            self.initialised_from = ckpt.init_from(self.train_cfg.init_from, self.model, config, self.task.state_dict())
        self.module = self.dist.wrap(self.model, self.device)
        self.aux_modules = auxiliary_loss_modules(self.model)  # found once, not on every step
        self.optimizer = build_optimizer(self.model, self.train_cfg)
        self.train_seconds = 0.0  # training time so far (resumed runs continue the count); a time-clocked schedule reads it
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg, lambda: self.train_seconds)
        self.run_dir = RunDirectory(out_dir) if out_dir is not None else None
        self.out_dir = self.run_dir.path if self.run_dir is not None else None
        self.callbacks = callbacks
        self.tracker = BestTracker(self.train_cfg.early_stopping)
        self.stopped_early = False
        self._writer: Any = None
        self.stream_state: Any = None  # truncated BPTT: the detached state where the next window starts
        if self.train_cfg.tbptt is not None:
            self._check_tbptt()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def autocast(self) -> torch.autocast:
        """Mixed precision for a forward pass as train.precision asks (losses are then taken in fp32)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _to_device(self, batch: Batch) -> Batch:
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    # --- one update ---------------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser update over the global batch of `step`; returns its logged figures."""
        if self.train_cfg.tbptt is not None:
            return self.tbptt_step(step)
        self.module.train()
        local = self._to_device(self.dist.share(self.task.train_batch(step, self.train_cfg.batch_size)))
        micro_batches = split_batch(local, self.train_cfg.grad_accum)
        count = self.dist.sum(torch.tensor(float(target_count(self.kind, local)), device=self.device))
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for index, micro in enumerate(micro_batches):
            with self.dist.no_sync(self.module, last=index == len(micro_batches) - 1):
                with self.autocast():
                    output = self.module(micro)
                summed = loss_sum(self.kind, output.float(), micro, self.train_cfg.label_smoothing)
                aux = auxiliary_loss(self.aux_modules)  # e.g. MoE load balance joins the objective
                (summed * self.dist.world_size / count + (0.0 if aux is None else aux / len(micro_batches))).backward()
            total += summed.detach()
        return self._apply_update(step, total, count)

    def _apply_update(self, step: int, total: torch.Tensor, count: torch.Tensor) -> dict[str, float]:
        """Callbacks, clipping and the optimiser step once the gradients of `step` are complete; a
        non-finite loss or gradient norm skips the step, so the weights stay as they were."""
        logs: dict[str, float] = {}
        for callback in self.callbacks:
            logs.update(callback.on_after_backward(self, step))
        max_norm = self.train_cfg.grad_clip if self.train_cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        logs["loss"] = float(self.dist.sum(total) / count)
        logs["grad_norm"] = float(grad_norm)
        logs["targets"] = float(count)
        if diverged({"loss": logs["loss"], "grad_norm": logs["grad_norm"]}) is None:
            self.optimizer.step()
            self.scheduler.step()
        return logs

    def _check_tbptt(self) -> None:
        problems = []
        if not isinstance(self.task, StreamTask):
            problems.append(f"the task {self.config.task.name!r} serves no streams (use e.g. lm with format text)")
        elif self.kind != "tokens":
            problems.append(f"the task's kind is {self.kind!r}; truncated BPTT needs a loss at every step (tokens)")
        if not hasattr(self.model, "forward_with_state"):
            problems.append(f"the model {self.config.model.name!r} has no forward_with_state (use a recurrent model)")
        if self.dist.world_size != 1:
            problems.append("it runs in one process")
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

    def load_weights(self, path: Path) -> None:
        """Load a checkpoint's weights into the model (to score them), refusing a checkpoint whose saved
        vocabulary is not the one this task's data gives."""
        saved = ckpt.read_meta(path).get("task_state")
        if saved is not None and saved != self.task.state_dict():
            raise ckpt.CheckpointError(
                f"{path}: the run's data no longer gives the vocabulary it was trained with (the files under task "
                "changed?), so its weights cannot be scored here; use the data it was trained on.")
        ckpt.load_weights(path, self.model)

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

    # --- checkpoints --------------------------------------------------------------------------------

    def _meta(self, step: int, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "step": step,
            "config": self.config.to_dict(),
            "task_state": self.task.state_dict(),
            "metrics": metrics or {},
            "train_seconds": self.train_seconds,
            "precision": self.precision,
        }

    def _training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            **self.tracker.state_dict(),
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

    def _resume(self, resume_from: str | None) -> int:
        """Restore the latest checkpoint in out_dir (or the one `resume_from` names); returns its step."""
        assert self.out_dir is not None
        path = ckpt.resume_point(self.out_dir, resume_from)
        meta = ckpt.read_meta(path)
        ckpt.check_same_run(path, meta["config"], self.config)
        try:
            ckpt.load_weights(path, self.model)
        except ckpt.NonFiniteCheckpoint as err:
            raise ckpt.NonFiniteCheckpoint(f"{err} {ckpt.earlier_checkpoints_hint(self.out_dir, path)}") from None
        state = ckpt.load_training_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.tracker.load_state_dict(state)
        self.stopped_early = bool(state.get("stopped_early", False))
        self.stream_state = map_state(state.get("stream_state"), lambda tensor: tensor.to(self.device))
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        return int(meta["step"])

    def _prepare_out_dir(self, resume: bool, resume_from: str | None) -> int:
        """Lock the run directory, tidy after a killed save, restore a resumed run, write config.yaml."""
        assert self.run_dir is not None and self.out_dir is not None
        if resume and not ckpt.list_checkpoints(self.out_dir):
            if not (self.out_dir / "config.yaml").is_file():
                where = "does not exist" if not self.out_dir.exists() else "holds no run (no config.yaml, no checkpoint)"
                raise UserError(f"cannot resume: {self.out_dir} {where}. Check the path, or drop --resume to start "
                                "a new run.")
            warn(f"{self.out_dir} holds a run that stopped before its first checkpoint; starting it from step 0.")
            resume = False
        if self.is_main:
            self.run_dir.acquire()
            ckpt.recover_interrupted_saves(self.out_dir)
        if ckpt.list_checkpoints(self.out_dir) and not resume:
            raise ConfigError(
                f"{self.out_dir} already holds checkpoints of a run: pass --resume to continue it, "
                "or choose a new out_dir (--set out_dir=...)."
            )
        start = self._resume(resume_from) if resume else 0
        if self.is_main:
            note = f"precision used: {self.precision} (train.precision: {self.train_cfg.precision} on {self.device})"
            self.run_dir.write_config(self.config.to_dict(), note)
            self.run_dir.truncate_metrics(start)
            if self.train_cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start + 1)
        return start

    def _log(self, record: dict[str, Any]) -> None:
        if self.run_dir is None or not self.is_main:
            return
        self.run_dir.append_metrics(record)
        if self._writer is not None:
            split = record["split"]
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{split}/{key}", value, record["step"])

    def _over_budget(self) -> bool:
        """Whether train.time_budget_s is spent (every process agrees, so none waits for another)."""
        budget = self.train_cfg.time_budget_s
        return budget is not None and self.dist.any(self.train_seconds >= budget, self.device)

    # --- the loop -----------------------------------------------------------------------------------

    def fit(self, resume: bool = False, resume_from: str | None = None) -> TrainResult:
        """Train to `train.steps` (or early stop / time budget / divergence) and evaluate every split at
        the end; `resume` continues from the latest checkpoint, `resume_from` from a named one."""
        resume = resume or resume_from is not None
        try:
            start = self._prepare_out_dir(resume, resume_from) if self.run_dir is not None else 0
            return self._loop(start)
        finally:
            if self._writer is not None:
                self._writer.close()
            if self.run_dir is not None:
                self.run_dir.release()

    def _loop(self, start: int) -> TrainResult:
        cfg = self.train_cfg
        saving = self.out_dir is not None and self.is_main
        result = TrainResult(model=self.model, steps=start, parameters=count_parameters(self.model),
                             precision=self.precision)
        bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and self.is_main), unit="step",
                   mininterval=0.5)
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
            problem = diverged({"loss": logs["loss"], "grad_norm": logs["grad_norm"]})
            if problem is not None:
                result.stop_reason, result.message = "diverged", f"step {step}: training {problem}"
                break
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                metrics = self.evaluate("val")
                result.evals.append({"step": step, **metrics})
                self._log({"step": step, "split": "val", **metrics})
                problem = diverged(metrics)
                if problem is not None:
                    result.stop_reason, result.message = "diverged", f"step {step}: validation {problem}"
                    break
                if self.tracker.update(metrics) and saving and cfg.checkpoint.keep_best:
                    self.save(step, metrics, best=True)
                self.stopped_early = self.stopped_early or self.tracker.patience_spent
            over_budget = self._over_budget()
            if saving and ((cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or self.stopped_early or over_budget):
                self.save(step)
        bar.close()
        if result.stop_reason != "diverged":
            result.stop_reason = self._stop_reason(over_budget)
        result.stopped_early, result.steps, result.seconds = self.stopped_early, step, self.train_seconds
        if result.stop_reason == "diverged":
            return self._finish_diverged(result)
        for split in self.task.splits():
            result.final[split] = self.evaluate(split)
            self._log({"step": step, "split": split, "final": True, **result.final[split]})
        if saving:
            latest = ckpt.latest_checkpoint(self.out_dir)
            if latest is None or latest.name != f"step_{step:08d}":
                self.save(step, result.final.get("val"))
            if cfg.checkpoint.keep_best and "val" in result.final and self.tracker.update(result.final["val"]):
                self.save(step, result.final["val"], best=True)
            self._write_final(result)
        return result

    def _stop_reason(self, over_budget: bool) -> StopReason:
        """Why a run that did not diverge ended."""
        if self.stopped_early:
            return "early_stopping" if self.tracker.patience_spent else "callback"
        return "time_budget" if over_budget else "steps"

    def _finish_diverged(self, result: TrainResult) -> TrainResult:
        """Leave the run as it was at its last finite checkpoint and say so in final_metrics.json."""
        if self.out_dir is not None and self.is_main:
            latest = ckpt.latest_checkpoint(self.out_dir)
            result.message += (f"; the newest usable checkpoint is {latest.name}" if latest is not None
                               else "; no checkpoint was written before it")
            self._write_final(result)
        return result

    def _write_final(self, result: TrainResult) -> None:
        assert self.run_dir is not None
        record: dict[str, Any] = {"step": result.steps, "stop_reason": result.stop_reason,
                                  "precision": result.precision, **result.final}
        if result.message:
            record["message"] = result.message
        self.run_dir.write_final(record)


def train(config: RunConfig, out_dir: str | Path | None = None, resume: bool = False, **kwargs: Any) -> TrainResult:
    """Build the task and model a config names and train them (the library's one-call entry point)."""
    resume_from = kwargs.pop("resume_from", None)
    return Trainer(config, out_dir=out_dir, **kwargs).fit(resume=resume, resume_from=resume_from)
