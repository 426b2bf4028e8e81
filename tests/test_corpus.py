"""Corpora: loading user folders with `datasets`, building one from this machine's text,
the packaged sample, the CLI, and every bad input named in a clear error."""

import os
import argparse
import gzip
import json
import stat
import sys
from pathlib import Path

import pytest

from mixgym.data import SAMPLE_CORPUS
from mixgym.llm_backend import corpus as corpus_module
from mixgym.llm_backend.corpus import (
    CorpusError,
    add_corpus_cli,
    build_corpus,
    clean_text,
    load_corpus,
    split_documents,
    split_long,
)
from mixgym.llm_backend.corpus_sources import SOURCES, dictd_number, wordnet_gloss
from mixgym.llm_backend.tokenizer import load_tokenizer

QUIET = {"log": lambda message: None}


def paragraphs(prefix: str, count: int, words: int = 40) -> list[str]:
    return [" ".join(f"{prefix}{i}w{j}" for j in range(words)) for i in range(count)]


def write_user_corpus(root: Path) -> Path:
    """The three layouts of the README: jsonl file, parquet in a sub-folder, plain text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir()
    (root / "code.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(paragraphs("def", 20))))
    (root / "books").mkdir()
    pq.write_table(pa.table({"text": paragraphs("chapter", 12)}), root / "books" / "part-0.parquet")
    (root / "legal.txt").write_text("\n\n".join(paragraphs("clause", 15)) + "\n")
    (root / "news").mkdir()
    (root / "news" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in paragraphs("news", 9)))
    (root / "news" / "validation.jsonl").write_text(json.dumps({"text": "held out news story"}) + "\n")
    (root / "manifest.json").write_text("{}")
    (root / ".cache").mkdir()
    return root


def test_user_corpus_in_every_layout_loads_and_splits_deterministically(tmp_path: Path) -> None:
    path = write_user_corpus(tmp_path / "corpus")
    corpus = load_corpus(path)
    assert corpus.names == ["books", "code", "legal", "news"]
    domains = {d.name: d for d in corpus.domains}
    assert len(domains["code"].train) + len(domains["code"].validation) == 20
    assert len(domains["books"].train) + len(domains["books"].validation) == 12
    assert len(domains["legal"].train) + len(domains["legal"].validation) == 15  # one document per blank-line block
    assert domains["news"].validation == ("held out news story",) and len(domains["news"].train) == 9
    assert all(d.train and d.validation for d in corpus.domains)
    corpus_module._LOADED.clear()
    again = load_corpus(path)
    assert again.domains == corpus.domains


def test_split_documents_holds_out_the_fraction_by_bytes_and_keeps_order() -> None:
    texts = paragraphs("doc", 100)
    train, validation = split_documents(texts, 0.1, "x")
    assert sorted(train + validation) == sorted(texts) and not set(train) & set(validation)
    assert 9 <= len(validation) <= 11
    assert train == [t for t in texts if t in set(train)]
    assert split_documents(list(reversed(texts)), 0.1, "x")[1] == list(reversed(validation))
    with pytest.raises(CorpusError, match="domain 'solo' has 1 document"):
        split_documents(["only one"], 0.1, "solo")
    with pytest.raises(CorpusError, match="validation_fraction.*1.5"):
        split_documents(texts, 1.5, "x")


def test_sample_corpus_is_small_loadable_and_described_by_its_manifest() -> None:
    import datasets

    files = [p for p in SAMPLE_CORPUS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    manifest = json.loads((SAMPLE_CORPUS / "manifest.json").read_text())
    corpus = load_corpus(SAMPLE_CORPUS)
    assert corpus.names == [d["domain"] for d in manifest["domains"]] and len(corpus.names) >= 4
    for entry, domain in zip(manifest["domains"], corpus.domains):
        assert entry["documents"] == {"train": len(domain.train), "validation": len(domain.validation)}
        assert sum(entry["bytes"].values()) <= 100_000
        data = datasets.load_dataset("json", data_files=str(SAMPLE_CORPUS / entry["domain"] / "validation.jsonl"), split="train")
        assert tuple(data["text"]) == domain.validation
    tokenizer = load_tokenizer(SAMPLE_CORPUS / manifest["tokenizer"]["path"])
    assert tokenizer.vocab_size == manifest["tokenizer"]["vocab_size"]
    first = manifest["domains"][0]
    assert len(tokenizer.encode_documents(corpus.domains[0].validation)) == first["tokens"]["validation"]


def test_build_from_the_python_standard_library_is_deterministic_and_loads(tmp_path: Path) -> None:
    import datasets

    options = {"sources": ["python", "licenses"], "max_bytes_per_domain": 30_000, "max_document_bytes": 3_000, "vocab_size": 512}
    manifest = build_corpus(tmp_path / "a", **options, **QUIET)
    entries = {e["domain"]: e for e in manifest["domains"]}
    assert "python" in entries
    for name, entry in entries.items():
        assert set(entry) >= {"domain", "source", "documents", "bytes", "tokens"}
        assert 0 < sum(entry["bytes"].values()) <= 30_000
        assert entry["documents"]["validation"] >= 1 and entry["tokens"]["train"] > 0
        data = datasets.load_dataset("json", data_files={s: str(tmp_path / "a" / name / f"{s}.jsonl") for s in ("train", "validation")})
        assert data["train"].num_rows == entry["documents"]["train"]
        assert all(len(t.encode()) <= 3_000 for t in data["train"]["text"])
    assert any("def " in t for t in load_corpus(tmp_path / "a").domains[-1].train)
    build_corpus(tmp_path / "b", **options, **QUIET)
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def make_debian_root(root: Path) -> Path:
    """A fake filesystem with the Debian packages' file formats (fortunes, WordNet, GCIDE, bible)."""
    fortunes = root / "usr/share/games/fortunes"
    fortunes.mkdir(parents=True)
    (fortunes / "wisdom").write_text("\n%\n".join(f"Fortune number {i}: a penny saved is a penny earned." for i in range(30)) + "\n%\n")
    (fortunes / "wisdom.dat").write_bytes(b"\x00")
    wordnet = root / "usr/share/wordnet"
    wordnet.mkdir(parents=True)
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    body = "".join(
        f"{i:08d} 03 n 02 dog{i} 0 domestic_dog{i}(a) 0 000 | a member of the genus Canis, number {i}\n" for i in range(40)
    )
    (wordnet / "data.noun").write_text(header + body)
    dictd = root / "usr/share/dictd"
    dictd.mkdir(parents=True)
    entries = [f"Word{i}\n   A definition of word {i}, long enough to keep.\n" for i in range(30)]
    data = "".join(entries).encode()
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def encode(n: int) -> str:
        digits = ""
        while True:
            digits = b64[n % 64] + digits
            n //= 64
            if not n:
                return digits

    offset, index = 0, ["00-database-short\tA\tB"]
    for i, entry in enumerate(entries):
        index.append(f"word{i}\t{encode(offset)}\t{encode(len(entry.encode()))}")
        offset += len(entry.encode())
    (dictd / "gcide.dict.dz").write_bytes(gzip.compress(data))
    (dictd / "gcide.index").write_text("\n".join(index) + "\n")
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/bible.data").write_text("")
    (root / "usr/bin").mkdir(parents=True)
    verses = "\n".join(f"echo 'Ge{c}:{v} And it came to pass in chapter {c}, verse {v}.'" for c in range(1, 4) for v in range(1, 6))
    bible = root / "usr/bin/bible"
    bible.write_text("#!/bin/sh\n" + verses + "\n")
    bible.chmod(bible.stat().st_mode | stat.S_IEXEC)
    return root


