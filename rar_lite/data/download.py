"""Fetch the public conversational recommendation data: `rar-lite download inspired|redial`.

The files come from public GitHub repositories, each pinned to a commit (the same bytes on every
machine), through `raw.githubusercontent.com` or a mirror laid out like it
(`<mirror>/<owner>/<repo>/<commit>/<path>`):

- the test splits in He et al.'s format (CIKM 2023, "Large Language Models as Zero-Shot
  Conversational Recommenders"; `rar_lite.data.cikm` reads them): `test.jsonl`, `entity2id.json`,
  `item_ids.json` from `AaronHeee/LLMs-as-Zero-Shot-Conversational-RecSys`, folder
  `data/<name>/`. That repository has no license file: the data are its authors' (and the original
  datasets' authors'); cite them, and check the original datasets' terms before redistributing;
- INSPIRED's dev split in UniCRS's format (Wang et al., KDD 2022, MIT license;
  `rar_lite.data.unicrs` reads it): `dev.jsonl` and the license, saved as `LICENSE.UniCRS`, from
  `wxl1999/UniCRS`.

Reddit-Movie's test split is published only on the Hugging Face Hub (`ZhankuiHe/reddit_cikm`),
so it is not fetched here: point `RAR_LITE_REDDIT_MOVIE_DIR` (or `--data-dir`) at a copy.

Each dataset goes to `<data root>/<name>/` and INSPIRED's dev split to
`<data root>/inspired_dev/`; the data root is `$RAR_LITE_DATA_DIR`, else the `data` folder of the
cache directory (`rar_lite.cache.cache_dir`). A directory is written atomically after every file
has been checked (each `.json` parses, each line of a `.jsonl` parses), with a `SOURCE.json`
beside the files (URLs, commit, SHA-256 of each file, date). `find_dataset` and `find_dev` are the
one place the package looks for the data: the environment variable first, then the data root.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from rar_lite import cache

#: The data root's variable; without it, `cache.cache_dir() / "data"`.
DATA_ENV = "RAR_LITE_DATA_DIR"
#: The directory of INSPIRED's dev split (UniCRS's `dev.jsonl`).
DEV_ENV = "RAR_LITE_INSPIRED_DEV_DIR"
#: Where GitHub serves a file of a repository at a commit; `mirror` replaces it.
GITHUB_RAW = "https://raw.githubusercontent.com"
TIMEOUT_S = 60.0
SOURCE_FILE = "SOURCE.json"
#: The files of a CIKM-format dataset directory (`rar_lite.data.cikm.FILES`).
CIKM_FILES = ("test.jsonl", "entity2id.json", "item_ids.json")

HE_REPO, HE_COMMIT = ("AaronHeee/LLMs-as-Zero-Shot-Conversational-RecSys",
                      "359595b708a312bc514f9a08abd62a727196fa72")
HE_TERMS = ("He et al.'s repository has no license file: the data are its authors' and the "
            "original datasets' authors'; cite them (CIKM 2023) and check the original datasets' "
            "terms before redistributing them.")
UNICRS_REPO = "wxl1999/UniCRS"
UNICRS_TERMS = "UniCRS (Wang et al., KDD 2022) is MIT-licensed: LICENSE.UniCRS is beside it."
REDDIT_MOVIE = (
    "Reddit-Movie is not fetched by rar-lite: He et al.'s GitHub folder data/reddit/ holds "
    "entity2id.json and item_ids.json but no test split, which is published on the Hugging Face "
    "Hub as the dataset ZhankuiHe/reddit_cikm; get its test split there, put it as test.jsonl "
    "beside entity2id.json and item_ids.json in one directory and pass that directory by hand "
    "(RAR_LITE_REDDIT_MOVIE_DIR, or --data-dir reddit-movie=DIR).")


class DownloadError(RuntimeError):
    """A server answered with an error, or a fetched file is not what it should be."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public GitHub repository at a commit, and the name it is saved under."""

    repo: str
    commit: str
    path: str
    name: str

    def url(self, base: str = GITHUB_RAW) -> str:
        """Its address under `base` (raw.githubusercontent.com or a mirror laid out like it)."""
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


@dataclass(frozen=True)
class Part:
    """One directory a download writes: its name under the data root, the environment variable
    that can point at a copy instead, the files, their terms of use, and whether they are a
    CIKM-format dataset (checked as `rar_lite.data.cikm` reads one)."""

    directory: str
    env: str
    files: tuple[RemoteFile, ...]
    terms: str
    what: str
    cikm: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        """The data files that make a copy complete (not its license or `SOURCE.json`)."""
        return tuple(f.name for f in self.files if not f.name.startswith("LICENSE"))

    def present(self, root: Path) -> bool:
        """Whether `<root>/<directory>` holds the data files (fetched or copied by hand)."""
        return _complete(Path(root) / self.directory, self.required)


