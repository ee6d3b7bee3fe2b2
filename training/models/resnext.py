"""Thin sub-networks by vertical slicing: I-ResNeXt and IS-ResNeXt (Lee & Shin, 2018).

Both are pre-activation ResNeXt nets (App. B): a 3x3 conv to W channels, `blocks` (L)
bottleneck blocks split evenly over 3 scales of widths W, 2W, 4W (bottleneck width B
per branch, doubled per scale; C branches; the first block of scales 2 and 3 has a
stride-2 3x3 conv and an average-pooled, zero-filled shortcut), and K sub-networks with
their own BN-ReLU-GAP-Linear classifier g_k. The C branches form K groups of C/K;
sub-network k uses groups 1..k (C_k = kC/K branches, Sec. 3.1).

- **I-ResNeXt** (`i-resnext`, Sec. 3.1): dense blocks, every branch reads all of x and
  writes all of y; all convolutions shared, but *independent BN layers per sub-network*
  (u_{i,k}), because each sub-network's features differ. So sub-network k is its own
  forward pass (K passes, no interruptibility); its stage program runs sub-network k
  then head k, and the a-priori slice of exit k is just those two steps.
  Default C = 0.5 W / B, paper CIFAR sizes L=21, W=64, K=8.
- **IS-ResNeXt** (`is-resnext`, Sec. 3.2): x and y are split in K channel slices;
  branch group k reads slices 1..k (a_i eq.) and writes only slice k (y_k eq.), so
  slice k of every layer depends only on slices 1..k of the input, BN layers are shared
  and one forward pass gives all K sub-networks. Where the width doubles, each slice's
  shortcut gets its own zero channels, so slice k still depends on slices 1..k only.
  Stage program: step k (graph `slicek`) computes slice k of every layer from the
  cached slices 1..k-1 of every block input (cached pre-activated, i.e. after BN-ReLU)
  and of the final features; head k reads slices 1..k of the final features.
  Default C = 0.75 W / B, paper CIFAR sizes L=15, W=96, K=6.

Hierarchical anytime prediction (Sec. 3.3, eq. 2): with `hierarchical=True` every
classifier g_k gets a coarse twin g_{k,coarse} (for 43 classes: GTSRB's 6 natural
superclasses, `GTSRB_FINE_TO_COARSE`); its logits are the second output of the head
graph, bound to Exit.coarse_tensor. `forward(x)` returns the fine logits of every
sub-network; `forward_hierarchical(x)` returns (fine, coarse) pairs.

>>> model = ISResNeXt(num_classes=43, blocks=3, width=12, num_subnets=3, bottleneck=2, cardinality=3)
>>> [tuple(t.shape) for t in model(torch.zeros(2, 3, 16, 16))]
[(2, 43), (2, 43), (2, 43)]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..stages import ProgramBuilder, StagedModel
from .base import AnytimeModel
from .blocks import ExitHead, init_weights, tracing
from .registry import register_model

__all__ = ["GTSRB_FINE_TO_COARSE", "GTSRB_SUPERCLASSES", "IResNeXt", "ISResNeXt", "coarse_targets"]

#: GTSRB's six natural superclasses (Stallkamp et al. 2012) by fine class id, in coarse-id order.
GTSRB_SUPERCLASSES = (
    ("speed limits", (0, 1, 2, 3, 4, 5, 7, 8)),
    ("other prohibitory", (9, 10, 15, 16)),
    ("derestriction", (6, 32, 41, 42)),
    ("mandatory", tuple(range(33, 41))),
    ("danger", (11,) + tuple(range(18, 32))),
    ("unique", (12, 13, 14, 17)),
)
#: Coarse id of each of the 43 fine GTSRB classes.
GTSRB_FINE_TO_COARSE = tuple(next(c for c, (_, ids) in enumerate(GTSRB_SUPERCLASSES) if f in ids)
                             for f in range(43))


def coarse_targets(fine: torch.Tensor, fine_to_coarse=GTSRB_FINE_TO_COARSE) -> torch.Tensor:
    """Map fine labels to coarse labels (GTSRB superclasses by default)."""
    return torch.as_tensor(fine_to_coarse, device=fine.device)[fine]


def _downsample(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """App. B shortcut: stride-2 average pooling, then zero-filled channels up to `out_channels`."""
    if stride > 1:
        x = F.avg_pool2d(x, stride)
    return F.pad(x, (0, 0, 0, 0, 0, out_channels - x.shape[1])) if out_channels > x.shape[1] else x


class _ResNeXtBase(AnytimeModel):
    factor = 0.5  # default cardinality C = factor * W / B

    def __init__(self, num_classes: int, blocks: int, width: int, num_subnets: int, bottleneck: int,
                 cardinality: int | None, hierarchical: bool, num_coarse: int | None, bn_eps: float,
                 in_channels: int, head_pool: int = 1) -> None:
        super().__init__()
        self.head_pool = int(head_pool)
        cardinality = round(self.factor * width / bottleneck) if cardinality is None else int(cardinality)
        K = num_subnets
        if blocks % 3 or width % K or cardinality % K or blocks < 3:
            raise ValueError(f"need blocks divisible by the 3 scales and width, cardinality divisible by "
                             f"num_subnets; got blocks={blocks}, width={width}, cardinality={cardinality}, "
                             f"num_subnets={K} (e.g. blocks=15, width=96, num_subnets=6, bottleneck=4)")
        if hierarchical and num_coarse is None:
            if num_classes != len(GTSRB_FINE_TO_COARSE):
                raise ValueError(f"hierarchical=True defaults to GTSRB's 6 superclasses (43 classes); for "
                                 f"{num_classes} classes pass num_coarse=<number of coarse classes>")
            num_coarse = len(GTSRB_SUPERCLASSES)
        self.num_coarse = int(num_coarse) if hierarchical else 0
        self.config = dict(blocks=int(blocks), width=int(width), num_subnets=int(K), bottleneck=int(bottleneck),
                           cardinality=cardinality, hierarchical=bool(hierarchical),
                           num_coarse=self.num_coarse or None, bn_eps=float(bn_eps), in_channels=int(in_channels),
                           head_pool=self.head_pool)
        self.num_classes, self.K, self.G = num_classes, K, cardinality // K  # G: branches per group
        # (in width, out width, bottleneck width per branch, stride) of every block.
        per_scale = blocks // 3
        self.specs = [(width * 2 ** max(s - (b == 0), 0), width * 2 ** s, bottleneck * 2 ** s,
                       2 if s > 0 and b == 0 else 1) for s in range(3) for b in range(per_scale)]

    @property
    def num_exits(self) -> int:
        return self.K

    def _head(self, features: int, bn_eps: float) -> ExitHead:
        return ExitHead(features, self.num_classes, bn_eps, self.num_coarse, pool=self.head_pool)

    def forward_hierarchical(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(fine, coarse) logits of every sub-network; needs `hierarchical=True`."""
        if not self.num_coarse:
            raise ValueError("this model has no coarse heads; build it with hierarchical=True")
        return self._outputs(x)

    def forward_coarse(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [coarse for _, coarse in self.forward_hierarchical(x)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = self._outputs(x)
        return [out[0] for out in outputs] if self.num_coarse else outputs

    def stage_program(self, example: torch.Tensor | None = None) -> StagedModel:
        """The subclass's `_build`: IS-ResNeXt runs graph `slice{k}` (slice k of every layer, from the cached
        slices) then `head{k}`; I-ResNeXt runs sub-network k from the image, then its head."""
        with tracing(self, example, self.config["in_channels"]) as example:
            return self._build(ProgramBuilder("image", example))

    def _build(self, builder: ProgramBuilder) -> StagedModel:
        raise NotImplementedError

    def _head_step(self, builder: ProgramBuilder, k: int, features: str, exits: list, coarse: list) -> None:
        outputs = {"logits": f"logits{k + 1}"}
        if self.num_coarse:
            outputs["coarse"] = f"coarse{k + 1}"
        builder.step(f"head{k + 1}", f"head{k + 1}", self.heads[k], {"x": features}, outputs)
        exits.append(outputs["logits"])
        coarse.append(outputs.get("coarse"))


class _ISGroup(nn.Module):
    """Branch group k of one IS-ResNeXt block: a_i from slices 1..k, y_k from its own b_i (Sec. 3.2)."""

    def __init__(self, k: int, K: int, spec, G: int, bn_eps: float) -> None:
        super().__init__()
        w_in, w_out, width, self.stride = spec
        self.slice_in, self.slice_out = w_in // K, w_out // K
        self.bn_x = nn.BatchNorm2d(self.slice_in, eps=bn_eps)  # BN of input slice k (shared by all sub-nets)
        self.conv1 = nn.Conv2d((k + 1) * self.slice_in, G * width, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(G * width, eps=bn_eps)
        self.conv2 = nn.Conv2d(G * width, G * width, 3, self.stride, 1, groups=G, bias=False)
        self.bn_b = nn.BatchNorm2d(G * width, eps=bn_eps)
        self.conv3 = nn.Conv2d(G * width, self.slice_out, 1, bias=False)


class _ISSlice(nn.Module):
    """Graph of step k: slice k of the stem and of every block, given the cached slices 1..k-1.

    forward(image[, cached p_1..p_L, cached x]) -> (p_1..p_L, x), where p_l holds slices
    1..k of block l's pre-activated input relu(bn(x_l)) and x slices 1..k of the output."""

    def __init__(self, k: int, K: int, specs, G: int, in_channels: int, bn_eps: float) -> None:
        super().__init__()
        self.k = k
        self.stem = nn.Conv2d(in_channels, specs[0][0] // K, 3, padding=1, bias=False)
        self.groups = nn.ModuleList(_ISGroup(k, K, spec, G, bn_eps) for spec in specs)

    def forward(self, image: torch.Tensor, *cached: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, outs = self.stem(image), []
        for l, grp in enumerate(self.groups):
            p = F.relu(grp.bn_x(x))
            p = torch.cat([cached[l], p], 1) if cached else p
            outs.append(p)
            b = grp.conv2(F.relu(grp.bn_a(grp.conv1(p))))
            x = grp.conv3(F.relu(grp.bn_b(b))) + _downsample(x, grp.slice_out, grp.stride)
        outs.append(torch.cat([cached[-1], x], 1) if cached else x)
        return tuple(outs)


@register_model("is-resnext")
class ISResNeXt(_ResNeXtBase):
    """IS-ResNeXt: K nested thin sub-networks from one forward pass (Sec. 3.2, Fig. 2)."""

    factor = 0.75

    def __init__(self, num_classes: int, blocks: int = 15, width: int = 96, num_subnets: int = 6,
                 bottleneck: int = 4, cardinality: int | None = None, hierarchical: bool = False,
                 num_coarse: int | None = None, bn_eps: float = 1e-5, in_channels: int = 3,
                 head_pool: int = 1) -> None:
        super().__init__(num_classes, blocks, width, num_subnets, bottleneck, cardinality, hierarchical,
                         num_coarse, bn_eps, in_channels, head_pool)
        self.slices = nn.ModuleList(_ISSlice(k, self.K, self.specs, self.G, in_channels, bn_eps)
                                    for k in range(self.K))
        final = self.specs[-1][1] // self.K
        self.heads = nn.ModuleList(self._head((k + 1) * final, bn_eps) for k in range(self.K))
        init_weights(self)

    @staticmethod
    def _bn_relu(groups: list, x: torch.Tensor, bn: str) -> torch.Tensor:
        """ReLU(BN) over all slices, each chunk with the BN module of its own branch group."""
        return torch.cat([F.relu(getattr(g, bn)(c)) for g, c in zip(groups, x.chunk(len(groups), 1))], 1)

    def _outputs(self, x: torch.Tensor) -> list:
        """The monolithic network: one pass with the full block-sparse convolutions."""
        x = F.conv2d(x, torch.cat([s.stem.weight for s in self.slices]), padding=1)
        for l, (w_in, w_out, _, stride) in enumerate(self.specs):
            groups = [s.groups[l] for s in self.slices]  # branch group k of block l lives in slice k
            p = self._bn_relu(groups, x, "bn_x")
            # conv1 is block lower-triangular: group k reads input slices 1..k (zero weights elsewhere).
            w1 = torch.cat([F.pad(g.conv1.weight, (0, 0, 0, 0, 0, w_in - g.conv1.in_channels)) for g in groups])
            a = self._bn_relu(groups, F.conv2d(p, w1), "bn_a")
            b = F.conv2d(a, torch.cat([g.conv2.weight for g in groups]), stride=stride, padding=1,
                         groups=self.G * self.K)
            b = self._bn_relu(groups, b, "bn_b")
            y = F.conv2d(b, torch.cat([g.conv3.weight for g in groups]), groups=self.K)  # y_k from group k only
            n, _, h, w = x.shape  # shortcut per slice, so zero channels stay inside their slice
            short = _downsample(x.reshape(n * self.K, w_in // self.K, h, w), w_out // self.K, stride)
            x = y + short.reshape(n, w_out, *short.shape[2:])
        final = self.specs[-1][1] // self.K
        return [head(x[:, :(k + 1) * final]) for k, head in enumerate(self.heads)]

    def _build(self, builder: ProgramBuilder) -> StagedModel:
        exits: list = []
        coarse: list = []
        n = len(self.specs)
        for k, module in enumerate(self.slices):
            inputs = {"image": "image"}
            if k:
                inputs.update({f"cache_p{l + 1}": f"s{k}_p{l + 1}" for l in range(n)})
                inputs["cache_x"] = f"s{k}_x"
            outputs = {f"p{l + 1}": f"s{k + 1}_p{l + 1}" for l in range(n)}
            outputs["x"] = f"s{k + 1}_x"
            builder.step(f"slice{k + 1}", f"slice{k + 1}", module, inputs, outputs)
            self._head_step(builder, k, f"s{k + 1}_x", exits, coarse)
        return builder.build(exit_tensors=exits, coarse_tensors=coarse)


class _IGroup(nn.Module):
    """Branch group g of one dense I-ResNeXt block (shared by sub-networks g..K)."""

    def __init__(self, spec, G: int) -> None:
        super().__init__()
        w_in, w_out, width, stride = spec
        self.conv1 = nn.Conv2d(w_in, G * width, 1, bias=False)
        self.conv2 = nn.Conv2d(G * width, G * width, 3, stride, 1, groups=G, bias=False)
        self.conv3 = nn.Conv2d(G * width, w_out, 1, bias=False)


class _ISubnet(nn.Module):
    """Graph of I-ResNeXt sub-network k: the shared stem and branch groups 1..k, its own BNs."""

    def __init__(self, stem: nn.Module, groups, norms: nn.ModuleList, specs) -> None:
        super().__init__()
        self.stem, self.groups, self.norms, self.specs = stem, nn.ModuleList(groups), norms, specs

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        for grps, (bn_x, bn_a, bn_b), (_, w_out, _, stride) in zip(self.groups, self.norms, self.specs):
            p = F.relu(bn_x(x))
            a = F.relu(bn_a(torch.cat([g.conv1(p) for g in grps], 1))).chunk(len(grps), 1)
            b = F.relu(bn_b(torch.cat([g.conv2(c) for g, c in zip(grps, a)], 1))).chunk(len(grps), 1)
            x = sum(g.conv3(c) for g, c in zip(grps, b)) + _downsample(x, w_out, stride)
        return x


@register_model("i-resnext")
class IResNeXt(_ResNeXtBase):
    """I-ResNeXt: nested sub-networks with shared convolutions and independent BN (Sec. 3.1, Fig. 1)."""

    def __init__(self, num_classes: int, blocks: int = 21, width: int = 64, num_subnets: int = 8,
                 bottleneck: int = 4, cardinality: int | None = None, hierarchical: bool = False,
                 num_coarse: int | None = None, bn_eps: float = 1e-5, in_channels: int = 3,
                 head_pool: int = 1) -> None:
        super().__init__(num_classes, blocks, width, num_subnets, bottleneck, cardinality, hierarchical,
                         num_coarse, bn_eps, in_channels, head_pool)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.groups = nn.ModuleList(nn.ModuleList(_IGroup(spec, self.G) for _ in range(self.K)) for spec in self.specs)
        # norms[k][l] = (BN of x, BN of a, BN of b) of block l in sub-network k: u_{i,k} of Sec. 3.1.
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.ModuleList([nn.BatchNorm2d(w_in, eps=bn_eps),
                                         nn.BatchNorm2d((k + 1) * self.G * width, eps=bn_eps),
                                         nn.BatchNorm2d((k + 1) * self.G * width, eps=bn_eps)])
                          for w_in, _, width, _ in self.specs)
            for k in range(self.K))
        self.heads = nn.ModuleList(self._head(self.specs[-1][1], bn_eps) for _ in range(self.K))
        init_weights(self)
        # Graph modules, not registered (their parameters are the model's own, registered above).
        self._subnets = [_ISubnet(self.stem, [grps[:k + 1] for grps in self.groups], self.norms[k], self.specs)
                         for k in range(self.K)]

    def _outputs(self, x: torch.Tensor) -> list:
        return [head(subnet(x)) for subnet, head in zip(self._subnets, self.heads)]

    def _build(self, builder: ProgramBuilder) -> StagedModel:
        exits: list = []
        coarse: list = []
        for k, subnet in enumerate(self._subnets):
            builder.step(f"subnet{k + 1}", f"subnet{k + 1}", subnet, {"image": "image"}, {"x": f"sub{k + 1}_x"})
            self._head_step(builder, k, f"sub{k + 1}_x", exits, coarse)
        return builder.build(exit_tensors=exits, coarse_tensors=coarse)
