"""CoDeNet-style detector family: ShuffleNetV2 backbone, deformable decoder, CenterNet heads.

Built only from the graph forms of docs/detector_contract.md section 1, so that the QONNX export
of every config lowers to hardware layers::

    input   [N, 3, S, S] raw pixels 0..255 (float)
    inp     QuantIdentity uint8, constant scale 1.0 (exact on pixels)
    stem    QuantConv2d 3->C0 (8-bit weights), BN, QuantReLU; stride 2 + MaxPool2d(3, 2, 1)
            ("codenet256", "codenet512") or one stride-4 conv k5 ("-s4" configs, "small")
    stages  three ShuffleNetV2 stages (output strides 8, 16, 32): one two-branch stride-2 unit
            then split/concat/shuffle stride-1 units (Ma et al., ECCV'18, fig. 3 c, d)
    decoder three blocks {1x1 conv, BN, ReLU -> deformable depthwise 3x3, BN, ReLU ->
            nearest 2x upsample} (CoDeNet, FPGA'21, fig. 2), back to output stride 4
    refine  (``head_form="dw3x3"`` only) depthwise 3x3 conv, BN, QuantReLU at output stride 4
    head    one QuantConv2d(D -> 24, k1, bias) -> QuantIdentity int8 with per-channel scale:
            channels 0..19 heatmap logits (VOC classes), 20..21 box size (w, h), 22..23 centre
            offset (x, y), all in output-grid units (CenterNet, Zhou et al. 2019)

Quantisation (``quant=True``, CoDeNet's W4A8): weights 4-bit narrow-range per output channel
(``Int4WeightPerChannelFloat``, first conv 8-bit), activations 8-bit per tensor (uint8 after
ReLU, int8 where no ReLU follows, e.g. the depthwise conv of a ShuffleNetV2 branch).
``quant=False`` builds the same topology from plain torch layers.

Input normalisation: the stem conv takes raw pixels and is followed by BatchNorm, which absorbs
any per-channel affine normalisation of its input (``(x/255 - mean)/std`` scales and shifts the
stem's pre-BN output per channel), so the network is trained on raw pixels directly and the
graph needs no normalisation op (the ``models/slice.py`` convention; the border pads with black,
which training sees too).

Concat inputs: each ShuffleNetV2 unit owns one output activation quantizer (``out_act``, a
``QuantReLU``) applied to both concat inputs: the last conv of the branch(es) and, in a stride-1
unit, the passthrough half (already unsigned, so the ReLU is a no-op there and the quantizer
re-quantises it; it lowers to a ``Requant`` layer).

Head forms (``head_form``): ``"upsampled"`` (default; the form of every checkpoint written
before head forms existed): the 1x1 head reads the last nearest 2x upsample directly, so every
2x2 block of the stride-4 output is equal and boxes fall on a stride-8 grid. ``"dw3x3"``: a
depthwise 3x3 conv (4-bit weights) + BN + uint8 QuantReLU after the last upsample, so the head
output differs pixel by pixel at stride 4 (it lowers to a sliding window + VVAU + Requant like the
backbone's depthwise convs). The refine block adds ``9 * D`` weights and ``(S/4)^2 * 9 * D`` MACs
(small: 432 weights, 0.44 M MACs).

Decoder forms (``decoder_form``): ``"rounded"`` (default, the docs/contracts.md hardware form: one
integer offset in [0, 7] per pixel from a 3-bit unsigned ``QuantReLU`` with scale 1.0, then
``DeformSample`` and a grouped 1x1 conv over the 9 taps), ``"plain"`` (regular depthwise 3x3),
and the ablation forms ``"full"``, ``"depthwise"``, ``"bounded"``, ``"square"`` from
``models/deform_family.py`` (software only; the compiler lowers "rounded" and "plain").
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from brevitas.core.scaling import ScalingPerOutputType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat

from models.deform import DeformSample
from models.slice import Int4WeightPerChannelFloat, OffsetQuant, PixelQuant, MAX_OFFSET

NUM_CLASSES = 20
HEAD_CHANNELS = NUM_CLASSES + 4  # heat(20) | wh(2) | reg(2)
OUTPUT_STRIDE = 4
DECODER_FORMS = ("plain", "full", "depthwise", "bounded", "square", "rounded")
HW_DECODER_FORMS = ("plain", "rounded")
HEAD_FORMS = ("upsampled", "dw3x3")
HEAT_PRIOR_BIAS = -2.19  # CenterNet: sigmoid(-2.19) = 0.1 initial heat (focal-loss prior)


class Int8ActPerChannelFloat(Int8ActPerTensorFloat):
    """int8 activations with one learned float scale per channel (for the merged head output)."""
    scaling_per_output_type = ScalingPerOutputType.CHANNEL
    scaling_stats_permute_dims = (1, 0, 2, 3)


@dataclass(frozen=True)
class DetectorConfig:
    """Topology of one detector config.

    input_size: S (square input, pixels). stem_stride: 2 (conv s2 + max-pool s2) or 4 (one conv
    k5 s4). stem_channels: C0. stage_channels / stage_repeats: ShuffleNetV2 stages 2..4 (units per
    stage, the first one stride 2). decoder_channels: width of each of the three decoder blocks.
    """
    input_size: int
    stem_stride: int
    stem_channels: int
    stage_channels: tuple
    stage_repeats: tuple
    decoder_channels: tuple


_W10 = (116, 232, 464)  # ShuffleNetV2 1.0x (Ma et al., table 5)
_W05 = (48, 96, 192)    # ShuffleNetV2 0.5x
_REP = (4, 8, 4)

CONFIGS: dict[str, DetectorConfig] = {
    "codenet256-s4": DetectorConfig(256, 4, 24, _W10, _REP, (256, 128, 64)),
    "codenet256-s4-0.5x": DetectorConfig(256, 4, 24, _W05, _REP, (128, 64, 64)),
    "codenet256": DetectorConfig(256, 2, 24, _W10, _REP, (256, 128, 64)),
    "codenet256-0.5x": DetectorConfig(256, 2, 24, _W05, _REP, (128, 64, 64)),
    "codenet512": DetectorConfig(512, 2, 24, _W10, _REP, (256, 128, 64)),
    "codenet512-0.5x": DetectorConfig(512, 2, 24, _W05, _REP, (128, 64, 64)),
    # trains on a 2-core CPU in about an hour; cheap whole-frame RTL simulation
    "small": DetectorConfig(128, 4, 24, _W05, (2, 4, 2), (64, 64, 48)),
    # the small topology at 256x256 (4x the MACs): every weight of a small checkpoint fits it,
    # so it fine-tunes from one (``train --init``) instead of training from scratch
    "small256": DetectorConfig(256, 4, 24, _W05, (2, 4, 2), (64, 64, 48)),
}


# -- layer factories: one place decides quantised vs float ---------------------------------------

def _conv(quant: bool, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
          bias: bool = False, weight_bits: int = 4) -> nn.Module:
    pad = k // 2
    if not quant:
        return nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)
    wq = Int8WeightPerChannelFloat if weight_bits == 8 else Int4WeightPerChannelFloat
    return QuantConv2d(cin, cout, k, stride, pad, groups=groups, bias=bias, weight_quant=wq)


def _relu(quant: bool) -> nn.Module:
    return QuantReLU(act_quant=Uint8ActPerTensorFloat) if quant else nn.ReLU()


def _ident(quant: bool) -> nn.Module:
    return QuantIdentity(act_quant=Int8ActPerTensorFloat) if quant else nn.Identity()


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm2d -> QuantReLU uint8 (``act="relu"``) or QuantIdentity int8
    (``act="linear"``) or a given (shared) activation module. [N, cin, H, W] -> [N, cout, H/s, W/s]."""

    def __init__(self, quant, cin, cout, k, stride=1, groups=1, act="relu", weight_bits=4):
        if isinstance(act, nn.Module):
            a = act
        else:
            a = _relu(quant) if act == "relu" else _ident(quant)
        super().__init__(_conv(quant, cin, cout, k, stride, groups, weight_bits=weight_bits),
                         nn.BatchNorm2d(cout), a)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """ShuffleNet channel shuffle ``[N, C, H, W]``: out channel ``k*g + j`` = in ``j*(C/g) + k``
    (the view/transpose/reshape form of the contract)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. Stride 1 (``cin == cout``): split in halves, branch on the second
    (1x1, dw3x3, 1x1), concat with the first, shuffle. Stride 2: two branches (dw3x3 s2, 1x1 |
    1x1, dw3x3 s2, 1x1) on the whole input, concat, shuffle. [N, cin, H, W] -> [N, cout, H/s, W/s].
    Both concat inputs go through the unit's one ``out_act`` quantizer (contract: concat)."""

    def __init__(self, quant: bool, cin: int, cout: int, stride: int):
        super().__init__()
        if stride not in (1, 2) or cout % 2:
            raise ValueError(f"ShuffleUnit: stride must be 1 or 2 and cout even, got {stride}, {cout}")
        if stride == 1 and cin != cout:
            raise ValueError(f"ShuffleUnit: stride-1 unit needs cin == cout, got {cin}, {cout}")
        self.stride = stride
        half = cout // 2
        self.out_act = _relu(quant)
        bin_ = cin // 2 if stride == 1 else cin
        self.branch2 = nn.Sequential(
            ConvBNAct(quant, bin_, half, 1),
            ConvBNAct(quant, half, half, 3, stride, groups=half, act="linear"),
            ConvBNAct(quant, half, half, 1, act=self.out_act))
        if stride == 2:
            self.branch1 = nn.Sequential(
                ConvBNAct(quant, cin, cin, 3, 2, groups=cin, act="linear"),
                ConvBNAct(quant, cin, half, 1, act=self.out_act))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([self.out_act(x1), self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return channel_shuffle(out, 2)


class RoundedDeform3x3(nn.Module):
    """Hardware-default deformable depthwise 3x3 (docs/contracts.md; models/slice.py pattern), before BN:
    offset conv C->1 k3 -> 3-bit unsigned ReLU (integer offsets 0..7) -> ``DeformSample`` ->
    grouped 1x1 conv 9C->C (groups=C, no bias). [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channels: int, quant: bool = True, max_offset: int = MAX_OFFSET):
        super().__init__()
        self.off_conv = _conv(quant, channels, 1, 3, bias=True)
        self.off_act = QuantReLU(act_quant=OffsetQuant) if quant else nn.ReLU()
        self.deform = DeformSample(max_offset)
        self.dconv = _conv(quant, 9 * channels, channels, 1, groups=channels)
        with torch.no_grad():  # start as a plain 3x3 (offset 1 everywhere)
            self.off_conv.weight.mul_(0.01)
            self.off_conv.bias.fill_(1.0)

    def offsets(self, x):
        """Offsets ``[N, 1, H, W]`` (integer-valued float in [0, max_offset] when quantised)."""
        return self.off_act(self.off_conv(x))

    def forward(self, x):
        return self.dconv(self.deform(x, self.offsets(x)))


def _deform_block(form: str, channels: int, quant: bool) -> nn.Module:
    if form == "plain":
        return _conv(quant, channels, channels, 3, groups=channels)
    if form == "rounded":
        return RoundedDeform3x3(channels, quant)
    try:
        from models.deform_family import DeformConv3x3
    except ImportError as e:
        raise ImportError(f"decoder_form {form!r} needs models/deform_family.py "
                          f"(DeformConv3x3), which could not be imported: {e}") from e
    return DeformConv3x3(channels, form, max_offset=MAX_OFFSET, quant=quant, weight_bits=4)


class DecoderBlock(nn.Module):
    """1x1 conv, BN, ReLU -> deformable (or plain) depthwise 3x3, BN, ReLU -> nearest 2x
    upsample. [N, cin, H, W] -> [N, cout, 2H, 2W]."""

    def __init__(self, quant: bool, cin: int, cout: int, form: str):
        super().__init__()
        self.pw = ConvBNAct(quant, cin, cout, 1)
        self.dcn = _deform_block(form, cout, quant)
        self.bn = nn.BatchNorm2d(cout)
        self.act = _relu(quant)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.up(self.act(self.bn(self.dcn(self.pw(x)))))


class Detector(nn.Module):
    """CoDeNet-style detector (module docstring). ``forward(x)``: raw pixels float
    ``[N, 3, S, S]`` (0..255) -> dequantised head output ``[N, 24, S/4, S/4]``."""

    def __init__(self, config: str, quant: bool = True, decoder_form: str = "rounded",
                 head_form: str = "upsampled"):
        super().__init__()
        if head_form not in HEAD_FORMS:
            raise ValueError(f"unknown head_form {head_form!r}; known: {HEAD_FORMS}")
        if config not in CONFIGS:
            raise ValueError(f"unknown detector config {config!r}; known: {sorted(CONFIGS)}")
        if decoder_form not in DECODER_FORMS:
            raise ValueError(f"unknown decoder_form {decoder_form!r}; known: {DECODER_FORMS}")
        cfg = CONFIGS[config]
        self.config_name, self.cfg, self.quant, self.decoder_form = config, cfg, quant, decoder_form
        self.head_form = head_form
        self.inp = QuantIdentity(act_quant=PixelQuant) if quant else nn.Identity()
        if cfg.stem_stride == 4:
            self.stem = ConvBNAct(quant, 3, cfg.stem_channels, 5, 4, weight_bits=8)
            self.pool = nn.Identity()
        elif cfg.stem_stride == 2:
            self.stem = ConvBNAct(quant, 3, cfg.stem_channels, 3, 2, weight_bits=8)
            self.pool = nn.MaxPool2d(3, 2, 1)
        else:
            raise ValueError(f"config {config}: stem_stride must be 2 or 4, got {cfg.stem_stride}")
        stages, cin = [], cfg.stem_channels
        for cout, rep in zip(cfg.stage_channels, cfg.stage_repeats):
            units = [ShuffleUnit(quant, cin, cout, 2)]
            units += [ShuffleUnit(quant, cout, cout, 1) for _ in range(rep - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stages = nn.Sequential(*stages)
        dec = []
        for cout in cfg.decoder_channels:
            dec.append(DecoderBlock(quant, cin, cout, decoder_form))
            cin = cout
        self.decoder = nn.Sequential(*dec)
        # stride-4 refine block (no tensors in the "upsampled" form: old checkpoints still load)
        self.refine = (ConvBNAct(quant, cin, cin, 3, groups=cin) if head_form == "dw3x3"
                       else nn.Identity())
        self.head = _conv(quant, cin, HEAD_CHANNELS, 1, bias=True)
        self.out_q = (QuantIdentity(act_quant=Int8ActPerChannelFloat,
                                    per_channel_broadcastable_shape=(1, HEAD_CHANNELS, 1, 1))
                      if quant else nn.Identity())
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            nn.init.normal_(self.head.weight, std=0.01)
            self.head.bias.zero_()
            self.head.bias[:NUM_CLASSES].fill_(HEAT_PRIOR_BIAS)

    def forward(self, x):
        x = self.pool(self.stem(self.inp(x)))
        x = self.refine(self.decoder(self.stages(x)))
        return self.out_q(self.head(x))


def build_detector(config: str, quant: bool = True, decoder_form: str = "rounded",
                   head_form: str = "upsampled") -> Detector:
    """Build a detector of ``CONFIGS[config]`` (float or W4A8, decoder form, head form), freshly
    initialised (seed the global torch RNG first for reproducibility).

    Raises:
        ValueError: unknown config, decoder form or head form.
    """
    return Detector(config, quant=quant, decoder_form=decoder_form, head_form=head_form)


def split_heads(out: torch.Tensor):
    """Split the merged head output ``[N, 24, H, W]`` into ``(heat_logits [N, 20, H, W],
    wh [N, 2, H, W], reg [N, 2, H, W])`` (output-grid units)."""
    if out.dim() != 4 or out.shape[1] != HEAD_CHANNELS:
        raise ValueError(f"split_heads: expected [N, {HEAD_CHANNELS}, H, W], got {list(out.shape)}")
    return out[:, :NUM_CLASSES], out[:, NUM_CLASSES:NUM_CLASSES + 2], out[:, NUM_CLASSES + 2:]


def count_macs(model: nn.Module, input_size: int | None = None) -> int:
    """Multiply-accumulates of one frame: sum over convolutions of
    ``out_pixels * cout * (cin / groups) * k*k`` (the deformable sampling itself has none)."""
    size = input_size or model.cfg.input_size
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.full((1, 3, size, size), 128.0))
    finally:
        for h in hs:
            h.remove()
        model.train(was)
    return total[0]


# -- checkpoints ---------------------------------------------------------------------------------

class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated/corrupt, or of another config / decoder form."""


CKPT_FORMAT = "deflow-detector-v1"


def save_checkpoint(path, model: Detector, meta: dict | None = None) -> None:
    """Write ``model`` and ``meta`` to ``path`` atomically (temp file in the same folder +
    ``os.replace``).

    Stored: format tag, config name, quant, decoder_form, head_form, the state dict, and ``meta``
    (free dict: epoch, optimizer / scheduler state, metrics, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": CKPT_FORMAT, "config": model.config_name, "quant": bool(model.quant),
            "decoder_form": model.decoder_form, "head_form": model.head_form,
            "state_dict": model.state_dict(),
            "meta": dict(meta or {})}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def strip_checkpoint(src, dst) -> None:
    """Write the shippable form of a training checkpoint: ``src``'s model weights (the raw
    weights, not the EMA) with only ``phase``, ``epoch``, ``args`` and ``log`` of its meta (no
    optimizer, scheduler or EMA state: a ``last.pt`` of 2.7 MB becomes about 0.95 MB), atomically
    to ``dst``.

    Raises:
        CheckpointError: ``src`` unreadable or not a deflow detector checkpoint.
    """
    model, _ = load_checkpoint(src)
    meta = read_checkpoint(src).get("meta") or {}
    save_checkpoint(dst, model, {k: meta[k] for k in ("phase", "epoch", "args", "log") if k in meta})


def read_checkpoint(path) -> dict:
    """Load a checkpoint's raw dict (see :func:`save_checkpoint`) on the CPU.

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a deflow detector checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # zip/pickle errors of a truncated or corrupt file
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path} is not a deflow detector checkpoint ({CKPT_FORMAT})")
    return blob


