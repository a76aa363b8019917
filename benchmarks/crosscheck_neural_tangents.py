"""Cross-check deepens' analytic kernels against neural-tangents' stax (not run in CI: it needs JAX).

1. In an environment with JAX and neural-tangents (e.g. ``pip install "jax==0.4.30" "jaxlib==0.4.30"
   "neural-tangents==0.6.5"``):  ``python benchmarks/crosscheck_neural_tangents.py reference > ref.json``
2. In deepens' environment:  ``python benchmarks/crosscheck_neural_tangents.py compare ref.json``

Measured 2026-11-22: maximum relative differences 1.9e-16 (ReLU NNGP), 4.7e-17 (ReLU NTK), 3.8e-16 (erf
NNGP), 2.0e-16 (erf NTK) for a 3-hidden-layer MLP with W_std 1.3, b_std 0.2 and a readout 0.9 / 0.1.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np

DEPTH, W_STD, B_STD, R_STD, R_B_STD = 3, 1.3, 0.2, 0.9, 0.1


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
    return out


def compare(path: str) -> dict:
    from deepens.kernels import Network, infinite_width_kernels

    ref = json.loads(open(path).read())
    x = np.array(ref["x"])
    result = {"neural_tangents": ref["version"]}
    for name in ("relu", "erf"):
        k = infinite_width_kernels(x, network=Network.mlp(DEPTH, name, W_STD, B_STD, R_STD, R_B_STD))
        for kind, mine in (("nngp", k.nngp_same), ("ntk", k.ntk_same)):
            theirs = np.array(ref[name][kind])
            result[f"{name}_{kind}_max_rel_diff"] = float(np.abs(mine - theirs).max() / np.abs(theirs).max())
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "reference":
        print(json.dumps(reference()))
    elif len(sys.argv) == 3 and sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2]), indent=2))
    else:
        sys.exit(__doc__)