def test_debian_sources_are_parsed_and_missing_packages_are_named(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    messages: list[str] = []
    manifest = build_corpus(
        tmp_path / "out", sources=["fortunes", "wordnet", "dictionary", "bible", "pydocs"], vocab_size=300, root=root, log=messages.append
    )
    corpus = load_corpus(tmp_path / "out")
    assert corpus.names == ["bible", "dictionary", "fortunes", "wordnet"]
    texts = {d.name: d.train + d.validation for d in corpus.domains}
    assert len(texts["fortunes"]) == 30 and len(texts["wordnet"]) == 40 and len(texts["dictionary"]) == 30
    assert len(texts["bible"]) == 3 and any(t.startswith("Ge 2\n\n1 And it came") for t in texts["bible"])
    assert "dog7, domestic dog7 (noun): a member of the genus Canis, number 7" in texts["wordnet"]
    assert manifest["missing"] == [
        {"domain": "pydocs", "packages": ["python3-doc"], "missing": ["usr/share/doc/python3*/html/_sources/*.rst.txt"]}
    ]
    assert any("apt-get install python3-doc" in m for m in messages)


def test_allow_apt_installs_exactly_the_missing_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    installed: list[list[str]] = []

    def fake_install(packages: list[str]) -> None:
        installed.append(list(packages))
        make_debian_root(root)

    monkeypatch.setattr(corpus_module, "install_packages", fake_install)
    manifest = build_corpus(tmp_path / "out", sources=["fortunes", "wordnet"], vocab_size=300, allow_apt=True, root=root, **QUIET)
    assert installed == [["fortunes", "wordnet-base"]]
    assert [d["domain"] for d in manifest["domains"]] == ["fortunes", "wordnet"] and not manifest["missing"]


def test_source_parsers() -> None:
    assert dictd_number("A") == 0 and dictd_number("BA") == 64 and dictd_number("/") == 63
    assert wordnet_gloss("  1 licence header", "noun") is None
    assert wordnet_gloss("00001740 03 n 01 entity 0 003 | that which is perceived", "noun") == "entity (noun): that which is perceived"
    assert set(SOURCES) >= {"python", "c", "manpages", "changelogs", "licenses", "pydocs", "dictionary", "bible", "fortunes", "wordnet"}


def test_cleaning_and_cutting() -> None:
    assert clean_text("a\r\nb  \x00\x07\n\n\n\nc\f") == "a\nb\n\nc"
    assert clean_text("\ufffd" * 5 + "abc") == ""
    text = "\n\n".join(paragraphs("p", 30))
    pieces = split_long(text, 1000)
    assert all(len(p.encode()) <= 1000 for p in pieces) and len(pieces) > 1
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())
    assert all(len(p) <= 100 for p in split_long("x" * 1000, 100))