def dataset_env(name: str) -> str:
    """The variable naming a dataset's directory, e.g. RAR_LITE_REDDIT_MOVIE_DIR."""
    return f"RAR_LITE_{name.upper().replace('-', '_')}_DIR"


def _cikm_part(name: str, folder: str) -> Part:
    files = tuple(RemoteFile(HE_REPO, HE_COMMIT, f"data/{folder}/{file}", file)
                  for file in CIKM_FILES)
    return Part(name, dataset_env(name), files, HE_TERMS, f"{name} test split", cikm=True)


INSPIRED_DEV = Part("inspired_dev", DEV_ENV, (
    RemoteFile(UNICRS_REPO, "9f116441f4605d58c9ee65e04fde9104ab7c6bf9", "data/inspired/dev.jsonl",
               "dev.jsonl"),
    RemoteFile(UNICRS_REPO, "05916f8d00d7bcdaaea5b036de461d409ec9afda", "LICENSE",
               "LICENSE.UniCRS")), UNICRS_TERMS, "inspired dev split")
#: What `download(name)` writes, per dataset (Reddit-Movie is not fetched: `REDDIT_MOVIE`).
SOURCES: dict[str, tuple[Part, ...]] = {
    "inspired": (_cikm_part("inspired", "inspired"), INSPIRED_DEV),
    "redial": (_cikm_part("redial", "redial"),),
}
#: The real datasets the package reads (`find_dataset` knows each).
NAMES = ("inspired", "redial", "reddit-movie")


def data_root() -> Path:
    """Where downloads go: `$RAR_LITE_DATA_DIR`, else `cache.cache_dir() / "data"`."""
    root = os.environ.get(DATA_ENV)
    return Path(root).expanduser() if root else cache.cache_dir() / "data"


def _complete(directory: Path, files: tuple[str, ...]) -> bool:
    return all((directory / name).is_file() for name in files)


def _find(env: str, directory: str, files: tuple[str, ...]) -> Path | None:
    """`$env` when set (the user's choice wins, present or not), else `<data root>/directory`
    when it holds `files`, else None."""
    chosen = os.environ.get(env)
    if chosen:
        return Path(chosen).expanduser()
    downloaded = data_root() / directory
    return downloaded if _complete(downloaded, files) else None


def find_dataset(name: str) -> Path | None:
    """A CIKM-format dataset's directory: `$RAR_LITE_<NAME>_DIR` when set, else the downloaded
    copy `<data root>/<name>/` when it holds test.jsonl, entity2id.json and item_ids.json, else
    None."""
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(NAMES)}")
    return _find(dataset_env(name), name, CIKM_FILES)


def find_dev() -> Path | None:
    """The directory of INSPIRED's dev split: `$RAR_LITE_INSPIRED_DEV_DIR` when set, else
    `<data root>/inspired_dev/` when it holds dev.jsonl, else None."""
    return _find(DEV_ENV, INSPIRED_DEV.directory, INSPIRED_DEV.required)


def how_to_get(name: str) -> str:
    """One clause telling a user how to get dataset `name`."""
    if name in SOURCES:
        return f"run `rar-lite download {name}`"
    return "download it from the Hugging Face Hub (ZhankuiHe/reddit_cikm)"


def parts(name: str) -> tuple[Part, ...]:
    """The directories `download(name)` writes; a clear error for Reddit-Movie and unknown
    names."""
    if name == "reddit-movie":
        raise ValueError(REDDIT_MOVIE)
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}: rar-lite downloads "
                         f"{' and '.join(SOURCES)} (Reddit-Movie: see its error)")
    return SOURCES[name]


def check_mirror(mirror: str | None) -> str:
    """The base URL files are fetched from: `mirror` (an http(s) URL) or GitHub's."""
    base = mirror or GITHUB_RAW
    parsed = urllib.parse.urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{base!r} is not an http(s) base URL such as {GITHUB_RAW}")
    return base


def _by_hand(plan: list[tuple[Part, Path]], base: str) -> str:
    def one(remote: RemoteFile) -> str:
        url = remote.url(base)
        return url if url.endswith("/" + remote.name) else f"{url} (as {remote.name})"

    return "; ".join(f"into {target}: {' '.join(one(f) for f in part.files)}"
                     for part, target in plan)


def _user_agent() -> str:
    from importlib import metadata

    try:
        version = metadata.version("rar-lite")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"rar-lite/{version} (dataset download; Python urllib)"


