"""Tokenizers for `HFBackend`: byte-level BPE trained locally on a corpus, or loaded from disk.

Never from a hub. `corpus_tokenizer` trains a byte-level BPE (GPT-2's scheme: bytes mapped to
printable characters, so any text is encodable and nothing is ever unknown) on a corpus'
training split and caches it beside the corpus, under ``<corpus>/.tokenizers/``, keyed by the
vocabulary size and a hash of the training text, so a changed corpus gets a fresh tokenizer.
If the corpus folder is read-only, the cache goes to ``$MIXGYM_CACHE/tokenizers`` (default
``~/.cache/mixgym/tokenizers``). A saved tokenizer folder is also loadable by
``transformers.AutoTokenizer.from_pretrained(path)``.

Special tokens: ``<|endoftext|>`` (id 0) ends every document and doubles as beginning of
sequence, as in GPT-2 and Pythia; ``<|padding|>`` (id 1) is the padding token.

Only `tokenizers` is needed here (``pip install "mixgym[hf]"``); it is imported inside the
functions that use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mixgym.llm_backend.offline import force_offline
from mixgym.paths import output_folder

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
DEFAULT_VOCAB_SIZE = 4096
MIN_VOCAB_SIZE = 300
"""256 byte symbols, the special tokens and a few merges."""
CACHE_DIRNAME = ".tokenizers"
_TRAINER_VERSION = 1
"""Bumped whenever `train_bpe` changes what it produces, so old caches are not reused."""
_EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>")


def import_tokenizers() -> Any:
    """The `tokenizers` module, or gymnasium's `DependencyNotInstalled` naming the extra."""
    try:
        import tokenizers
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('tokenizers is not installed; pip install "mixgym[hf]"') from error
    return tokenizers


@dataclass(frozen=True)
class TextTokenizer:
    """A `tokenizers.Tokenizer` with the special-token ids a causal LM config needs.

    Attributes:
        tokenizer: the `tokenizers.Tokenizer`.
        eos_id: end of document; appended after every document.
        bos_id: beginning of sequence (the same token as `eos_id` for our own tokenizers).
        pad_id: padding.
        source: where it came from (a folder), for messages.
    """

    tokenizer: Any
    eos_id: int
    bos_id: int
    pad_id: int
    source: str

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce, special tokens included."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def fingerprint(self) -> str:
        """A short hash of the tokenizer's full definition."""
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()[:16]

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """One int32 stream of token ids: each document followed by `eos_id`."""
        if not texts:
            return np.zeros(0, dtype=np.int32)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        pieces = []
        eos = np.array([self.eos_id], dtype=np.int32)
        for encoding in encodings:
            pieces.append(np.asarray(encoding.ids, dtype=np.int32))
            pieces.append(eos)
        return np.concatenate(pieces)


