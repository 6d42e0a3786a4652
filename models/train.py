"""Train a detector config on VOC with CenterNet targets and losses.

    python -m models.train --config small [--float] [--decoder-form rounded] [--epochs N]
        [--float-epochs F] [--batch-size B] [--lr LR] [--out DIR] [--resume CKPT]
        [--init CKPT] [--seed 0] [--voc-root PATH] [--workers W] [--head-form dw3x3]
        [--warmup-epochs E] [--ema DECAY] [--eval-every K]

Schedule (CoDeNet trains float first, then fine-tunes the quantised net): ``--float-epochs F``
float epochs, then ``--epochs N`` W4A8 epochs started from the float weights (activation scales
initialised from runtime statistics by Brevitas). ``--float`` trains the float model only
(``N`` epochs). ``--init CKPT`` warm-starts from any detector checkpoint: every tensor whose name
and shape match is loaded, the rest keep their fresh initialisation (a ``dw3x3`` refine block that
the checkpoint lacks starts as an identity, so the warm-started network computes the
checkpoint's function, see :func:`identity_init_refine`). Adam, per-iteration schedule per phase:
linear warmup over ``--warmup-epochs`` (from 10% of ``lr``), then cosine decay to 2% of ``lr``.
``--ema D``: exponential moving average of the float weights and BN statistics with decay
``D * (1 - exp(-updates / R))`` (the ramp of YOLOv5's ``ModelEMA``; ``R`` = ``--ema-ramp``,
default 2000 iterations); the float phase ends on the EMA weights (``float.pt``, the W4A8 start).
``--qat-ema D`` does the same in the W4A8 phase (learned activation scales included), which then
ends on, and saves as ``final.pt``, the EMA weights. CenterNet focal loss on the heatmap + L1 on size
(weight 0.1) and offset (weight 1) at object centres (Zhou et al., "Objects as Points", 2019).
``--eval-every K``: VOC6 mAP50 on ``val`` (the EMA weights when EMA is on) every K epochs and at
the end of each phase, logged as ``val_map50``. ``--repeat-factor T``: class-balanced sampling by
LVIS repeat factors (:func:`repeat_factors`); each epoch draws as many images as the split has,
with replacement, rare-class images more often.

Writes to ``--out`` (atomically): ``last.pt`` after every epoch (resumable with ``--resume``; it
carries the optimizer, schedule and EMA state; ``--restart-ema`` drops that EMA state and starts
the average afresh from the resumed weights), ``float.pt`` at the end of the float phase,
``final.pt`` at the end, ``train_log.json``; ``train.log`` gets one JSON line per epoch.
CPU by default (``torch.set_num_threads``), CUDA when available; torch DDP when started by
``torchrun`` (``WORLD_SIZE`` > 1: one process per GPU, gradients all-reduced, data sharded with
``DistributedSampler``; rank 0 writes files).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.centernet import focal_loss, reg_l1_loss
from models.data import write_bytes_atomic
from models.detector import (CONFIGS, DECODER_FORMS, HEAD_FORMS, NUM_CLASSES, CheckpointError,
                             build_detector,
                             count_macs, load_checkpoint, read_checkpoint, save_checkpoint,
                             split_heads)

WH_WEIGHT, REG_WEIGHT = 0.1, 1.0


# CenterNet targets and losses live in models/centernet.py (Zhou et al. 2019)


def detection_loss(out: torch.Tensor, tgt: dict) -> tuple[torch.Tensor, dict]:
    """Total CenterNet loss of a head output ``[N, 24, H, W]``: focal loss on the heatmap +
    0.1 * L1 on the size + 1 * L1 on the offset (CenterNet's weights); ``tgt`` holds the batched
    ``models.centernet.encode_targets`` tensors. Returns (loss, float parts)."""
    heat, wh, reg = split_heads(out)
    lh = focal_loss(heat.float(), tgt["heatmap"])
    lw = reg_l1_loss(wh.float(), tgt["index"], tgt["mask"], tgt["wh"])
    lr = reg_l1_loss(reg.float(), tgt["index"], tgt["mask"], tgt["reg"])
    total = lh + WH_WEIGHT * lw + REG_WEIGHT * lr
    return total, {"heat": lh.item(), "wh": lw.item(), "reg": lr.item()}


# -- training ------------------------------------------------------------------------------------

def _dist_info():
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return ws, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def transfer_float_weights(qmodel, fmodel) -> None:
    """Copy a float detector's weights/BN statistics into the same-topology quantised one.

    Raises:
        CheckpointError: a float tensor has no counterpart (different topology).
    """
    res = qmodel.load_state_dict(fmodel.state_dict(), strict=False)
    if res.unexpected_keys:
        raise CheckpointError(f"float weights do not fit the quantised model: "
                              f"unexpected {res.unexpected_keys[:5]}")
    bad = [k for k in res.missing_keys if "quant" not in k]
    if bad:
        raise CheckpointError(f"quantised model tensors missing in the float weights: {bad[:5]}")


class ModelEMA:
    """Exponential moving average of a model's floating-point state (parameters and BN running
    statistics): ``ema = d * ema + (1 - d) * model`` after every optimizer step, with
    ``d = decay * (1 - exp(-updates / ramp))`` so early updates are not dominated by the start
    weights (YOLOv5 ``utils/torch_utils.py: ModelEMA``). Integer buffers are copied. A tensor that
    enters the model's state later (a Brevitas ``ParameterFromRuntimeStatsScaling`` scale is left
    out of ``state_dict`` until its first training step) starts from its first value."""

    def __init__(self, model: torch.nn.Module, decay: float, ramp: float = 2000.0, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.ramp, self.updates = decay, ramp, int(updates)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One EMA step towards ``model``'s current state."""
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.ramp))
        for k, v in model.state_dict().items():
            e = self.state.get(k)
            if e is None:  # a Brevitas activation scale enters the state after its first step
                self.state[k] = v.detach().clone()
            elif e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                e.copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Load the averaged state into ``model`` (same topology)."""
        model.load_state_dict(self.state)


def repeat_factors(labels_per_image, threshold: float, num_classes: int = 20,
                   classes=None) -> np.ndarray:
    """Per-image sampling weights of repeat factor sampling (Gupta et al., "LVIS", CVPR 2019,
    section 4): for class ``c`` with ``f_c`` the fraction of images that contain it,
    ``r_c = max(1, sqrt(threshold / f_c))``; an image's factor is the largest ``r_c`` of the classes
    in it (1 for an image without objects). ``threshold`` 0 gives all ones.

    Args:
        labels_per_image: one int array of class indices (``[K]``, any K) per image.
        threshold: ``t`` in (0, 1]: classes in fewer than this fraction of images are repeated.
        classes: class indices that may be repeated (default all); the others count as
            ``r_c = 1``, so that a class the model is not judged on (a bottle beside a dog in
            VOC6 training) does not pull its images up.
    Returns:
        float64 ``[N]`` weights (>= 1), for ``torch.utils.data.WeightedRandomSampler``.
    Raises:
        ValueError: ``threshold`` outside [0, 1], or no images.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"repeat-factor threshold is a fraction in [0, 1], got {threshold}")
    n = len(labels_per_image)
    if n == 0:
        raise ValueError("repeat factors of an empty split")
    present = [np.unique(np.asarray(lab, np.int64)) for lab in labels_per_image]
    if threshold == 0.0:
        return np.ones(n)
    freq = np.bincount(np.concatenate(present + [np.zeros(0, np.int64)]),
                       minlength=num_classes)[:num_classes] / n
    r_c = np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-12)))
    if classes is not None:
        keep = np.zeros(num_classes, bool)
        keep[list(classes)] = True
        r_c[~keep] = 1.0
    return np.array([r_c[p].max() if len(p) else 1.0 for p in present])


