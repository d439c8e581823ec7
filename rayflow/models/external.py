"""The adapter that makes a user's own network a rayflow network (the FeatureNet contract).

rayflow's images are [-1, 1], NCHW, `data.image_size`; a teacher trained elsewhere wants its own
size and pixel convention. The adapter resizes (bilinear, antialiased), maps the value range and
normalises inside its forward, runs the user's module, and takes the penultimate embedding with a
forward hook (the declared layer's output, else the input of the last nn.Linear), so every stage
that uses a teacher (logits, relabelling, the filter, DRE features, online KD) works unchanged.

Registered as "external": model.json carries the factory path and these settings, the artifact's
model.safetensors the adapter's state_dict (the user's weights under `net.`), so `load_model(dir)`
rebuilds it anywhere the factory imports (Ray workers get the code through py_modules).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import register

NAME = "external"


def _call_factory(fn, kwargs: dict, sizes: dict) -> nn.Module:
    """`fn(**kwargs)`, plus the sizes (in_channels, image_size, num_outputs) its signature names and
    kwargs leave out: a student factory gets the data's shape, a teacher's keeps its own."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    extra = {k: v for k, v in sizes.items() if k in params and k not in kwargs}
    net = fn(**kwargs, **extra)
    if not isinstance(net, nn.Module):
        raise TypeError(f"the factory returned {type(net).__name__}, not a torch nn.Module")
    return net


def _takes_return_features(net: nn.Module) -> bool:
    try:
        return "return_features" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return False


class ExternalNet(nn.Module):
    """forward(x, return_features=False) on rayflow images -> logits (, feats with feats[-1] the
    (N, D) embedding). A user network that already follows FeatureNet gives its own feats."""

    def __init__(self, net: nn.Module, *, in_channels: int, input_size: int, input_channels: int,
                 value_range: tuple[float, float] = (-1.0, 1.0), normalize: dict | None = None,
                 feature_layer: str | None = None, feature_layers: tuple[str, ...] = ()):
        super().__init__()
        if input_channels != in_channels:
            raise ValueError(f"the network takes {input_channels}-channel images; the data has {in_channels}")
        if normalize and len(normalize["mean"]) not in (1, input_channels):
            raise ValueError(f"normalize has {len(normalize['mean'])} values for {input_channels}-channel images")
        self.net = net
        self.input_size = int(input_size)
        lo, hi = (float(v) for v in value_range)
        mean = torch.tensor(normalize["mean"] if normalize else [0.0], dtype=torch.float32)
        std = torch.tensor(normalize["std"] if normalize else [1.0], dtype=torch.float32)
        # x in [-1, 1] -> (lo + (hi - lo) * (x + 1) / 2 - mean) / std, as one scale and shift per channel
        scale = (hi - lo) / 2 / std
        shift = (lo + (hi - lo) / 2 - mean) / std
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)
        self.own_features = feature_layer is None and not feature_layers and _takes_return_features(net)
        self.feature_layer, self.feature_layers = feature_layer, tuple(feature_layers)
        if not self.own_features:
            self._check_layers()
        self._feature_dim: int | None = None
        self._in_channels = in_channels

    def _check_layers(self) -> None:
        modules = dict(self.net.named_modules())
        for name in [*self.feature_layers, *([self.feature_layer] if self.feature_layer else [])]:
            if name not in modules:
                near = ", ".join(n for n in list(modules)[1:8] if n)
                raise ValueError(f"the network has no module {name!r} (it has e.g. {near})")
        if self.feature_layer is None and not any(isinstance(m, nn.Linear) for m in self.net.modules()):
            raise ValueError("the network has no nn.Linear head to take the penultimate features from: set "
                             "feature_layer")

    def _run_hooked(self, x: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        """The network's output and the hooked features [maps..., embedding]. Hooks live for one
        forward only: a copied or pickled adapter never writes into another one's tensors."""
        got: dict[str, torch.Tensor] = {}
        modules = dict(self.net.named_modules())

        def keep(key: str):
            def hook(_module, _args, output):
                got[key] = output[0] if isinstance(output, (tuple, list)) else output
            return hook

        handles = [modules[n].register_forward_hook(keep(f"map{i}")) for i, n in enumerate(self.feature_layers)]
        if self.feature_layer is not None:
            handles.append(modules[self.feature_layer].register_forward_hook(keep("embedding")))
        else:
            head = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
            handles.append(head.register_forward_pre_hook(lambda _m, args: got.__setitem__("embedding", args[0])))
        try:
            out = self.net(x)
        finally:
            for h in handles:
                h.remove()
        maps = [got[f"map{i}"] for i in range(len(self.feature_layers))]
        return out, [*maps, torch.flatten(got["embedding"], 1)]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = self.preprocess(x)
        if self.own_features:
            return self.net(x, return_features=True) if return_features else self.net(x)
        if not return_features:
            out = self.net(x)
            return out[0] if isinstance(out, (tuple, list)) else out  # (logits, aux...): the logits
        out, feats = self._run_hooked(x)
        return (out[0] if isinstance(out, (tuple, list)) else out), feats

    @property
    def feature_dim(self) -> int:
        """Width of the embedding, from one dry forward on zeros (in eval mode, gradients off)."""
        if self._feature_dim is None:
            was = self.training
            self.eval()
            with torch.no_grad():
                p = next(self.parameters(), None)
                x = torch.zeros(2, self._in_channels, self.input_size, self.input_size,
                                device=p.device if p is not None else "cpu")
                self._feature_dim = int(self(x, return_features=True)[1][-1].shape[1])
            self.train(was)
        return self._feature_dim


@register(NAME)
def external(in_channels: int, image_size: int, num_outputs: int, factory: str, kwargs: dict | None = None,
             input_size: int | None = None, input_channels: int | None = None,
             value_range: tuple[float, float] = (-1.0, 1.0), normalize: dict | None = None,
             feature_layer: str | None = None, feature_layers: tuple[str, ...] = (),
             modules: tuple[str, ...] = ()) -> ExternalNet:
    """The user's network from `factory` (an import path) wrapped in the adapter; the default
    value_range [-1, 1] at the data's own size passes rayflow's images through unchanged."""
    from rayflow.user_code import resolve

    fn = resolve(factory, tuple(modules))
    size, chans = input_size or image_size, input_channels or in_channels
    net = _call_factory(fn, dict(kwargs or {}), {"in_channels": chans, "image_size": size,
                                                 "num_outputs": num_outputs})
    return ExternalNet(net, in_channels=in_channels, input_size=size, input_channels=chans,
                       value_range=tuple(value_range), normalize=normalize, feature_layer=feature_layer,
                       feature_layers=tuple(feature_layers))


def student_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`student.model: {name: 'pkg.mod:fn', kwargs}` as the external network's kwargs."""
    return {"factory": name, "kwargs": dict(kwargs)}
