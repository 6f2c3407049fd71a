"""The ``asdzoo`` command (DESIGN §3)."""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import zipfile
from pathlib import Path


def _cmd_list(args) -> None:
    if args.encoders:
        from asdzoo.encoders import ENCODER_WEIGHTS, ENCODERS

        for name in sorted(ENCODERS):
            for w in ENCODER_WEIGHTS[name]:
                print(f"{name:<9} {w['licence']:<34} {w['weights']}")
        return
    from asdzoo.hub import list_models

    print(f"{'name':<24}{'task':<8}{'weights':<16}{'licence':<48}paper")
    for m in list_models():
        print(f"{m['name']:<24}{m['task']:<8}{m['weights']:<16}{m['license'][:46]:<48}{m['paper'][:60]}")
        if m["reported"]:
            print(f"{'':<24}reported: {m['reported']}")
        for w in m["weight_files"]:
            print(f"{'':<24}needs {w['key']}: {w['filename']}")


def _cmd_install(args) -> None:
    from asdzoo.hub import install

    print(f"installed {args.dir} as {args.name!r} -> {install(args.dir, args.name)}")


def _cmd_publish(args) -> None:
    from asdzoo.hub import publish

    print(publish(args.dir, args.repo_id, dry_run=args.dry_run, private=args.private).summary())


def _cmd_cards(args) -> None:
    from asdzoo.cards import write_model_cards

    for p in write_model_cards(args.out):
        print(p)


def _cmd_synth(args) -> None:
    if args.kind == "t4":
        _synth_t4(args)
        return
    if args.small:
        raise ValueError("--small is a t4 option; t2 sizes come from --preset and the size flags")
    from asdzoo.data.synth import SynthConfig, generate

    sizes = dict(
        machines=tuple(args.machines) if args.machines else None,
        train_source=args.train_source,
        train_target=args.train_target,
        test_per_group=args.test_per_group,
        seconds=args.seconds,
    )
    cfg = SynthConfig.from_preset(args.preset, seed=args.seed, **{k: v for k, v in sizes.items() if v is not None})
    t0 = time.time()
    generate(args.out, cfg, workers=args.workers, progress=not args.quiet)
    what = f"preset {cfg.preset}, seed {cfg.seed}, {len(cfg.machines)} machines"
    print(f"wrote {args.out} ({what}) in {time.time() - t0:.1f} s")


def _synth_t4(args) -> None:
    from asdzoo.data.synth_t4 import synth_t4_command

    t2_only = [f"--{k.replace('_', '-')}" for k in T2_SIZE_FLAGS if getattr(args, k) is not None]
    if t2_only or args.preset != "dcase":
        raise ValueError(f"{', '.join(t2_only) or '--preset'}: t2 options; t4 takes --seed, --small, --seconds")
    t0 = time.time()
    synth_t4_command(
        args.out, seed=args.seed, small=args.small, seconds=args.seconds, workers=args.workers, progress=not args.quiet
    )
    print(
        f"wrote {args.out} (Task 4 FOA set, seed {args.seed}{', small' if args.small else ''}) in "
        f"{time.time() - t0:.1f} s"
    )


T2_SIZE_FLAGS = ("machines", "train_source", "train_target", "test_per_group")


def _truth(args):
    from asdzoo.metrics.task2 import truth_from_data_root, truth_from_ground_truth_dir

    return truth_from_ground_truth_dir(args.ground_truth) if args.ground_truth else truth_from_data_root(args.data_root)


def evaluate_and_report(scores_dir, truth, out=None, plots=None, machines=None):
    from asdzoo.metrics.task2 import evaluate_scores, format_table, write_result_csv

    result = evaluate_scores(Path(scores_dir), truth, machines)
    print(format_table(result))
    if out:
        write_result_csv(result, Path(out))
        print(f"result CSV: {out}")
    if plots:
        from asdzoo.metrics.plots import write_plots

        print(f"plots: {len(write_plots(result, Path(plots)))} PNG files in {plots}")
    return result


