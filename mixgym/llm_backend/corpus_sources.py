"""Where `mixgym corpus build` finds text: one domain per source of text that ships with
Debian packages or with Python.

Each `Source` reads raw documents ``(origin, text)`` from a filesystem root (``/`` normally;
a test points it at a fake one). Files are visited in a stable pseudo-random order (sorted by
a hash of their path), so a size cap takes a spread-out sample -- the manual pages of every
section, dictionary words from A to Z -- rather than the alphabetically first ones, and the
same machine always gives the same corpus. Cleaning, deduplication and capping happen in
`mixgym.llm_backend.corpus.build_corpus`.

======== ================================================ ==================================
domain   text                                             Debian package(s)
======== ================================================ ==================================
python   the Python standard library's ``.py`` files      (ships with Python)
c        C headers under ``/usr/include``                 libc6-dev
manpages manual pages (one package at a time in turn),    man-db, groff-base
         rendered to plain text by groff
changelogs ``/usr/share/doc/*/changelog*.gz``             (every Debian system)
licenses ``/usr/share/common-licenses``, ``*/copyright``  base-files
pydocs   Python's documentation sources (reST)            python3-doc
dictionary GCIDE (Webster's 1913 + WordNet), one entry    dict-gcide
           per document
bible    King James Bible, one chapter per document       bible-kjv
fortunes fortune cookies, one per document                fortunes
wordnet  WordNet synsets: words and gloss                 wordnet-base
======== ================================================ ==================================
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

Document = tuple[str, str]
"""(origin, text): where a raw document came from (a path, or path#entry) and its text."""


@dataclass(frozen=True)
class Source:
    """One domain's source of text.

    Attributes:
        domain: the domain's name (also its folder name in the built corpus).
        description: what the text is, for the manifest.
        packages: Debian packages that provide it (empty: nothing to install).
        needs: glob patterns, relative to the root, that must each match a file.
        read: root -> raw documents, in a stable pseudo-random order.
        programs: executables that must be on PATH (e.g. groff to render manual pages).
    """

    domain: str
    description: str
    packages: tuple[str, ...]
    needs: tuple[str, ...]
    read: Callable[[Path], Iterator[Document]]
    programs: tuple[str, ...] = ()

    def missing(self, root: Path) -> list[str]:
        """What is missing on this machine to read the source (empty when available)."""
        lacking = [pattern for pattern in self.needs if next(root.glob(pattern), None) is None]
        lacking += [program for program in self.programs if shutil.which(program) is None]
        return lacking


def _key(text: str) -> bytes:
    """A sort key that orders strings pseudo-randomly but always the same way."""
    return hashlib.sha1(text.encode()).digest()


def _hashed(items: Iterable[Path], root: Path) -> list[Path]:
    """`items` in a stable pseudo-random order: by the hash of their path under `root`."""
    return sorted(items, key=lambda p: _key(str(p.relative_to(root))))


def _origin(path: Path, root: Path) -> str:
    return "/" + str(path.relative_to(root))


def _read_text(path: Path) -> str | None:
    """A file's text (gunzipped if it ends in .gz), UTF-8 with bad bytes replaced; None if unreadable."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return data.decode("utf-8", errors="replace")


def _files(root: Path, patterns: Iterable[str], exclude: Callable[[Path], bool] = lambda p: False) -> Iterator[Document]:
    """Every regular file matching `patterns` (relative to root), one document each."""
    paths = {p for pattern in patterns for p in root.glob(pattern) if p.is_file() and not exclude(p)}
    for path in _hashed(paths, root):
        text = _read_text(path)
        if text is not None:
            yield _origin(path, root), text


def stdlib_dir(root: Path) -> Path:
    """The running interpreter's standard library, under `root`."""
    return root / Path(sysconfig.get_paths()["stdlib"]).relative_to("/")


def _stdlib_pattern() -> str:
    return str(Path(sysconfig.get_paths()["stdlib"]).relative_to("/"))


def read_python(root: Path) -> Iterator[Document]:
    excluded = {"site-packages", "dist-packages", "__pycache__"}
    return _files(root, [_stdlib_pattern() + "/**/*.py"], lambda p: not excluded.isdisjoint(p.parts))


def read_c(root: Path) -> Iterator[Document]:
    return _files(root, ["usr/include/**/*.h"])


_JUSTIFIED = re.compile(r"(?<=\S) {2,}(?=\S)")


def render_manpage(source: str) -> str | None:
    """A manual page's roff source as plain text (groff, no hyphenation, no bold/underline)."""
    try:
        out = subprocess.run(
            ["groff", "-t", "-man", "-Tutf8", "-P-cbou", "-rHY=0"],
            input=source.encode(),
            capture_output=True,
            timeout=30,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    text = out.stdout.decode("utf-8", errors="replace")
    return "\n".join(_JUSTIFIED.sub(" ", line) for line in text.splitlines())


def dpkg_owners(root: Path) -> dict[str, str]:
    """Installed path -> the Debian package that installed it (from dpkg's file lists)."""
    owners: dict[str, str] = {}
    for listing in sorted((root / "var/lib/dpkg/info").glob("*.list")):
        package = listing.stem.split(":")[0]
        for line in (_read_text(listing) or "").splitlines():
            owners.setdefault(line, package)
    return owners


def read_manpages(root: Path) -> Iterator[Document]:
    """Manual pages, taken one package at a time in turn (the first page of every package,
    then the second, ...), so that a package with thousands of generated pages (a cloud
    SDK's) cannot swamp the domain; pages no package owns form one group."""
    pages = [p for p in root.glob("usr/share/man/man[1-9]*/*") if p.is_file()]
    owners = dpkg_owners(root)
    groups: dict[str, list[Path]] = {}
    for page in pages:
        groups.setdefault(owners.get(_origin(page, root), ""), []).append(page)
    turns = [(rank, _key(package), page) for package, group in groups.items() for rank, page in enumerate(_hashed(group, root))]
    for _, _, path in sorted(turns, key=lambda t: t[:2]):
        source = _read_text(path)
        if source is None or source.lstrip().startswith(".so "):  # .so: an alias of another page
            continue
        text = render_manpage(source)
        if text:
            yield _origin(path, root), text


def read_changelogs(root: Path) -> Iterator[Document]:
    return _files(root, ["usr/share/doc/*/changelog*.gz"])


def read_licenses(root: Path) -> Iterator[Document]:
    return _files(root, ["usr/share/common-licenses/*", "usr/share/doc/*/copyright"])


def read_pydocs(root: Path) -> Iterator[Document]:
    return _files(root, ["usr/share/doc/python3*/html/_sources/**/*.rst.txt"])


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def dictd_number(text: str) -> int:
    """A number in a dictd index: base 64, most significant digit first."""
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def read_dictionary(root: Path) -> Iterator[Document]:
    """GCIDE entries, located through the dictd index (dictzip data is plain gzip)."""
    index = root / "usr/share/dictd/gcide.index"
    data_path = root / "usr/share/dictd/gcide.dict.dz"
    try:
        data = gzip.decompress(data_path.read_bytes())
        lines = index.read_text(encoding="utf-8", errors="replace").splitlines()
    except (OSError, EOFError, gzip.BadGzipFile):
        return
    spans: dict[tuple[int, int], str] = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 3 or fields[0].startswith("00"):  # 00-database-*: the file's own metadata
            continue
        span = (dictd_number(fields[1]), dictd_number(fields[2]))
        spans.setdefault(span, fields[0])
    order = sorted(spans, key=lambda span: _key(str(span[0])))
    origin = _origin(data_path, root)
    for start, length in order:
        yield f"{origin}#{spans[(start, length)]}", data[start : start + length].decode("utf-8", errors="replace")


_VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def read_bible(root: Path) -> Iterator[Document]:
    """The King James Bible through its `bible` program, one chapter per document."""
    program = root / "usr/bin/bible"
    try:
        out = subprocess.run(
            [str(program), "-f", "-p", str(root / "usr/lib"), "gen1:1-rev22:21"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    chapters: dict[str, list[str]] = {}
    for line in out.stdout.decode("utf-8", errors="replace").splitlines():
        match = _VERSE.match(line)
        if match:
            book, chapter, verse, text = match.groups()
            chapters.setdefault(f"{book} {chapter}", []).append(f"{verse} {text}")
    for key in sorted(chapters, key=_key):
        yield f"kjv#{key}", key + "\n\n" + "\n".join(chapters[key])


def read_fortunes(root: Path) -> Iterator[Document]:
    """Fortune cookies: files separated into cookies by lines holding a single %."""
    folder = root / "usr/share/games/fortunes"
    files = [p for p in folder.glob("*") if p.is_file() and p.suffix not in (".dat", ".u8")]
    cookies: list[Document] = []
    for path in files:
        text = _read_text(path)
        if text is not None:
            origin = _origin(path, root)
            cookies += [(f"{origin}#{i}", c) for i, c in enumerate(re.split(r"^%\s*$", text, flags=re.M))]
    yield from sorted(cookies, key=lambda d: _key(d[0]))


_WORDNET_POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}


def wordnet_gloss(line: str, pos: str) -> str | None:
    """One line of a WordNet data file as "word, word (pos): gloss"; None for header lines."""
    if line.startswith(" ") or " | " not in line:
        return None
    fields, gloss = line.split(" | ", 1)
    parts = fields.split()
    try:
        count = int(parts[3], 16)
    except (IndexError, ValueError):
        return None
    words = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in parts[4 : 4 + 2 * count : 2]]
    return f"{', '.join(words)} ({pos}): {gloss.strip()}"


def read_wordnet(root: Path) -> Iterator[Document]:
    glosses: list[Document] = []
    for suffix, pos in _WORDNET_POS.items():
        path = root / f"usr/share/wordnet/data.{suffix}"
        text = _read_text(path)
        for line in (text or "").splitlines():
            gloss = wordnet_gloss(line, pos)
            if gloss is not None:
                glosses.append((f"{_origin(path, root)}#{line[:8]}", gloss))
    yield from sorted(glosses, key=lambda d: _key(d[0]))


SOURCES: dict[str, Source] = {
    s.domain: s
    for s in (
        Source("python", "Python standard library source (.py)", (), (_stdlib_pattern() + "/os.py",), read_python),
        Source("c", "C headers under /usr/include", ("libc6-dev",), ("usr/include/stdio.h",), read_c),
        Source(
            "manpages",
            "manual pages under /usr/share/man/man*, rendered to text by groff",
            ("man-db", "groff-base"),
            ("usr/share/man/man1/*",),
            read_manpages,
            programs=("groff",),
        ),
        Source("changelogs", "Debian and upstream changelogs, /usr/share/doc/*/changelog*.gz", (), ("usr/share/doc/*/changelog*.gz",), read_changelogs),
        Source("licenses", "licence texts, /usr/share/common-licenses and /usr/share/doc/*/copyright", ("base-files",), ("usr/share/common-licenses/*",), read_licenses),
        Source("pydocs", "Python documentation sources (reST)", ("python3-doc",), ("usr/share/doc/python3*/html/_sources/*.rst.txt",), read_pydocs),
        Source(
            "dictionary",
            "GCIDE, the Collaborative International Dictionary of English",
            ("dict-gcide",),
            ("usr/share/dictd/gcide.index", "usr/share/dictd/gcide.dict.dz"),
            read_dictionary,
        ),
        Source("bible", "King James Bible (bible-kjv), one chapter per document", ("bible-kjv",), ("usr/bin/bible", "usr/lib/bible.data"), read_bible),
        Source("fortunes", "fortune cookies, /usr/share/games/fortunes", ("fortunes",), ("usr/share/games/fortunes/*.dat",), read_fortunes),
        Source("wordnet", "WordNet 3.0 synsets: words and gloss", ("wordnet-base",), ("usr/share/wordnet/data.noun",), read_wordnet),
    )
}
"""Every known source, by domain name, in the order `build_corpus` reads them."""