def test_cli_builds_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="mixgym")
    add_corpus_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["corpus", "build", str(tmp_path / "c"), "--sources", "python", "--max-bytes", "20000", "--vocab-size", "400"])
    assert args.func(args) == 0
    assert "| python |" in capsys.readouterr().out
    assert load_corpus(tmp_path / "c").names == ["python"]
    args = parser.parse_args(["corpus", "build", str(tmp_path / "c"), "--sources", "python"])
    assert args.func(args) == 2 and "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({}, "is empty"),
        ({"code.jsonl": ""}, "domain 'code' has no documents"),
        ({"legal.txt": "\n\n  \n\n"}, "domain 'legal' has no documents"),
        ({"code.jsonl": '{"text": "one"}\n{"text": "  "}\n'}, "domain 'code' has 1 document"),
        ({"code.jsonl": '{"text": "ok"}\nnot json at all\n'}, r"domain 'code': cannot read .*code.jsonl"),
        ({"books/part-0.parquet": b"PAR1 this is not parquet"}, r"domain 'books': cannot read .*part-0.parquet"),
        ({"legal.txt": b"caf\xe9 latin-1 text\n\nmore"}, r"domain 'legal': '.*legal.txt' is not UTF-8: line 1 has byte 0xe9"),
        ({"code.jsonl": '{"body": "x"}\n{"body": "y"}\n'}, r"no 'text' field.*body"),
        ({"code.pdf": "x"}, r"unsupported file.*code.pdf"),
        ({"mix/a.jsonl": '{"text": "x"}\n', "mix/b.txt": "y"}, "mixes formats"),
        ({"code.jsonl": '{"text": "x"}\n', "code/a.jsonl": '{"text": "y"}\n'}, "domain 'code' is given twice"),
        ({"news/train.jsonl": '{"text": "x"}\n'}, "given split needs"),
        ({"news/train.jsonl": '{"text": "x"}\n', "news/validation.jsonl": ""}, "no documents in its validation split"),
        ({"deep/inner/a.jsonl": '{"text": "x"}\n'}, "sub-folders"),
    ],
)
def test_bad_corpora_raise_clear_errors(tmp_path: Path, files: dict, match: str) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CorpusError, match=match):
        load_corpus(root)


