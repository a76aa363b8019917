"""Training of every ensemble kind with EE Eqs. (2)-(4), checkpointed, resumable, bitwise reproducible.

Each member α has its loss L_α on its batch (EE Eq. 2). One backward pass of Σ_α L_α gives the
individual parameters their own gradient ∂L_α/∂u_α (Eq. 3) and the shared parameters Σ_α ∂L_α/∂w,
which is then multiplied by γ(M)/M (Eq. 4; for LLD this is Eq. 66). Shared and individual parameters
have their own learning rate and weight decay. With Adam the γ(M)/M factor has almost no effect
(Adam normalises gradient scales); use SGD to study gradient scaling.

The data order comes from a seeded generator and every random choice from ``config.seed``; model,
optimizer and RNG states are checkpointed at the end of an epoch (every epoch, or once
``checkpoint_seconds`` have passed since the last checkpoint, and after the last epoch), so a run
killed at any moment
and resumed ends with weights bitwise equal to an uninterrupted run (on the same device). A
non-finite loss stops training with a :class:`DivergenceError` naming the step and the members; the
last good checkpoint is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.datasets import Dataset, Split, load_dataset
from ..data.loader import Batches
from ..ensembles.base import Ensemble
from ..errors import DeepensError, check_int
from ..runs.rundir import RunDir, decode_state, encode_state
from .augmentation import augment_dataset
from .build import build_ensemble
from .config import TrainConfig
from .losses import member_losses
from .memory import check_training_memory
from .metrics import classification_metrics
from .schedules import lr_factor
from .threads import resolve_threads, torch_threads

__all__ = [
    "Trainer",
    "DivergenceError",
    "TrainResult",
    "training_step",
    "resolve_device",
    "predict_logits",
    "evaluate_run",
    "load_run",
]


RESUMABLE_CHANGES = frozenset({"device", "eval_batch_size", "checkpoint_seconds", "compile", "channels_last"})
"""Options that may change between a run and its resumption: they do not change what is trained."""

LR_CHANGES = frozenset({"lr", "lr_individual", "final_lr"})
"""Options a resumed run may change from its last checkpoint on (after a divergence: a smaller learning rate);
the run records each change in ``config.json`` (``changes``: epoch, old and new values)."""


class DivergenceError(DeepensError):
    """Training produced a non-finite loss or non-finite weights."""


@dataclass
class TrainResult:
    metrics: dict
    history: list[dict]
    model: Ensemble
    data: Dataset
    run_dir: Path | None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeepensError(f"device: {device} requested but CUDA is not available on this machine")
        return torch.device(device)
    raise DeepensError(f"device: expected cpu, cuda or auto, got {device!r}")


@torch.no_grad()
def predict_logits(model: Ensemble, split: Split, batch_size: int = 1024) -> torch.Tensor:
    """Member outputs on a whole split, (M, N, C), in evaluation mode."""
    was_training = model.training
    model.eval()
    try:
        parts = [model(split.x[i : i + batch_size]) for i in range(0, len(split), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts, dim=1)


def load_data(config: TrainConfig, device: torch.device, *, with_transform: bool = False):
    """The run's dataset (augmented as ``config.augment`` says); with ``with_transform`` also the
    per-batch training transform (random augmentation) or None."""
    flatten = config.model == "mlp" if config.flatten is None else config.flatten
    data = load_dataset(
        config.dataset,
        seed=config.split_seed(),
        val=config.val,
        flatten=flatten and not config.augment,
        data_dir=config.data_dir,
        num_samples=config.num_samples,
        device=device,
    )
    transform = None
    if config.augment:
        data, transform = augment_dataset(data, config.augment, flatten, members=config.members)
    return (data, transform) if with_transform else data


def _optimizer(config: TrainConfig, model: Ensemble) -> torch.optim.Optimizer:
    shared = [p for _, p in model.named_shared_parameters()]
    individual = [p for _, p in model.named_individual_parameters()]
    lr_u = config.lr if config.lr_individual is None else config.lr_individual
    groups = []
    if shared:
        groups.append({"params": shared, "lr": config.lr, "base_lr": config.lr,
                       "weight_decay": config.weight_decay, "name": "shared"})
    if individual:
        # without shared parameters (deep, vectorized, collegial ensembles) the individual parameters are the
        # members' whole networks: weight_decay applies to them unless weight_decay_individual is set
        decay = config.weight_decay_individual if (shared or config.weight_decay_individual) else config.weight_decay
        groups.append({"params": individual, "lr": lr_u, "base_lr": lr_u, "weight_decay": decay,
                       "name": "individual"})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.Adam(groups, lr=config.lr)


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def training_step(
    model: Ensemble,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "ce",
    gamma_scale: float = 1.0,
    shared: list[torch.nn.Parameter] | None = None,
    amp: str | None = None,
    scaler: torch.amp.GradScaler | None = None,
    forward=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of EE Eqs. (2)-(4); returns the member losses (M,) and outputs (M, B, C), detached.

    ``x`` is a shared batch (B, ...) with labels (B,), or one batch per member (M, B, ...) with labels
    (M, B). The shared parameters' summed gradient is multiplied by ``gamma_scale`` = γ(M)/M. Raises
    :class:`DivergenceError` (before any update) when a member's loss is not finite. ``amp`` (``"bf16"`` or
    ``"fp16"``) runs the forward under autocast (losses in float32); ``scaler`` (fp16) scales the loss and
    unscales the gradients before γ and the step. ``forward``: a compiled version of ``model`` to call.
    """
    call = model if forward is None else forward
    if amp:
        with torch.autocast(device_type=x.device.type, dtype=AMP_DTYPES[amp]):
            out = call(x, per_member=y.dim() == 2)
        out = out.float()
    else:
        out = call(x, per_member=y.dim() == 2)
    losses = member_losses(out, y, loss)
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        bad = ", ".join(map(str, (~finite).nonzero().flatten().tolist()))
        raise DivergenceError(f"non-finite loss in member(s) {bad}")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses.sum()).backward()
        scaler.unscale_(optimizer)
    else:
        losses.sum().backward()
    if gamma_scale != 1.0:
        params = shared if shared is not None else [p for _, p in model.named_shared_parameters()]
        for p in params:
            if p.grad is not None:
                p.grad.mul_(gamma_scale)
    if scaler is not None:
        scaler.step(optimizer)  # skipped when a gradient overflowed in fp16; the scale then shrinks
        scaler.update()
    else:
        optimizer.step()
    return losses.detach(), out.detach()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _compiled(model: Ensemble, enabled: bool):
    """``torch.compile(model)`` or, where compilation is unsupported, None with a one-line message on stderr."""
    if not enabled:
        return None
    import sys

    try:
        return torch.compile(model)
    except Exception as exc:  # no compiler / unsupported platform: run eagerly
        sys.stderr.write(f"compile: torch.compile is unavailable here ({type(exc).__name__}: {exc}); "
                         "training eagerly\n")
        return None


