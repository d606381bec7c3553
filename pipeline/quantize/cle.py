"""Cross-layer equalization (CLE) of a Keras 3 model as Nagel et al. define it ("Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019, sections 4.1 and 4.2), once for every target.

Two consecutive layers W1 -> f -> W2 with f positively homogeneous (ReLU, LeakyReLU, linear; max and average
pooling, dropout) compute the same function when output channel c of W1 is divided by s_c and input channel c
of W2 multiplied by it. With r1_c the range of W1's channel c and r2_c the range of W2's input channel c,
s_c = sqrt(r1_c / r2_c) gives both the range sqrt(r1_c r2_c): the per-channel weight ranges of each layer even
out, which is what a per-tensor weight grid needs (a per-channel grid is indifferent to W1's scaling; the
activation between the two layers is divided by s_c too, so outlier channels made by a wide W1 channel shrink).
A BatchNormalization right after W1 is folded in (r1 is the range of W1 * gamma / sqrt(var + eps), and the
scaling goes through gamma and beta); chains of pairs are swept until the scales settle.

High-bias absorption (section 4.2): after equalization a channel's bias can be large; where W1 has a BatchNorm
and a ReLU follows, the pre-activation is taken as N(beta_c, gamma_c^2), and c_c = max(0, beta_c - 3 |gamma_c|)
moves out of beta into the next layer (its bias, or the moving mean of its BatchNorm): ReLU(x - c) = ReLU(x) - c
wherever x >= c, i.e. all but the 0.13% tail. Here c_c is also capped at the smallest pre-activation the
calibration samples give (BatchNorm statistics that do not describe the data would otherwise absorb too much),
so on those samples the function is unchanged. Done only where the next layer sees every position of the
channel (1x1 or Dense, or 'valid' padding: a zero-padded border would not carry the constant) and no padding
layer is in between.

ReLU6 is not homogeneous (min(s x, 6) != s min(x, 6)): Nagel et al. replace it with ReLU, which changes the
function, so a ReLU6 (or any other activation) stops the pair here. SmoothQuant-style migration, which
balances activation ranges against weight ranges instead, is pipeline.quantize.smoothquant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from pipeline.compress.graph import inbound_layers, outbound_layers, to_functional
from pipeline.compress.layer_kinds import activation_name

L = keras.layers
VERSION = "1"
MAX_SCALE = 1e4  # a channel is never rescaled by more than this, either way
SWEEPS = 20  # passes over the pairs at most; they stop once no scale moves more than SETTLED
SETTLED = 1e-4  # |log s| below which a sweep changed nothing
SIGMAS = 3.0  # high-bias absorption: c = max(0, beta - SIGMAS |gamma|)
_HEADS = (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense, L.SeparableConv1D, L.SeparableConv2D,
          L.DepthwiseConv1D, L.DepthwiseConv2D)
_TAILS = _HEADS
_THROUGH = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.Identity, L.MaxPooling1D, L.MaxPooling2D,
            L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
            L.GlobalAveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.ZeroPadding1D, L.ZeroPadding2D)
_PADDING = (L.ZeroPadding1D, L.ZeroPadding2D)


@dataclass(frozen=True)
class Pair:
    """W1 (head) [-> its BatchNorm] [-> ReLU, pooling, ...] -> W2 (tail), every link with one consumer."""

    head: str
    norm: str | None  # the BatchNormalization folded into the head
    tail: str
    relu: bool  # a ReLU (or LeakyReLU) between: high-bias absorption may apply
    padded: bool  # a ZeroPadding layer between: no absorption
    tail_norm: str | None  # the BatchNormalization right after the tail (takes the absorbed bias without one)


@dataclass(frozen=True)
class Equalized:
    """One pair after equalization: the spread (largest / median) of each layer's channel weight ranges."""

    head: str
    tail: str
    channels: int
    head_spread_before: float
    head_spread_after: float
    tail_spread_before: float
    tail_spread_after: float
    max_scale: float  # the largest rescaling of a channel, either way, relative to the pair's geometric mean
    absorbed: int  # channels whose high bias moved into the tail

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head, "tails": [self.tail], "channels": self.channels,
                "head_spread_before": round(self.head_spread_before, 3),
                "head_spread_after": round(self.head_spread_after, 3),
                "tail_spread_before": round(self.tail_spread_before, 3),
                "tail_spread_after": round(self.tail_spread_after, 3),
                "max_scale": round(self.max_scale, 3), "absorbed": self.absorbed}


def _channels_last(layer: keras.layers.Layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last") and \
        getattr(layer, "groups", 1) == 1


def _is_head(layer: keras.layers.Layer) -> bool:
    if type(layer) not in _HEADS or not _channels_last(layer):
        return False
    return getattr(layer, "depth_multiplier", 1) == 1 or not isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D))


