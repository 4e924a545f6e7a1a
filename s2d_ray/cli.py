"""`s2d`: the command line. Every subcommand has --help; bad config or input exits 2 with one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from s2d_ray import console
from s2d_ray.errors import S2DError


def _config_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set sample.n_samples=4 (repeatable)")
    _verbose_flag(p)
    return p


def _verbose_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show vLLM's, Ray's and DeepSpeed's logs on the terminal too (or S2D_LOG=debug); "
                   "they always go to the log file named at start")


def _cmd_tasks_make(args: argparse.Namespace) -> int:
    from s2d_ray.tasks import get_task, parse_task_source
    from s2d_ray.tasks.io import write_rows

    # --param k=v is the same as task:NAME?k=v: one parser for both.
    source = args.name + ("&" if "?" in args.name else "?") + "&".join(args.param) if args.param else args.name
    name, params = parse_task_source(source)
    rows = get_task(name).generate(args.n, args.seed, args.split, **params)
    write_rows(rows, Path(args.out))
    print(f"wrote {len(rows)} {name} rows ({args.split} split, seed {args.seed}) to {args.out}")
    return 0


def _load(args: argparse.Namespace):
    """The command's config; from here on its logs go to OUTPUT_DIR/logs/ (s2d_ray.console)."""
    from s2d_ray.config import load_config

    cfg = load_config(args.config, args.overrides)
    console.start(console.log_path(cfg.output_dir, args.command), args.verbose)
    return cfg


def _cmd_sample(args: argparse.Namespace) -> int:
    from s2d_ray.sampling import format_summary, sample

    console.say(format_summary(sample(_load(args))))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from s2d_ray.training import format_result, train

    console.say(format_result(train(_load(args))))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from s2d_ray.evaluation import evaluate, format_report

    console.say(format_report(evaluate(_load(args))))
    return 0


def _cmd_broader(args: argparse.Namespace) -> int:
    from s2d_ray.evaluation.harness import broader
    from s2d_ray.evaluation.report import format_harness

    summary = broader(_load(args))
    console.say("\n".join(format_harness(summary["tasks"], summary["settings"])))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from s2d_ray.pipeline import run

    run(_load(args))
    return 0


def _cmd_paper(args: argparse.Namespace) -> int:
    from s2d_ray.paper import paper

    console.start(console.log_path(args.out, "paper"), args.verbose)
    paper(args.configs, args.out, args.set)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from s2d_ray.serving.app import serve_forever

    console.start(console.log_path("", "serve"), args.verbose)
    serve_forever(args.model_dir, host=args.host, port=args.port, api_key=args.api_key, config_path=args.config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2d", description="System 2 distillation on Ray: sample -> filter -> train -> eval -> serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    tasks = sub.add_parser("tasks", help="built-in tasks", description="Built-in tasks with ground truth.")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True)
    make = tsub.add_parser("make", help="write a built-in task as JSONL or Parquet (by extension)")
    make.add_argument("name", help="biased_qa, last_letter, coin_flip, word_problems or pairwise")
    make.add_argument("--n", type=int, required=True, help="number of rows")
    make.add_argument("--seed", type=int, default=0, help="generation seed (same seed, same file)")
    make.add_argument("--split", choices=["train", "test", "all"], default="train", help="facts/items split (disjoint)")
    make.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="task parameter, e.g. k=3")
    make.add_argument("--out", required=True, help="output path ending in .jsonl or .parquet")
    make.set_defaults(func=_cmd_tasks_make)

    _config_parser(sub, "sample", "System 2 sampling + self-consistency filtering (writes samples/, distill/, rejected/)").set_defaults(func=_cmd_sample)
    _config_parser(sub, "train", "fine-tune on distill/ with Ray Train + DeepSpeed (writes model/)").set_defaults(func=_cmd_train)
    _config_parser(sub, "eval", "System 1 vs System 2 vs distilled System 1 (writes report.json/.md/.png)").set_defaults(func=_cmd_eval)
    _config_parser(sub, "broader", "base vs distilled model on standard benchmarks with lm-evaluation-harness "
                   "(eval.broader; default: a BIG-bench suite, fetched once) into broader/").set_defaults(func=_cmd_broader)
    _config_parser(sub, "run", "the whole loop, resumable: sample -> filter -> train -> eval").set_defaults(func=_cmd_run)

    paper = sub.add_parser("paper", help="every config with the paper's baselines, resumable, into one table",
                           description="Run each config (s2d run) and its 'Distill System 1' and 'no filter' baselines; "
                           "write OUT/table.md, .json and .png (make paper: the configs in configs/paper/).")
    paper.add_argument("configs", nargs="+", help="run configs, one per method")
    paper.add_argument("--out", default="runs/paper", help="where the table goes (default runs/paper)")
    paper.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every config")
    _verbose_flag(paper)
    paper.set_defaults(func=_cmd_paper)

    serve = sub.add_parser("serve", help="serve a model over HTTP (OpenAI-compatible) with Ray Serve until Ctrl-C")
    serve.add_argument("model_dir", help="a model directory (e.g. OUTPUT_DIR/model), built-in model name or HF id")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set S2D_API_KEY)")
    serve.add_argument("--config", default=None, help="serving YAML (autoscaling, adapters, adaptive mode)")
    _verbose_flag(serve)
    serve.set_defaults(func=_cmd_serve)
    return parser


def headline(e: BaseException) -> str:
    """An error's message on one line: its first line, and the next where the first only
    introduces it (Ray Train's "Training failed due to controller error:" then the cause, e.g.
    workers killed for memory)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except S2DError as e:
        console.stop(keep=False)  # bad config or input: no log file in an output dir it refused
        print(f"s2d: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - one line for users; S2D_DEBUG=1 for the traceback
        if os.environ.get("S2D_DEBUG"):
            raise
        print(f"s2d: {args.command} failed: {type(e).__name__}: {headline(e)} (S2D_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("s2d: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        console.stop()


if __name__ == "__main__":
    sys.exit(main())
