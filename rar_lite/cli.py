"""The `rar-lite` command line.

Usage::

    rar-lite corpus [--rebuild]          build (or load) the corpus and print its card
    rar-lite resolve NAME [NAME ...]     resolve movie names to corpus items
    rar-lite score-generations --dataset-dir DIR --generations FILE [--protocol cikm23]
                                         score raw LLM answers as He et al. (CIKM 2023) did
    rar-lite evaluate [--quick] [--systems ...] [--datasets ...] [--seeds ...] [--out DIR]
                      [--llm SPEC] [--llm-concurrency N]
                                         chapter 6: RAR against its baselines, tables to DIR
    rar-lite recommend TEXT [--k N] [--llm SPEC] [--json] [--server URL]
                                         retrieve, then the LLM ranks the candidates' cards;
                                         each pick with the card facts that match the request
    rar-lite serve [--port N] [--llm SPEC]
                                         keep the models loaded and answer `recommend
                                         --server URL` in seconds (`rar_lite.book.serving`)
    rar-lite download NAME [--to DIR] [--mirror URL] [--force]
                                         fetch INSPIRED (test + dev) or ReDial into the data
                                         directory (`rar_lite.data.download`)

Every argument is checked before any work starts (`validate_evaluate` for `evaluate`). A bad
argument prints one line to stderr and exits with 2; a failure while working prints one line
and exits with 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

#: The files a CIKM-format dataset directory must hold (`rar_lite.data.cikm.FILES`).
DATASET_FILES = ("test.jsonl", "entity2id.json", "item_ids.json")
#: The environment variable naming a running `rar-lite serve` for `recommend` (`--server`).
SERVER_ENV = "RAR_LITE_SERVER"


class UsageError(ValueError):
    """A command-line argument is wrong; the message names it."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and the exit code 2) rather than usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(minimum: int) -> Any:
    """An argparse type: an integer >= `minimum`, the bad value named in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def _check_text(values: Sequence[str], what: str) -> None:
    """Refuse arguments that are not valid UTF-8 (Python keeps their bytes as surrogates)."""
    for value in values:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UsageError(f"{what} '{shown}' is not valid UTF-8") from None


def writable_directory(path: str | Path, what: str = "--out") -> Path:
    """`path` created if needed and proven writable (a probe file is written and removed)."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{what} {str(directory)!r} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".rar-lite-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{what} {str(directory)!r} cannot be written ({error.strerror or error})"
                         ) from None
    return directory


def dataset_directory(path: str | Path, what: str) -> Path:
    """`path` as a CIKM-format dataset directory holding `DATASET_FILES`."""
    directory = Path(path)
    if not directory.is_dir():
        raise UsageError(f"{what}: {str(directory)!r} is not a directory")
    missing = [name for name in DATASET_FILES if not (directory / name).is_file()]
    if missing:
        raise UsageError(f"{what}: {str(directory)!r} has no {', '.join(missing)} (a dataset "
                         f"directory holds {', '.join(DATASET_FILES)})")
    return directory


def _corpus(args: argparse.Namespace) -> int:
    from rar_lite.data import corpus as rc

    corpus = rc.load_corpus(rebuild=args.rebuild)
    print(rc.corpus_card(corpus).as_frame().to_string(index=False))
    print(f"cached at {rc.corpus_path()}")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from rar_lite.data import corpus as rc
    from rar_lite.data import matching

    _check_text(args.names, "name")

    matcher = matching.TitleMatcher(rc.load_corpus())
    print(matching.explain(matcher, args.names).to_string(index=False))
    return 0


def _score_generations(args: argparse.Namespace) -> int:
    import json

    from rar_lite.data.cikm import score_generations

    dataset_directory(args.dataset_dir, "--dataset-dir")
    if not Path(args.generations).is_file():
        raise UsageError(f"--generations: {args.generations!r} is not a file")
    print(json.dumps(score_generations(args.dataset_dir, args.generations), indent=2))
    return 0