def load_checkpoint(path, expect_config: str | None = None, expect_quant: bool | None = None,
                    expect_decoder_form: str | None = None, expect_head_form: str | None = None):
    """Rebuild the model stored at ``path``.

    Args:
        expect_config / expect_quant / expect_decoder_form / expect_head_form: if given, the
        checkpoint must match (a checkpoint without a ``head_form`` entry predates head forms
        and is ``"upsampled"``).

    Returns:
        ``(model in eval mode, meta dict)``; ``meta`` also carries ``config``, ``quant``,
        ``decoder_form``, ``head_form``.

    Raises:
        CheckpointError: missing/corrupt file, mismatched config/quant/form, or weights that do
        not fit the topology of the stored config.
    """
    blob = read_checkpoint(path)
    blob.setdefault("head_form", "upsampled")
    for key, want in (("config", expect_config), ("quant", expect_quant),
                      ("decoder_form", expect_decoder_form), ("head_form", expect_head_form)):
        if want is not None and blob[key] != want:
            raise CheckpointError(f"checkpoint {path} has {key}={blob[key]!r}, expected {want!r}")
    try:
        model = build_detector(blob["config"], quant=blob["quant"],
                               decoder_form=blob["decoder_form"], head_form=blob["head_form"])
        model.load_state_dict(blob["state_dict"])
    except (ValueError, RuntimeError, ImportError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild {blob['config']}/"
                              f"{blob['decoder_form']}/{blob['head_form']}: {e}") from e
    model.eval()
    meta = dict(blob["meta"])
    meta.update(config=blob["config"], quant=blob["quant"], decoder_form=blob["decoder_form"],
                head_form=blob["head_form"])
    return model, meta


def main(argv=None) -> int:
    """``python -m models.detector [CONFIG ...]``: MACs per frame and parameters of configs."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m models.detector", description=main.__doc__)
    p.add_argument("configs", nargs="*", default=sorted(CONFIGS))
    a = p.parse_args(argv)
    print("| config | input | MACs/frame (M) | parameters (k) |\n|---|---:|---:|---:|")
    for name in a.configs:
        m = build_detector(name, quant=False)
        print(f"| {name} | {m.cfg.input_size} | {count_macs(m) / 1e6:.2f} | "
              f"{sum(t.numel() for t in m.parameters()) / 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
