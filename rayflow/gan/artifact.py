"""The GAN artifact's format: the sampling generator's weights and what rebuilds it.

`gan.json` holds the GeneratorSpec fields and, for a per-class selection, `route_steps` (the
checkpoint step each class samples from); `g_ema.safetensors` the (routed) EMA generator with its
recalibrated BN statistics, ready to sample from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rayflow.checkpoint import load_into, load_weights, save_weights
from rayflow.config import GANConfig
from rayflow.data.imageset import ImageSet
from rayflow.gan.ema import unwrap
from rayflow.gan.generator import GeneratorSpec
from rayflow.gan.routed import ClassRoutedGenerator
from rayflow.gan.sampling import ema_generator, for_sampling, generator_spec
from rayflow.gan.selection import route_plan
from rayflow.labels import space_of

G_EMA = "g_ema.safetensors"
ARCH = "gan.json"


def routed_generator(states: list[tuple[int, dict]], cfg: GANConfig, train: ImageSet) -> torch.nn.Module:
    """One sampling-ready EMA generator per distinct checkpoint among `states` ((step, training
    state) per class), routed by class; the plain generator when every class picked one step."""
    steps, routes = route_plan([s for s, _ in states])
    by_step = {s: st for s, st in states}
    gens = [for_sampling(ema_generator(by_step[s], cfg, train), cfg, space_of(train.num_classes)) for s in steps]
    return gens[0] if len(gens) == 1 else ClassRoutedGenerator(gens, routes, continuous=train.num_classes is None)


def save_generator(out: Path, G: torch.nn.Module, cfg: GANConfig, train: ImageSet,
                   route_steps: list[int] | None = None) -> None:
    spec = generator_spec(cfg, train)
    save_weights(G.state_dict(), out / G_EMA)
    (out / ARCH).write_text(json.dumps({"num_classes": spec.num_classes, "in_channels": spec.out_channels,
                                        "image_size": spec.image_size, "z_dim": spec.z_dim,
                                        "g_channels": spec.base_channels,
                                        **({"label_embedding": spec.label_embedding, "embed_dim": spec.embed_dim}
                                           if spec.num_classes is None else {}),
                                        **({"route_steps": route_steps} if route_steps else {})}))


def arch_of(gan_dir: str | Path) -> dict:
    return json.loads((Path(gan_dir) / ARCH).read_text())


def load_generator(gan_dir: str | Path) -> torch.nn.Module:
    """The sampling generator of a GAN artifact: one EMA generator, or one per checkpoint routed by
    class when the artifact was selected per class."""
    d = Path(gan_dir)
    arch = arch_of(d)
    cont = {k: arch[k] for k in ("label_embedding", "embed_dim") if k in arch}
    spec = GeneratorSpec(arch["num_classes"], z_dim=arch["z_dim"], base_channels=arch["g_channels"],
                         out_channels=arch["in_channels"], image_size=arch["image_size"], **cont)
    steps, routes = route_plan(arch.get("route_steps") or [])
    G = ClassRoutedGenerator([spec() for _ in steps], routes, continuous=arch["num_classes"] is None) \
        if len(steps) > 1 else spec()
    load_into(G, load_weights(d / G_EMA), str(d / G_EMA))
    return unwrap(G).eval()