def validate_evaluate(args: argparse.Namespace) -> Any:
    """The `EvalConfig` for `rar-lite evaluate`'s arguments, every one checked before any work
    (argparse already checked that seeds are integers >= 0 and sizes integers >= 1): seeds
    distinct, `--data-dir` entries NAME=DIRECTORY for known datasets, each real dataset's
    directory present and complete, `--out` writable. Raises `UsageError` naming the argument."""
    from rar_lite.evaluation import harness

    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        raise UsageError(f"--seeds: {args.seeds} repeats a seed (each run would count twice)")
    dirs: dict[str, str] = {}
    for item in args.data_dir or []:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise UsageError(f"--data-dir {item!r}: expected NAME=DIRECTORY")
        if name not in harness.DATASETS or name == "simulated":
            raise UsageError(f"--data-dir {item!r}: unknown dataset {name!r}; choose from "
                             f"{', '.join(d for d in harness.DATASETS if d != 'simulated')}")
        if name in dirs:
            raise UsageError(f"--data-dir: {name!r} is given twice")
        dirs[name] = directory
    for spec in args.llm or ():
        check_llm(spec, needs_llm=False)  # the form of each spec, named as --llm's
    chosen = {key: value for key, value in {
        "systems": args.systems, "datasets": args.datasets, "seeds": args.seeds,
        "n_simulated": args.n_simulated, "n_real": args.n_real,
        "n_generate": args.n_generate, "dev_dir": args.dev_dir,
        "llm": args.llm[0] if args.llm else None,
        "more_llms": tuple(args.llm[1:]) if args.llm else None,
        "llm_concurrency": args.llm_concurrency}.items() if value is not None}
    if dirs:
        chosen["data_dirs"] = dirs
    try:
        config = harness.EvalConfig.from_profile("quick" if args.quick else "full", **chosen)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    for spec in (config.llm, *config.more_llms):
        check_llm(spec, needs_llm=bool(set(harness.ZERO_SHOT) & set(config.systems)))
    for name in config.datasets:
        if name != "simulated":
            try:
                directory = harness.data_dir(config, name)
            except FileNotFoundError as error:
                raise UsageError(f"--datasets {name}: {error}") from None
            where = "--data-dir" if name in dirs else f"--datasets {name}"
            dataset_directory(directory, where)
    writable_directory(args.out, "--out")
    return config


def check_llm(spec: str, needs_llm: bool = True) -> None:
    """An API backbone's settings (endpoint, key) checked before any work: `--llm` named in the
    error (the spec itself was checked when the config was made)."""
    from rar_lite.backends import backbones
    from rar_lite.backends.llm import LLMError

    try:
        parsed = backbones.parse(spec)
    except ValueError as error:
        raise UsageError(f"--llm: {error}") from None
    if parsed.api and needs_llm:
        try:
            backbones.load(parsed)
        except LLMError as error:
            raise UsageError(f"--llm {parsed}: {error}") from None


@contextlib.contextmanager
def library_bars(show: bool) -> Iterator[None]:
    """With `show` False, the libraries' own progress bars (model and weight loading in
    transformers and huggingface_hub) are off inside the block; the package's bars follow
    each function's `progress` argument."""
    if show:
        yield
        return
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        enable_progress_bars()


def _evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from rar_lite.evaluation import harness

    config = validate_evaluate(args)
    with library_bars(show=not args.no_progress):
        result = harness.evaluate(config, progress=not args.no_progress)
    pd.set_option("display.width", 200)
    for dataset in config.datasets:
        for condition in harness.CONDITIONS:
            print(f"\n{dataset}, {condition} pairs")
            print(harness.main_table(
                result, dataset, condition,
                references=dataset == "inspired" and condition == "all").to_string())
        if {"rar-sft", "retriever"} <= set(config.systems):
            test = result.paired(dataset, "rar-sft", "retriever")
            print(f"RAR (SFT) - retriever only, NDCG@10: {test['diff']:+.4f} "
                  f"[{test['low']:+.4f}, {test['high']:+.4f}], p = {test['p']:.4f}")
    print("\ncost (empty LLM cache)\n" + result.cost.round(3).to_string())
    print(harness.overhead(result.cost))
    print(f"\nwritten to {result.save(args.out)} ({result.seconds / 60:.1f} min)")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    import json

    from rar_lite.book import serving

    _check_text([args.text], "the request")
    if not args.text.strip():
        raise UsageError("the request is empty: say what you would like to watch, e.g. "
                         "'I loved Heat and want another heist film'")
    if args.server:
        chosen = [flag for flag, on in (("--quick", args.quick), ("--llm", args.llm)) if on]
        if chosen:
            raise UsageError(f"{' and '.join(chosen)} cannot go with --server (or "
                             f"${SERVER_ENV}): the server's profile and LLM were chosen when it "
                             "started (`rar-lite serve`)")
        answer = serving.ask(args.server, args.text, args.k)
    else:
        with library_bars(show=not args.no_progress):
            engine = _engine(args)
            answer = json.loads(json.dumps(serving.record(engine, args.text, args.k)))
    print(json.dumps(answer, indent=1, ensure_ascii=False) if args.json
          else serving.format_result(answer))
    return 0


