"""The y2h stage (`gan.label_input: y2h`, regression): the CcGAN paper's label embedding, fitted
once on the real training images (`gan/y2h.py`) and read, frozen, by the GAN stage. Its own
cached artifact: re-selecting or re-training the GAN never refits it, and the GAN's key follows it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rayflow.stages.graph import Node, StageDef, View, register

log = logging.getLogger("rayflow")

Y2H = "y2h.pt"


def y2h_inputs(cfg: Any) -> dict[str, Node]:
    """The GAN's y2h input, only with `gan.label_input: y2h` (the joint default keeps its key)."""
    return {"y2h": Node.of("y2h")} if cfg.gan.label_input == "y2h" else {}


def build_y2h(runner: Any, node: Node, v: View, inputs: dict, out: Path, key: str) -> dict:
    from rayflow.checkpoint import save_state
    from rayflow.gan.y2h import fit_label_input

    train = runner.splits.train
    if train.num_classes is not None:  # config validation refuses it for data.task classification
        raise ValueError("the y2h label input needs continuous labels")
    steps = v["gan.y2h_steps"]
    log.info("[y2h] the CcGAN label input: a regression CNN x -> h -> y on %d real images, then y2h fitted to "
             "its head (%d steps each)", len(train), steps)
    y2h, metrics = fit_label_input(train.images, train.labels, v["gan.embed_dim"], steps=steps, seed=v["gan.seed"])
    save_state(y2h.state_dict(), out / Y2H)
    log.info("[y2h] CNN train MAE %.4f, h2y(y2h(y)) vs y %.4f (normalised labels)", metrics["label_cnn_train_mae"],
             metrics["y2h_roundtrip_mae"])
    return metrics


register(StageDef("y2h", reads=lambda p: ("data", "gan.embed_dim", "gan.y2h_steps", "gan.seed"), build=build_y2h,
                  doc="the CcGAN label embedding y -> h: a regression CNN on the real images, y2h fitted to its head"))
