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
``.txt``; all files of one domain share one format. Text files are UTF-8 (a file that is not
is refused, naming its line), and every row of a ``.jsonl``/``.parquet`` file needs a string
``text`` (a row without one is an error, not dropped; an empty one is skipped). Entries whose names start with ``.`` or
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
import random
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
DOMAIN_KINDS = ("text", "noise", "duplicate")
"""What a domain of a corpus is: real text, or junk `build_corpus` injected (`Domain.kind`)."""
NOISE_DOMAIN, DUPLICATE_DOMAIN = "noise", "duplicate"
"""Names of the injected domains in a built corpus."""


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
        kind: "text", or what `build_corpus` injected: "noise" (shuffled words of the other
            domains) or "duplicate" (a few documents repeated); read from ``manifest.json``.
    """

    name: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    files: tuple[str, ...]
    kind: str = "text"


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus: its folder and its domains, sorted by name."""

    path: Path
    domains: tuple[Domain, ...]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def kinds(self) -> tuple[str, ...]:
        """Each domain's kind (`Domain.kind`), in the order of `names`."""
        return tuple(d.kind for d in self.domains)

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
    if builder in ("json", "text"):
        for path in files:
            _check_utf8(name, path)
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
    texts = data["text"]
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:  # a row without the field reads as None: dropping it would hide a schema mistake
        raise CorpusError(
            f"domain {name!r}: document {bad} of {[str(p) for p in files]} has no string 'text' (got {texts[bad]!r}); "
            "every row needs one (an empty string is skipped)"
        )
    return [t.strip() for t in texts if t.strip()]


def _check_utf8(name: str, path: Path) -> None:
    """`CorpusError` naming the file, line and byte if `path` is not UTF-8 text."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(
                    f"domain {name!r}: {str(path)!r} is not UTF-8: line {number} has byte {line[error.start]:#04x} at "
                    f"column {error.start + 1} ({error.reason}); re-encode it, e.g. iconv -f latin1 -t utf-8"
                ) from None


def _manifest_kinds(path: Path) -> dict[str, str]:
    """Domain -> kind from the folder's ``manifest.json`` (``domains: [{domain, kind}]``), if any."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return {}
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8")).get("domains", [])
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as error:
        raise CorpusError(f"{str(manifest)!r} is not a JSON object with a 'domains' list: {error}") from None
    kinds = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and "kind" in entry:
            if entry["kind"] not in DOMAIN_KINDS:
                raise CorpusError(f"{str(manifest)!r}: domain {entry.get('domain')!r} has unknown kind {entry['kind']!r}; known: {', '.join(DOMAIN_KINDS)}")
            kinds[str(entry.get("domain"))] = entry["kind"]
    return kinds


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
    kinds = _manifest_kinds(path)
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for files in entries.values() for f in files)
    stats += tuple(sorted(kinds.items()))
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
        domains.append(Domain(name, tuple(train), tuple(validation), tuple(str(p) for p in files), kinds.get(name, "text")))
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
    scan_bytes: int = 0,
) -> tuple[list[tuple[str, str]], int]:
    """A source's documents, cleaned, cut to `max_document_bytes`, deduplicated (by their
    whitespace-normalised text) and capped, and the bytes it holds up to `scan_bytes`.

    Documents are kept until the next would take the domain past `max_bytes`; reading goes on,
    counting without keeping, until the count would pass ``max(max_bytes, scan_bytes)`` or the
    source ends. Returns (documents, bytes counted): the count measures how big the source
    is (up to the scan limit), which `build_corpus` needs to keep the sources' size skew.
    """
    seen: set[bytes] = set()
    documents: list[tuple[str, str]] = []
    kept, counted, keeping = 0, 0, True
    limit = max(max_bytes, scan_bytes)
    for origin, raw in source.read(root):
        for piece in split_long(clean_text(raw), max_document_bytes):
            if len(piece) < min_document_chars:
                continue
            key = hashlib.sha1(" ".join(piece.split()).encode("utf-8", "surrogatepass")).digest()
            if key in seen:
                continue
            size = _nbytes(piece)
            if counted + size > limit:
                return documents, counted
            seen.add(key)
            counted += size
            keeping = keeping and kept + size <= max_bytes
            if keeping:
                documents.append((origin, piece))
                kept += size
    return documents, counted


def _prefix_of(documents: list[str], budget: int) -> list[str]:
    """The leading documents whose bytes stay within `budget` (at least two: a domain needs a
    document on each side of its split)."""
    total, count = 0, 0
    for text in documents:
        total += _nbytes(text)
        if total > budget and count >= 2:
            break
        count += 1
    return documents[:count]