class Trainer:
    """Train one ensemble described by a :class:`TrainConfig`, optionally into a run directory."""

    def __init__(self, config: TrainConfig, out: str | Path | None = None, *, progress: bool | None = None,
                 max_memory: int | float | str | None = None, threads: int | str | None = None):
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.run = RunDir(out) if out is not None else None
        self.progress = progress
        self.transform = None
        self.max_memory = max_memory  # budget of check_training_memory (default: the device's free memory)
        # torch threads while training: None keeps the caller's setting; a number or "auto" (resolve_threads)
        self.threads = None if threads is None else resolve_threads(threads)

    # -- public ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train (into the run directory when there is one). ``resume``: continue the run there from its last
        checkpoint — with the same options, except those of :data:`RESUMABLE_CHANGES` and the learning rates of
        :data:`LR_CHANGES` (recorded as a change at the checkpoint's epoch). ``overwrite``: delete the run there
        and train from scratch."""
        cfg = self.config
        created = False
        self.changes: dict = {}
        if resume and overwrite:
            raise DeepensError("overwrite: --overwrite trains from scratch, --resume continues; choose one")
        if self.run is not None:
            created = not self.run.path.exists()
            self.run.prepare()
            if self.run.exists() and overwrite:
                self.run.clear()
            if self.run.exists() and not resume:
                raise DeepensError(
                    f"out: {self.run.path} already holds a run; pass --resume to continue it, --overwrite to train "
                    "it again from scratch, or choose another --out"
                )
            if self.run.exists() and resume:
                self.changes = self._check_same_config(TrainConfig.from_dict(self.run.read_config()),
                                                       finished=self.run.is_finished())
        finished = self.run is not None and resume and self.run.is_finished()
        try:
            data, self.transform = load_data(cfg, self.device, with_transform=True)
            if not finished:  # refuse what cannot fit before allocating it
                check_training_memory(cfg, data, self.device, self.max_memory)
        except DeepensError:
            if created and not any(self.run.path.iterdir()):  # nothing written: leave nothing behind
                self.run.path.rmdir()
            raise
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed)
            model = build_ensemble(cfg, data).to(self.device)
            if finished:
                model.load_state_dict(self.run.read_weights())
                return TrainResult(self.run.read_metrics(), self.run.read_history(), model, data, self.run.path)
            return self._train(model, data, resume)

    # -- internals ---------------------------------------------------------------------------------
    def estimate(self, steps: int = 3, warmup: int = 1) -> dict:
        """Time this training without running it: ``warmup`` + ``steps`` optimizer steps on real batches (the
        same data, augmentation, precision, memory format and device as :meth:`fit`), then one evaluation pass
        over up to 4 evaluation batches. Returns ``seconds_per_step``, ``steps_per_epoch``, ``steps`` (all
        epochs), ``eval_seconds_per_sample``, ``evaluated_samples`` (every evaluation of the run: validation
        every ``eval_every`` epochs, then train/val/test), and ``seconds`` (the estimated wall time of the whole
        training: steps plus evaluations), with ``val_samples`` and ``final_samples`` (train + val + test) to
        re-estimate other epoch counts. Nothing is written; the same seed gives the same model and
        batches as :meth:`fit`, but the timings are measurements."""
        cfg = self.config
        steps = check_int("steps", steps, minimum=1)
        warmup = check_int("warmup", warmup, minimum=0)
        data, self.transform = load_data(cfg, self.device, with_transform=True)
        check_training_memory(cfg, data, self.device, self.max_memory)  # a training that cannot fit is not timed
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed)
            model = build_ensemble(cfg, data).to(self.device)
            model, step_parts, batches, gen = self._setup(model, data)
            model.train()
            batch_iter = iter(batches.epoch())
            seconds = []
            for i in range(warmup + steps):
                try:
                    x, y = next(batch_iter)
                except StopIteration:
                    batch_iter = iter(batches.epoch())
                    x, y = next(batch_iter)
                x, y = self._prepared(x, y, gen)
                _synchronize(self.device)
                started = time.perf_counter()
                training_step(model, x=x, y=y, **step_parts)
                _synchronize(self.device)
                if i >= warmup:
                    seconds.append(time.perf_counter() - started)
            split = data.val if len(data.val) else data.test
            count = min(len(split), 4 * cfg.eval_batch_size)
            sample = Split(split.x[:count], split.y[:count])
            eval_rate = 0.0
            if len(sample):
                _synchronize(self.device)
                started = time.perf_counter()
                predict_logits(model, sample, cfg.eval_batch_size)
                _synchronize(self.device)
                eval_rate = (time.perf_counter() - started) / len(sample)
        per_epoch = len(batches)
        evaluations = -(-cfg.epochs // cfg.eval_every)
        evaluated = evaluations * len(data.val) + len(data.train) + len(data.val) + len(data.test)
        per_step = float(sorted(seconds)[len(seconds) // 2])
        return {"device": str(self.device), "timed_steps": steps, "seconds_per_step": per_step,
                "steps_per_epoch": per_epoch, "steps": per_epoch * cfg.epochs,
                "eval_seconds_per_sample": eval_rate, "evaluated_samples": evaluated,
                "val_samples": len(data.val), "final_samples": len(data.train) + len(data.val) + len(data.test),
                "seconds": per_step * per_epoch * cfg.epochs + eval_rate * evaluated}

    def _prepared(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the step takes it: augmented (from the run's generator), channels-last when asked
        for (a shared image batch; per-member ones are 5-D)."""
        if self.transform is not None:
            x, y = self.transform(x, y, gen)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _setup(self, model: Ensemble, data: Dataset):
        """The model in its memory format, the keyword arguments of :func:`training_step` (optimizer, loss, γ
        scale, shared parameters, precision, scaler, compiled forward), the batches and their generator."""
        cfg = self.config
        if cfg.channels_last and any(p.dim() == 4 for p in model.parameters()):
            model = model.to(memory_format=torch.channels_last)
        opt = _optimizer(cfg, model)
        shared = [p for _, p in model.named_shared_parameters()]
        scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        self.scaler = scaler
        parts = dict(optimizer=opt, loss=cfg.loss, gamma_scale=cfg.gamma_value() / cfg.members, shared=shared,
                     amp=cfg.amp, scaler=scaler, forward=_compiled(model, cfg.compile))
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        batches = Batches(data.train, cfg.batch_size, generator=gen, members=cfg.members, mode=cfg.batches)
        return model, parts, batches, gen

    def _train(self, model: Ensemble, data: Dataset, resume: bool) -> TrainResult:
        if self.threads is not None:
            with torch_threads(self.threads):
                return self._train_steps(model, data, resume)
        return self._train_steps(model, data, resume)

    def _train_steps(self, model: Ensemble, data: Dataset, resume: bool) -> TrainResult:
        cfg = self.config
        model, step_parts, batches, gen = self._setup(model, data)
        opt, scaler, forward = step_parts["optimizer"], step_parts["scaler"], step_parts["forward"]
        shared, gamma_scale = step_parts["shared"], step_parts["gamma_scale"]
        steps = len(batches)
        epoch, step, elapsed, history = 0, 0, 0.0, []
        if self.run is not None:
            try:
                checkpoint = self.run.load_checkpoint() if resume else None
                if checkpoint is not None:
                    epoch, step, elapsed, history = self._restore(checkpoint, model, opt, gen)
            except DeepensError as exc:
                raise DeepensError(f"{exc}; the run cannot continue from it: train it again from scratch with "
                                   "--overwrite (or another --out)") from None
            if checkpoint is not None and self.changes:
                self._apply_changes(opt, epoch)
            elif checkpoint is None:
                self.run.write_config(self._config_record(data, model))
        bar = tqdm(total=cfg.epochs, initial=epoch, desc="train", unit="epoch", disable=self._bar_disabled(),
                   leave=False)
        started = time.perf_counter() - elapsed
        last_checkpoint = time.perf_counter()
        try:
            while epoch < cfg.epochs:
                model.train()
                loss_sum = torch.zeros(cfg.members, dtype=torch.float64, device=self.device)
                correct = torch.zeros(cfg.members, dtype=torch.float64, device=self.device)
                seen = 0
                for i, (x, y) in enumerate(batches.epoch()):
                    x, y = self._prepared(x, y, gen)
                    factor = lr_factor(cfg.schedule, epoch + i / steps, cfg.epochs, lr=cfg.lr,
                                       step_size=cfg.step_size, step_factor=cfg.step_factor,
                                       decay_start=cfg.decay_start, final_lr=cfg.final_lr,
                                       milestones=cfg.milestones or ())
                    for group in opt.param_groups:
                        group["lr"] = group["base_lr"] * factor
                    try:
                        losses, out = training_step(model, opt, x, y, loss=cfg.loss, gamma_scale=gamma_scale,
                                                    shared=shared, amp=cfg.amp, scaler=scaler, forward=forward)
                    except DivergenceError as exc:
                        raise DivergenceError(self._divergence_message(step, epoch, str(exc))) from None
                    except Exception as exc:  # a compiled forward that fails (no compiler at its first call): eager
                        if forward is None:
                            raise
                        import sys

                        sys.stderr.write(f"compile: the compiled model failed ({type(exc).__name__}); training "
                                         "eagerly\n")
                        forward = None
                        losses, out = training_step(model, opt, x, y, loss=cfg.loss, gamma_scale=gamma_scale,
                                                    shared=shared, amp=cfg.amp, scaler=scaler)
                    step += 1
                    b = y.shape[-1]
                    loss_sum += losses.double() * b
                    target = y if y.dim() == 2 else y.expand(cfg.members, -1)
                    correct += (out.argmax(-1) == target).double().sum(dim=1)
                    seen += b
                epoch += 1
                if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                    raise DivergenceError(self._divergence_message(step, epoch - 1, "non-finite weights"))
                row = {
                    "epoch": epoch,
                    "step": step,
                    "lr": opt.param_groups[0]["lr"],
                    "train_loss": float(loss_sum.sum() / (seen * cfg.members)) if seen else float("nan"),
                    "train_member_accuracy": float(correct.sum() / (seen * cfg.members)) if seen else float("nan"),
                    "seconds": time.perf_counter() - started,
                }
                if (epoch % cfg.eval_every == 0 or epoch == cfg.epochs) and len(data.val):
                    val = classification_metrics(predict_logits(model, data.val, cfg.eval_batch_size),
                                                 data.val.y, curve=False)
                    row.update({f"val_{k}": val[k] for k in ("accuracy", "nll", "member_accuracy", "correlation")})
                history.append(row)
                due = time.perf_counter() - last_checkpoint >= cfg.checkpoint_seconds or epoch == cfg.epochs
                if self.run is not None and due:
                    self.run.write_history(history)
                    self._checkpoint(model, opt, gen, epoch, step, time.perf_counter() - started, history)
                    last_checkpoint = time.perf_counter()
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('val_accuracy', float('nan')):.3f}")
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        metrics = self._final_metrics(model, data, seconds, epoch, step)
        if self.run is not None:
            logits = {}
            for name in ("val", "test"):
                split = data.split(name)
                if len(split):
                    logits[f"{name}.logits"] = predict_logits(model, split, cfg.eval_batch_size)
                    logits[f"{name}.labels"] = split.y
            self.run.write_logits(logits)
            self.run.write_weights(model.state_dict())
            self.run.write_metrics(metrics)
        return TrainResult(metrics, history, model, data, self.run.path if self.run else None)

    def _final_metrics(self, model: Ensemble, data: Dataset, seconds: float, epoch: int, step: int) -> dict:
        cfg = self.config
        out: dict = {}
        for name in ("train", "val", "test"):
            split = data.split(name)
            if len(split):
                out[name] = classification_metrics(predict_logits(model, split, cfg.eval_batch_size), split.y)
        out["params"] = {
            "total": sum(p.numel() for p in model.parameters()),
            "shared": sum(p.numel() for p in model.shared_parameters()),
            "individual": sum(p.numel() for p in model.individual_parameters()),
        }
        out.update({"seconds": seconds, "threads": torch.get_num_threads(), "epochs": epoch, "steps": step,
                    "members": cfg.members,
                    "ensemble": cfg.ensemble, "gamma": cfg.gamma_value()})
        return out

    def _divergence_message(self, step: int, epoch: int, what: str) -> str:
        where = f"at step {step} (epoch {epoch + 1})"
        keep = ""
        if self.run is not None:
            if self.run.pointer_path.exists():
                keep = (f"; the last good checkpoint is kept in {self.run.path}: continue from it with a smaller "
                        "learning rate (--resume --lr ...), evaluate it (deepens evaluate), or train again from "
                        "scratch (--overwrite)")
            else:
                keep = ("; no checkpoint had been written yet: train again with a smaller --lr and --overwrite (or "
                        "another --out)")
        return f"training diverged {where}: {what} (try a smaller --lr){keep}"

    def _check_same_config(self, stored: TrainConfig, finished: bool = False) -> dict:
        """The learning-rate options that change on this resumption ({name: (run's, given)}); any other difference
        (outside :data:`RESUMABLE_CHANGES`), or any difference at all for a finished run (nothing to continue), is
        refused."""
        free = RESUMABLE_CHANGES if finished else RESUMABLE_CHANGES | LR_CHANGES
        mine, theirs = self.config.canonical(), stored.canonical()  # equal trainings spelled differently pass
        diff = [k for k in mine if k not in free and mine[k] != theirs.get(k)]
        if diff:
            details = ", ".join(f"{k} (run: {theirs.get(k)!r}, given: {mine[k]!r})" for k in diff)
            why = ("the run is finished, so there is nothing to continue with them" if finished else
                   f"only {', '.join(sorted(LR_CHANGES))} may change when resuming")
            raise DeepensError(f"resume: the options differ from the run being resumed: {details} ({why}; "
                               "--overwrite trains again from scratch)")
        return {k: (theirs.get(k), mine[k]) for k in sorted(LR_CHANGES) if mine.get(k) != theirs.get(k)}

    def _bar_disabled(self) -> bool | None:
        return None if self.progress is None else not self.progress

    def _apply_changes(self, opt: torch.optim.Optimizer, epoch: int) -> None:
        """Resumed with other learning rates: the optimizer takes the new ones from the checkpoint's epoch on,
        and config.json records the change (and holds the new options, which a later --resume must repeat)."""
        cfg = self.config
        lr_u = cfg.lr if cfg.lr_individual is None else cfg.lr_individual
        for group in opt.param_groups:
            group["base_lr"] = cfg.lr if group.get("name") == "shared" else lr_u
        record = self.run.read_config()
        record.setdefault("changes", []).append(
            {"epoch": epoch, **{k: {"from": old, "to": new} for k, (old, new) in self.changes.items()}})
        record["train"] = cfg.to_dict()
        self.run.write_config(record)

    def _config_record(self, data: Dataset, model: Ensemble) -> dict:
        import deepens

        return {
            "train": self.config.to_dict(),
            "deepens": deepens.__version__,
            "torch": torch.__version__,
            "data": data.summary(),
            "ensemble": {"kind": self.config.ensemble, "class": type(model).__name__,
                         "members": self.config.members},
        }

    def _checkpoint(self, model, opt, gen, epoch, step, elapsed, history) -> None:
        tensors, meta = _optimizer_state(opt)
        rng = {"torch": encode_state(torch.get_rng_state()), "data": encode_state(gen.get_state())}
        if self.device.type == "cuda":
            rng["cuda"] = encode_state(torch.cuda.get_rng_state(self.device))
        state = {"epoch": epoch, "step": step, "elapsed": elapsed, "optimizer": meta, "rng": rng,
                 "history": history}
        if getattr(self, "scaler", None) is not None:  # fp16 loss scale: part of what makes a resume bitwise
            state["scaler"] = dict(self.scaler.state_dict())
        self.run.save_checkpoint(epoch, model.state_dict(), tensors, state)

    def _restore(self, checkpoint, model, opt, gen) -> tuple[int, int, float, list[dict]]:
        model_state, opt_tensors, state = checkpoint
        try:
            model.load_state_dict({k: v.to(self.device) for k, v in model_state.items()})
            _load_optimizer_state(opt, {k: v.to(self.device) for k, v in opt_tensors.items()}, state["optimizer"])
            torch.set_rng_state(decode_state(state["rng"]["torch"]))
            gen.set_state(decode_state(state["rng"]["data"]))
            if "scaler" in state and getattr(self, "scaler", None) is not None:
                self.scaler.load_state_dict(state["scaler"])
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(decode_state(state["rng"]["cuda"]), self.device)
            return int(state["epoch"]), int(state["step"]), float(state["elapsed"]), list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise DeepensError(f"checkpoint: {self.run.pointer_path} cannot be restored ({exc})") from None


