"""cGAN training stage: one body for Ray Train workers and the local executor.

Checkpoints (full GAN state + a sample grid + label consistency) go out every
`gan.checkpoint_every` steps; a restarted run of the same artifact key resumes from the last one.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rayflow.artifacts import Artifact, run_stage, stage_key
from rayflow.checkpoint import load_state, save_state, save_weights
from rayflow.config import GANConfig, PipelineConfig
from rayflow.data.imageset import ImageSet, Splits
from rayflow.gan import build_gan, generate, recalibrate_bn, save_grid_png, train_gan, unwrap
from rayflow.gan.quality import gan_quality

log = logging.getLogger("rayflow")

G_EMA = "g_ema.safetensors"
ARCH = "gan.json"


def grid_labels(num_classes: int, per_class: int = 10) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)


def consistency_probe(G: torch.nn.Module, teacher: torch.nn.Module | None, num_classes: int,
                      per_class: int = 100, seed: int = 12345, real_u8: torch.Tensor | None = None) -> dict:
    """Label consistency (and FID vs `real_u8`, both in teacher space) of one checkpoint's samples."""
    if teacher is None:
        return {}
    labels = grid_labels(num_classes, per_class)
    return gan_quality(teacher, generate(G, labels, seed), labels, real_u8=real_u8, num_classes=num_classes)


def for_sampling(G: torch.nn.Module, cfg: GANConfig, num_classes: int) -> torch.nn.Module:
    """An eval-mode copy of (EMA) G to sample from, with BN statistics re-estimated from its own
    samples when `gan.recalibrate_bn` (BigGAN's "standing statistics"). Why: the EMA copy carries
    raw G's running stats, which do not match the averaged weights (quality run, step 3000: label
    consistency 83 % as trained, 91.5 % recalibrated, FID 11.1 -> 8.3)."""
    g = copy.deepcopy(unwrap(G))
    if cfg.recalibrate_bn:
        recalibrate_bn(g, grid_labels(num_classes, 200), seed=cfg.seed)
    return g.eval()


def ema_generator(state: dict, cfg: GANConfig, train: ImageSet) -> torch.nn.Module:
    """The EMA generator stored in a GAN checkpoint state."""
    from rayflow.gan import CondGenerator

    c, h, _ = train.shape
    G = CondGenerator(train.num_classes, z_dim=cfg.z_dim, out_channels=c, image_size=h, base_channels=cfg.g_channels)
    G.load_state_dict(state["G_ema"]["model"])
    return G


def probe_reals(train: ImageSet, n: int = 2000) -> torch.Tensor:
    """The real images FID is measured against while choosing a checkpoint (a fixed subset)."""
    return torch.tensor(train.images[np.random.default_rng(0).permutation(len(train))[:n]])


