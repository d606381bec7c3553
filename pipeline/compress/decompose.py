"""Low-rank decomposition: Dense -> two Dense by truncated SVD; Conv -> spatial split or Tucker-2.

* Dense (in -> out), rank r = ceil(rank_ratio * min(in, out)): Dense(r, no bias, linear) -> Dense(out).
* 1x1 conv: the same SVD on the (in, out) matrix, as two 1x1 convs.
* Conv2D kh x kw, spatial split, r = ceil(rank_ratio * min(kh * in, kw * out)): (kh x 1, r filters,
  vertical stride/dilation) -> (1 x kw, out, horizontal stride/dilation); SVD of the kernel reshaped to
  (kh * in, kw * out). Exact at full rank for valid and same padding.
* Conv1D/2D/3D Tucker-2, ranks ceil(rank_ratio * in), ceil(rank_ratio * out): 1x1 (in -> r1) -> core k x k
  (r1 -> r2, original strides/padding/dilation) -> 1x1 (r2 -> out); HOSVD factors of the kernel.

Only layers whose decomposition cuts MACs are replaced (the final classifier included, when it pays). The
activation, bias and the original layer name stay on the last replacement layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np

from pipeline.compress.base import StageContext, StageResult
from pipeline.compress.graph import LayerEdit, graph_nodes, layer_config, rebuild, to_functional
from pipeline.compress.training import fine_tune
from pipeline.config import DecomposeSection

L = keras.layers
ConvMethod = Literal["auto", "spatial", "tucker"]
_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
_LINEAR = {
    "activation": "linear",
    "use_bias": False,
    "activity_regularizer": None,
    "bias_regularizer": None,
    "bias_constraint": None,
}


def svd_factors(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with A @ B the best rank-`rank` approximation of `matrix`; singular values split evenly."""
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(matrix.dtype), (root[:, None] * vt[:rank]).astype(matrix.dtype)