def _homogeneous_relu(layer: keras.layers.Layer) -> bool | None:
    """True: a ReLU/LeakyReLU (homogeneous, absorbs high biases); False: linear; None: anything else."""
    if isinstance(layer, L.ReLU):
        cfg = layer.get_config()
        ok = cfg.get("max_value") is None and float(cfg.get("threshold", 0.0)) == 0.0
        return True if ok else None
    if isinstance(layer, L.LeakyReLU):
        return True
    name = activation_name(layer)
    return {"relu": True, "leaky_relu": True, "linear": False}.get(name)


def _follow(layer: keras.layers.Layer, outs: dict[str, list[Any]], ins: dict[str, list[Any]]) -> Pair | None:
    """The pair that starts at `layer`, or None when something in the way is not scale-safe."""
    fused = _homogeneous_relu(layer)
    if fused is None:
        return None
    norm, relu, padded, node = None, bool(fused), False, layer
    while True:
        nxt = outs.get(node.name, [])
        if len(nxt) != 1 or len(ins.get(nxt[0].name, [])) != 1:
            return None
        node = nxt[0]
        if isinstance(node, L.BatchNormalization) and norm is None and not relu and node.scale \
                and _single_link(layer, node, outs):
            norm = node.name
        elif type(node) in (L.Activation, L.ReLU, L.LeakyReLU) and _homogeneous_relu(node) is not None:
            relu = relu or bool(_homogeneous_relu(node))
        elif type(node) in _THROUGH:
            padded = padded or isinstance(node, _PADDING)
        elif type(node) in _TAILS and _channels_last(node):
            after = outs.get(node.name, [])
            tail_norm = after[0].name if len(after) == 1 and isinstance(after[0], L.BatchNormalization) else None
            return Pair(layer.name, norm, node.name, relu, padded, tail_norm)
        else:
            return None


def _single_link(head: keras.layers.Layer, norm: keras.layers.Layer, outs: dict[str, list[Any]]) -> bool:
    """The BatchNorm reads the head directly (nothing between them)."""
    return [n.name for n in outs.get(head.name, [])] == [norm.name]


def pairs(model: keras.Model) -> list[Pair]:
    """Every scale-safe head -> tail pair of a functional model, in layer order."""
    outs, ins = outbound_layers(model), inbound_layers(model)
    found = []
    for layer in model.layers:
        if _is_head(layer):
            pair = _follow(layer, outs, ins)
            if pair is not None:
                found.append(pair)
    return found


def _out_kernel(layer: keras.layers.Layer) -> Any:
    """The variable whose last axis is the layer's output channel (a depthwise head: (..., C, 1))."""
    return layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel


def _in_kernel(layer: keras.layers.Layer) -> Any:
    """The variable whose axis -2 is the layer's input channel."""
    return layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel


def _is_depthwise(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D))


def _norm_factor(norm: keras.layers.Layer | None, channels: int) -> np.ndarray:
    if norm is None:
        return np.ones(channels, np.float32)
    return np.asarray(norm.gamma.numpy()) / np.sqrt(np.asarray(norm.moving_variance.numpy()) + norm.epsilon)


def head_ranges(head: keras.layers.Layer, norm: keras.layers.Layer | None) -> np.ndarray:
    """max |w| per output channel of the head, with its BatchNorm folded in."""
    k = np.abs(np.asarray(_out_kernel(head).numpy()))
    per = k.reshape(-1, k.shape[-2]).max(axis=0) if _is_depthwise(head) else k.reshape(-1, k.shape[-1]).max(axis=0)
    return per * np.abs(_norm_factor(norm, per.size))


def tail_ranges(tail: keras.layers.Layer) -> np.ndarray:
    """max |w| per input channel of the tail."""
    k = np.abs(np.asarray(_in_kernel(tail).numpy()))
    return np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1).max(axis=1)


def _scale(layers: dict[str, keras.layers.Layer], pair: Pair, s: np.ndarray) -> None:
    """Output channel c of the head (or its BatchNorm) / s_c, input channel c of the tail * s_c."""
    if pair.norm is not None:  # y = gamma (x - mean) / sqrt(var + eps) + beta: y / s through gamma and beta
        norm = layers[pair.norm]
        norm.gamma.assign(np.asarray(norm.gamma.numpy()) / s)
        if norm.center:
            norm.beta.assign(np.asarray(norm.beta.numpy()) / s)
    else:
        _divide_head(layers[pair.head], s)
    var = _in_kernel(layers[pair.tail])
    k = np.asarray(var.numpy())
    shape = [1] * k.ndim
    shape[-2] = -1
    var.assign(k * s.reshape(shape))


def _divide_head(head: keras.layers.Layer, s: np.ndarray) -> None:
    var = _out_kernel(head)
    k = np.asarray(var.numpy())
    var.assign(k / (s.reshape(-1, 1) if _is_depthwise(head) else s))
    if getattr(head, "use_bias", False):
        head.bias.assign(np.asarray(head.bias.numpy()) / s)


