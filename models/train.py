"""Train a detector config on VOC with CenterNet targets and losses.

    python -m models.train --config small [--float] [--decoder-form rounded] [--epochs N]
        [--float-epochs F] [--batch-size B] [--lr LR] [--out DIR] [--resume CKPT]
        [--init CKPT] [--seed 0] [--voc-root PATH] [--workers W]

Schedule (CoDeNet trains float first, then fine-tunes the quantised net): ``--float-epochs F``
float epochs, then ``--epochs N`` W4A8 epochs started from the float weights (activation scales
initialised from runtime statistics by Brevitas). ``--float`` trains the float model only
(``N`` epochs). ``--init CKPT`` starts from a float checkpoint instead. Adam, cosine learning-rate
schedule per phase (per iteration), CenterNet focal loss on the heatmap + L1 on size (weight 0.1)
and offset (weight 1) at object centres (Zhou et al., "Objects as Points", 2019).

Writes to ``--out`` (atomically): ``last.pt`` after every epoch (resumable with ``--resume``),
``float.pt`` at the end of the float phase, ``final.pt`` at the end, ``train_log.json``.
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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.centernet import focal_loss, reg_l1_loss
from models.detector import (CONFIGS, DECODER_FORMS, CheckpointError, build_detector,
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


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


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


def run_phase(model, loader, sampler, epochs, lr, device, log, phase, out_dir, args, rank,
              start_epoch=0, opt_state=None, sched_state=None, extra_meta=None,
              iters_per_epoch=None):
    """Train ``model`` for ``epochs`` epochs of ``iters_per_epoch`` iterations (default: the whole
    loader) with Adam and a per-iteration cosine schedule (down to 2% of ``lr``)."""
    import itertools

    from tqdm import tqdm

    iters = min(len(loader), iters_per_epoch or len(loader))

    net = model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = max(1, epochs * iters)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, total) / total)) * 0.98 + 0.02)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    if sched_state is not None:
        sched.load_state_dict(sched_state)
    for epoch in range(start_epoch, epochs):
        model.train()
        if sampler is not None:
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
            n += 1
            for k, v in dict(parts, loss=loss.item()).items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        rec = {"phase": phase, "epoch": epoch + 1, "seconds": round(time.time() - t0, 1),
               **{k: round(v / max(n, 1), 4) for k, v in sums.items()}}
        log.append(rec)
        if rank == 0:
            print(json.dumps(rec), flush=True)
            meta = {"phase": phase, "epoch": epoch + 1, "epochs": epochs,
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "args": vars(args), "log": log, **(extra_meta or {})}
            save_checkpoint(out_dir / "last.pt", model, meta)
            _write_json_atomic(out_dir / "train_log.json", log)
    return model


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--float", action="store_true", help="train the float model only")
    p.add_argument("--decoder-form", default="rounded", choices=DECODER_FORMS)
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
    p.add_argument("--init", default=None, help="float checkpoint to start W4A8 from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voc-root", default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N train images")
    p.add_argument("--skip-bad", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from models.data import DataError
    from models.voc import VOCDetection

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
                          skip_bad=args.skip_bad, limit=args.limit, progress=rank == 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ds.skipped and rank == 0:
        print(f"skipped {ds.skipped} bad images", flush=True)
    sampler = (torch.utils.data.distributed.DistributedSampler(ds, seed=args.seed)
               if ws > 1 else None)
    gen = torch.Generator().manual_seed(args.seed)
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

    resume = read_checkpoint(args.resume) if args.resume else None
    if rank == 0:
        m = build_detector(args.config, quant=False, decoder_form=args.decoder_form)
        print(f"config {args.config}: {count_macs(m) / 1e6:.2f} M MACs/frame, "
              f"{sum(p.numel() for p in m.parameters()) / 1e3:.1f} k parameters, "
              f"{len(ds)} train images, {len(loader)} iterations/epoch, phases {phases}",
              flush=True)
    model = None
    if args.init:
        model, meta = load_checkpoint(args.init, expect_config=args.config, expect_quant=False,
                                      expect_decoder_form=args.decoder_form)
    for i, (phase, epochs, lr) in enumerate(phases):
        quant = phase == "w4a8"
        start, opt_state, sched_state = 0, None, None
        if resume is not None:
            done = [p for p, _, _ in phases].index(resume["meta"]["phase"])
            if i < done:
                continue
            if i == done:
                model, meta = load_checkpoint(args.resume)
                start = meta["epoch"]
                opt_state, sched_state = meta["optimizer"], meta["scheduler"]
                log = meta.get("log", [])
        if start == 0 and (model is None or model.quant != quant):
            new = build_detector(args.config, quant=quant, decoder_form=args.decoder_form)
            if model is not None:
                transfer_float_weights(new, model)
            model = new
        model.to(device)
        model = run_phase(model, loader, sampler, epochs, lr, device, log, phase, out_dir, args,
                          rank, start, opt_state, sched_state,
                          iters_per_epoch=args.qat_iters_per_epoch if quant else None)
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
