"""Data that ships with mixgym.

`SAMPLE_CORPUS`: a small real corpus of five domains (Python standard library, C headers,
manual pages, Debian changelogs, licences; about 80 KB of text each, 10% held out) with its
default 4096-id byte-level BPE, for tests, examples and `HFBackend`'s default. It was made on
Debian 12 with Python 3.11 by::

    from mixgym.llm_backend.corpus import build_corpus
    build_corpus("mixgym/data/sample_corpus", sources=["python", "c", "manpages", "changelogs", "licenses"],
                 max_bytes_per_domain=80_000, max_document_bytes=4_000, validation_fraction=0.1)

Its ``manifest.json`` lists each domain's documents, bytes and tokens.
"""

from pathlib import Path

SAMPLE_CORPUS = Path(__file__).parent / "sample_corpus"
"""The packaged sample corpus folder."""

__all__ = ["SAMPLE_CORPUS"]
