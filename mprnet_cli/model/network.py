"""MPRNet (Zamir et al., CVPR 2021), written from the architecture note.

Parameter names, shapes and registration order match the published
checkpoints, so their state dicts load as they are.

Two execution modes compute the same function:

* the *reference* mode runs the four stage-1 quarters and the two stage-2
  halves one after another, as the reference implementation does (kept for
  benchmarks and equality tests);
* the default *batched* mode runs the quarters as one batch of four and the
  halves as one batch of two. Channel attention pools per sample, so batching
  changes nothing numerically but gives the convolutions 4x / 2x more work per
  call, which is what CPUs and GPUs need to reach their peak.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mprnet_cli.model.config import MPRNetConfig

Features = list[Tensor]


class _FastPath:
    """Mixin: blocks may update fresh intermediate tensors in place on the fast path.

    Only when no gradient is recorded (inference, validation) and only on the fast
    path: the reference mode keeps the reference's out-of-place arithmetic. Every
    in-place target below is a tensor the block itself just produced, so no caller
    can observe the difference: in float32 the values are identical; under 16-bit
    autocast the supervised-attention images returned for stages 1 and 2 stay in 16
    bits instead of being promoted (the restored image, output 0, is unaffected).
    """

    inplace: bool = False

    def _in_place(self) -> bool:
        return self.inplace and not torch.is_grad_enabled()


def _add(a: Tensor, b: Tensor, in_place: bool) -> Tensor:
    return a.add_(b) if in_place else a + b


def conv(in_c: int, out_c: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_c, out_c, kernel_size, padding=kernel_size // 2, bias=bias)


class CALayer(_FastPath, nn.Module):
    """Channel attention: per-channel gates from the global mean."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            conv(channels, channels // reduction, 1, bias),
            nn.ReLU(inplace=True),
            conv(channels // reduction, channels, 1, bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        gate: Tensor = self.conv_du(x.mean(dim=(2, 3), keepdim=True))
        return x.mul_(gate) if self._in_place() else x * gate


class CAB(_FastPath, nn.Module):
    """Channel attention block: conv-act-conv, gated, plus the input."""

    def __init__(self, c: int, k: int, reduction: int, bias: bool, act: nn.Module) -> None:
        super().__init__()
        self.CA = CALayer(c, reduction, bias)  # registered first, as in the checkpoints
        self.body = nn.Sequential(conv(c, c, k, bias), act, conv(c, c, k, bias))

    def forward(self, x: Tensor) -> Tensor:
        res: Tensor = self.CA(self.body(x))  # body's output is fresh: CA may gate it in place
        return _add(res, x, self._in_place())


def _cabs(n: int, c: int, k: int, reduction: int, bias: bool, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(*(CAB(c, k, reduction, bias, act) for _ in range(n)))


class SAM(_FastPath, nn.Module):
    """Supervised attention module: predicts the stage image and gates features by it."""

    def __init__(self, c: int, out_c: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = conv(c, c, 1, bias)
        self.conv2 = conv(c, out_c, 1, bias)
        self.conv3 = conv(out_c, c, 1, bias)

    def forward(self, x: Tensor, x_img: Tensor) -> tuple[Tensor, Tensor]:
        ip = self._in_place()
        x1 = self.conv1(x)
        img = _add(self.conv2(x), x_img, ip)
        att = torch.sigmoid(self.conv3(img))
        return _add(x1.mul_(att) if ip else x1 * att, x, ip), img


class _Resize(nn.Module):
    """Bilinear resize by a fixed factor (parameter-free slot of a Sequential)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


class DownSample(nn.Module):
    def __init__(self, c: int, s: int) -> None:
        super().__init__()
        self.down = nn.Sequential(_Resize(0.5), nn.Conv2d(c, c + s, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down(x)
        return out


class UpSample(nn.Module):
    def __init__(self, c: int, s: int) -> None:
        super().__init__()
        self.up = nn.Sequential(_Resize(2.0), nn.Conv2d(c + s, c, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.up(x)
        return out


class SkipUpSample(_FastPath, UpSample):
    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        assert y is not None
        out: Tensor = self.up(x)
        return _add(out, y, self._in_place())


class Encoder(_FastPath, nn.Module):
    def __init__(self, cfg: MPRNetConfig, act: nn.Module, csff: bool) -> None:
        super().__init__()
        n, s, k, r, b = cfg.n_feat, cfg.scale_unetfeats, cfg.kernel_size, cfg.reduction, cfg.bias
        self.encoder_level1 = _cabs(2, n, k, r, b, act)
        self.encoder_level2 = _cabs(2, n + s, k, r, b, act)
        self.encoder_level3 = _cabs(2, n + 2 * s, k, r, b, act)
        self.down12 = DownSample(n, s)
        self.down23 = DownSample(n + s, s)
        self.csff = csff
        if csff:
            self.csff_enc1 = conv(n, n, 1, b)
            self.csff_enc2 = conv(n + s, n + s, 1, b)
            self.csff_enc3 = conv(n + 2 * s, n + 2 * s, 1, b)
            self.csff_dec1 = conv(n, n, 1, b)
            self.csff_dec2 = conv(n + s, n + s, 1, b)
            self.csff_dec3 = conv(n + 2 * s, n + 2 * s, 1, b)

    def forward(
        self, x: Tensor, encoder_outs: Features | None = None, decoder_outs: Features | None = None
    ) -> Features:
        fuse = encoder_outs is not None and decoder_outs is not None
        ip = self._in_place()
        enc1 = self.encoder_level1(x)
        if fuse:
            assert encoder_outs is not None and decoder_outs is not None
            enc1 = _add(
                _add(enc1, self.csff_enc1(encoder_outs[0]), ip), self.csff_dec1(decoder_outs[0]), ip
            )
        enc2 = self.encoder_level2(self.down12(enc1))
        if fuse:
            assert encoder_outs is not None and decoder_outs is not None
            enc2 = _add(
                _add(enc2, self.csff_enc2(encoder_outs[1]), ip), self.csff_dec2(decoder_outs[1]), ip
            )
        enc3 = self.encoder_level3(self.down23(enc2))
        if fuse:
            assert encoder_outs is not None and decoder_outs is not None
            enc3 = _add(
                _add(enc3, self.csff_enc3(encoder_outs[2]), ip), self.csff_dec3(decoder_outs[2]), ip
            )
        return [enc1, enc2, enc3]


class Decoder(nn.Module):
    def __init__(self, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__()
        n, s, k, r, b = cfg.n_feat, cfg.scale_unetfeats, cfg.kernel_size, cfg.reduction, cfg.bias
        self.decoder_level1 = _cabs(2, n, k, r, b, act)
        self.decoder_level2 = _cabs(2, n + s, k, r, b, act)
        self.decoder_level3 = _cabs(2, n + 2 * s, k, r, b, act)
        self.skip_attn1 = CAB(n, k, r, b, act)
        self.skip_attn2 = CAB(n + s, k, r, b, act)
        self.up21 = SkipUpSample(n, s)
        self.up32 = SkipUpSample(n + s, s)

    def forward(self, outs: Features) -> Features:
        enc1, enc2, enc3 = outs
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


class ORB(_FastPath, nn.Module):
    """Original-resolution block: CABs then a bias-free conv, plus the input."""

    def __init__(self, c: int, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__()
        k, r, b = cfg.kernel_size, cfg.reduction, cfg.bias
        self.body = nn.Sequential(
            *(CAB(c, k, r, b, act) for _ in range(cfg.num_cab)), conv(c, c, k, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        res: Tensor = self.body(x)
        return _add(res, x, self._in_place())


class ORSNet(_FastPath, nn.Module):
    def __init__(self, cfg: MPRNetConfig, act: nn.Module) -> None:
        super().__init__()
        n, s, o, b = cfg.n_feat, cfg.scale_unetfeats, cfg.scale_orsnetfeats, cfg.bias
        self.orb1 = ORB(n + o, cfg, act)
        self.orb2 = ORB(n + o, cfg, act)
        self.orb3 = ORB(n + o, cfg, act)
        self.up_enc1 = UpSample(n, s)
        self.up_dec1 = UpSample(n, s)
        self.up_enc2 = nn.Sequential(UpSample(n + s, s), UpSample(n, s))
        self.up_dec2 = nn.Sequential(UpSample(n + s, s), UpSample(n, s))
        self.conv_enc1 = conv(n, n + o, 1, b)
        self.conv_enc2 = conv(n, n + o, 1, b)
        self.conv_enc3 = conv(n, n + o, 1, b)
        self.conv_dec1 = conv(n, n + o, 1, b)
        self.conv_dec2 = conv(n, n + o, 1, b)
        self.conv_dec3 = conv(n, n + o, 1, b)

    def forward(self, x: Tensor, enc: Features, dec: Features) -> Tensor:
        ip = self._in_place()
        x = _add(_add(self.orb1(x), self.conv_enc1(enc[0]), ip), self.conv_dec1(dec[0]), ip)
        x = _add(
            _add(self.orb2(x), self.conv_enc2(self.up_enc1(enc[1])), ip),
            self.conv_dec2(self.up_dec1(dec[1])),
            ip,
        )
        return _add(
            _add(self.orb3(x), self.conv_enc3(self.up_enc2(enc[2])), ip),
            self.conv_dec3(self.up_dec2(dec[2])),
            ip,
        )


def _join(a: Tensor, b: Tensor, dim: int) -> Tensor:
    return torch.cat((a, b), dim)


def _halves(f: Tensor) -> tuple[Tensor, Tensor]:
    first, second = f.chunk(2, dim=0)
    return first, second


def _join_halves(f: Tensor) -> Tensor:
    """[top; bottom] stacked on the batch -> full-height features."""
    top, bottom = f.chunk(2, dim=0)
    return _join(top, bottom, 2)


class MPRNet(nn.Module):
    """The three-stage network. `forward` returns [restored, stage-2, stage-1] images.

    Inputs must have height and width divisible by 8 (the caller pads). `cut_input`
    (True, as published and trained) cuts the input into quarters for stage 1 and
    halves for stage 2; False runs both stages on it whole (no split lines).
    """

    def __init__(self, config: MPRNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or MPRNetConfig()
        self.config = cfg
        n, o, k, r, b = cfg.n_feat, cfg.scale_orsnetfeats, cfg.kernel_size, cfg.reduction, cfg.bias
        act = nn.PReLU()  # one slope shared by every block, as in the published weights
        self.shallow_feat1 = nn.Sequential(conv(cfg.in_c, n, k, b), CAB(n, k, r, b, act))
        self.shallow_feat2 = nn.Sequential(conv(cfg.in_c, n, k, b), CAB(n, k, r, b, act))
        self.shallow_feat3 = nn.Sequential(conv(cfg.in_c, n, k, b), CAB(n, k, r, b, act))
        self.stage1_encoder = Encoder(cfg, act, csff=False)
        self.stage1_decoder = Decoder(cfg, act)
        self.stage2_encoder = Encoder(cfg, act, csff=True)
        self.stage2_decoder = Decoder(cfg, act)
        self.stage3_orsnet = ORSNet(cfg, act)
        self.sam12 = SAM(n, cfg.out_c, b)
        self.sam23 = SAM(n, cfg.out_c, b)
        self.concat12 = conv(2 * n, n, k, b)
        self.concat23 = conv(2 * n, n + o, k, b)
        self.tail = conv(n + o, cfg.out_c, k, b)
        self.batched = True
        self.cut_input = True

    @property
    def batched(self) -> bool:
        """The fast path (batched quarters/halves, in-place updates without autograd) or the reference."""
        return self._batched

    @batched.setter
    def batched(self, value: bool) -> None:
        self._batched = value
        for module in self.modules():
            if isinstance(module, _FastPath):
                module.inplace = value

    def forward(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"MPRNet input must be a multiple of 8 in size, got {h}x{w}")
        if not self.cut_input:
            feat2, res2 = self._stages12_whole(x)
        elif self.batched:
            feat2, res2 = self._stages12_batched(x)
        else:
            feat2, res2 = self._stages12_reference(x)
        stage1_img, stage2_inputs = feat2[-1], feat2[:-1]
        x3_samfeats, stage2_img = self.sam23(res2[0], x)
        x3 = self.concat23(torch.cat((self.shallow_feat3(x), x3_samfeats), 1))
        x3 = self.stage3_orsnet(x3, stage2_inputs, res2)
        return [self.tail(x3) + x, stage2_img, stage1_img]

    def _stages12_whole(self, x: Tensor) -> tuple[Features, Features]:
        """Stages 1 and 2 on the whole input, uncut (`cut_input=False`): the same weights
        and operations without the quarter/half borders, which leave split lines
        (`--split-lines fix`; `splitlines` says why and what it costs)."""
        feat1 = self.stage1_encoder(self.shallow_feat1(x))
        res1 = self.stage1_decoder(feat1)
        sam1, stage1_img = self.sam12(res1[0], x)
        x2 = self.concat12(torch.cat((self.shallow_feat2(x), sam1), 1))
        feat2 = self.stage2_encoder(x2, feat1, res1)
        res2 = self.stage2_decoder(feat2)
        return [*feat2, stage1_img], res2

    def _stages12_reference(self, x: Tensor) -> tuple[Features, Features]:
        """Stages 1 and 2 quarter by quarter, half by half (the reference order)."""
        h, w = x.shape[-2:]
        top_img, bot_img = x[:, :, : h // 2], x[:, :, h // 2 :]
        quarters = (
            top_img[..., : w // 2],
            top_img[..., w // 2 :],
            bot_img[..., : w // 2],
            bot_img[..., w // 2 :],
        )
        lt, rt, lb, rb = (self.stage1_encoder(self.shallow_feat1(q)) for q in quarters)
        feat1_top = [_join(a, b, 3) for a, b in zip(lt, rt, strict=True)]
        feat1_bot = [_join(a, b, 3) for a, b in zip(lb, rb, strict=True)]
        res1_top = self.stage1_decoder(feat1_top)
        res1_bot = self.stage1_decoder(feat1_bot)
        sam_top, img1_top = self.sam12(res1_top[0], top_img)
        sam_bot, img1_bot = self.sam12(res1_bot[0], bot_img)
        stage1_img = _join(img1_top, img1_bot, 2)
        x2_top = self.concat12(torch.cat((self.shallow_feat2(top_img), sam_top), 1))
        x2_bot = self.concat12(torch.cat((self.shallow_feat2(bot_img), sam_bot), 1))
        feat2_top = self.stage2_encoder(x2_top, feat1_top, res1_top)
        feat2_bot = self.stage2_encoder(x2_bot, feat1_bot, res1_bot)
        feat2 = [_join(a, b, 2) for a, b in zip(feat2_top, feat2_bot, strict=True)]
        res2 = self.stage2_decoder(feat2)
        return [*feat2, stage1_img], res2

    def _stages12_batched(self, x: Tensor) -> tuple[Features, Features]:
        """Stages 1 and 2 with quarters as one batch of 4 and halves as one batch of 2."""
        h, w = x.shape[-2:]
        halves = torch.cat((x[:, :, : h // 2], x[:, :, h // 2 :]), 0)  # [top; bottom]
        quarters = torch.cat((halves[..., : w // 2], halves[..., w // 2 :]), 0)  # [lt; lb; rt; rb]
        feat1_q = self.stage1_encoder(self.shallow_feat1(quarters))
        # quarters were stacked column-major; rejoin left|right per half.
        feat1 = [_join(*_halves(f), 3) for f in feat1_q]
        res1 = self.stage1_decoder(feat1)
        sam1, img1 = self.sam12(res1[0], halves)
        stage1_img = _join_halves(img1)
        x2 = self.concat12(torch.cat((self.shallow_feat2(halves), sam1), 1))
        feat2 = [_join_halves(f) for f in self.stage2_encoder(x2, feat1, res1)]
        res2 = self.stage2_decoder(feat2)
        return [*feat2, stage1_img], res2
