"""Multi-domain text corpora: loading one from local files with `datasets`, and building one
from text that ships with Debian and Python (``mixgym corpus build DIR``).

A corpus is a folder with one entry per domain, named after the domain:

========================== ============================================================
entry                      documents
========================== ============================================================
``code.jsonl``             one JSON object per line, its ``text`` field
``books/part-0.parquet``   the ``text`` column (a sub-folder may hold several files)
``legal.txt``              blocks of text separated by a blank line
``news/train.jsonl`` +     a given split: files named ``train*`` and ``validation*``
``news/validation.jsonl``
========================== ============================================================

Formats are ``.jsonl``/``.json`` (field ``text``), ``.parquet`` (column ``text``) and
``.txt``; all files of one domain share one format. Entries whose names start with ``.`` or
``_`` and ``manifest.json`` are not domains. When a domain gives no split, its documents are
split deterministically (`split_documents`): documents in the order of a hash of their text
go to validation until it holds `validation_fraction` of the domain's bytes (at least one
document each side). Files are read by `datasets` from local files only.

`build_corpus` writes such a folder (``DOMAIN/train.jsonl`` and ``DOMAIN/validation.jsonl``
with fields ``text`` and ``source``), a ``manifest.json`` and the corpus' default tokenizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mixgym.llm_backend.corpus_sources import SOURCES, Source
from mixgym.llm_backend.offline import force_offline
from mixgym.llm_backend.tokenizer import (
    CACHE_DIRNAME,
    DEFAULT_VOCAB_SIZE,
    MIN_VOCAB_SIZE,
    corpus_tokenizer,
    tokenizer_cache_name,
)

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
"""File suffix -> `datasets` builder."""
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"
DEFAULT_VALIDATION_FRACTION = 0.05


class CorpusError(ValueError):
    """A corpus folder or file that cannot be used, with what is wrong and where."""


@dataclass(frozen=True)
class Domain:
    """One domain's documents.

    Attributes:
        name: the domain's name (its file or folder name without suffix).
        train: training documents.
        validation: held-out documents.
        files: the files read.
    """

    name: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    files: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus: its folder and its domains, sorted by name."""

    path: Path
    domains: tuple[Domain, ...]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]

    def train_texts(self) -> dict[str, tuple[str, ...]]:
        """Domain name -> training documents (what the corpus' tokenizer is trained on)."""
        return {d.name: d.train for d in self.domains}


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def split_documents(texts: Sequence[str], validation_fraction: float, domain: str) -> tuple[list[str], list[str]]:
    """Split a domain's documents into (train, validation), deterministically.

    Documents, ordered by a hash of their text, go to validation until it holds
    `validation_fraction` of the bytes; each side keeps at least one document; both keep
    the documents' original order. The same documents always split the same way.
    """
    if not 0 < validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    if len(texts) < 2:
        raise CorpusError(
            f"domain {domain!r} has {len(texts)} document(s); splitting into train and validation needs at "
            "least 2 (give more documents, or separate them by blank lines, or give a validation split)"
        )
    order = sorted(range(len(texts)), key=lambda i: hashlib.sha1(texts[i].encode("utf-8", "surrogatepass")).digest())
    target = validation_fraction * sum(_nbytes(t) for t in texts)
    held, size = set(), 0
    for i in order:
        if held and (size >= target or len(held) == len(texts) - 1):
            break
        held.add(i)
        size += _nbytes(texts[i])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def _split_of(path: Path) -> str | None:
    """"train" or "validation" if the file's name says so (train.jsonl, validation-0.parquet)."""
    stem = path.name.split(".")[0]
    for split in SPLITS:
        if stem == split or re.match(rf"{split}[-_]", stem):
            return split
    return None


