"""`rayflow` command line: every command takes `--config FILE` and `--set key=value` overrides."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# Light imports only: `rayflow --help` (and a typo in a command) must not wait for torch or Ray
# (tests/test_quiet.py); every command imports what it needs when it runs.
from rayflow import __version__
from rayflow.config import ConfigError, PipelineConfig, load_config
from rayflow.interrupt import run_guarded

PACKAGED = Path(__file__).parent / "configs"

# Errors whose message is the whole story (one line, exit code 2, no traceback), by defining module.
USER_ERRORS = {"rayflow.config": "ConfigError", "rayflow.data.imageset": "DataError",
               "rayflow.checkpoint": "CheckpointError", "rayflow.synth.manifest": "SynthError",
               "rayflow.executors.base": "PoolError", "rayflow.store_fs": "StoreError",
               "rayflow.train.diverged": "LossNotFinite"}


def _user_errors() -> tuple[type[BaseException], ...]:
    """The USER_ERRORS classes of the modules imported so far: an error can only come from a module
    that is, and importing the others (torch among them) to catch it would cost seconds."""
    return tuple(getattr(sys.modules[m], name) for m, name in USER_ERRORS.items() if m in sys.modules)


def resolve_config(name: str | None) -> Path | None:
    """A path, or the name of a packaged config (rayflow/configs: `tiny`, `demo`, `quality`, ...)."""
    if name is None:
        return None
    p = Path(name)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    packaged = PACKAGED / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    known = ", ".join(sorted(q.stem for q in PACKAGED.glob("*.yaml")))
    raise ConfigError(f"config {name!r} is neither a file nor a packaged config ({known})")


def _cfg(args) -> PipelineConfig:
    cfg = load_config(resolve_config(args.config), args.set)
    if getattr(args, "executor", None):
        cfg.runtime.executor = args.executor
    if getattr(args, "verbose", False):
        cfg.runtime.quiet = False  # Ray's INFO logs and Ray Data's progress bars too (no cache key reads it)
    return cfg


def _print_metrics(title: str, metrics: dict) -> None:
    keys = [k for k in ("test_acc", "test_mae", "val_acc", "test_loss", "step", "wall_s") if k in metrics]
    keys[1:1] = [k for k in metrics if k.startswith("test_mae_")]  # the MAE in the labels' unit (degrees)
    print(f"{title}: " + "  ".join(f"{k}={metrics[k]:.4g}" for k in keys), flush=True)


def cmd_train(args, which: str) -> int:
    from rayflow.pipeline import Pipeline

    p = Pipeline(_cfg(args))
    art = p.teacher() if which == "teacher" else p.nokd(seed=p.cfg.seeds[0])
    _print_metrics(f"{which} ({art.uri}{', cached' if art.reused else ''})", p.in_unit([dict(art.metrics)])[0])
    return 0


def cmd_evaluate(args) -> int:
    """model.json is read and compared with the data before the weights load or any image is seen."""
    from rayflow.data import load_splits
    from rayflow.models.io import check_fits, load_model, read_arch
    from rayflow.train.loop import evaluate
    from rayflow.train.tasks import Task

    cfg = _cfg(args)
    arch = read_arch(args.model)
    splits = load_splits(cfg.data)
    check_fits(args.model, arch, splits.test.shape, splits.num_classes)
    model = load_model(args.model)
    m = evaluate(model, splits.test, Task.of(splits.num_classes), prefix="test_")
    print(json.dumps(m, indent=2))
    return 0


def cmd_demo(args) -> int:
    if args.config is None:
        args.config = "demo"
    return cmd_run(args)


def cmd_run(args) -> int:
    from rayflow.pipeline import Pipeline

    p = Pipeline(_cfg(args))
    results = p.run()
    print(p.format_results(results), flush=True)
    return 0


def cmd_diagnose(args) -> int:
    from rayflow.pipeline import Pipeline

    p = Pipeline(_cfg(args))
    print(p.format_results(p.diagnose()), flush=True)
    return 0


def cmd_graph(args) -> int:
    from rayflow.pipeline import Pipeline

    print(Pipeline(_cfg(args)).graph_text(), flush=True)
    return 0


def cmd_stage(args) -> int:
    """One node of the stage graph (and what it needs), e.g. `rayflow stage gan` or
    `rayflow stage pool --param subsample=true --param segment=0`: the artifact a pipeline or a
    Tune trial would use, under the same key."""
    import yaml

    from rayflow.stages.graph import REGISTRY, Node, node_key
    from rayflow.stages.runner import Runner

    if args.name not in REGISTRY:
        raise ConfigError(f"unknown stage {args.name!r} (stages: {', '.join(sorted(REGISTRY))})")
    params = {}
    for kv in args.param:
        k, sep, val = kv.partition("=")
        if not sep:
            raise ConfigError(f"--param {kv!r}: expected KEY=VALUE")
        params[k.strip()] = yaml.safe_load(val)
    cfg = _cfg(args)
    node = Node.of(args.name, **params)
    try:
        node_key(cfg, node)
    except KeyError as e:
        raise ConfigError(f"stage {args.name!r} needs --param {e.args[0]}=...") from None
    art = Runner(cfg).artifact(node)
    print(f"{args.name}: {art.uri}{' (cached)' if art.reused else ''}", flush=True)
    return 0


def cmd_bound(args) -> int:
    from rayflow.tuning.bound_table import bound_table, format_table

    print(format_table(bound_table(_cfg(args))), flush=True)
    return 0


def cmd_grid(args) -> int:
    from rayflow.tuning.record import format_grid, record_grid

    print(format_grid(record_grid(_cfg(args))), flush=True)
    return 0


def cmd_tune(args) -> int:
    """The search, then the run's table with the chosen and hand-set settings' students, and the
    chosen one written to <output_dir>/student/."""
    from rayflow.distill_student import after_tune, knobs
    from rayflow.tuning.search import tune

    cfg = _cfg(args)
    out = tune(cfg)
    if out.get("final"):
        print(f"chosen on validation data: {knobs(out['chosen'])} ({out.get('choice_why', '')})", flush=True)
        print(after_tune(cfg, out).table, flush=True)
    else:
        print("no trial finished with a score: nothing chosen, no student written", flush=True)
    return 0


def cmd_distill(args) -> int:
    from rayflow.distill_student import distill

    print(distill(_cfg(args), search=args.search).table, flush=True)
    return 0


def cmd_predict(args) -> int:
    from rayflow.student.predict import check_out, is_sharded, predict_frame, predict_shards, write_predictions

    if is_sharded(args.out):
        done = predict_shards(args.model, args.inputs, args.out, overwrite=args.overwrite,
                              use_ray=True if args.ray else None, gpu=args.gpu, actors=args.actors)
        print(f"{done['rows']} predictions -> {done['location']} ({len(done['parts'])} Parquet shards)", flush=True)
        return 0
    check_out(args.out)  # a wrong suffix fails before any image is read
    df = predict_frame(args.model, args.inputs, use_ray=True if args.ray else None, gpu=args.gpu,
                       actors=args.actors)
    print(f"{len(df)} predictions -> {write_predictions(df, args.out)}", flush=True)
    return 0


def cmd_config(args) -> int:
    from rayflow.config_load import to_yaml

    print(to_yaml(_cfg(args)), end="", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rayflow", description=(
        "cGAN-based knowledge distillation on Ray. Embedded Ray by default; set RAY_ADDRESS to use a "
        "cluster, or --executor local to run without Ray."))
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="debug logging, and Ray's own logs and Ray Data's progress bars")
    ap.add_argument("--version", action="version", version=f"rayflow {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="YAML file or packaged config name (tiny, demo, quality, quality_n200, paper, "
                                              "regression_tiny, regression_demo, regression_quality, chairs)")
        p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set teacher.train.steps=200 (repeatable)")
        p.add_argument("--executor", choices=["ray", "local"], help="override runtime.executor")

    for name, help_ in [("train-teacher", "train the teacher on the real data"),
                        ("train-student", "train the NOKD student baseline on the real data"),
                        ("run", "whole pipeline: teacher, NOKD, BLKD, cGAN, cDR-RS, synth, cGAN-KD students, report"),
                        ("diagnose", "headroom diagnostic: student on real + held-out real labelled by the teacher"),
                        ("demo", "run the demo config (Fashion-MNIST, limited labels, 2 CPUs)"),
                        ("graph", "the stage graph of a config: every node, its key, cached or not, its inputs"),
                        ("bound", "the error bound's terms over a (rho, M) grid of the run's pool, no student trained"),
                        ("tune", "search rho and M (tune.searcher: grid, random, tpe, bound) on validation data"),
                        ("grid", "record the whole (rho, M) grid on validation data, replay the searchers on it")]:
        common(sub.add_parser(name, help=help_, description=help_))
    st = sub.add_parser("stage", help="build one stage of the graph (and its inputs), e.g. `stage gan`",
                        description="build one stage of the graph (and its inputs) under the pipeline's key")
    common(st)
    st.add_argument("name", help="stage name (rayflow graph lists them)")
    st.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                    help="a node parameter, e.g. --param seed=1 (repeatable)")
    di = sub.add_parser("distill", help="train the student you ask for (+ NOKD, BLKD) and write <output_dir>/student/",
                        description="teacher, NOKD, BLKD and the cGAN-KD student with the config's settings (no "
                                    "ablation), then <output_dir>/student/: weights, model.pt2 (torch.export), "
                                    "student.json, MODEL_CARD.md")
    common(di)
    di.add_argument("--search", action="store_true", help="use the setting `rayflow tune` picks on validation data")
    pr = sub.add_parser("predict", help="predict with a student folder: images, folders, NPZ or Parquet -> CSV/Parquet",
                        description="one row per image: input, predicted class, per-class probabilities "
                                    "(regression: the value in the label's unit)")
    pr.add_argument("--model", required=True, help="student folder (<output_dir>/student)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="image files, folders, an NPZ (x), a Parquet (image), or s3:// prefixes of images")
    pr.add_argument("--out", "-o", required=True, help="output file (.csv or .parquet), or a directory / s3:// "
                                                       "prefix for Parquet shards (part-*.parquet, then _SUCCESS)")
    pr.add_argument("--overwrite", action="store_true", help="replace a complete sharded output already at --out")
    pr.add_argument("--ray", action="store_true", help="Ray Data batch inference even for a small input "
                                                        "(by default above 20,000 images)")
    pr.add_argument("--gpu", action="store_true", help="a GPU per inference actor")
    pr.add_argument("--actors", type=int, default=2, help="Ray Data inference actors at most (default 2)")
    cf = sub.add_parser("config", help="show the resolved config", description="show the resolved config")
    cf_sub = cf.add_subparsers(dest="action", required=True)
    common(cf_sub.add_parser("show", help="print the resolved YAML (file + --set overrides + defaults)"))
    ev = sub.add_parser("evaluate", help="evaluate a model artifact on the test split",
                        description="evaluate a model artifact on the test split")
    common(ev)
    ev.add_argument("--model", required=True, help="model artifact directory (holds model.safetensors)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Own handler, not propagated: ray.init reconfigures the root logger and would mute ours.
    log = logging.getLogger("rayflow")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    handlers = {"train-teacher": lambda a: cmd_train(a, "teacher"),
                "train-student": lambda a: cmd_train(a, "student"),
                "evaluate": cmd_evaluate, "run": cmd_run, "demo": cmd_demo, "diagnose": cmd_diagnose,
                "graph": cmd_graph, "stage": cmd_stage, "bound": cmd_bound, "tune": cmd_tune, "grid": cmd_grid,
                "distill": cmd_distill, "predict": cmd_predict, "config": cmd_config}
    try:
        return run_guarded(handlers[args.command], args)
    except Exception as e:  # a user error, raised here or inside a Ray worker (which wraps it)
        from rayflow.train.diverged import user_error_in

        inner = user_error_in(e, _user_errors())
        if inner is None:
            raise
        print(f"rayflow: error: {inner}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