def lr_lambda(total: int, warmup: int):
    """Learning-rate factor at iteration ``it`` of a ``total``-iteration phase: linear warmup
    from 0.1 to 1 over ``warmup`` iterations, then cosine decay from 1 to 0.02 over the rest."""
    def f(it):
        if it < warmup:
            return 0.1 + 0.9 * it / warmup
        t = min(it - warmup, total - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * t)) * 0.98 + 0.02
    return f


def val_map50(model, val_ds, batch_size: int = 64) -> float:
    """VOC6 mAP50 (0..1) of ``model`` on a val ``VOCDetection`` (``models.evaluate``'s metric);
    restores the model's train/eval mode."""
    from models.centernet import evaluate_ap50
    from models.evaluate import run_detection

    was = model.training
    try:
        res = evaluate_ap50(*run_detection(model, val_ds, batch_size, progress=False))
    finally:
        model.train(was)
    return res["voc6_map50"]


def run_phase(model, loader, sampler, epochs, lr, device, log, phase, out_dir, args, rank,
              start_epoch=0, opt_state=None, sched_state=None, extra_meta=None,
              iters_per_epoch=None, ema_decay=0.0, ema_state=None, val_ds=None, eval_every=0,
              ema_ramp=2000.0):
    """Train ``model`` for ``epochs`` epochs of ``iters_per_epoch`` iterations (default: the whole
    loader) with Adam, linear warmup (``args.warmup_epochs``) and per-iteration cosine decay
    (down to 2% of ``lr``); with ``ema_decay`` > 0 keep a :class:`ModelEMA` and return the
    model holding the EMA weights (``ema_ramp``: the decay's ramp in iterations, see
    :class:`ModelEMA`). ``val_ds``/``eval_every``: log ``val_map50`` every
    ``eval_every`` epochs and at the last epoch."""
    import itertools

    from tqdm import tqdm

    iters = min(len(loader), iters_per_epoch or len(loader))

    net = model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = max(1, epochs * iters)
    warmup = min(total - 1, int(round(getattr(args, "warmup_epochs", 0.0) * iters)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, warmup))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    if sched_state is not None:
        sched.load_state_dict(sched_state)
    ema = None
    if ema_decay > 0:
        ema = ModelEMA(model, ema_decay, ramp=ema_ramp)
        if ema_state is not None:
            ema.state = {k: v.to(device) for k, v in ema_state["state"].items()}
            ema.updates = ema_state["updates"]
    eval_model = None
    for epoch in range(start_epoch, epochs):
        model.train()
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        t0, sums, n = time.time(), {}, 0
        bar = tqdm(itertools.islice(loader, iters), total=iters, desc=f"{phase} {epoch + 1}/{epochs}",
                   disable=rank != 0,
                   mininterval=10, file=sys.stdout)
        for x, tgt in bar:
            x = x.to(device, non_blocking=True)
            tgt = {k: v.to(device, non_blocking=True) for k, v in tgt.items()}
            loss, parts = detection_loss(net(x), tgt)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{phase} epoch {epoch + 1}: non-finite loss {parts}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            n += 1
            for k, v in dict(parts, loss=loss.item()).items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        rec = {"phase": phase, "epoch": epoch + 1, "seconds": round(time.time() - t0, 1),
               **{k: round(v / max(n, 1), 4) for k, v in sums.items()}}
        if rank == 0 and val_ds is not None and eval_every and \
                ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            if ema is not None:
                if eval_model is None:
                    import copy
                    eval_model = copy.deepcopy(model)
                ema.copy_to(eval_model)
            t1 = time.time()
            rec["val_map50"] = round(100 * val_map50(eval_model or model, val_ds), 2)
            rec["eval_seconds"] = round(time.time() - t1, 1)
        log.append(rec)
        if rank == 0:
            print(json.dumps(rec), flush=True)
            with open(out_dir / "train.log", "a") as f:
                f.write(json.dumps(rec) + "\n")
            meta = {"phase": phase, "epoch": epoch + 1, "epochs": epochs,
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "args": vars(args), "log": log, **(extra_meta or {})}
            if ema is not None:
                meta["ema"] = {"state": ema.state, "updates": ema.updates}
            save_checkpoint(out_dir / "last.pt", model, meta)
            write_bytes_atomic(out_dir / "train_log.json", json.dumps(log, indent=1).encode())
    if ema is not None:
        ema.copy_to(model)
    return model


