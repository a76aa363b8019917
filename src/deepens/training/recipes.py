"""The papers' training recipes as named presets (``deepens train --recipe NAME``; flags override them).

Each recipe gives the options the paper states — network, data, optimiser, learning rate and schedule, weight
decay, epochs, batch size — with the section it comes from, and says where the paper leaves a value open and what
deepens chose (``open``). They need the CIFAR files (``--data-dir``) and, at these sizes, a GPU.
"""

from __future__ import annotations

from ..errors import DeepensError

__all__ = ["RECIPES", "recipe_options"]

RECIPES: dict[str, dict] = {
    "ee-convnet": {
        "source": "EE App. C: CIFAR-100, the 4-layer VGG-like ConvNet (64-128-256-512, 3×3, Xavier normal, no batch "
                  "norm, no biases), modulations N(0, 1), cross-entropy, SGD momentum 0.9 with L2, batch 128, 500 or "
                  "1000 epochs, lr 0.01 for the first 500 epochs then linear decay to 1e-4, 10k training images held "
                  "out for validation, standard parameterization.",
        "options": {"dataset": "cifar100", "model": "convnet", "ensemble": "batch", "modulation": "normal:0,1",
                    "optimizer": "sgd", "momentum": 0.9, "lr": 0.01, "schedule": "ee", "decay_start": 0.5,
                    "final_lr": 1e-4, "epochs": 1000, "batch_size": 128, "weight_decay": 5e-4, "val": 10000,
                    "parameterization": "standard", "loss": "ce"},
        "open": "The L2 coefficient is not stated: 5e-4. The members M are per experiment (default 8 here). The "
                "ConvNet's last pooling is global (deepens' deviation, see ConvNet).",
    },
    "pl-vgg": {
        "source": "PL §5: CIFAR-10/100, VGG16 with [w, 2w, 4w, 8w] filters and 8w-wide fully connected layers (w = 64: "
                  "15.3M), 200 epochs, SGD with an annealing learning schedule, batch 128; weight decay and dropout "
                  "tuned by grid search per size; deep ensembles of independently trained networks.",
        "options": {"dataset": "cifar100", "model": "vgg16", "ensemble": "deep", "optimizer": "sgd", "momentum": 0.9,
                    "lr": 0.05, "schedule": "cosine", "final_lr": 0.0, "epochs": 200, "batch_size": 128,
                    "weight_decay": 5e-4, "augment": "crop-flip"},
        "open": "Not in the text: momentum (0.9), initial lr (0.05), the annealing's form (cosine to 0), the tuned "
                "weight decay (5e-4) and dropout (0), the augmentation (the standard crop-flip).",
    },
    "pl-wrn": {
        "source": "PL §5: CIFAR-10/100, WideResNet-28 with [w, 2w, 4w] filters (w = 160: WRN-28-10, 36.8M), 200 "
                  "epochs, SGD with an annealing learning schedule, batch 128; weight decay and dropout tuned per "
                  "size.",
        "options": {"dataset": "cifar100", "model": "wrn", "depth": 28, "ensemble": "deep", "optimizer": "sgd",
                    "momentum": 0.9, "lr": 0.1, "schedule": "cosine", "final_lr": 0.0, "epochs": 200,
                    "batch_size": 128, "weight_decay": 5e-4, "augment": "crop-flip"},
        "open": "Not in the text: momentum (0.9), initial lr (0.1, WRN's usual), the annealing's form (cosine to 0), "
                "weight decay (5e-4), dropout (0), the augmentation (crop-flip).",
    },
    "ce-resnext": {
        "source": "CE §4.2 follows Xie et al. (ResNeXt, §5.3) on CIFAR: ResNeXt-29 C×dd, SGD momentum 0.9, batch "
                  "128, weight decay 5e-4, lr 0.1 divided by 10 at epochs 150 and 225 of 300; the baseline 1×128d "
                  "and the designs 37×10d (primal), 10×10d (dual).",
        "options": {"dataset": "cifar100", "model": "resnext29", "cardinality": 8, "width": 64, "ensemble": "deep",
                    "members": 1, "optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "schedule": "multistep",
                    "milestones": [150, 225], "step_factor": 0.1, "epochs": 300, "batch_size": 128,
                    "weight_decay": 5e-4, "augment": "crop-flip"},
        "open": "The CE text states only that it follows [20]; the values are ResNeXt's CIFAR recipe. Choose the "
                "design with --cardinality / --width (1×128d, 37×10d, 10×10d).",
    },
}


def recipe_options(name: str) -> dict:
    """The training options of recipe ``name`` (a copy)."""
    if name not in RECIPES:
        raise DeepensError(f"recipe: expected one of {', '.join(RECIPES)}, got {name!r}")
    options = dict(RECIPES[name]["options"])
    if "milestones" in options:
        options["milestones"] = list(options["milestones"])
    return options
