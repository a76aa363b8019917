"""Cross-check deepens' analytic kernels against neural-tangents' stax (not run in CI: it needs JAX).

1. In an environment with JAX and neural-tangents (Python 3.11: ``python -m venv ntenv && ntenv/bin/pip install
   "jax==0.4.30" "jaxlib==0.4.30" "neural-tangents==0.6.5"``):
   ``ntenv/bin/python benchmarks/crosscheck_neural_tangents.py reference > ref.json``
2. In deepens' environment:  ``.venv/bin/python benchmarks/crosscheck_neural_tangents.py compare ref.json``

Cases: a 3-hidden-layer MLP (ReLU, erf); convolutional networks with SAME, VALID and CIRCULAR padding,
strides, AvgPool, GlobalAvgPool, Flatten and Dense readouts, with and without biases, NTK and standard
parameterization, 1-D and 2-D; activations ReLU, Erf (closed forms) and GELU and sin (deepens evaluates
them by quadrature, neural-tangents in closed form). Measured errors: docs/kernels.md.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np

DEPTH, W_STD, B_STD, R_STD, R_B_STD = 3, 1.3, 0.2, 0.9, 0.1

# Convolutional cases: (name, input shape (N, C, *spatial), layers). A layer is a tuple:
#   ("conv", out_channels, kernel, stride, padding, W_std, b_std or None, parameterization)
#   padding: "SAME" | "VALID" | "CIRCULAR" (neural-tangents' names); ("act", name); ("avgpool", window, stride);
#   ("gap",); ("flatten",); ("dense", W_std, b_std or None, parameterization)
CASES = [
    ("same-relu-stride-gap", (4, 3, 6, 6), [
        ("conv", 8, (3, 3), (1, 1), "SAME", 1.3, 0.2, "ntk"), ("act", "relu"),
        ("conv", 8, (3, 3), (2, 2), "SAME", 1.4, None, "ntk"), ("act", "relu"),
        ("conv", 8, (3, 3), (1, 1), "SAME", 1.2, 0.1, "ntk"), ("act", "relu"),
        ("gap",), ("dense", 0.9, 0.1, "ntk")]),
    ("valid-erf-flatten", (4, 2, 7, 7), [
        ("conv", 8, (3, 3), (1, 1), "VALID", 1.5, None, "ntk"), ("act", "erf"),
        ("conv", 8, (2, 2), (1, 1), "VALID", 1.1, None, "ntk"), ("act", "erf"),
        ("flatten",), ("dense", 1.0, None, "ntk")]),
    ("circular-gelu-avgpool", (3, 2, 8, 8), [
        ("conv", 8, (3, 3), (1, 1), "CIRCULAR", 1.4, 0.3, "ntk"), ("act", "gelu"),
        ("avgpool", (2, 2), (2, 2)),
        ("conv", 8, (3, 3), (1, 1), "CIRCULAR", 1.2, None, "ntk"), ("act", "relu"),
        ("gap",), ("dense", 1.0, 0.2, "ntk")]),
    ("standard-1d-sin-flatten", (4, 3, 9), [
        ("conv", 16, (3,), (2,), "VALID", 1.2, 0.1, "standard"), ("act", "sin"),
        ("conv", 16, (3,), (1,), "SAME", 1.3, 0.1, "standard"), ("act", "relu"),
        ("flatten",), ("dense", 1.0, 0.1, "standard")]),
]


def _inputs(shape) -> np.ndarray:
    return np.random.default_rng(sum(shape)).normal(size=shape)


def reference() -> dict:
    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")  # no TF
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    x = np.random.default_rng(0).normal(size=(5, 3))
    out = {"x": x.tolist(), "version": nt.__version__}
    for name, act in (("relu", stax.Relu()), ("erf", stax.Erf())):
        layers = []
        for _ in range(DEPTH):
            layers += [stax.Dense(512, W_std=W_STD, b_std=B_STD), act]
        layers.append(stax.Dense(1, W_std=R_STD, b_std=R_B_STD))
        k = stax.serial(*layers)[2](x, None, ("nngp", "ntk"))
        out[name] = {"nngp": np.asarray(k.nngp).tolist(), "ntk": np.asarray(k.ntk).tolist()}
    acts = {"relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "sin": stax.Sin}
    for name, shape, spec in CASES:
        dims = len(shape) - 2
        numbers = ("NHWC", "HWIO", "NHWC") if dims == 2 else ("NHC", "HIO", "NHC")
        layers = []
        for layer in spec:
            kind = layer[0]
            if kind == "conv":
                _, chan, k, s, pad, w, b, par = layer
                layers.append(stax.Conv(chan, k, s, pad, W_std=w, b_std=b, dimension_numbers=numbers,
                                        parameterization=par))
            elif kind == "act":
                layers.append(acts[layer[1]]())
            elif kind == "avgpool":
                layers.append(stax.AvgPool(layer[1], layer[2], "VALID"))
            elif kind == "gap":
                layers.append(stax.GlobalAvgPool())
            elif kind == "flatten":
                layers.append(stax.Flatten())
            else:
                _, w, b, par = layer
                layers.append(stax.Dense(1, W_std=w, b_std=b, parameterization=par))
        x = np.moveaxis(_inputs(shape), 1, -1)  # channels last
        k = stax.serial(*layers)[2](x, None, ("nngp", "ntk"))
        out[name] = {"nngp": np.asarray(k.nngp).tolist(), "ntk": np.asarray(k.ntk).tolist()}
    return out


def network(shape, spec):
    """The same network as deepens' analytic description (padding as neural-tangents chooses it)."""
    import torch

    from deepens.kernels import Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Network

    ops = []
    spatial = list(shape[2:])
    channels = shape[1]
    for layer in spec:
        kind = layer[0]
        if kind == "conv":
            _, chan, k, s, pad, w, b, par = layer
            if pad == "VALID":
                pads = [(0, 0)] * len(k)
            else:  # SAME / CIRCULAR: output ceil(n / s), the extra padding after (neural-tangents / XLA)
                pads = []
                for n, kk, ss in zip(spatial, k, s, strict=True):
                    total = max((-(-n // ss) - 1) * ss + kk - n, 0)
                    pads.append((total // 2, total - total // 2))
            ops.append(Conv(w, b or 0.0, bias=b is not None, parameterization=par,
                            fan_in=channels * int(np.prod(k)), kernel_size=k, stride=s, padding=tuple(pads),
                            padding_mode="circular" if pad == "CIRCULAR" else "zeros"))
            spatial = [(n + lo + hi - kk) // ss + 1 for n, (lo, hi), kk, ss in zip(spatial, pads, k, s, strict=True)]
            channels = chan
        elif kind == "act":
            ops.append(Activation(torch.sin if layer[1] == "sin" else layer[1]))
        elif kind == "avgpool":
            ops.append(AvgPool(layer[1], layer[2]))
            spatial = [(n - kk) // ss + 1 for n, kk, ss in zip(spatial, layer[1], layer[2], strict=True)]
        elif kind == "gap":
            ops.append(GlobalAvgPool())
            spatial = []
        elif kind == "flatten":
            channels *= int(np.prod(spatial)) if spatial else 1
            ops.append(Flatten())
            spatial = []
        else:
            _, w, b, par = layer
            ops.append(Dense(w, b or 0.0, bias=b is not None, parameterization=par, fan_in=channels))
    return Network(ops)


def compare(path: str) -> dict:
    from deepens.kernels import Network, infinite_width_kernels

    ref = json.loads(open(path).read())
    x = np.array(ref["x"])
    result = {"neural_tangents": ref["version"]}

    def rel(mine, theirs):
        theirs = np.asarray(theirs)
        return float(np.abs(mine - theirs).max() / np.abs(theirs).max())

    for name in ("relu", "erf"):
        k = infinite_width_kernels(x, network=Network.mlp(DEPTH, name, W_STD, B_STD, R_STD, R_B_STD))
        for kind, mine in (("nngp", k.nngp_same), ("ntk", k.ntk_same)):
            result[f"mlp-{name}_{kind}_max_rel_diff"] = rel(mine, ref[name][kind])
    for name, shape, spec in CASES:
        k = infinite_width_kernels(_inputs(shape), network=network(shape, spec))
        for kind, mine in (("nngp", k.nngp_same), ("ntk", k.ntk_same)):
            result[f"{name}_{kind}_max_rel_diff"] = rel(mine, ref[name][kind])
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "reference":
        print(json.dumps(reference()))
    elif len(sys.argv) == 3 and sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2]), indent=2))
    else:
        sys.exit(__doc__)