def gan_body(cfg: GANConfig, train: ImageSet, *, rank: int, world: int, device: torch.device,
             prepare: Callable[[torch.nn.Module], torch.nn.Module],
             save_checkpoint: Callable[[dict, dict, Path | None], None], start_state: dict | None,
             teacher: torch.nn.Module | None, name: str) -> dict:
    """Trains the GAN; `save_checkpoint(metrics, state, grid_png)` persists (rank 0 gives state)."""
    c, h, _ = train.shape
    C = train.num_classes
    state = build_gan(cfg, C, c, h, device=device)
    if start_state is not None:
        state.load_state_dict(start_state)
        log.info("[%s] resuming GAN from step %d", name, state.step)
    state.G, state.D = prepare(state.G), prepare(state.D)
    rng = np.random.default_rng((cfg.seed, rank, state.step))
    # z and DiffAugment draw from the global torch RNG: seeded the same way, so the same config
    # trains the same GAN (a resumed run continues from a seed of its resume step)
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rank, state.step]).generate_state(1)[0]))
    per_worker = max(1, cfg.batch_size // world)

    def sample_real(n: int):
        idx = rng.integers(0, len(train), n)
        return torch.tensor(train.images[idx]), torch.tensor(train.labels[idx])

    reals = probe_reals(train)
    t0 = time.perf_counter()
    window: dict = {}

    def reporter(m: dict, _):
        window.update(m)
        if rank == 0:
            print(f"[{name}] step {m['step']}/{cfg.steps}  d_loss {m['d_loss']:.3f}  g_loss {m['g_loss']:.3f}  "
                  f"{m['steps_per_s']:.2f} steps/s", flush=True)

    curve: list[dict] = []

    def on_checkpoint(st) -> None:
        metrics = {"step": st.step, **{k: v for k, v in window.items() if k != "step"}}
        if rank != 0:
            save_checkpoint(metrics, None, None)
            return
        G = for_sampling(st.G_ema, cfg, C)
        q = consistency_probe(G, teacher, C, real_u8=reals)
        metrics.update({k: v for k, v in q.items() if not isinstance(v, list)})
        curve.append({"step": st.step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        metrics["curve"] = json.dumps(curve)
        with tempfile.TemporaryDirectory() as d:
            grid = Path(d) / f"samples_step{st.step:06d}.png"
            save_grid_png(generate(G, grid_labels(C), seed=1), grid, nrow=10)
            save_checkpoint(metrics, st.state_dict(), grid)
        if "label_consistency" in metrics:
            print(f"[{name}] step {st.step}: label consistency {metrics['label_consistency']:.1f} %", flush=True)

    train_gan(state, sample_real, cfg, reporter=reporter, on_checkpoint=on_checkpoint,
              log_every=min(100, cfg.checkpoint_every), batch_size=per_worker)
    return {"step": state.step, "train_s": time.perf_counter() - t0, "curve": curve}


def _load_teacher(teacher_dir: str | None):
    if teacher_dir is None:
        return None
    from rayflow.stages.models_io import load_model

    return load_model(teacher_dir)


def _ray_worker(config: dict) -> dict:
    import ray.train
    import ray.train.torch

    from rayflow.ray.train import quiet_train_reports

    torch.set_num_threads(config["threads"])
    quiet_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    start = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = load_state(Path(d) / "state.pt")

    def save_checkpoint(metrics: dict, state: dict | None, grid: Path | None) -> None:
        if state is None:
            ray.train.report({k: v for k, v in metrics.items() if k != "curve"})
            return
        with tempfile.TemporaryDirectory() as d:
            save_state(state, Path(d) / "state.pt")
            if grid is not None:
                os.replace(grid, Path(d) / grid.name)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    out = gan_body(config["gan"], config["train"], rank=rank, world=world, device=ray.train.torch.get_device(),
                   prepare=ray.train.torch.prepare_model, save_checkpoint=save_checkpoint, start_state=start,
                   teacher=_load_teacher(config["teacher_dir"]) if rank == 0 else None, name=config["name"])
    return out if rank == 0 else {}


def run_gan_training(pcfg: PipelineConfig, train: ImageSet, teacher_dir: str | None, name: str,
                     out: Path) -> dict:
    """Trains with the configured executor; leaves the final state + grids in `out`."""
    storage = Path(pcfg.output_dir).absolute() / "ray_storage"
    sc = pcfg.scaling
    threads = sc.threads_per_worker or max(1, int(sc.cpus_per_worker))
    if pcfg.runtime.executor == "ray":
        import ray.train
        from ray.train.torch import TorchTrainer

        from rayflow.runtime import init_ray

        init_ray(pcfg.runtime)
        result = TorchTrainer(
            _ray_worker,
            train_loop_config={"gan": pcfg.gan, "train": train, "teacher_dir": teacher_dir, "name": name,
                               "threads": threads},
            scaling_config=ray.train.ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                                   resources_per_worker={"CPU": sc.cpus_per_worker}),
            run_config=ray.train.RunConfig(name=name, storage_path=str(storage),
                                           failure_config=ray.train.FailureConfig(max_failures=1),
                                           # all kept: small, and the best one is picked afterwards
                                           checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
                                           logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        ).fit()
        if result.error:
            raise result.error
        metrics = result.return_value
        ckpt_dirs = sorted(p for p in (storage / name).glob("checkpoint_*") if (p / "state.pt").is_file())
        grids = sorted(p for ck in ckpt_dirs for p in ck.glob("samples_*.png"))
    else:
        local_dir = storage / name
        local_dir.mkdir(parents=True, exist_ok=True)
        ckpt = local_dir / "state.pt"
        device = torch.device("cuda" if sc.use_gpu and torch.cuda.is_available() else "cpu")
        torch.set_num_threads(max(threads, int(sc.cpus_per_worker * sc.num_workers)))

        def save_checkpoint(metrics: dict, st: dict | None, grid: Path | None) -> None:
            if st is None:
                return
            save_state(st, ckpt)  # the resume point
            keep = local_dir / f"ckpt_{st['step']:06d}"  # every checkpoint, for the selection
            keep.mkdir(exist_ok=True)
            save_state(st, keep / "state.pt")
            (keep / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "curve"}))
            if grid is not None:
                os.replace(grid, local_dir / grid.name)

        metrics = gan_body(pcfg.gan, train, rank=0, world=1, device=device, prepare=lambda m: m,
                           save_checkpoint=save_checkpoint, start_state=load_state(ckpt) if ckpt.exists() else None,
                           teacher=_load_teacher(teacher_dir), name=name)
        ckpt_dirs = sorted(p.parent for p in local_dir.glob("ckpt_*/state.pt"))
        grids = sorted(local_dir.glob("samples_*.png"))
    candidates, probes = probe_checkpoints(ckpt_dirs, pcfg.gan, train, teacher_dir)
    chosen, chosen_dir = select_checkpoint(candidates, pcfg.gan.select, pcfg.gan.min_consistency)
    state = load_state(Path(chosen_dir) / "state.pt")
    metrics = {**metrics, "probes": probes, "selected_step": int(chosen["step"]),
               "selected_label_consistency": chosen.get("label_consistency"),
               "selected_fid": chosen.get("fid_teacher_features")}
    log.info("[gan] using the EMA generator of step %d (select=%s, label consistency %s, FID %s)", chosen["step"],
             pcfg.gan.select, chosen.get("label_consistency"), chosen.get("fid_teacher_features"))
    if pcfg.gan.select == "per_class" and any("label_consistency_per_class" in m for m, _ in candidates):
        picks = select_per_class(candidates, pcfg.gan.min_consistency, train.num_classes)
        metrics["route_steps"] = [int(m["step"]) for m, _ in picks]
        G = routed_generator(picks, pcfg.gan, train)
        log.info("[gan] per-class checkpoints (class: step): %s",
                 ", ".join(f"{c}: {s}" for c, s in enumerate(metrics["route_steps"])))
    else:
        G = for_sampling(ema_generator(state, pcfg.gan, train), pcfg.gan, train.num_classes)
    save_weights(G.state_dict(), out / G_EMA)
    save_state(state, out / "gan_state.pt")
    for g in grids:
        (out / g.name).write_bytes(g.read_bytes())
    return metrics


def probe_checkpoints(dirs: list[Path], cfg: GANConfig, train: ImageSet,
                      teacher_dir: str | None) -> tuple[list[tuple[dict, Path]], list[dict]]:
    """(metrics, dir) per checkpoint, probed afresh in the driver with the current sampling settings
    (BN recalibration, teacher, probe reals), so changing `gan.select`/`recalibrate_bn` needs no
    retraining and every candidate is measured the same way; and the probes as a table for the log."""
    teacher = _load_teacher(teacher_dir) if cfg.select != "last" else None
    reals = probe_reals(train) if teacher is not None else None
    out, rows = [], []
    for d in dirs:
        st = load_state(d / "state.pt")
        m: dict = {"step": int(st["step"])}
        if teacher is not None:
            G = for_sampling(ema_generator(st, cfg, train), cfg, train.num_classes)
            q = consistency_probe(G, teacher, train.num_classes, real_u8=reals)
            m.update(q)
            per = [np.nan if v is None else v for v in m["label_consistency_per_class"]]
            worst = int(np.nanargmin(per))
            log.info("[gan] checkpoint step %5d: label consistency %5.1f %% (class %d worst: %.0f %%), "
                     "FID (teacher features) %.2f", m["step"], m["label_consistency"], worst, per[worst],
                     m["fid_teacher_features"])
        out.append((m, d))
        rows.append(m)
    return out, sorted(rows, key=lambda r: r["step"])


def _consistency(m: dict, cls: int | None = None) -> float:
    if cls is None:
        return m.get("label_consistency", -1.0)
    per = m.get("label_consistency_per_class") or []
    return per[cls] if cls < len(per) and per[cls] is not None else -1.0


def _lowest_fid_above(candidates: list[tuple[dict, object]], floor: float,
                      cls: int | None = None) -> tuple[dict, object] | None:
    ok = [c for c in candidates if "fid_teacher_features" in c[0] and _consistency(c[0], cls) >= floor]
    return min(ok, key=lambda c: (c[0]["fid_teacher_features"], -c[0]["step"])) if ok else None


def _most_consistent(candidates: list[tuple[dict, object]], cls: int | None = None) -> tuple[dict, object]:
    return max(candidates, key=lambda c: (_consistency(c[0], cls), c[0]["step"]))


def select_checkpoint(candidates: list[tuple[dict, object]], select: str,
                      min_consistency: float = 85.0) -> tuple[dict, object]:
    """(metrics, dir) of the chosen checkpoint (ties -> later step). GAN quality is not monotone in
    steps, so `last` can be a bad moment; and the most label-consistent checkpoint can be the most
    collapsed one, which is why `best_fid` trades consistency (above a floor) for diversity.
    `per_class` gets best_fid's choice here (the state kept with the artifact)."""
    if not candidates:
        raise RuntimeError("the GAN run left no checkpoint")
    if select == "last" or not any("label_consistency" in m for m, _ in candidates):
        return max(candidates, key=lambda c: c[0]["step"])
    if select in ("best_fid", "per_class"):
        best = _lowest_fid_above(candidates, min_consistency)
        if best is not None:
            return best
        log.warning("[gan] no checkpoint reaches %.1f %% label consistency: using the most consistent one",
                    min_consistency)
    return _most_consistent(candidates)


def select_per_class(candidates: list[tuple[dict, object]], min_consistency: float,
                     num_classes: int) -> list[tuple[dict, object]]:
    """best_fid class by class: for class c, the lowest-FID checkpoint whose samples of c clear the
    consistency floor, else the one most consistent on c. One (metrics, dir) per class."""
    if not candidates:
        raise RuntimeError("the GAN run left no checkpoint")
    picks = []
    for c in range(num_classes):
        best = _lowest_fid_above(candidates, min_consistency, c)
        if best is None:
            best = _most_consistent(candidates, c)
            log.warning("[gan] class %d reaches %.1f %% label consistency at no checkpoint: using step %d (%.1f %%)",
                        c, min_consistency, best[0]["step"], _consistency(best[0], c))
        picks.append(best)
    return picks


def routed_generator(picks: list[tuple[dict, object]], cfg: GANConfig, train: ImageSet) -> torch.nn.Module:
    """One sampling-ready EMA generator per distinct checkpoint in `picks`, routed by class (or the
    plain generator when every class picked the same checkpoint)."""
    from rayflow.gan import ClassRoutedGenerator

    steps, routes = _route_plan([int(m["step"]) for m, _ in picks])
    dirs = {int(m["step"]): d for m, d in picks}
    gens = [for_sampling(ema_generator(load_state(Path(dirs[s]) / "state.pt"), cfg, train), cfg, train.num_classes)
            for s in steps]
    return gens[0] if len(gens) == 1 else ClassRoutedGenerator(gens, routes)


def _route_plan(route_steps: list[int]) -> tuple[list[int], list[int]]:
    """(distinct checkpoint steps, ascending; per class the index of its step among them): the
    layout of a ClassRoutedGenerator's ``generators``, shared by building and loading one."""
    steps = sorted(set(route_steps))
    return steps, [steps.index(s) for s in route_steps]


def gan_stage(pcfg: PipelineConfig, splits: Splits, teacher: Artifact) -> Artifact:
    key_cfg = {"data": pcfg.data.model_dump(mode="json"), "gan": pcfg.gan.model_dump(mode="json")}
    # Selection and sampling settings do not change training: the Train run (and its checkpoints)
    # is named without them, so changing them re-probes the checkpoints instead of retraining.
    sampling_only = {"select", "min_consistency", "recalibrate_bn"}
    train_cfg = {"data": key_cfg["data"], "gan": pcfg.gan.model_dump(mode="json", exclude=sampling_only)}
    # nor after the pipeline's name: renaming a config must not throw away an hour of GAN training
    name = f"gan-{stage_key('gan', train_cfg, [teacher])}"
    c, h, _ = splits.shape

    def build(out: Path) -> dict:
        log.info("[gan] training the cGAN for %d steps (batch %d, %d D steps per G step)",
                 pcfg.gan.steps, pcfg.gan.batch_size, pcfg.gan.n_dis)
        t0 = time.perf_counter()
        m = run_gan_training(pcfg, splits.train, str(teacher.path), name, out)
        (out / ARCH).write_text(json.dumps({"num_classes": splits.num_classes, "in_channels": c, "image_size": h,
                                            "z_dim": pcfg.gan.z_dim, "g_channels": pcfg.gan.g_channels,
                                            **({"route_steps": m["route_steps"]} if "route_steps" in m else {})}))
        from rayflow.stages.models_io import load_model

        G = load_generator(out)
        held = splits.heldout if splits.heldout is not None else splits.test
        labels = grid_labels(splits.num_classes, 200)
        q = gan_quality(load_model(teacher.path), generate(G, labels, seed=777), labels,
                        real_u8=torch.tensor(held.images[:2000]), num_classes=splits.num_classes)
        curve = m.get("curve", [])
        if isinstance(curve, str):
            curve = json.loads(curve)
        return {"steps": pcfg.gan.steps, "selected_step": m.get("selected_step"), "wall_s": time.perf_counter() - t0,
                **({"route_steps": m["route_steps"]} if "route_steps" in m else {}),
                "curve": curve, **q}

    return run_stage(Path(pcfg.output_dir) / "artifacts", "gan", key_cfg, [teacher], build)


def load_generator(gan_dir: str | Path) -> torch.nn.Module:
    """The sampling generator of a GAN artifact: one EMA generator, or one per checkpoint routed by
    class when the artifact was selected per class (`route_steps` in its gan.json)."""
    from rayflow.checkpoint import load_into, load_weights
    from rayflow.gan import ClassRoutedGenerator, CondGenerator

    d = Path(gan_dir)
    arch = json.loads((d / ARCH).read_text())

    def one() -> CondGenerator:
        return CondGenerator(arch["num_classes"], z_dim=arch["z_dim"], out_channels=arch["in_channels"],
                             image_size=arch["image_size"], base_channels=arch["g_channels"])

    steps, routes = _route_plan(arch.get("route_steps") or [])
    G = ClassRoutedGenerator([one() for _ in steps], routes) if len(steps) > 1 else one()
    load_into(G, load_weights(d / G_EMA), str(d / G_EMA))
    return unwrap(G).eval()