def _cmd_evaluate(args) -> None:
    from asdzoo.data.task4 import DEV_TEST
    from asdzoo.tasks.task4 import ESTIMATES, RESULTS_JSON

    folder = Path(args.scores_dir)
    task4_root = args.data_root and (Path(args.data_root) / DEV_TEST / "soundscape").is_dir()
    if (folder / ESTIMATES).is_dir() or (folder / RESULTS_JSON).is_file() or task4_root:
        _evaluate_task4(args)
        return
    evaluate_and_report(args.scores_dir, _truth(args), args.out, args.plots, args.machines)


def _evaluate_task4(args) -> None:
    from asdzoo.tasks.task4 import evaluate_separation, format_result, write_result_csv

    if not args.data_root:
        raise ValueError(f"{args.scores_dir}: Task 4 estimates are scored against --data-root (its dev-test set)")
    if args.plots or args.machines:
        raise ValueError("--plots and --machines are Task 2 options; a Task 4 evaluation takes --data-root and --out")
    result = evaluate_separation(args.scores_dir, args.data_root)
    print(format_result(result))
    if args.out:
        write_result_csv(result, args.out)
        print(f"result CSV: {args.out}")


def _cmd_separate(args) -> None:
    from asdzoo.hub import load
    from asdzoo.tasks.task4 import separate_root

    t0 = time.time()
    out = separate_root(load(args.model), args.data_root, args.out, args.batch_size, progress=not args.quiet)
    print(f"wrote {out} in {time.time() - t0:.1f} s")


def _cmd_s5_chain(args) -> None:
    from asdzoo.hub import load, save_pretrained
    from asdzoo.systems.s5_baseline import S5Chain, S5Separator, S5Tagger

    tagger = load(args.tagger)
    # the released separator as it ships (checkpoint/resunetk.ckpt of baseline_checkpoint.zip), or a saved folder
    separator = S5Separator(init_from=args.separator) if args.separator.endswith(".ckpt") else load(args.separator)
    if not isinstance(tagger, S5Tagger) or not isinstance(separator, S5Separator):
        raise ValueError(f"{args.tagger} must be an S5 tagger and {args.separator} an S5 separator")
    print(f"saved the chain to {save_pretrained(S5Chain.from_parts(tagger, separator), args.out, args.name)}")


def _cache_root(args):
    from asdzoo.hub import asdzoo_home

    return None if args.no_cache else asdzoo_home() / "cache"


def _cmd_score(args) -> None:
    from asdzoo.tasks.task2 import score_root

    t0 = time.time()
    model = args.model
    if args.encoder_weights or args.weights_dir:
        from asdzoo.hub import load

        model = load(model, encoder_weights=_key_paths(args.encoder_weights or []), weights_dir=args.weights_dir)
    files = score_root(model, args.data_root, args.out, args.machines, _cache_root(args), progress=not args.quiet)
    print(f"wrote {len(files)} files to {args.out} in {time.time() - t0:.1f} s")


def _key_paths(items: list[str], option: str = "--encoder-weights") -> dict[str, str]:
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, eq, path) in zip(items, pairs) if not eq or not path]
    if bad:
        raise ValueError(f"{option} takes KEY=VALUE pairs, got {bad[0]!r}")
    return {key: path for key, _, path in pairs}