def run_weights(run: RunDir) -> tuple[dict[str, torch.Tensor], int | None]:
    """The weights of a run: its final ones (epoch None), or for an unfinished run — stopped, or diverged after
    its first checkpoint — those of its last good checkpoint (and that checkpoint's epoch)."""
    if run.weights_path.exists():
        return run.read_weights(), None
    if run.pointer_path.exists():
        try:
            model, _, state = run.load_checkpoint()
        except DeepensError as exc:
            raise DeepensError(f"{exc}; this unfinished run has no usable weights: train it again with "
                               "deepens train --overwrite") from None
        return model, int(state.get("epoch", 0))
    raise DeepensError(f"weights: {run.path} has no weights yet (unfinished, and no checkpoint was written: it was "
                       "stopped or diverged in its first epochs); continue it with --resume or train it again with "
                       "--overwrite")


def load_run(path: str | Path, device: str = "cpu") -> tuple[TrainConfig, Dataset, Ensemble]:
    """A run's configuration, data and ensemble with its final weights (an unfinished run: those of its last
    checkpoint, see :func:`run_weights`; ``model.checkpoint_epoch`` says which)."""
    run = RunDir(path)
    config = TrainConfig.from_dict(run.read_config())
    config.device = device
    config.validate()
    dev = resolve_device(device)
    data = load_data(config, dev)
    model = build_ensemble(config, data).to(dev)
    weights, epoch = run_weights(run)
    try:
        model.load_state_dict({k: v.to(dev) for k, v in weights.items()})
    except RuntimeError as exc:
        raise DeepensError(f"run: the weights in {run.path} do not match the run's config ({exc})") from None
    model.checkpoint_epoch = epoch
    return config, data, model


def evaluate_run(path: str | Path, device: str = "cpu", batch_size: int = 1024, *, loaded=None) -> dict:
    """Rebuild a run's ensemble from its config and weights and evaluate it on every split (an unfinished run:
    its last checkpoint, with ``checkpoint_epoch`` in the result). ``loaded``: what :func:`load_run` returned for
    ``path``, when the caller has it."""
    config, data, model = loaded if loaded is not None else load_run(path, device)
    result = {}
    for name in ("train", "val", "test"):
        split = data.split(name)
        if len(split):
            result[name] = classification_metrics(predict_logits(model, split, batch_size), split.y)
    result["run"] = str(path)
    result["config"] = config.to_dict()
    if model.checkpoint_epoch is not None:
        result["checkpoint_epoch"] = model.checkpoint_epoch  # an unfinished run: its last checkpoint's weights
    return result