def init_matching(model, path) -> tuple[list, list]:
    """Load into ``model`` every tensor of checkpoint ``path`` whose name and shape match. From
    a config with another input size (``small`` into ``small256``), the box-size rows of the
    head (channels 20, 21, in output pixels) are scaled by the input-size ratio.

    Returns:
        ``(loaded names, names of ``model`` left as initialised)``.

    Raises:
        CheckpointError: unreadable checkpoint, or no tensor matches (another config).
    """
    blob = read_checkpoint(path)
    sd = blob["state_dict"]
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not take:
        raise CheckpointError(f"--init {path}: no tensor matches the {model.config_name} model")
    src = CONFIGS.get(blob.get("config"))
    if src is not None and src.input_size != model.cfg.input_size and "head.weight" in take:
        # box sizes are regressed in output pixels (linear head channels 20, 21): a larger
        # input makes every object proportionally larger, so scale those rows to match
        ratio = model.cfg.input_size / src.input_size
        for name in ("head.weight", "head.bias"):
            if name in take:
                take[name] = take[name].clone()
                take[name][NUM_CLASSES:NUM_CLASSES + 2] *= ratio
    model.load_state_dict(take, strict=False)
    return sorted(take), sorted(k for k in own if k not in take)


@torch.no_grad()
def identity_init_refine(model, loader, batches: int = 4) -> None:
    """Make a ``head_form="dw3x3"`` model's refine block compute (almost) the identity on its
    input's distribution: depthwise kernel = centre tap 1, BN running mean/var = the per-channel
    mean/variance of the decoder output over ``batches`` training batches (eval-mode network),
    BN weight = std, bias = mean. BN then maps x to x both in eval mode and (up to the batch
    statistics' spread) in train mode, and the ReLU after it sees non-negative inputs, so a
    network warm-started from an ``upsampled`` checkpoint starts from that checkpoint's
    function."""
    conv, bn = model.refine[0], model.refine[1]
    was = model.training
    model.eval()
    feats = []
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        feats.append(model.decoder(model.stages(model.pool(model.stem(model.inp(x))))))
    model.train(was)
    f = torch.cat(feats).transpose(0, 1).reshape(conv.out_channels, -1)
    mean, var = f.mean(1), f.var(1)
    conv.weight.zero_()
    conv.weight[:, 0, 1, 1] = 1.0
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.weight.copy_(torch.sqrt(var + bn.eps))
    bn.bias.copy_(mean)