def domain_files(path: Path) -> dict[str, list[Path]]:
    """Domain name -> its files, from the corpus folder's entries: every file a corpus load reads.

    Anything that is not a regular file or a folder (a FIFO, a socket, a device) is refused:
    reading a FIFO blocks until something writes to it, which may be never.
    """
    if not path.exists():
        raise CorpusError(f"corpus folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise CorpusError(f"corpus {str(path)!r} is not a folder (expected one file or sub-folder per domain)")
    domains: dict[str, list[Path]] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith((".", "_")) or entry.name == MANIFEST:
            continue
        if entry.is_dir():
            name = entry.name
            files = sorted(p for p in entry.iterdir() if not p.name.startswith((".", "_")))
            nested = [p.name for p in files if p.is_dir()]
            if nested:
                raise CorpusError(f"domain folder {str(entry)!r} holds sub-folders {nested}; put its files directly in it")
        else:
            name, files = entry.name.split(".")[0], [entry]
        special = [str(p) for p in files if not p.is_file()]
        if special:
            raise CorpusError(f"domain {name!r}: {special} are not regular files (a FIFO, socket or device); corpora are read from files")
        if name in domains:
            raise CorpusError(f"domain {name!r} is given twice in {str(path)!r}: {[str(p) for p in domains[name] + files]}")
        domains[name] = files
    if not domains:
        raise CorpusError(
            f"corpus folder {str(path)!r} is empty: it needs one file or sub-folder per domain "
            f"({', '.join(FORMATS)})"
        )
    return domains


def _format_of(name: str, files: list[Path]) -> str:
    if not files:
        raise CorpusError(f"domain {name!r} has no files")
    suffixes = {p.suffix for p in files}
    unknown = sorted(str(p) for p in files if p.suffix not in FORMATS)
    if unknown:
        raise CorpusError(f"domain {name!r}: unsupported file(s) {unknown}; supported: {', '.join(FORMATS)}")
    builders = {FORMATS[s] for s in suffixes}
    if len(builders) > 1:
        raise CorpusError(f"domain {name!r} mixes formats {sorted(suffixes)}; use one format per domain")
    return builders.pop()


def _read_documents(name: str, builder: str, files: list[Path], cache_dir: str | None) -> list[str]:
    """The non-empty documents in `files`, read with `datasets` (local files only)."""
    force_offline()
    try:
        import datasets
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('datasets is not installed; pip install "mixgym[hf]"') from error
    for path in files:
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as error:
            raise CorpusError(f"domain {name!r}: cannot read {str(path)!r}: {error}") from None
    files = [p for p in files if p.stat().st_size > 0]  # datasets fails on empty files; they hold no documents
    if not files:
        return []
    options: dict[str, Any] = {"sample_by": "paragraph"} if builder == "text" else {}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        local = datasets.DownloadConfig(local_files_only=True)
        data = datasets.load_dataset(
            builder, data_files=[str(p) for p in files], split="train", cache_dir=cache_dir, download_config=local, **options
        )
    except Exception as error:  # datasets wraps parser errors in several exception types
        cause = error.__cause__ or error
        raise CorpusError(f"domain {name!r}: cannot read {[str(p) for p in files]}: {type(cause).__name__}: {cause}") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    if "text" not in data.column_names:
        raise CorpusError(f"domain {name!r}: {[str(p) for p in files]} have no 'text' field/column (found {data.column_names})")
    return [t.strip() for t in data["text"] if isinstance(t, str) and t.strip()]


_LOADED: dict[tuple[Any, ...], Corpus] = {}


def load_corpus(
    path: str | Path,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    cache_dir: str | Path | None = None,
) -> Corpus:
    """Load a corpus folder (layout in the module docstring) with `datasets`, local files only.

    Args:
        path: the corpus folder.
        validation_fraction: share of a domain's bytes held out when it gives no split.
        cache_dir: `datasets` cache (default: its own, ``$HF_DATASETS_CACHE``).

    Loaded corpora are kept in memory, keyed by the files' paths, sizes and times, so
    building many backends on one corpus reads it once.

    Raises:
        CorpusError: missing or empty folder, a domain without documents, unreadable or
            unsupported files, a split that cannot be made.
    """
    path = Path(path).expanduser().resolve()
    entries = domain_files(path)
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for files in entries.values() for f in files)
    key = (str(path), stats, validation_fraction, str(cache_dir))
    if key in _LOADED:
        return _LOADED[key]
    domains = []
    for name, files in entries.items():
        builder = _format_of(name, files)
        splits = {p: _split_of(p) for p in files}
        given = {s for s in splits.values() if s}
        if given and (given != set(SPLITS) or None in splits.values()):
            stray = sorted(p.name for p, s in splits.items() if s is None)
            raise CorpusError(
                f"domain {name!r}: a given split needs files named train* and validation* only; "
                f"found splits {sorted(given)} and other files {stray}"
            )
        cache = None if cache_dir is None else str(cache_dir)
        if given:
            train, validation = (_read_documents(name, builder, [p for p, s in splits.items() if s == split], cache) for split in SPLITS)
            for split, docs in zip(SPLITS, (train, validation)):
                if not docs:
                    raise CorpusError(f"domain {name!r} has no documents in its {split} split ({[str(p) for p in files]})")
        else:
            documents = _read_documents(name, builder, files, cache)
            if not documents:
                raise CorpusError(f"domain {name!r} has no documents ({[str(p) for p in files]} hold no non-empty text)")
            train, validation = split_documents(documents, validation_fraction, name)
        domains.append(Domain(name, tuple(train), tuple(validation), tuple(str(p) for p in files)))
    corpus = Corpus(path, tuple(domains))
    _LOADED[key] = corpus
    return corpus


