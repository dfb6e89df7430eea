"""`python -m transfer_learning {fetch,make-dataset,check-data,train,evaluate,bench}`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from transfer_learning.errors import Interrupted, WorkloadError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transfer_learning", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("fetch", help="download and extract an ImageFolder archive")
    p.add_argument("url", nargs="?", default=None, help="archive URL (default: hymenoptera zip)")
    p.add_argument("dir", help="directory to extract into")
    p.add_argument("--sha256", help="expected SHA-256 of the archive")
    p.add_argument("--keep-archive", action="store_true")

    p = sub.add_parser("make-dataset", help="write an offline data set (digits) as ImageFolder")
    p.add_argument("name", choices=["digits"])
    p.add_argument("dir")
    p.add_argument("--size", type=_positive, default=64, help="image side in pixels (default 64)")
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "check-data", help="check an ImageFolder tree before a run; print its classes and digest"
    )
    p.add_argument("dir", help="root with train/<class>/* and val/<class>/*")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "stop-run", help="stop this node's part of a distributed run (its torchrun agents)"
    )
    p.add_argument("run_id")

    p = sub.add_parser("train", help="train resnet18 on an ImageFolder tree")
    p.add_argument("--data", required=True, help="root with train/<class>/* and val/<class>/*")
    p.add_argument("--output-dir", default="outputs")
    p.add_argument("--run-id", default=None, help="default: a UTC timestamp (sorts by time)")
    p.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file path")
    p.add_argument("--mode", choices=["finetune", "feature-extract"], default="finetune")
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--image-size", type=_positive, default=224)
    p.add_argument("--limit", type=_positive, default=None, help="at most N images per split")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--workers", type=_non_negative, default=_default_workers())
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--lr", type=float, default=None, help="default 0.001 x batch-size / 4")
    p.add_argument("--step-size", type=_positive, default=7)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on for finetune, off for feature-extract (features cached)",
    )
    p.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="float32 throughout (default: bf16/fp16 autocast on CUDA and on CPUs with "
        "AVX512-BF16 or AMX)",
    )
    p.add_argument(
        "--data-store",
        choices=["auto", "memory", "disk"],
        default="auto",
        help="decoded images in memory, or in a cache file read per batch (default auto: "
        "memory where they fit half of the memory available, cgroup limit included)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where --data-store disk keeps decoded images (default ~/.cache/transfer_learning)",
    )

    p = sub.add_parser("evaluate", help="accuracy of a saved model.pt on a data set")
    p.add_argument("--model", required=True, help="OUT/<run-id>/model.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--limit", type=_positive, default=None)
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--workers", type=_non_negative, default=_default_workers())
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0, help="sampling seed used with --limit")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="the tutorial's recipe against ours, side by side")
    p.add_argument("--data", default=None, help="default: digits made in a temporary directory")
    p.add_argument("--image-size", type=_positive, default=112)
    p.add_argument("--limit", type=_positive, default=192)
    p.add_argument("--finetune-epochs", type=_positive, default=2)
    p.add_argument("--extract-epochs", type=_positive, default=10)
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--workers", type=_non_negative, default=_default_workers())
    p.add_argument(
        "--weights",
        default="auto",
        help="auto (imagenet if cached, else stand-in), stand-in, imagenet, none or a file path",
    )
    p.add_argument(
        "--stand-in-epochs",
        type=_positive,
        default=3,
        help="epochs of the stand-in pretraining on the images outside the sample (default 3)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats", type=_positive, default=3, help="runs of each recipe (median and spread)"
    )
    p.add_argument("--json", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch":
        from transfer_learning.fetch import DEFAULT_URL, fetch

        root = fetch(args.url or DEFAULT_URL, args.dir, args.sha256, keep_archive=args.keep_archive)
        print(root)
    elif args.command == "make-dataset":
        from transfer_learning.data import make_digits

        print(make_digits(args.dir, size=args.size, val_fraction=args.val_fraction, seed=args.seed))
    elif args.command == "check-data":
        from transfer_learning.data import check_folder

        found = check_folder(args.dir)
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print(
                f"{found['root']}: {len(found['classes'])} classes, {found['train']} train and "
                f"{found['val']} val files, sha256 {found['digest']}"
            )
    elif args.command == "train":
        from transfer_learning.config import TrainConfig
        from transfer_learning.trainer import train

        fields = {k: v for k, v in vars(args).items() if k != "command"}
        train(TrainConfig(**fields))
    elif args.command == "evaluate":
        from transfer_learning.trainer import evaluate

        result = evaluate(
            args.model,
            args.data,
            args.split,
            args.batch_size,
            args.workers,
            args.device,
            args.limit,
            args.seed,
        )
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"{result['split']}: accuracy {result['accuracy']:.4f} on {result['images']} "
                f"images (loss {result['loss']:.4f})"
            )
    elif args.command == "stop-run":
        from transfer_learning.nodes import stop_run

        print(stop_run(args.run_id))
    elif args.command == "bench":
        from transfer_learning.bench import bench, format_table

        report = bench(
            args.data,
            args.image_size,
            args.limit,
            args.finetune_epochs,
            args.extract_epochs,
            args.batch_size,
            args.workers,
            args.device,
            args.weights,
            args.seed,
            args.stand_in_epochs,
            args.repeats,
        )
        print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