def _pair_scales(layers: dict[str, keras.layers.Layer], pair: Pair) -> np.ndarray:
    r1, r2 = head_ranges(layers[pair.head], layers.get(pair.norm or "")), tail_ranges(layers[pair.tail])
    s = np.ones_like(r1)
    ok = (r1 > 1e-12) & (r2 > 1e-12)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return np.clip(s, 1.0 / MAX_SCALE, MAX_SCALE).astype(np.float32)


def _spread(r: np.ndarray) -> float:
    live = r[r > 1e-12]
    return float(live.max() / np.median(live)) if live.size else 1.0


def _sweep(layers: dict[str, keras.layers.Layer], found: list[Pair]) -> dict[str, np.ndarray]:
    """Equalize every pair in turn until a sweep moves no scale by more than SETTLED; each pair's total scale."""
    total = {p.head: np.ones(head_ranges(layers[p.head], layers.get(p.norm or "")).size, np.float32) for p in found}
    for _ in range(SWEEPS):
        moved = 0.0
        for pair in found:
            s = _pair_scales(layers, pair)
            _scale(layers, pair, s)
            total[pair.head] *= s
            moved = max(moved, float(np.abs(np.log(s)).max()))
        if moved < SETTLED:
            break
    return total


def _tail_sees_every_position(tail: keras.layers.Layer) -> bool:
    size = getattr(tail, "kernel_size", None)
    return size is None or all(k == 1 for k in size) or getattr(tail, "padding", "valid") == "valid"


def _absorbable(layers: dict[str, keras.layers.Layer], pair: Pair) -> bool:
    norm, tail = layers.get(pair.norm or ""), layers[pair.tail]
    return norm is not None and norm.center and pair.relu and not pair.padded and \
        not hasattr(tail, "depthwise_kernel") and _tail_sees_every_position(tail) and \
        (getattr(tail, "use_bias", False) or pair.tail_norm is not None)


def _smallest(model: keras.Model, names: list[str], samples: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per channel, the smallest output of each named layer on the samples (none: no cap)."""
    if samples is None or not names:
        return {}
    outs = keras.Model(model.inputs, [model.get_layer(n).output for n in names]).predict(samples, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {n: o.reshape(-1, o.shape[-1]).min(axis=0) for n, o in zip(names, outs, strict=True)}


def _absorb(layers: dict[str, keras.layers.Layer], pair: Pair, floor: np.ndarray | None) -> int:
    """High-bias absorption into the tail (its bias, else its BatchNorm's moving mean); channels moved."""
    if not _absorbable(layers, pair):
        return 0
    tail, norm = layers[pair.tail], layers[str(pair.norm)]
    gamma, beta = np.asarray(norm.gamma.numpy()), np.asarray(norm.beta.numpy())
    c = beta - SIGMAS * np.abs(gamma)
    c = np.maximum(0.0, c if floor is None else np.minimum(c, floor)).astype(np.float32)
    if not np.any(c > 0):
        return 0
    k = np.asarray(tail.kernel.numpy())
    if _is_depthwise(tail):  # (..., C, M): channel c's constant through its own filters
        d = (k.reshape(-1, *k.shape[-2:]).sum(axis=0) * c[:, None]).reshape(-1)
    else:  # (..., C, out)
        d = np.einsum("kco,c->o", k.reshape(-1, *k.shape[-2:]), c)
    if getattr(tail, "use_bias", False):
        tail.bias.assign(np.asarray(tail.bias.numpy()) + d)
    else:
        tn = layers[str(pair.tail_norm)]
        tn.moving_mean.assign(np.asarray(tn.moving_mean.numpy()) - d)
    norm.beta.assign(beta - c)
    return int(np.count_nonzero(c))


def equalize(model: keras.Model, samples: np.ndarray | None = None) -> tuple[keras.Model, list[Equalized]]:
    """A copy of `model` with every scale-safe pair equalized and high biases absorbed (`samples`, when given,
    cap each absorbed bias at the smallest pre-activation they give). Returns the copy and what was done per
    pair (empty: no pair)."""
    copy = to_functional(model)
    found = pairs(copy)
    if not found:
        return copy, []
    layers = {layer.name: layer for layer in copy.layers}
    before = {p.head: (head_ranges(layers[p.head], layers.get(p.norm or "")), tail_ranges(layers[p.tail]))
              for p in found}
    total = _sweep(layers, found)
    floors = _smallest(copy, [str(p.norm) for p in found if _absorbable(layers, p)], samples)
    done = []
    for p in found:
        absorbed = _absorb(layers, p, floors.get(str(p.norm)))
        s = total[p.head]
        rel = s / np.exp(np.log(s).mean())
        after = head_ranges(layers[p.head], layers.get(p.norm or "")), tail_ranges(layers[p.tail])
        done.append(Equalized(p.head, p.tail, int(s.size), _spread(before[p.head][0]), _spread(after[0]),
                              _spread(before[p.head][1]), _spread(after[1]),
                              float(max(rel.max(), 1.0 / rel.min())), absorbed))
    return copy, done