def _json_or_text(value: str):
    """``--set`` values: JSON where they parse (numbers, true/false, lists), text otherwise (paths, names)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _cmd_quickstart(args) -> None:
    from asdzoo.data.synth import SynthConfig, generate
    from asdzoo.metrics.task2 import truth_from_data_root
    from asdzoo.tasks.task2 import score_root

    out = Path(args.out)
    data, scores = out / "synth_t2", out / "scores" / args.model
    t0 = time.time()
    if not (data / "fan").is_dir():
        print(f"[1/3] generating the built-in synthetic two-channel set in {data}")
        generate(data, SynthConfig.from_preset("dcase"), progress=not args.quiet)
    print(f"[2/3] scoring with {args.model!r} (fit per machine on train/, score test/)")
    score_root(args.model, data, scores, cache_root=_cache_root(args), progress=not args.quiet)
    print("[3/3] official DCASE Task 2 metrics")
    evaluate_and_report(scores, truth_from_data_root(data), out / f"{args.model}_result.csv")
    print(f"done in {time.time() - t0:.0f} s; submission files in {scores}")


def _cmd_search(args) -> None:
    from asdzoo.search import SearchData, fit_fusion_weights, fused_per_root, fusion_members, run_search

    results, datas = [], []
    for enc in args.encoder:
        roots = [
            SearchData(root, enc, cache_root=_cache_root(args), machines=args.machines, progress=not args.quiet)
            for root in args.roots
        ]
        results += run_search(roots, top=args.top, full=args.full)
        datas = roots
    results.sort(key=lambda c: (-c.score, -c.mean))
    several = len(args.roots) > 1
    print(f"\n{'worst':>7} {'mean':>7}  configuration (encoder | input | pooling | backend)" + ("  per root" * several))
    for c in results[: args.show or None]:
        per_root = ("  " + " ".join(f"{100 * s:.2f}" for s in c.per_root)) if several else ""
        print(f"{100 * c.score:7.2f} {100 * c.mean:7.2f}  {c.label}{per_root}")
    report = {
        "roots": [str(r) for r in args.roots],
        "results": [
            dict(worst=c.score, mean=c.mean, per_root=c.per_root, label=c.label, **c.genrep_kwargs()) for c in results
        ],
    }
    if args.fuse:
        members = fusion_members(results, args.fuse)
        equal = fused_per_root(members, datas, [1 / len(members)] * len(members))
        t_fit = time.time()
        fitted = fit_fusion_weights(members, datas, step=args.fuse_step)
        print(f"\nfusion of the top {len(members)} (training-normal Z alignment):")
        print(f"  equal weights: worst {100 * min(equal):.2f}, mean {100 * sum(equal) / len(equal):.2f}")
        print(
            f"  fitted weights (on these roots, so not held out; {fitted.evaluated} weight vectors in "
            f"{time.time() - t_fit:.0f} s): worst {100 * fitted.worst:.2f}, mean {100 * fitted.mean:.2f}"
        )
        for w, c in zip(fitted.weights, members):
            print(f"    {w:.2f}  {c.label}")
        report["fusion"] = dict(
            members=[dict(label=c.label, **c.genrep_kwargs()) for c in members],
            equal_weights=dict(worst=min(equal), per_root=equal),
            fitted=dict(weights=fitted.weights, worst=fitted.worst, per_root=fitted.per_root),
        )
    if args.out:
        from asdzoo.atomic import write_text

        write_text(args.out, json.dumps(report, indent=1))
        print(f"all {len(results)} results: {args.out}")


def _cmd_tune(args) -> None:
    from asdzoo.tuning import result_json, tune_machine

    fixed = {key: _json_or_text(value) for key, value in _key_paths(args.set or [], "--set").items()}
    for machine in args.machines:
        r = tune_machine(
            args.model,
            args.data_root,
            machine,
            args.trials,
            storage=args.storage,
            study_name=args.study and f"{args.study}-{machine}",
            max_epochs=args.max_epochs,
            fixed=fixed,
            seed=args.seed,
            progress=not args.quiet,
        )
        print(f"{machine}: best validation AUC {r.best_value:.4f} ({r.finished} trials completed, {r.pruned} pruned)")
        print(result_json(r))


def _cmd_prepare(args) -> None:
    from asdzoo.data.pseudo_clean import prepare_pseudo_clean

    r = prepare_pseudo_clean(
        args.root, args.out, tuple(args.splits), args.machines, args.workers, args.iterations, progress=not args.quiet
    )
    rtf = (
        "n/a (nothing to do)"
        if r["rtf_per_core"] is None
        else f"{r['rtf_per_core']:.3f} per core, {r['rtf_wall']:.3f} wall"
    )
    print(f"pseudo-clean: {r['written']} written, {r['skipped']} already there -> {r['out']} (real-time factor {rtf})")


def build_parser() -> argparse.ArgumentParser:
    from asdzoo import __version__

    p = argparse.ArgumentParser(prog="asdzoo", description="Model zoo for machine-sound anomaly detection (DCASE).")
    p.add_argument("--version", action="version", version=f"asdzoo {__version__}")
    p.add_argument("--debug", action="store_true", help="on an error, raise it with its full traceback")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list the zoo (or --encoders)")
    s.add_argument("--encoders", action="store_true")
    s.set_defaults(func=_cmd_list)

    s = sub.add_parser("install", help="install a saved model folder into the local store under a name")
    s.add_argument("dir")
    s.add_argument("--name", required=True)
    s.set_defaults(func=_cmd_install)

    s = sub.add_parser("publish", help="upload a saved model folder to the Hugging Face Hub")
    s.add_argument("dir")
    s.add_argument("--repo-id", required=True)
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--private", action="store_true")
    s.set_defaults(func=_cmd_publish)

    s = sub.add_parser("cards", help="regenerate model_cards/<name>.md from the registry")
    s.add_argument("--out", default="model_cards")
    s.set_defaults(func=_cmd_cards)

    s = sub.add_parser("synth", help="write a built-in synthetic data set (t2: Task 2 suite, t4: Task 4 FOA scenes)")
    s.add_argument("kind", choices=["t2", "t4"])
    s.add_argument("out")
    s.add_argument("--preset", choices=["easy", "dcase", "hard"], default="dcase", help="recording physics and sizes")
    s.add_argument("--seed", type=int, default=0)
    # size flags default to the preset's; given explicitly, they override it
    s.add_argument("--machines", nargs="+", default=None)
    s.add_argument("--train-source", type=int, default=None)
    s.add_argument("--train-target", type=int, default=None)
    s.add_argument("--test-per-group", type=int, default=None)
    s.add_argument("--seconds", type=float, default=None)
    s.add_argument("--small", action="store_true", help="t4: a tiny set (tests, demos)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("prepare", help="precompute training inputs: ILRMA pseudo-clean waveforms (beats-distill)")
    s.add_argument("kind", choices=["pseudo-clean"])
    s.add_argument("root")
    s.add_argument("--out", help="default: <root>-pseudo-clean next to the data")
    s.add_argument("--splits", nargs="+", default=["train"])
    s.add_argument("--machines", nargs="+")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--iterations", type=int, default=30, help="ILRMA iterations")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser(
        "evaluate", help="official metrics of a Task 2 scores folder or a Task 4 separation folder (CAPI-SDRi)"
    )
    s.add_argument("scores_dir")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--data-root", help="dev data root: labels and domains from file names")
    g.add_argument(
        "--ground-truth", help="folder with ground_truth_data/, ground_truth_domain/, ground_truth_attributes/"
    )
    s.add_argument("--out", help="write the official result CSV here")
    s.add_argument("--plots", help="write ROC curves and score histograms (PNG) here")
    s.add_argument("--machines", nargs="+")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("score", help="fit per machine on train/, score test/, write submission files")
    s.add_argument("model", help="registry name, Hub id org/name[@rev], or saved folder")
    s.add_argument("--data-root", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--machines", nargs="+")
    s.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    s.add_argument(
        "--encoder-weights",
        nargs="+",
        metavar="KEY=PATH",
        help="official encoder weight files of a paper entry (keys: its model card / asdzoo list)",
    )
    s.add_argument("--weights-dir", help="a folder holding the entry's encoder weight files by their official names")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_score)

    s = sub.add_parser("separate", help="Task 4: tag and separate every soundscape, write the submission folder")
    s.add_argument("model", help="registry name, Hub id org/name[@rev], or saved folder")
    s.add_argument(
        "--data-root", required=True, help="a Task 4 root (synthesized/test/soundscape) or a soundscape/ parent"
    )
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=1)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_separate)

    s = sub.add_parser("s5-chain", help="Task 4: chain a trained tagger and separator into one model folder")
    s.add_argument("tagger")
    s.add_argument("separator", help="a saved separator folder, or the release's resunetk.ckpt")
    s.add_argument("--out", required=True)
    s.add_argument("--name", default=None, help="registry name whose card the folder gets")
    s.set_defaults(func=_cmd_s5_chain)

    s = sub.add_parser("quickstart", help="synthetic data -> score -> evaluate, on CPU in minutes")
    s.add_argument("--out", default="asdzoo_quickstart")
    s.add_argument("--model", default="genrep")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_quickstart)

    s = sub.add_parser("search", help="GenRep configuration search on one or several dev roots (ranked by worst case)")
    s.add_argument("roots", nargs="+", metavar="root")
    s.add_argument("--encoder", nargs="+", default=["logmel"])
    s.add_argument("--machines", nargs="+")
    s.add_argument("--top", type=int, default=3, help="stage-1 configurations that get the backend grid")
    s.add_argument("--full", action="store_true", help="cross every option instead of the staged search")
    s.add_argument("--fuse", type=int, default=0, help="also fuse the N best configurations and fit their weights")
    s.add_argument("--fuse-step", type=float, default=0.05, help="granularity of the fitted fusion weights")
    s.add_argument("--show", type=int, default=0, help="print only the N best (default: every configuration)")
    s.add_argument("--out", help="write every result as JSON")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_search)

    s = sub.add_parser("tune", help="BOHB-style search (optuna TPE + Hyperband) of a system's stage-2 settings")
    s.add_argument("model", help="registry name with a search space (e.g. aum-poe)")
    s.add_argument("--data-root", required=True)
    s.add_argument("--machines", nargs="+", required=True, help="one study per machine (machine-specific models)")
    s.add_argument("--trials", type=int, default=30, help="total trials per study (a resumed study counts its own)")
    s.add_argument("--max-epochs", type=int, default=100, help="Hyperband's largest budget, in epochs")
    s.add_argument("--storage", help="optuna storage URL (default: sqlite:///<study>.db, resumable)")
    s.add_argument("--study", help="study name prefix (default: <model>)")
    s.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="fixed model arguments, e.g. backbone=DIR")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_tune)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """What bad input, a missing file or a missing optional package raises: reported as ``error: <message>``."""
    from asdzoo.audio.io import AudioError
    from asdzoo.hub import ModelNotFoundError, WeightsNotAvailableError

    return AudioError, FileNotFoundError, ModelNotFoundError, WeightsNotAvailableError, ImportError, ValueError


def _named_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message needs their class to be understood (disk, torch, archives, weight files)."""
    from safetensors import SafetensorError

    return OSError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError, SafetensorError


def _error_line(err: BaseException) -> tuple[int, str]:
    """Exit code and message of an error: 2 for what the input or the environment caused, 1 for anything else,
    which is a bug in asdzoo and says so."""
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(err, _user_errors()):
        return 2, f"error: {err}"
    if isinstance(err, _named_errors()):
        return 2, f"error: {type(err).__name__}: {err}"
    return 1, f"error: internal error {type(err).__name__}: {err} (a bug in asdzoo: run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error ends in one ``asdzoo <command>: error: ...`` line on stderr (``--debug``: raised,
    with its traceback)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (Exception, KeyboardInterrupt) as err:
        if args.debug:
            raise
        code, line = _error_line(err)
        print(f"asdzoo {args.command}: {line}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