def parse_args(argv=None, prog: str = "python -m models.train"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--float", action="store_true", help="train the float model only")
    p.add_argument("--decoder-form", default="rounded", choices=DECODER_FORMS)
    p.add_argument("--head-form", default="upsampled", choices=HEAD_FORMS,
                   help="dw3x3: depthwise 3x3 refine block at stride 4 before the 1x1 head")
    p.add_argument("--warmup-epochs", type=float, default=0.0,
                   help="linear lr warmup (epochs) at the start of each phase")
    p.add_argument("--ema", type=float, default=0.0,
                   help="EMA decay of the float weights (0: off; e.g. 0.999)")
    p.add_argument("--qat-ema", type=float, default=0.0,
                   help="EMA decay of the W4A8 weights and activation scales (0: off)")
    p.add_argument("--ema-ramp", type=float, default=2000.0,
                   help="iterations over which the EMA decay ramps up (1 - exp(-t/ramp))")
    p.add_argument("--eval-every", type=int, default=0,
                   help="val VOC6 mAP50 every K epochs (0: never)")
    p.add_argument("--epochs", type=int, default=3, help="W4A8 epochs (float epochs with --float)")
    p.add_argument("--float-epochs", type=int, default=0, help="float epochs before W4A8")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--qat-iters-per-epoch", type=int, default=None,
                   help="cap on W4A8 iterations per epoch (a short fine-tune on a CPU)")
    p.add_argument("--qat-lr", type=float, default=None, help="W4A8 phase lr (default lr/4 after "
                   "a float phase, else lr)")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--resume", default=None, help="last.pt of an interrupted run")
    p.add_argument("--restart-ema", action="store_true",
                   help="with --resume: start the EMA afresh from the resumed weights instead of "
                   "the checkpoint's average (for a run whose EMA still holds diverged early epochs)")
    p.add_argument("--init", default=None, help="checkpoint to warm-start from (tensors whose "
                   "names and shapes match)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voc-root", default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N train images")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--mosaic", type=float, default=0.0,
                   help="probability that a training sample is a 2x2 mosaic of four augmented "
                   "images at half size (0: off)")
    p.add_argument("--repeat-factor", type=float, default=0.0,
                   help="class-balanced sampling: LVIS repeat-factor threshold t (images of "
                   "VOC6 classes in fewer than a fraction t of the images are drawn more often; "
                   "0: off)")
    return p.parse_args(argv)