def test_missing_corpus_and_bad_build_arguments(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CorpusError, match="not a folder"):
        load_corpus(tmp_path / "file.txt")
    with pytest.raises(CorpusError, match=r"unknown source\(s\) \['klingon'\]"):
        build_corpus(tmp_path / "x", sources=["klingon"], **QUIET)
    with pytest.raises(CorpusError, match="max_bytes_per_domain.*10"):
        build_corpus(tmp_path / "x", max_bytes_per_domain=10, **QUIET)
    with pytest.raises(CorpusError, match="vocab_size.*7"):
        build_corpus(tmp_path / "x", vocab_size=7, **QUIET)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    with pytest.raises(CorpusError, match="not empty"):
        build_corpus(tmp_path / "full", sources=["python"], overwrite=True, **QUIET)
    assert (tmp_path / "full" / "keep.txt").exists()
    with pytest.raises(CorpusError, match="no source could be read"):
        build_corpus(tmp_path / "y", sources=["wordnet"], root=tmp_path / "empty-root", **QUIET)


def test_missing_datasets_says_which_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gymnasium.error import DependencyNotInstalled

    path = write_user_corpus(tmp_path / "corpus")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DependencyNotInstalled, match=r'pip install "mixgym\[hf\]"'):
        load_corpus(path)


def build_debian(tmp_path: Path, name: str, **options) -> dict:
    root = tmp_path / "root"
    if not root.exists():
        make_debian_root(root)
    sources = ["fortunes", "wordnet", "dictionary"]
    return build_corpus(tmp_path / name, sources=sources, vocab_size=300, root=root, **QUIET, **options)


def test_keep_skew_keeps_the_sources_size_ratios(tmp_path: Path) -> None:
    capped = {d["domain"]: d for d in build_debian(tmp_path, "capped", max_bytes_per_domain=1000)["domains"]}
    skewed = build_debian(tmp_path, "skewed", max_bytes_per_domain=1000, keep_skew=True, scan_bytes=100_000)
    assert skewed["settings"]["keep_skew"] and skewed["settings"]["scan_bytes"] == 100_000
    entries = {d["domain"]: d for d in skewed["domains"]}
    read = {name: entry["bytes_read"] for name, entry in entries.items()}
    kept = {name: sum(entry["bytes"].values()) for name, entry in entries.items()}
    largest = max(read, key=read.get)
    assert kept[largest] <= 1000 and read[largest] > 2 * kept[largest]
    for name in entries:  # each domain keeps the same share of its text, to within one document (< 100 bytes)
        assert abs(kept[name] - 1000 * read[name] / read[largest]) < 100, name
        assert entries[name]["kind"] == "text"
    spread = lambda sizes: max(sizes.values()) / min(sizes.values())  # noqa: E731
    assert spread(kept) > 1.5 * spread({name: sum(e["bytes"].values()) for name, e in capped.items()})


def test_noise_and_duplicate_domains_are_made_from_the_other_domains(tmp_path: Path) -> None:
    manifest = build_debian(tmp_path, "c", max_bytes_per_domain=2000, noise_bytes=1500, duplicate_bytes=1200, duplicate_count=3)
    kinds = {d["domain"]: d["kind"] for d in manifest["domains"]}
    assert kinds == {"dictionary": "text", "duplicate": "duplicate", "fortunes": "text", "noise": "noise", "wordnet": "text"}
    corpus = load_corpus(tmp_path / "c")
    assert corpus.kinds == ("text", "duplicate", "text", "noise", "text")
    domains = {d.name: d for d in corpus.domains}
    real = [t for name in ("dictionary", "fortunes", "wordnet") for t in domains[name].train]
    words = {w for t in real for w in t.split()}
    noise = domains["noise"].train + domains["noise"].validation
    assert 1000 < sum(len(t.encode()) for t in noise) <= 1500
    assert all(set(t.split()) <= words for t in noise) and not set(noise) & set(real)
    duplicate = domains["duplicate"]
    assert len(set(duplicate.train)) == 3 and set(duplicate.train) == set(duplicate.validation) <= set(real)
    assert len(duplicate.train) >= 6 and sum(len(t.encode()) for t in duplicate.train) <= 1200
    again = build_debian(tmp_path, "again", max_bytes_per_domain=2000, noise_bytes=1500, duplicate_bytes=1200, duplicate_count=3)
    assert again["domains"] == manifest["domains"]  # deterministic