def spatial_split_kernels(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A (kh, kw, in, out) kernel as a (kh, 1, in, r) and a (1, kw, r, out) kernel."""
    kh, kw, cin, cout = kernel.shape
    matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
    a, b = svd_factors(matrix, rank)
    vertical = a.reshape(kh, cin, rank)[:, None, :, :]
    horizontal = b.reshape(rank, kw, cout).transpose(1, 0, 2)[None, :, :, :]
    return vertical, horizontal


def tucker2_kernels(
    kernel: np.ndarray, rank_in: int, rank_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (*k, in, out) kernel as 1x1 (in, r1), core (*k, r1, r2) and 1x1 (r2, out) kernels (HOSVD)."""
    *spatial, cin, cout = kernel.shape
    k64 = kernel.astype(np.float64)
    u_in = np.linalg.svd(np.moveaxis(k64, -2, 0).reshape(cin, -1), full_matrices=False)[0][:, :rank_in]
    u_out = np.linalg.svd(np.moveaxis(k64, -1, 0).reshape(cout, -1), full_matrices=False)[0][:, :rank_out]
    core = np.einsum("...io,ia,ob->...ab", k64, u_in, u_out)
    ones = [1] * len(spatial)
    first = u_in.reshape(*ones, cin, rank_in)
    last = u_out.T.reshape(*ones, rank_out, cout)
    return first.astype(kernel.dtype), core.astype(kernel.dtype), last.astype(kernel.dtype)


@dataclass
class Decision:
    layer: str
    method: str
    rank: tuple[int, ...]
    macs_before: int
    macs_after: int


def _prod(dims: Any) -> int:
    return int(np.prod([1 if d is None else int(d) for d in dims], dtype=np.int64))


def _fresh(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    taken.add(candidate)
    return candidate


def _weights(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray | None]:
    named = {v.name: w for v, w in zip(layer.weights, layer.get_weights(), strict=True)}
    return named["kernel"], named.get("bias")


def _with_bias(kernel: np.ndarray, bias: np.ndarray | None) -> list[np.ndarray]:
    return [kernel] if bias is None else [kernel, bias]


class _Planner:
    def __init__(self, model: keras.Model, rank_ratio: float, conv_method: ConvMethod, require_saving: bool):
        self.rank_ratio = rank_ratio
        self.conv_method = conv_method
        self.require_saving = require_saving
        self.taken = {layer.name for layer in model.layers}
        self.shapes: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
        self.calls: dict[str, int] = {}
        for node in graph_nodes(model):
            name = node.operation.name
            self.calls[name] = self.calls.get(name, 0) + 1
            if node.input_tensors and node.outputs:
                self.shapes.setdefault(
                    name, (tuple(node.input_tensors[0].shape), tuple(node.outputs[0].shape))
                )
        self.decisions: list[Decision] = []

    def rank(self, n: int) -> int:
        return max(1, math.ceil(self.rank_ratio * n))

    def pays(self, before: int, after: int) -> bool:
        return after < before or not self.require_saving

    def __call__(self, layer: keras.layers.Layer) -> list[LayerEdit] | None:
        if self.calls.get(layer.name) != 1 or layer.name not in self.shapes:
            return None
        if type(layer) is L.Dense:
            return self.dense(layer)
        if type(layer) in _CONVS and layer.groups == 1 and layer.data_format == "channels_last":
            return self.conv(layer)
        return None

    def dense(self, layer: keras.layers.Layer) -> list[LayerEdit] | None:
        kernel, bias = _weights(layer)
        cin, cout = kernel.shape
        positions = _prod(self.shapes[layer.name][1][1:-1])
        r = self.rank(min(cin, cout))
        before, after = positions * cin * cout, positions * r * (cin + cout)
        if not self.pays(before, after):
            return None
        a, b = svd_factors(kernel, r)
        first = layer_config(layer, **_LINEAR, units=r, name=_fresh(f"{layer.name}_lowrank", self.taken))
        self.decisions.append(Decision(layer.name, "svd", (r,), before, after))
        return [LayerEdit(L.Dense, first, [a]), LayerEdit(L.Dense, layer_config(layer), _with_bias(b, bias))]

    def conv(self, layer: keras.layers.Layer) -> list[LayerEdit] | None:
        kernel, bias = _weights(layer)
        *k, cin, cout = kernel.shape
        in_shape, out_shape = self.shapes[layer.name]
        p_in, p_out = _prod(in_shape[1:-1]), _prod(out_shape[1:-1])
        before = p_out * kernel.size
        cls = type(layer)
        if all(s == 1 for s in k):
            r = self.rank(min(cin, cout))
            after = p_out * r * (cin + cout)
            if not self.pays(before, after):
                return None
            a, b = svd_factors(kernel.reshape(cin, cout), r)
            first = layer_config(
                layer, **_LINEAR, filters=r, name=_fresh(f"{layer.name}_lowrank", self.taken)
            )
            second = layer_config(layer, strides=1, padding="valid", dilation_rate=1)
            self.decisions.append(Decision(layer.name, "svd", (r,), before, after))
            return [
                LayerEdit(cls, first, [a.reshape(*k, cin, r)]),
                LayerEdit(cls, second, _with_bias(b.reshape(*k, r, cout), bias)),
            ]
        options: dict[str, tuple[int, tuple[int, ...]]] = {}
        if cls is L.Conv2D and self.conv_method in ("auto", "spatial"):
            kh, kw = k
            r = self.rank(min(kh * cin, kw * cout))
            mid_positions = int(out_shape[1] or 1) * int(in_shape[2] or 1)
            options["spatial"] = (mid_positions * kh * cin * r + p_out * kw * r * cout, (r,))
        if self.conv_method in ("auto", "tucker"):
            r1, r2 = self.rank(cin), self.rank(cout)
            options["tucker"] = (p_in * cin * r1 + p_out * (_prod(k) * r1 * r2 + r2 * cout), (r1, r2))
        if not options:
            return None
        method = min(options, key=lambda m: options[m][0])
        after, ranks = options[method]
        if not self.pays(before, after):
            return None
        self.decisions.append(Decision(layer.name, method, ranks, before, after))
        if method == "spatial":
            return self.spatial(layer, kernel, bias, ranks[0])
        return self.tucker(layer, kernel, bias, ranks)

    def spatial(
        self, layer: keras.layers.Layer, kernel: np.ndarray, bias: np.ndarray | None, r: int
    ) -> list[LayerEdit]:
        vertical, horizontal = spatial_split_kernels(kernel, r)
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
        first = layer_config(
            layer,
            **_LINEAR,
            filters=r,
            kernel_size=(kh, 1),
            strides=(sh, 1),
            dilation_rate=(dh, 1),
            name=_fresh(f"{layer.name}_vertical", self.taken),
        )
        second = layer_config(layer, kernel_size=(1, kw), strides=(1, sw), dilation_rate=(1, dw))
        return [
            LayerEdit(L.Conv2D, first, [vertical]),
            LayerEdit(L.Conv2D, second, _with_bias(horizontal, bias)),
        ]

    def tucker(
        self, layer: keras.layers.Layer, kernel: np.ndarray, bias: np.ndarray | None, ranks: tuple[int, ...]
    ) -> list[LayerEdit]:
        r1, r2 = ranks
        first_k, core_k, last_k = tucker2_kernels(kernel, r1, r2)
        cls = type(layer)
        first = layer_config(
            layer,
            **_LINEAR,
            filters=r1,
            kernel_size=1,
            strides=1,
            padding="valid",
            dilation_rate=1,
            name=_fresh(f"{layer.name}_reduce", self.taken),
        )
        core = layer_config(layer, **_LINEAR, filters=r2, name=_fresh(f"{layer.name}_core", self.taken))
        last = layer_config(layer, kernel_size=1, strides=1, padding="valid", dilation_rate=1)
        return [
            LayerEdit(cls, first, [first_k]),
            LayerEdit(cls, core, [core_k]),
            LayerEdit(cls, last, _with_bias(last_k, bias)),
        ]


def decompose_with_decisions(
    model: keras.Model, rank_ratio: float, *, conv_method: ConvMethod = "auto", require_saving: bool = True
) -> tuple[keras.Model, list[Decision]]:
    """`decompose_model`, also returning what was decomposed how."""
    if not 0.0 < rank_ratio <= 1.0:
        raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio}")
    flat = to_functional(model)
    planner = _Planner(flat, rank_ratio, conv_method, require_saving)
    return rebuild(flat, planner), planner.decisions


def decompose_model(
    model: keras.Model, rank_ratio: float, *, conv_method: ConvMethod = "auto", require_saving: bool = True
) -> keras.Model:
    """Replace Dense and Conv layers by low-rank factorisations (weights from SVD); see the module doc.

    `require_saving=False` decomposes every eligible layer even when it does not cut MACs (for checks).
    """
    return decompose_with_decisions(
        model, rank_ratio, conv_method=conv_method, require_saving=require_saving
    )[0]


class DecomposeStage:
    name = "decompose"
    version = "4"

    def __init__(self, cfg: DecomposeSection) -> None:
        self.cfg = cfg

    def config_dict(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")

    def run(self, model: keras.Model, ctx: StageContext) -> StageResult:
        from pipeline.compress.cost import count_macs, count_params

        keras.utils.set_random_seed(ctx.seed)
        decomposed, decisions = decompose_with_decisions(model, self.cfg.rank_ratio)
        if decisions:
            decomposed = fine_tune(decomposed, ctx, self.cfg, self.cfg.epochs, "decompose fine-tune")
        macs_before, macs_after = count_macs(model), count_macs(decomposed)
        if decisions:
            notes: tuple[str, ...] = (
                f"decomposed {len(decisions)} layers: MACs {macs_before} -> {macs_after}",
            )
        else:
            notes = (f"no layer gets cheaper at rank_ratio {self.cfg.rank_ratio}: model unchanged",)
        details = {
            "rank_ratio": self.cfg.rank_ratio,
            "macs_before": macs_before,
            "macs_after": macs_after,
            "params_before": count_params(model),
            "params_after": count_params(decomposed),
            "layers": [d.__dict__ for d in decisions],
        }
        return StageResult(decomposed, notes, details)