def noise_documents(pool: dict[str, Sequence[str]], n_bytes: int, seed: int = 0) -> list[str]:
    """Documents of words drawn at random from every document of `pool` (domain -> documents).

    Each document takes the length in words of a random pool document and that many words
    drawn uniformly, with replacement, from all the pool's words: the other domains' words
    shuffled, so their unigram statistics survive and every other structure is gone. Stops
    before the document that would pass `n_bytes`; the same pool and seed give the same text.
    """
    documents_in_order = [doc for domain in sorted(pool) for doc in pool[domain]]
    lengths = [len(doc.split()) for doc in documents_in_order]
    words = [word for doc in documents_in_order for word in doc.split()]
    if not words:
        raise CorpusError("a noise domain needs words from other domains to shuffle, and they hold none")
    rng = random.Random(seed)
    documents: list[str] = []
    total = 0
    while True:
        text = " ".join(rng.choices(words, k=max(1, rng.choice(lengths))))
        if total + _nbytes(text) > n_bytes and documents:
            return documents
        documents.append(text)
        total += _nbytes(text)


def duplicate_documents(pool: dict[str, Sequence[str]], n_bytes: int, n_documents: int) -> tuple[list[str], list[str]]:
    """(repeated, originals): `n_documents` documents of `pool`, repeated in turn until the
    next copy would pass `n_bytes`. The originals are the first in the order of a hash of their
    text among those short enough to be repeated about four times each
    (``n_bytes / (4 * n_documents)`` bytes)."""
    limit = max(1, n_bytes // (4 * n_documents))
    candidates = sorted(
        {doc for docs in pool.values() for doc in docs if _nbytes(doc) <= limit},
        key=lambda t: hashlib.sha1(t.encode("utf-8", "surrogatepass")).digest(),
    )
    originals = candidates[:n_documents]
    if not originals:
        raise CorpusError(
            f"a duplicate domain of {n_bytes} bytes repeats documents of at most {limit} bytes, and the other "
            "domains hold none: give more duplicate_bytes or a smaller duplicate_count"
        )
    repeated: list[str] = []
    total = 0
    while True:
        text = originals[len(repeated) % len(originals)]
        if total + _nbytes(text) > n_bytes and len(repeated) >= len(originals):
            return repeated, originals
        repeated.append(text)
        total += _nbytes(text)


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
    keep_skew: bool = False,
    scan_bytes: int | None = None,
    noise_bytes: int = 0,
    duplicate_bytes: int = 0,
    duplicate_count: int = 8,
) -> dict[str, Any]:
    """Build a multi-domain corpus in `directory` from text on this machine; return the manifest.

    Each source (`mixgym.llm_backend.corpus_sources.SOURCES`) becomes one domain: its
    documents are cleaned (`clean_text`), cut at `max_document_bytes`, deduplicated, capped
    at `max_bytes_per_domain`, split (`split_documents`) and written to
    ``DOMAIN/train.jsonl`` and ``DOMAIN/validation.jsonl``. A byte-level BPE with
    `vocab_size` ids is trained on the training split and cached in the corpus (the one
    `HFBackend` uses by default), and ``manifest.json`` records per domain its source, kind,
    documents, bytes and tokens (under that tokenizer) per split, and the sources that were
    missing. The output depends only on the files read and the arguments.

    The cap makes domains similar in size, so the natural mixture is nearly uniform. With
    `keep_skew` the cap applies to the largest domain only: every source is measured (read
    up to `scan_bytes`) and each domain keeps the same share of its text, so sizes keep the
    ratios they have on this machine -- as The Pile's components keep theirs -- and the
    small domains are the ones a uniform mixture repeats.

    Two junk domains can be injected, so that a real corpus has the toy's structure: a
    ``noise`` domain (`noise_bytes`: words of the other domains' training text drawn at random,
    `noise_documents`) and a ``duplicate`` domain (`duplicate_bytes`: `duplicate_count`
    documents of the other domains repeated, `duplicate_documents`; its validation split is
    one copy of each). The manifest marks their kinds, and objectives leave them out
    (`mixgym.llm_backend.objectives`).

    Args:
        directory: where to write; must not exist, be empty, or (with `overwrite`) hold a
            corpus built before (a ``manifest.json``).
        sources: domain names to build (default: all of `SOURCES`).
        allow_apt: install the Debian packages of missing sources with apt-get first;
            otherwise the missing packages are reported (`log` and the manifest) and the
            corpus is built from what exists.
        root: the filesystem root to read from (tests use a fake one).
        log: called with progress messages.
        keep_skew: keep the sources' size ratios (see above) instead of capping each domain.
        scan_bytes: with `keep_skew`, how far a source is read to measure it (default 8 x
            `max_bytes_per_domain`); larger sources count as this size.
        noise_bytes, duplicate_bytes: sizes of the injected domains (0: none).
        duplicate_count: distinct documents in the duplicate domain.

    Raises:
        CorpusError: unknown source, bad limits, a folder that would be clobbered, no
            source available, a noise or duplicate domain with no other domain to draw
            from, a failed apt-get.
    """
    names = list(SOURCES) if sources is None else list(sources)
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise CorpusError(f"unknown source(s) {unknown or names}; known: {', '.join(SOURCES)}")
    if scan_bytes is not None and not keep_skew:
        raise CorpusError(f"scan_bytes={scan_bytes!r} measures sources for keep_skew, which is off; pass keep_skew=True (--keep-skew)")
    scan_bytes = 8 * max_bytes_per_domain if scan_bytes is None and isinstance(max_bytes_per_domain, int) else scan_bytes
    for label, value, low in (
        ("max_bytes_per_domain", max_bytes_per_domain, 1000),
        ("max_document_bytes", max_document_bytes, 100),
        ("min_document_chars", min_document_chars, 1),
        ("vocab_size", vocab_size, MIN_VOCAB_SIZE),
        ("scan_bytes", scan_bytes, max_bytes_per_domain if isinstance(max_bytes_per_domain, int) else 1000),
        ("noise_bytes", noise_bytes, 0),
        ("duplicate_bytes", duplicate_bytes, 0),
        ("duplicate_count", duplicate_count, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
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
    root = Path(root)

    chosen = [SOURCES[n] for n in names]
    missing = {s.domain: s.missing(root) for s in chosen}
    to_install = sorted({p for s in chosen if missing[s.domain] for p in s.packages})
    if to_install and allow_apt:
        log(f"installing {' '.join(to_install)} with apt-get")
        install_packages(to_install)
        missing = {s.domain: s.missing(root) for s in chosen}
    injected = [name for name, size in ((NOISE_DOMAIN, noise_bytes), (DUPLICATE_DOMAIN, duplicate_bytes)) if size]
    if injected and all(missing[s.domain] for s in chosen):
        raise CorpusError(
            f"no other domain to draw the {' and '.join(injected)} domain from: none of the sources {names} is "
            f"available here (missing: {', '.join(f'{d}: {m}' for d, m in missing.items())})"
        )
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    absent = [
        {"domain": s.domain, "packages": list(s.packages), "missing": missing[s.domain]} for s in chosen if missing[s.domain]
    ]
    for entry in absent:
        fix = f"apt-get install {' '.join(entry['packages'])}" if entry["packages"] else "no Debian package provides it"
        log(f"skipping {entry['domain']!r}: missing {', '.join(entry['missing'])} ({fix}; or pass allow_apt=True / --allow-apt)")

    read: dict[str, tuple[Source, list[tuple[str, str]], int]] = {}
    for source in chosen:
        if missing[source.domain]:
            continue
        documents, available = collect_documents(
            source, root, max_bytes_per_domain, max_document_bytes, min_document_chars, scan_bytes if keep_skew else 0
        )
        if len(documents) < 2:
            absent.append({"domain": source.domain, "packages": list(source.packages), "missing": ["documents"]})
            log(f"skipping {source.domain!r}: it yielded {len(documents)} usable document(s)")
            continue
        read[source.domain] = (source, documents, available)
    if not read:
        raise CorpusError(
            f"no source could be read on this machine (missing: {', '.join(e['domain'] for e in absent)}); "
            "install their packages or pass allow_apt=True"
        )
    largest = max(available for _, _, available in read.values())
    collected: dict[str, _Collected] = {}
    for domain, (source, documents, available) in read.items():
        origins = {text: origin for origin, text in documents}
        texts = [text for _, text in documents]
        if keep_skew:
            texts = _prefix_of(texts, max_bytes_per_domain * available // largest)
        train, validation = split_documents(texts, validation_fraction, domain)
        collected[domain] = _Collected(source.description, "text", train, validation, origins, available)
        log(f"{domain}: {len(texts)} documents, {sum(_nbytes(t) for t in texts):,} bytes (of {available:,} read)")
    pool = {domain: c.train for domain, c in collected.items()}
    if noise_bytes:
        noise = noise_documents(pool, noise_bytes)
        train, validation = split_documents(noise, validation_fraction, NOISE_DOMAIN)
        description = f"words of the training text of {', '.join(sorted(pool))} drawn at random"
        collected[NOISE_DOMAIN] = _Collected(description, "noise", train, validation, {}, sum(map(_nbytes, noise)))
    if duplicate_bytes:
        repeated, originals = duplicate_documents(pool, duplicate_bytes, duplicate_count)
        origins = {text: f"{domain}#train" for domain, texts in pool.items() for text in texts}
        description = f"{len(originals)} training documents of the other domains, repeated"
        collected[DUPLICATE_DOMAIN] = _Collected(description, "duplicate", repeated, originals, origins, sum(map(_nbytes, repeated)))

    out.mkdir(parents=True, exist_ok=True)
    for domain in sorted(collected):
        entry = collected[domain]
        (out / domain).mkdir()
        for split, texts in zip(SPLITS, (entry.train, entry.validation)):
            _write_jsonl(out / domain / f"{split}.jsonl", [(entry.origins.get(t, f"{domain}#generated"), t) for t in texts])
    train_texts = {d: collected[d].train for d in sorted(collected)}
    log(f"training a byte-level BPE with {vocab_size} ids on the training split")
    tokenizer = corpus_tokenizer(train_texts, out, vocab_size, cache_dir=out / CACHE_DIRNAME)
    domains = []
    for domain in sorted(collected):
        entry = collected[domain]
        splits = dict(zip(SPLITS, (entry.train, entry.validation)))
        domains.append(
            {
                "domain": domain,
                "kind": entry.kind,
                "source": entry.description,
                "documents": {s: len(t) for s, t in splits.items()},
                "bytes": {s: sum(_nbytes(x) for x in t) for s, t in splits.items()},
                "tokens": {s: int(len(tokenizer.encode_documents(t))) for s, t in splits.items()},
                "bytes_read": entry.bytes_read,
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
            "keep_skew": keep_skew,
            "scan_bytes": scan_bytes if keep_skew else None,
            "noise_bytes": noise_bytes,
            "duplicate_bytes": duplicate_bytes,
            "duplicate_count": duplicate_count if duplicate_bytes else None,
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


@dataclass(frozen=True)
class _Collected:
    """One domain of a corpus being built: what it is, its splits, where its texts came from,
    and how many bytes of its source were read (the measure `keep_skew` scales by)."""

    description: str
    kind: str
    train: list[str]
    validation: list[str]
    origins: dict[str, str]
    bytes_read: int


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
            keep_skew=args.keep_skew,
            scan_bytes=args.scan_bytes,
            noise_bytes=args.noise_bytes,
            duplicate_bytes=args.duplicate_bytes,
            duplicate_count=args.duplicate_count,
        )
    except CorpusError as error:
        print(f"mixgym corpus build: error: {error}", file=sys.stderr)
        return 2
    print("| domain | kind | documents (train/val) | bytes | tokens | natural share |\n|---|---|---|---|---|---|")
    total = sum(d["tokens"]["train"] for d in manifest["domains"])
    for d in manifest["domains"]:
        docs, size, tokens = d["documents"], sum(d["bytes"].values()), sum(d["tokens"].values())
        share = d["tokens"]["train"] / total
        print(f"| {d['domain']} | {d['kind']} | {docs['train']}/{docs['validation']} | {size:,} | {tokens:,} | {share:.1%} |")
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
    build.add_argument(
        "--keep-skew",
        action="store_true",
        help="keep the sources' size ratios: --max-bytes caps the largest domain and every domain keeps the same share "
        "of its text (default: --max-bytes caps each domain, so sizes end up similar)",
    )
    build.add_argument(
        "--scan-bytes", type=int, default=None, help="with --keep-skew: read each source this far to measure it (default 8 x --max-bytes)"
    )
    build.add_argument(
        "--noise-bytes", type=int, default=0, help="add a 'noise' domain of this size: the other domains' words drawn at random (default 0: none)"
    )
    build.add_argument(
        "--duplicate-bytes", type=int, default=0, help="add a 'duplicate' domain of this size: a few documents repeated (default 0: none)"
    )
    build.add_argument("--duplicate-count", type=int, default=8, help="distinct documents of the duplicate domain (default 8)")
    build.set_defaults(func=_build_command)
    return corpus