def test_corpus_cli_keeps_skew_and_adds_junk_domains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="mixgym")
    add_corpus_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["corpus", "build", str(tmp_path / "c"), "--sources", "python", "--max-bytes", "20000", "--vocab-size", "300",
         "--keep-skew", "--scan-bytes", "40000", "--noise-bytes", "5000", "--duplicate-bytes", "4000", "--duplicate-count", "2"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| noise | noise |" in out and "| duplicate | duplicate |" in out and "natural share" in out
    assert load_corpus(tmp_path / "c").kinds == ("duplicate", "noise", "text")


def test_junk_domains_and_skew_options_fail_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no other domain to draw the noise domain from: none of the sources"):
        build_corpus(tmp_path / "x", sources=["wordnet"], noise_bytes=5000, root=tmp_path / "empty-root", **QUIET)
    with pytest.raises(CorpusError, match="draw the noise and duplicate domain from"):
        build_corpus(tmp_path / "x", sources=["wordnet"], noise_bytes=5000, duplicate_bytes=5000, root=tmp_path / "empty-root", **QUIET)
    assert not (tmp_path / "x").exists()
    for options, match in (
        ({"scan_bytes": 10_000}, "scan_bytes=10000 measures sources for keep_skew, which is off"),
        ({"keep_skew": True, "max_bytes_per_domain": 5000, "scan_bytes": 2000}, "scan_bytes must be an integer >= 5000"),
        ({"noise_bytes": -1}, "noise_bytes must be an integer >= 0"),
        ({"duplicate_bytes": 1.5}, "duplicate_bytes must be an integer"),
        ({"duplicate_count": 0}, "duplicate_count must be an integer >= 1"),
    ):
        with pytest.raises(CorpusError, match=match):
            build_corpus(tmp_path / "y", sources=["python"], **options, **QUIET)
    with pytest.raises(CorpusError, match="repeats documents of at most 1 bytes"):
        build_debian(tmp_path, "z", max_bytes_per_domain=1000, duplicate_bytes=10, duplicate_count=8)


def test_a_manifest_with_an_unknown_kind_is_an_error(tmp_path: Path) -> None:
    path = write_user_corpus(tmp_path / "corpus")
    (path / "manifest.json").write_text(json.dumps({"domains": [{"domain": "code", "kind": "spam"}]}))
    with pytest.raises(CorpusError, match="domain 'code' has unknown kind 'spam'; known: text, noise, duplicate"):
        load_corpus(path)
    (path / "manifest.json").write_text(json.dumps({"domains": [{"domain": "code", "kind": "noise"}]}))
    assert dict(zip(load_corpus(path).names, load_corpus(path).kinds))["code"] == "noise"


def test_a_fifo_in_a_corpus_is_refused_instead_of_waited_on(tmp_path) -> None:
    (tmp_path / "code.txt").write_text("def a():\n    pass\n\ndef b():\n    pass\n")
    os.mkfifo(tmp_path / "news.txt")  # opening it for reading would block until a writer comes
    with pytest.raises(CorpusError, match=r"domain 'news': .*news.txt'\] are not regular files"):
        load_corpus(tmp_path)
    (tmp_path / "news.txt").unlink()
    (tmp_path / "books").mkdir()
    os.mkfifo(tmp_path / "books" / "part-0.txt")
    with pytest.raises(CorpusError, match="domain 'books': .*part-0.txt'\\] are not regular files"):
        load_corpus(tmp_path)