def main(argv=None, prog: str = "python -m models.train") -> int:
    args = parse_args(argv, prog)
    if args.restart_ema and not args.resume:
        print("error: --restart-ema needs --resume", file=sys.stderr)
        return 2
    from models.data import DataError
    from models.centernet import VOC6
    from models.voc import VOC_CLASSES, VOCDetection

    ws, rank, local_rank = _dist_info()
    if ws > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = CONFIGS[args.config]
    try:
        ds = VOCDetection(args.voc_root, "train", cfg.input_size, train=True,
                          skip_bad=args.skip_bad, limit=args.limit, progress=rank == 0,
                          mosaic=args.mosaic)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ds.skipped and rank == 0:
        print(f"skipped {ds.skipped} bad images", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    sampler = (torch.utils.data.distributed.DistributedSampler(ds, seed=args.seed)
               if ws > 1 else None)
    if args.repeat_factor:
        if ws > 1:
            print("error: --repeat-factor runs in one process only (not under torchrun)",
                  file=sys.stderr)
            return 2
        try:
            weights = repeat_factors([a.labels for a in ds.annos], args.repeat_factor,
                                     ds.num_classes, [VOC_CLASSES.index(c) for c in VOC6])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(ds), replacement=True,
                                                         generator=gen)
        if rank == 0:
            print(f"repeat factors (t={args.repeat_factor}): {int((weights > 1).sum())} of "
                  f"{len(ds)} images repeated, max {weights.max():.2f}", flush=True)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=args.workers, drop_last=True, generator=gen,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)

    log, phases = [], []
    if args.float:
        phases.append(("float", args.epochs, args.lr))
    else:
        if args.float_epochs > 0:
            phases.append(("float", args.float_epochs, args.lr))
        qlr = args.qat_lr or (args.lr / 4 if (args.float_epochs or args.init) else args.lr)
        phases.append(("w4a8", args.epochs, qlr))

    val_ds = None
    if args.eval_every and rank == 0:
        try:
            val_ds = VOCDetection(args.voc_root, "val", cfg.input_size, train=False,
                                  skip_bad=True, limit=args.limit, progress=False)
        except DataError as e:
            print(f"error: --eval-every needs the val split: {e}", file=sys.stderr)
            return 2
    try:
        resume = read_checkpoint(args.resume) if args.resume else None
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        m = build_detector(args.config, quant=False, decoder_form=args.decoder_form,
                           head_form=args.head_form)
        print(f"config {args.config}: {count_macs(m) / 1e6:.2f} M MACs/frame, "
              f"{sum(p.numel() for p in m.parameters()) / 1e3:.1f} k parameters, "
              f"{len(ds)} train images, {len(loader)} iterations/epoch, phases {phases}",
              flush=True)
    model = None
    if args.init and resume is None:
        model = build_detector(args.config, quant=False, decoder_form=args.decoder_form,
                               head_form=args.head_form)
        try:
            loaded, fresh = init_matching(model, args.init)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.head_form == "dw3x3" and any(k.startswith("refine.") for k in fresh):
            identity_init_refine(model, loader)
        if rank == 0:
            print(f"init from {args.init}: {len(loaded)} tensors loaded, "
                  f"{len(fresh)} fresh: {fresh}", flush=True)
    for i, (phase, epochs, lr) in enumerate(phases):
        quant = phase == "w4a8"
        start, opt_state, sched_state, ema_state = 0, None, None, None
        if resume is not None:
            done = [p for p, _, _ in phases].index(resume["meta"]["phase"])
            if i < done:
                continue
            if i == done:
                model, meta = load_checkpoint(args.resume)
                start = meta["epoch"]
                opt_state, sched_state = meta["optimizer"], meta["scheduler"]
                ema_state = None if args.restart_ema else meta.get("ema")
                log = meta.get("log", [])
        if start == 0 and (model is None or model.quant != quant):
            new = build_detector(args.config, quant=quant, decoder_form=args.decoder_form,
                                 head_form=args.head_form)
            if model is not None:
                transfer_float_weights(new, model)
            model = new
        model.to(device)
        model = run_phase(model, loader, sampler, epochs, lr, device, log, phase, out_dir, args,
                          rank, start, opt_state, sched_state,
                          iters_per_epoch=args.qat_iters_per_epoch if quant else None,
                          ema_decay=args.qat_ema if quant else args.ema, ema_state=ema_state,
                          val_ds=val_ds, eval_every=args.eval_every, ema_ramp=args.ema_ramp)
        if rank == 0 and phase == "float" and not args.float:
            save_checkpoint(out_dir / "float.pt", model.cpu(), {"phase": phase, "epoch": epochs,
                                                                "args": vars(args), "log": log})
            model.to(device)
    if rank == 0:
        save_checkpoint(out_dir / "final.pt", model.cpu(),
                        {"phase": phases[-1][0], "epoch": phases[-1][1], "args": vars(args),
                         "log": log})
        print(f"wrote {out_dir / 'final.pt'}", flush=True)
    if ws > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