# ---------------------------------------------------------------------------- building

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANKS = re.compile(r"\n{3,}")
MAX_REPLACEMENT_SHARE = 0.01
"""A document with more undecodable bytes than this share of its characters is dropped."""


def clean_text(text: str) -> str:
    """Normalised text: NFC, Unix newlines, no control characters or trailing blanks, at
    most one blank line in a row. Empty if more than 1% of it was undecodable bytes."""
    if text.count("\ufffd") > MAX_REPLACEMENT_SHARE * max(len(text), 1):
        return ""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text.replace("\f", "\n"))
    return _BLANKS.sub("\n\n", _TRAILING.sub("", text)).strip()


def _units(text: str, limit: int) -> Iterable[tuple[str, str]]:
    """(separator before, piece) at the coarsest level that fits `limit` bytes:
    paragraphs, else lines, else slices of characters."""
    for p, paragraph in enumerate(text.split("\n\n")):
        sep = "\n\n" if p else ""
        if _nbytes(paragraph) <= limit:
            yield sep, paragraph
            continue
        for i, line in enumerate(paragraph.split("\n")):
            line_sep = sep if i == 0 else "\n"
            if _nbytes(line) <= limit:
                yield line_sep, line
                continue
            step = max(1, limit // 4)  # a character is at most 4 bytes of UTF-8
            for j in range(0, len(line), step):
                yield (line_sep if j == 0 else ""), line[j : j + step]


def split_long(text: str, limit: int) -> list[str]:
    """Cut `text` into pieces of at most `limit` UTF-8 bytes, at blank lines where possible."""
    if _nbytes(text) <= limit:
        return [text]
    pieces: list[str] = []
    current, size = "", 0
    for sep, unit in _units(text, limit):
        grow = _nbytes(unit) + (_nbytes(sep) if current else 0)
        if current and size + grow > limit:
            pieces.append(current)
            current, size = unit, _nbytes(unit)
        else:
            current, size = (current + sep + unit if current else unit), size + grow
    if current:
        pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def collect_documents(
    source: Source,
    root: Path,
    max_bytes: int,
    max_document_bytes: int,
    min_document_chars: int,
) -> list[tuple[str, str]]:
    """A source's documents, cleaned, cut to `max_document_bytes`, deduplicated (by their
    whitespace-normalised text) and capped: reading stops before the document that would
    take the domain past `max_bytes`."""
    seen: set[bytes] = set()
    documents: list[tuple[str, str]] = []
    total = 0
    for origin, raw in source.read(root):
        for piece in split_long(clean_text(raw), max_document_bytes):
            if len(piece) < min_document_chars:
                continue
            key = hashlib.sha1(" ".join(piece.split()).encode("utf-8", "surrogatepass")).digest()
            if key in seen:
                continue
            size = _nbytes(piece)
            if total + size > max_bytes:
                return documents
            seen.add(key)
            documents.append((origin, piece))
            total += size
    return documents


def install_packages(packages: Sequence[str]) -> None:
    """``apt-get install -y --no-install-recommends`` the packages; CorpusError if it fails."""
    if shutil.which("apt-get") is None:
        raise CorpusError(f"cannot install {list(packages)}: apt-get is not available on this system")
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CorpusError(f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")


def _write_jsonl(path: Path, documents: Sequence[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for origin, text in documents:
            handle.write(json.dumps({"source": origin, "text": text}, ensure_ascii=False, sort_keys=True) + "\n")


def build_corpus(
    directory: str | Path,
    sources: Sequence[str] | None = None,
    max_bytes_per_domain: int = 4_000_000,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    max_document_bytes: int = 16_000,
    min_document_chars: int = 16,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    allow_apt: bool = False,
    overwrite: bool = False,
    root: str | Path = "/",
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Build a multi-domain corpus in `directory` from text on this machine; return the manifest.

    Each source (`mixgym.llm_backend.corpus_sources.SOURCES`) becomes one domain: its
    documents are cleaned (`clean_text`), cut at `max_document_bytes`, deduplicated, capped
    at `max_bytes_per_domain`, split (`split_documents`) and written to
    ``DOMAIN/train.jsonl`` and ``DOMAIN/validation.jsonl``. A byte-level BPE with
    `vocab_size` ids is trained on the training split and cached in the corpus (the one
    `HFBackend` uses by default), and ``manifest.json`` records per domain its source,
    documents, bytes and tokens (under that tokenizer) per split, and the sources that were
    missing. The output depends only on the files read and the arguments.

    Args:
        directory: where to write; must not exist, be empty, or (with `overwrite`) hold a
            corpus built before (a ``manifest.json``).
        sources: domain names to build (default: all of `SOURCES`).
        allow_apt: install the Debian packages of missing sources with apt-get first;
            otherwise the missing packages are reported (`log` and the manifest) and the
            corpus is built from what exists.
        root: the filesystem root to read from (tests use a fake one).
        log: called with progress messages.

    Raises:
        CorpusError: unknown source, bad limits, a folder that would be clobbered, no
            source available, a failed apt-get.
    """
    names = list(SOURCES) if sources is None else list(sources)
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise CorpusError(f"unknown source(s) {unknown or names}; known: {', '.join(SOURCES)}")
    for label, value, low in (
        ("max_bytes_per_domain", max_bytes_per_domain, 1000),
        ("max_document_bytes", max_document_bytes, 100),
        ("min_document_chars", min_document_chars, 1),
        ("vocab_size", vocab_size, MIN_VOCAB_SIZE),
    ):
        if not isinstance(value, int) or value < low:
            raise CorpusError(f"{label} must be an integer >= {low}, got {value!r}")
    if not 0 < validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    out = Path(directory).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite or not (out / MANIFEST).exists():
            raise CorpusError(
                f"{str(out)!r} exists and is not empty; give an empty or new folder "
                "(overwrite=True / --overwrite replaces only a corpus built before, one with a manifest.json)"
            )
        shutil.rmtree(out)
    root = Path(root)

    chosen = [SOURCES[n] for n in names]
    missing = {s.domain: s.missing(root) for s in chosen}
    to_install = sorted({p for s in chosen if missing[s.domain] for p in s.packages})
    if to_install and allow_apt:
        log(f"installing {' '.join(to_install)} with apt-get")
        install_packages(to_install)
        missing = {s.domain: s.missing(root) for s in chosen}
    absent = [
        {"domain": s.domain, "packages": list(s.packages), "missing": missing[s.domain]} for s in chosen if missing[s.domain]
    ]
    for entry in absent:
        fix = f"apt-get install {' '.join(entry['packages'])}" if entry["packages"] else "no Debian package provides it"
        log(f"skipping {entry['domain']!r}: missing {', '.join(entry['missing'])} ({fix}; or pass allow_apt=True / --allow-apt)")

    collected: dict[str, tuple[Source, list[str], list[str], dict[str, str]]] = {}
    for source in chosen:
        if missing[source.domain]:
            continue
        documents = collect_documents(source, root, max_bytes_per_domain, max_document_bytes, min_document_chars)
        if len(documents) < 2:
            absent.append({"domain": source.domain, "packages": list(source.packages), "missing": ["documents"]})
            log(f"skipping {source.domain!r}: it yielded {len(documents)} usable document(s)")
            continue
        origins = {text: origin for origin, text in documents}
        train, validation = split_documents([text for _, text in documents], validation_fraction, source.domain)
        collected[source.domain] = (source, train, validation, origins)
        log(f"{source.domain}: {len(documents)} documents, {sum(_nbytes(t) for _, t in documents):,} bytes")
    if not collected:
        raise CorpusError(
            f"no source could be read on this machine (missing: {', '.join(e['domain'] for e in absent)}); "
            "install their packages or pass allow_apt=True"
        )

    out.mkdir(parents=True, exist_ok=True)
    for domain in sorted(collected):
        _, train, validation, origins = collected[domain]
        (out / domain).mkdir()
        for split, texts in zip(SPLITS, (train, validation)):
            _write_jsonl(out / domain / f"{split}.jsonl", [(origins[t], t) for t in texts])
    train_texts = {d: collected[d][1] for d in sorted(collected)}
    log(f"training a byte-level BPE with {vocab_size} ids on the training split")
    tokenizer = corpus_tokenizer(train_texts, out, vocab_size, cache_dir=out / CACHE_DIRNAME)
    domains = []
    for domain in sorted(collected):
        source, train, validation, _ = collected[domain]
        splits = dict(zip(SPLITS, (train, validation)))
        domains.append(
            {
                "domain": domain,
                "source": source.description,
                "documents": {s: len(t) for s, t in splits.items()},
                "bytes": {s: sum(_nbytes(x) for x in t) for s, t in splits.items()},
                "tokens": {s: int(len(tokenizer.encode_documents(t))) for s, t in splits.items()},
            }
        )
    manifest = {
        "format": "mixgym-corpus/1",
        "settings": {
            "sources": names,
            "max_bytes_per_domain": max_bytes_per_domain,
            "validation_fraction": validation_fraction,
            "max_document_bytes": max_document_bytes,
            "min_document_chars": min_document_chars,
        },
        "tokenizer": {
            "kind": "byte-level BPE, trained on the train split; tokens count each document's end token",
            "vocab_size": tokenizer.vocab_size,
            "path": f"{CACHE_DIRNAME}/{tokenizer_cache_name(train_texts, vocab_size)}",
        },
        "domains": domains,
        "missing": absent,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------- CLI


def _build_command(args: argparse.Namespace) -> int:
    try:
        manifest = build_corpus(
            args.dir,
            sources=args.sources.split(",") if args.sources else None,
            max_bytes_per_domain=args.max_bytes,
            validation_fraction=args.validation_fraction,
            max_document_bytes=args.max_document_bytes,
            vocab_size=args.vocab_size,
            allow_apt=args.allow_apt,
            overwrite=args.overwrite,
            log=lambda message: print(message, file=sys.stderr),
        )
    except CorpusError as error:
        print(f"mixgym corpus build: error: {error}", file=sys.stderr)
        return 2
    print("| domain | documents (train/val) | bytes | tokens |\n|---|---|---|---|")
    for d in manifest["domains"]:
        docs, size, tokens = d["documents"], sum(d["bytes"].values()), sum(d["tokens"].values())
        print(f"| {d['domain']} | {docs['train']}/{docs['validation']} | {size:,} | {tokens:,} |")
    if manifest["missing"]:
        packages = sorted({p for e in manifest["missing"] for p in e["packages"]})
        print(f"\nmissing: {', '.join(e['domain'] for e in manifest['missing'])}"
              + (f" (apt-get install {' '.join(packages)}, or --allow-apt)" if packages else ""))
    return 0


def add_corpus_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``corpus build DIR`` to an argparse subparsers object; returns the ``corpus`` parser.

    The command's handler is set as ``func`` (called with the parsed namespace, returns the
    exit status), as `mixgym.cli` dispatches.
    """
    corpus = subparsers.add_parser("corpus", help="build multi-domain text corpora")
    commands = corpus.add_subparsers(dest="corpus_command", required=True)
    build = commands.add_parser(
        "build",
        help="build a corpus from text that ships with Debian and Python",
        description=build_corpus.__doc__.split("\n\n")[0] if build_corpus.__doc__ else None,
    )
    build.add_argument("dir", help="output folder (new or empty)")
    build.add_argument("--sources", default="", help=f"comma-separated domains (default: all of {','.join(SOURCES)})")
    build.add_argument("--max-bytes", type=int, default=4_000_000, help="cap on each domain's bytes (default 4000000)")
    build.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION, help="held-out share of bytes (default 0.05)")
    build.add_argument("--max-document-bytes", type=int, default=16_000, help="longer documents are cut at blank lines (default 16000)")
    build.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help=f"BPE vocabulary (default {DEFAULT_VOCAB_SIZE})")
    build.add_argument("--allow-apt", action="store_true", help="apt-get install the packages of missing sources")
    build.add_argument("--overwrite", action="store_true", help="replace a corpus built before in DIR")
    build.set_defaults(func=_build_command)
    return corpus