def _engine(args: argparse.Namespace) -> Any:
    """`demo.serving_engine` for `recommend` and `serve`'s --quick, --llm (checked first) and
    --no-progress."""
    from rar_lite.book import demo

    if args.llm is not None:
        check_llm(args.llm)
    return demo.serving_engine(profile="quick" if args.quick else "full",
                               progress=not args.no_progress, llm=args.llm)


def _serve(args: argparse.Namespace) -> int:
    from rar_lite.book import serving

    with library_bars(show=not args.no_progress):
        engine = _engine(args)
    try:
        server = serving.RecommendServer(engine, args.host, args.port, quiet=not args.verbose)
    except (OSError, OverflowError) as error:  # taken, not allowed, or not a port
        reason = getattr(error, "strerror", None) or error
        raise UsageError(f"--port {args.port}: cannot listen on {args.host}:{args.port} "
                         f"({reason})") from None
    print(f"rar-lite serves on {server.url} (Ctrl-C stops it); ask it with\n"
          f"  rar-lite recommend --server {server.url} \"I loved Heat and want another heist "
          f"film\"", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0


def _download(args: argparse.Namespace) -> int:
    import os

    from rar_lite.data import download

    if args.mirror is not None:
        try:
            download.check_mirror(args.mirror)
        except ValueError as error:
            raise UsageError(f"--mirror: {error}") from None
    root = writable_directory(args.to, "--to") if args.to else download.data_root()
    parts = download.parts(args.name)  # Reddit-Movie: where it is published, before any work
    kept = {part.directory for part in parts if part.present(root) and not args.force}
    download.download(args.name, root, args.mirror, args.force, progress=not args.no_progress)
    for part in parts:
        target = root / part.directory
        done = "already there (--force fetches it again)" if part.directory in kept else "fetched"
        print(f"{part.what}: {target} ({done})")
        chosen = os.environ.get(part.env)
        if chosen and Path(chosen).expanduser().resolve() != target.resolve():
            print(f"  {part.env} is set ({os.environ[part.env]}) and wins over this copy: "
                  "unset it to use the download")
        elif root.resolve() == download.data_root().resolve():
            print(f"  {part.env} is not needed any more: the package finds this copy")
        else:
            print(f"  outside the default data directory: set {download.DATA_ENV}={root} "
                  f"(or {part.env}={target}) so that the package finds it")
    for terms in dict.fromkeys(part.terms for part in parts):
        print(terms)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per task)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    parser = _Parser(prog="rar-lite", description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub = {"parents": [common]}
    corpus = commands.add_parser("corpus", help="build or load the movie corpus, print its card",
                                 **sub)
    corpus.add_argument("--rebuild", action="store_true", help="ignore the cache")
    corpus.set_defaults(run=_corpus)
    resolve = commands.add_parser("resolve", help="resolve movie names to corpus items", **sub)
    resolve.add_argument("names", nargs="+", help='names as written, e.g. "Heat (1995)"')
    resolve.set_defaults(run=_resolve)
    score = commands.add_parser("score-generations",
                                help="score raw LLM answers for a ReDial/INSPIRED/Reddit-Movie "
                                     "test set (He et al., CIKM 2023 protocol)", **sub)
    score.add_argument("--dataset-dir", required=True,
                       help="directory with test.jsonl, entity2id.json, item_ids.json")
    score.add_argument("--generations", required=True,
                       help="JSONL: one line per answered turn, with 'index' and 'text' or 'resp'")
    score.add_argument("--protocol", choices=("cikm23",), default="cikm23")
    score.set_defaults(run=_score_generations)
    ev = commands.add_parser("evaluate", help="RAR against its baselines (chapter 6)", **sub)
    ev.add_argument("--quick", action="store_true",
                    help="the QUICK profile's sizes (rar_lite.experiments.profiles): what CI runs")
    ev.add_argument("--systems", nargs="+", help="default: all of popularity retriever dense "
                    "fused llm keyword rar-sft rar-fused rar-loop rar-generate")
    ev.add_argument("--datasets", nargs="+", help="default: simulated inspired (also: redial, "
                    "reddit-movie, given their directory)")
    ev.add_argument("--seeds", nargs="+", type=_count(0), help="default: 0 1 2")
    ev.add_argument("--n-simulated", type=_count(1), help="simulated test conversations")
    ev.add_argument("--n-real", type=_count(1), help="turns of each real dataset (default: all)")
    ev.add_argument("--dev-dir", help="INSPIRED's dev split (UniCRS dev.jsonl) for fitting the "
                    "dense retriever (default: $RAR_LITE_INSPIRED_DEV_DIR, else what "
                    "`rar-lite download inspired` fetched)")
    ev.add_argument("--n-generate", type=_count(1),
                    help="conversations for RAR's generation mode")
    ev.add_argument("--data-dir", action="append", metavar="NAME=DIR",
                    help="a real dataset's directory, e.g. inspired=../data/inspired "
                         "(default: $RAR_LITE_<NAME>_DIR, else what `rar-lite download "
                         "NAME` fetched)")
    ev.add_argument("--llm", metavar="SPEC", nargs="+",
                    help="the LLM of the LLM-only baseline and of generation mode: smollm2 "
                    "(default), hf:<model id or path>, or openai:<model> (endpoint and key from "
                    "RAR_LITE_LLM_BASE_URL and RAR_LITE_LLM_API_KEY); each further SPEC adds "
                    "those two rows on that backbone; the tuned RAR rows keep chapter 4's "
                    "SmolLM2")
    ev.add_argument("--llm-concurrency", type=_count(1), metavar="N",
                    help="requests in flight to an API model (default 8)")
    ev.add_argument("--out", default="results/evaluation", help="directory for the tables")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.set_defaults(run=_evaluate)
    rec = commands.add_parser("recommend", help="recommend movies for a request: retrieve, "
                              "then the LLM over the candidates' cards", **sub)
    rec.add_argument("text", help='what you want, e.g. "I loved Heat and want another heist '
                     'film" (movie titles in it are the history; unknown ones are reported)')
    rec.add_argument("--k", type=_count(1), default=10, help="recommendations shown (of 20 "
                     "retrieved; default 10)")
    rec.add_argument("--llm", metavar="SPEC", help="rank with this LLM in generation mode: "
                     "hf:<model> or openai:<model> (default: chapter 4's tuned SmolLM2)")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.add_argument("--quick", action="store_true",
                     help="use the QUICK profile's artifacts (what the tests build)")
    rec.add_argument("--server", metavar="URL", default=os.environ.get(SERVER_ENV) or None,
                     help="ask a running `rar-lite serve` at URL instead of loading the models "
                     f"here (default: ${SERVER_ENV} when set)")
    rec.add_argument("--no-progress", action="store_true", help="no progress bars")
    rec.set_defaults(run=_recommend)
    srv = commands.add_parser("serve", help="keep the recommender loaded and answer `recommend "
                              "--server` requests over HTTP on this machine", **sub)
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                     "127.0.0.1: this machine only; the server has no authentication, so any "
                     "other address lets everyone who reaches it ask)")
    srv.add_argument("--port", type=_count(0), default=8765, help="port (default 8765; 0: any "
                     "free port, printed)")
    srv.add_argument("--llm", metavar="SPEC", help="rank with this LLM in generation mode "
                     "(as for recommend)")
    srv.add_argument("--quick", action="store_true",
                     help="use the QUICK profile's artifacts (what the tests build)")
    srv.add_argument("--verbose", action="store_true", help="log each request to stderr")
    srv.add_argument("--no-progress", action="store_true", help="no progress bars")
    srv.set_defaults(run=_serve)
    dl = commands.add_parser("download", help="fetch a public dataset in He et al.'s format "
                             "(INSPIRED: with its dev split) into the data directory", **sub)
    dl.add_argument("name", choices=("inspired", "redial", "reddit-movie"),
                    help="the dataset (reddit-movie: says where it is published)")
    dl.add_argument("--to", metavar="DIR", help="the data directory; the files go to DIR/NAME "
                    "(default: $RAR_LITE_DATA_DIR, else the cache's data/)")
    dl.add_argument("--mirror", metavar="URL", help="a base URL laid out like "
                    "https://raw.githubusercontent.com, which it replaces")
    dl.add_argument("--force", action="store_true", help="fetch again what is already there")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars")
    dl.set_defaults(run=_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rar-lite` script: 0 on success, 2 for a bad argument, 1 for a
    failure while working, 130 when interrupted (one line on stderr; `--debug`: traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    try:
        with warnings.catch_warnings():  # the libraries' deprecation notices are not the user's
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return int(args.run(args))
    except UsageError as error:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one clear line, the traceback on --debug
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {message} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