def _fetch(url: str, path: Path, by_hand: str, progress: bool) -> None:
    """Stream `url` into `path`; ConnectionError when the server cannot be reached or the
    connection breaks, DownloadError for an HTTP error (a disk error stays an OSError)."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    host = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, \
                open(path, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None,
                     unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                bar.update(len(block))
    except urllib.error.HTTPError as error:
        error.close()
        raise DownloadError(
            f"{url} answered HTTP {error.code} {error.reason}: the file is not there (a mirror "
            "must serve <mirror>/<owner>/<repo>/<commit>/<path>, as raw.githubusercontent.com "
            f"does); fetch the files by hand {by_hand}") from None
    except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as error:
        reason = getattr(error, "reason", None) or error
        raise ConnectionError(
            f"could not reach {host} to fetch {url} ({reason}): this machine seems to be offline "
            f"or cut off from {host}; fetch the files by hand {by_hand}") from None


def _json_error(label: str, error: ValueError, line: int | None = None) -> DownloadError:
    """`label`, the line (`line`, else the parser's) and what is wrong with it."""
    if isinstance(error, json.JSONDecodeError):
        return DownloadError(f"{label}, line {line or error.lineno}: malformed JSON "
                             f"({error.msg}, column {error.colno})")
    return DownloadError(f"{label}{f', line {line}' if line else ''}: {error}")


def _check_file(path: Path, label: str) -> None:
    """Every `.json` parses; every non-empty line of a `.jsonl` parses (the error names `label`
    and the line); other files (licenses) must not be empty."""
    from rar_lite.data.conversations import (
        ConversationFormatError,
        parse_json,
        read_lines,
    )

    if not path.read_bytes().strip():
        raise DownloadError(f"{label} is empty")
    if path.suffix not in (".json", ".jsonl"):
        return
    try:
        lines = read_lines(path)  # UTF-8 (a byte-order mark dropped), else the line is named
    except ConversationFormatError as error:
        raise DownloadError(str(error).replace(str(path), label)) from None
    if path.suffix == ".json":
        try:
            parse_json("\n".join(lines))
        except ValueError as error:
            raise _json_error(label, error) from None
        return
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                parse_json(line)
            except ValueError as error:
                raise _json_error(label, error, number) from None


def _check_cikm(directory: Path, target: Path) -> None:
    """The entities as `rar_lite.data.cikm` reads them (ids unique integers) and item ids a list of
    integers; the test split itself needs a corpus to load, so its lines are only JSON-checked."""
    from rar_lite.data import cikm
    from rar_lite.data.conversations import parse_json

    try:
        cikm.read_entities(directory)
    except ValueError as error:
        raise DownloadError(str(error).replace(str(directory), str(target))) from None
    items = parse_json((directory / "item_ids.json").read_text(encoding="utf-8-sig"))
    if not isinstance(items, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                              for i in items):
        raise DownloadError(f"{target / 'item_ids.json'}: expected a JSON list of integer ids")


def _source_record(part: Part, directory: Path, base: str) -> dict:
    return {
        "what": part.what,
        "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "terms": part.terms,
        "files": {f.name: {"url": f.url(base), "repo": f.repo, "commit": f.commit,
                           "path": f.path, "sha256": cache.sha256_file(directory / f.name),
                           "bytes": (directory / f.name).stat().st_size}
                  for f in part.files},
    }


def download(name: str, root: str | Path | None = None, mirror: str | None = None,
             force: bool = False, progress: bool = True) -> Path:
    """Fetch dataset `name` (`inspired`: its test and dev splits; `redial`: its test split) into
    `root` (default `data_root()`) and return its directory `<root>/<name>/`.

    A directory that already holds its files is left alone unless `force`. Every file is checked
    before its directory appears, and the directories appear together at the end: on any failure
    nothing is left behind. `mirror` replaces `https://raw.githubusercontent.com`. Raises
    ConnectionError when a server cannot be reached (offline), DownloadError for an HTTP error or
    a malformed file (naming the file and line), ValueError for Reddit-Movie (published on the
    Hugging Face Hub only) and unknown names."""
    chosen = parts(name)
    base = check_mirror(mirror)
    root = Path(root).expanduser() if root is not None else data_root()
    plan = [(part, root / part.directory) for part in chosen if force or not part.present(root)]
    by_hand = _by_hand(plan, base)
    with contextlib.ExitStack() as stack:
        for part, target in plan:
            tmp = stack.enter_context(cache.atomic_dir(target))
            for remote in part.files:
                url = remote.url(base)
                _fetch(url, tmp / remote.name, by_hand, progress)
                _check_file(tmp / remote.name, f"{target / remote.name} (from {url})")
            if part.cikm:
                _check_cikm(tmp, target)
            record = _source_record(part, tmp, base)
            (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return root / chosen[0].directory
