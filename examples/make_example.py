"""Make what a rayflow user starts from: a trained teacher of their own and a folder of images.

    python examples/make_example.py /tmp/rayflow-example
    rayflow distill --config /tmp/rayflow-example/config.yaml

Plain PyTorch, no rayflow: it writes
- `images/<class name>/*.png`: colour pictures of every size from 20 to 48 px (sklearn's bundled
  handwritten digits, tinted and scaled; real data, offline), classes named "zero" ... "nine";
- `my_teacher/`: the teacher's own package (`net.py`, an nn.Module of its own, 32-px RGB input,
  inputs in [0, 1] normalised by a per-channel mean/std), outside rayflow and off PYTHONPATH;
- `teacher.pt`: the teacher, trained here on the other digits of the same set, saved as a state_dict;
- `config.yaml`: a rayflow config that names all three (`teacher.checkpoint`) and a small student.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NAMES = sorted(DIGITS)  # class ids follow the sorted folder names, as in torchvision's ImageFolder and rayflow
SIZE, MEAN, STD = 32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]

NET = '''
"""The user's teacher: a network of its own, nothing of rayflow in it."""
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10, width=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(num_classes=10, width=32):
    return SmallCNN(num_classes, width)
'''


def pictures(per_class: int, seed: int):
    """Each digit as an RGB picture (a random ink and paper colour, a random size from 20 to 48 px):
    the first `per_class` of each class for the folder, the rest for training the teacher."""
    rng = np.random.default_rng(seed)
    x, y = load_digits(return_X_y=True)
    for digit, name in enumerate(DIGITS):
        c = NAMES.index(name)
        # shuffled: sklearn orders the digits by writer, and a teacher trained on other writers than the
        # folder's would face a shift no distillation is about
        for i, idx in enumerate(rng.permutation(np.flatnonzero(y == digit))):
            ink, paper = rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.35, 3)
            a = (x[idx].reshape(8, 8) / 16.0)[..., None]
            rgb = (255 * (a * ink + (1 - a) * paper)).astype(np.uint8)
            side = int(rng.integers(20, 49))
            yield i < per_class, c, f"{name}/{i:03d}.png", Image.fromarray(rgb).resize((side, side), Image.BILINEAR)


def as_teacher_input(ims: list, ys: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The pictures as the teacher sees them: 32 px RGB in [0, 1], then normalised."""
    xs = [np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255.0 for im in ims]
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, torch.tensor(ys)


def train_teacher(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> float:
    """Plain Adam on random batches; returns the accuracy (%) on the pictures it trained on."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        i = torch.randint(len(x), (64,), generator=g)
        loss = F.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return 100.0 * float((net(x).argmax(1) == y).float().mean())


def write_config(out: Path) -> None:
    (out / "config.yaml").write_text(textwrap.dedent(f"""\
        # rayflow on your own teacher and images (made by examples/make_example.py)
        name: example
        output_dir: {out / 'outputs'}
        data: {{name: folder, path: {out / 'images'}, image_size: {SIZE}}}
        teacher:
          checkpoint:
            factory: my_teacher.net:build      # your package.module:function
            kwargs: {{num_classes: 10}}
            weights: {out / 'teacher.pt'}       # a state_dict (or .safetensors)
            modules: [{out / 'my_teacher'}]     # shipped to the Ray workers
            value_range: [0, 1]
            normalize: {{mean: {MEAN}, std: {STD}}}
        student:
          model: {{name: mlp}}
          train: {{steps: 300, batch_size: 64, augment: []}}
        gan: {{steps: 300, batch_size: 32, g_channels: 32, d_channels: 32, checkpoint_every: 100}}
        dre: {{feature_net: {{name: teacher}}, steps: 100, hidden: [64, 32], burnin: 100}}
        filter: {{rho: 0.9, burnin: 50}}
        synth: {{m_per_class: 100, batch_size: 100, shard_size: 500, pool_draws: 400}}
        runtime: {{num_cpus: 2}}
        """))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write the example into")
    ap.add_argument("--per-class", type=int, default=60, help="pictures per class in the folder (the rest, ~120, train the teacher)")
    ap.add_argument("--steps", type=int, default=1000, help="teacher training steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out.resolve()
    torch.manual_seed(args.seed)
    held: tuple[list, list] = ([], [])
    n = 0
    for in_folder, c, name, im in pictures(args.per_class, args.seed):
        if in_folder:
            (out / "images" / name).parent.mkdir(parents=True, exist_ok=True)
            im.save(out / "images" / name)
            n += 1
        else:
            held[0].append(im)
            held[1].append(c)
    pkg = out / "my_teacher"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "net.py").write_text(NET)
    namespace: dict = {}
    exec(compile(NET, str(pkg / "net.py"), "exec"), namespace)  # the same code the config names
    net = namespace["build"]()
    x, y = as_teacher_input(*held)
    acc = train_teacher(net, x, y, args.steps, args.seed)
    torch.save(net.state_dict(), out / "teacher.pt")
    write_config(out)
    print(f"wrote {n} images of {len(NAMES)} classes to {out / 'images'}, a teacher trained on {len(y)} others "
          f"({acc:.1f} % on those) and {out / 'config.yaml'}")


if __name__ == "__main__":
    main()