def train_bpe(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> TextTokenizer:
    """Train a byte-level BPE with `vocab_size` ids (special tokens included) on `texts`.

    Deterministic: the same texts in the same order give the same tokenizer.
    """
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an integer >= {MIN_VOCAB_SIZE}, got {vocab_size!r}")
    tk = import_tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return TextTokenizer(tokenizer, eos_id=0, bos_id=0, pad_id=1, source="trained")


def save_tokenizer(tokenizer: TextTokenizer, directory: str | Path) -> Path:
    """Write `tokenizer` to `directory` (made atomically) in the layout transformers reads."""
    directory = Path(directory)
    vocab = tokenizer.tokenizer.id_to_token
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": vocab(tokenizer.eos_id),
        "bos_token": vocab(tokenizer.bos_id),
        "pad_token": vocab(tokenizer.pad_id),
        "model_max_length": 1_000_000_000,
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a cache is for every user of the corpus
        tokenizer.tokenizer.save(str(staging / "tokenizer.json"), pretty=False)
        (staging / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(staging, directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (directory / "tokenizer.json").exists():  # another process may have won the race
            raise
    return directory


def _token_name(value: Any) -> str | None:
    """A special token as transformers' config files write it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(directory: str | Path) -> TextTokenizer:
    """Load a tokenizer folder from disk: `tokenizer.json` (+ optional `tokenizer_config.json`).

    Folders holding only a slow tokenizer (e.g. vocab.json + merges.txt) are converted with
    `transformers.AutoTokenizer` (local files only). The end-of-document token is the config's
    ``eos_token`` or, failing that, the first of ``<|endoftext|>``, ``</s>``, ``<eos>`` present.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"tokenizer folder {str(directory)!r} does not exist or is not a folder")
    names: dict[str, str | None] = {}
    config_file = directory / "tokenizer_config.json"
    if config_file.exists():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read {config_file}: {error}") from None
        names = {key: _token_name(config.get(f"{key}_token")) for key in ("eos", "bos", "pad")}
    if (directory / "tokenizer.json").exists():
        if not (directory / "tokenizer.json").is_file():
            raise ValueError(f"{directory / 'tokenizer.json'} is not a regular file")
        tk = import_tokenizers()
        try:
            tokenizer = tk.Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"cannot read {directory / 'tokenizer.json'}: {error}") from None
    else:
        try:
            force_offline()
            from transformers import AutoTokenizer

            auto = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except Exception as error:  # transformers raises OSError, ValueError, KeyError, ...
            raise ValueError(f"{str(directory)!r} holds no tokenizer that can be loaded offline: {error}") from None
        if not getattr(auto, "is_fast", False):
            raise ValueError(f"the tokenizer in {str(directory)!r} has no fast (tokenizers) version")
        tokenizer = auto.backend_tokenizer
        names = {key: names.get(key) or getattr(auto, f"{key}_token") for key in ("eos", "bos", "pad")}
    ids = {key: tokenizer.token_to_id(name) if name else None for key, name in names.items()}
    if ids.get("eos") is None:
        ids["eos"] = next((tokenizer.token_to_id(t) for t in _EOS_CANDIDATES if tokenizer.token_to_id(t) is not None), None)
    if ids["eos"] is None:
        raise ValueError(
            f"the tokenizer in {str(directory)!r} has no end-of-document token: set eos_token in its "
            f"tokenizer_config.json or add one of {', '.join(_EOS_CANDIDATES)}"
        )
    eos = int(ids["eos"])
    bos = eos if ids.get("bos") is None else int(ids["bos"])
    pad = eos if ids.get("pad") is None else int(ids["pad"])
    return TextTokenizer(tokenizer, eos_id=eos, bos_id=bos, pad_id=pad, source=str(directory))


def text_fingerprint(domains: Mapping[str, Sequence[str]]) -> str:
    """A short hash of named lists of documents (order and boundaries included)."""
    digest = hashlib.sha256()
    for name in sorted(domains):
        digest.update(f"\x00domain {name}\x00".encode())
        for text in domains[name]:
            digest.update(len(text).to_bytes(8, "little"))
            digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """The user-level cache: ``$MIXGYM_CACHE`` or ``~/.cache/mixgym``."""
    return Path(os.environ.get("MIXGYM_CACHE", Path.home() / ".cache" / "mixgym"))


def tokenizer_cache_name(train_texts: Mapping[str, Sequence[str]], vocab_size: int) -> str:
    """The cache folder name of the BPE trained on `train_texts` with `vocab_size` ids."""
    return f"bpe{vocab_size}-v{_TRAINER_VERSION}-{text_fingerprint(train_texts)}"


def corpus_tokenizer(
    train_texts: Mapping[str, Sequence[str]],
    corpus_dir: str | Path,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    cache_dir: str | Path | None = None,
) -> TextTokenizer:
    """The BPE for a corpus: from the cache if trained before, else trained and cached.

    Args:
        train_texts: domain name -> training documents (every domain's, in name order).
        corpus_dir: the corpus folder; the cache is its ``.tokenizers`` sub-folder.
        vocab_size: ids in the vocabulary, special tokens included.
        cache_dir: where to cache instead (a folder of tokenizer folders); it must be a
            folder this process can write (`mixgym.paths.output_folder`, checked first).
    """
    name = tokenizer_cache_name(train_texts, vocab_size)
    if cache_dir is not None:  # asked for: never silently ignored
        cache_dir = output_folder(cache_dir, "tokenizer_cache folder")
    candidates = [Path(cache_dir)] if cache_dir is not None else [Path(corpus_dir) / CACHE_DIRNAME, cache_root() / "tokenizers"]
    for folder in candidates:
        if (folder / name / "tokenizer.json").exists():
            return load_tokenizer(folder / name)
    texts = [text for domain in sorted(train_texts) for text in train_texts[domain]]
    tokenizer = train_bpe(texts, vocab_size)
    for folder in candidates:
        try:
            return load_tokenizer(save_tokenizer(tokenizer, folder / name))
        except OSError:
            continue  # read-only corpus folder: try the user cache
    return tokenizer
