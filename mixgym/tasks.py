"""Named benchmark tasks: a backend preset, the objective it is scored on, its baselines.

The papers' gains (ODM, AC-ODM, HDS, DoReMi) are measured on The Pile, whose natural
mixture is far from uniform, against The Pile's natural weights, on the unweighted mean of
per-domain validation loss -- gains that come from the small domains. A task where natural
equals uniform cannot show them. Each task here is a typed preset (`TaskPreset`, Minigrid's
``WFC_PRESETS`` pattern), registered in a loop as a versioned Gymnasium id, and usable
everywhere a backend is: ``gymnasium.make(id)``, ``MixingEnv(task=name)``, ``--env
task=name`` on the command line, ``backends: {label: {task: name}}`` in a bench config.

=========== ========================= ======= ==============================================
task        id                        backend what
=========== ========================= ======= ==============================================
classic5    mixgym/MixingClassic-v0   toy     the original K=5 toy (easy, hard, noise,
                                              redundant, conflict; equal sizes: natural is
                                              uniform)
pile22      mixgym/MixingPile-v0      toy     22 domains sized by The Pile's weights
                                              (`PILE_WEIGHTS`): natural at total variation
                                              0.46 from uniform; see `PILE22_DOMAINS`
hf-pile     mixgym/MixingPileLM-v0    hf      a GPT-NeoX pretrained from scratch on a corpus
                                              built with its real size skew, a noise domain
                                              and a duplicated domain (``corpus=`` a folder
                                              built by ``mixgym corpus build --keep-skew
                                              --noise-bytes N --duplicate-bytes N``)
mix-<name>  mixgym/MixingCatalogue       toy     the task catalogue (`CATALOGUE_DOMAINS`): one
            <Name>-v0                         challenge per unit task -- junk, duplicates,
                                              constrained, conflict, crawl, curriculum -- and
                                              the Pile-like ``mix-pilemix`` with all of them;
                                              400 steps a run; measured gaps in
                                              `CATALOGUE_GAPS`
=========== ========================= ======= ==============================================

Task instances: every toy task is a generator and ``task_seed`` (a backend option) draws one
instance of it -- the teacher, the inputs, the held-out sets -- as Procgen draws levels, while
the run seed (``reset(seed=...)``) draws the student's initialisation and its batches. A
benchmark score averages over several instances, each with its own seeds
(``backends: {mix-junk@0: {task: mix-junk, task_seed: 0}, ...}`` in a bench config; the
leaderboard, `mixgym.bench.leaderboard`, reads ``TASK@INSTANCE`` labels as instances of TASK).

>>> import gymnasium, mixgym
>>> env = gymnasium.make("mixgym/MixingPile-v0", total_steps=20)
>>> len(env.unwrapped.domains), env.unwrapped.objective.name
(22, 'domain-mean')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from pathlib import Path
from typing import Any

from mixgym.llm_backend.toy import DomainSpec

PILE_WEIGHTS: dict[str, float] = {
    "Pile-CC": 18.11,
    "PubMed Central": 14.40,
    "Books3": 12.07,
    "OpenWebText2": 10.01,
    "ArXiv": 8.96,
    "Github": 7.59,
    "FreeLaw": 6.12,
    "StackExchange": 5.13,
    "USPTO Backgrounds": 3.65,
    "PubMed Abstracts": 3.07,
    "Gutenberg (PG-19)": 2.17,
    "OpenSubtitles": 1.55,
    "Wikipedia (en)": 1.53,
    "DM Mathematics": 1.24,
    "Ubuntu IRC": 0.88,
    "BookCorpus2": 0.75,
    "EuroParl": 0.73,
    "HackerNews": 0.62,
    "YoutubeSubtitles": 0.60,
    "PhilPapers": 0.38,
    "NIH ExPorter": 0.30,
    "Enron Emails": 0.14,
}
"""The Pile's 22 components and their share of its training mixture, in percent: the
"Weight" column of Table 1 of Gao et al., "The Pile: An 800GB Dataset of Diverse Text for
Language Modeling", arXiv:2101.00027 (raw size times epochs, over the 1254.20 GiB total).
These are the "natural" weights ODM, DoReMi, AC-ODM and HDS compare against."""

PILE22_POOL = 50_000
"""Training examples of `pile22` over all domains: a domain of Pile weight w% holds
``round(w / 100 * PILE22_POOL)`` (Enron's 0.14% is 70 examples). A 1,000-step run draws
32,000, so on the natural mixture every domain is seen 0.64 times, while the uniform
mixture repeats the smallest domain about 21 times."""

_PILE22_LAYOUT: tuple[tuple[str, str, str | None, float, float], ...] = (
    # (name, kind, source, difficulty, label noise), in the order of PILE_WEIGHTS
    ("web", "easy", None, 0.5, 0.5),
    ("science", "hard", None, 2.5, 0.05),
    ("books", "hard", None, 1.5, 0.05),
    ("web-dup", "redundant", "web", 0.5, 0.5),
    ("science-b", "related", "science", 2.0, 0.1),
    ("code", "hard", None, 3.0, 0.05),
    ("law", "hard", None, 2.0, 0.05),
    ("code-qa", "related", "code", 2.0, 0.1),
    ("law-b", "related", "law", 2.0, 0.1),
    ("science-c", "related", "science", 2.0, 0.1),
    ("books-b", "related", "books", 1.5, 0.1),
    ("dialogue", "easy", None, 1.0, 0.05),
    ("wiki", "easy", None, 0.7, 0.05),
    ("math", "hard", None, 3.5, 0.02),
    ("chat", "conflict", "dialogue", 1.0, 0.1),
    ("books-dup", "redundant", "books", 1.5, 0.05),
    ("speeches", "easy", None, 1.2, 0.05),
    ("forum", "conflict", "code-qa", 2.0, 0.1),
    ("junk", "noise", None, 1.0, 1.0),
    ("philosophy", "related", "science-b", 2.0, 0.1),
    ("grants", "related", "science", 2.0, 0.1),
    ("email", "hard", None, 2.0, 0.1),
)

PILE22_DOMAINS: tuple[DomainSpec, ...] = tuple(
    DomainSpec(name, kind, difficulty, noise, max(1, round(weight / 100 * PILE22_POOL)), source)
    for (name, kind, source, difficulty, noise), weight in zip(_PILE22_LAYOUT, PILE_WEIGHTS.values())
)
"""The 22 domains of `pile22`. Domain i takes the size share of The Pile's i-th component
(`PILE_WEIGHTS`); its kind gives the task The Pile's structure, not a model of that dataset:

- a large, noisy crawl (``web``, 18%: half its target variance is label noise) and its
  near-duplicate (``web-dup``, 10%, as OpenWebText2 overlaps Pile-CC), plus a small duplicate
  of ``books`` (``books-dup``);
- clusters of related domains that transfer (``science`` with ``science-b/-c``,
  ``philosophy``, ``grants``; ``code`` with ``code-qa``; ``law`` with ``law-b``; ``books``
  with ``books-b``);
- conflicting pairs (``chat`` contradicts ``dialogue``, ``forum`` contradicts ``code-qa``);
- a junk domain of pure noise (``junk``, 0.6%), left out of every named objective;
- small domains that the natural mixture starves and the uniform one repeats (``wiki``,
  ``math``, ``speeches``, ``philosophy``, ``grants``, ``email``: 70 to 765 examples).

On 10 run seeds the natural mixture's domain-mean held-out loss is about 20% above the
uniform mixture's, and better on the "natural" objective: the objective decides the winner.
"""

LM_SMALL_OPTIONS: dict[str, Any] = {
    "model": "neox-micro",
    "vocab_size": 1024,
    "seq_len": 128,
    "micro_batch_size": 4,
    "grad_accumulation": 4,
    "total_steps": 2250,
    "eval_sequences": 32,
}
"""The real-LM task sized for one CPU core. Measured (one torch thread, 2-core machine): this
GPT-NeoX (width 64, 2 layers, 4 heads, 1,024-id BPE trained on the corpus: 0.23M parameters)
trains ~37,000 tokens per CPU second at sequence length 128; 2,250 steps of 16 sequences are
4.6M tokens, 20 per parameter. Four micro-batches of 4 sequences per optimizer step mix several
domains in every step: with one domain per step the seed-to-seed sd of the final losses was
2-3x larger. 32 held-out sequences per domain (4,096 tokens) score each run."""

CATALOGUE_STEPS = 400
"""Optimizer-step budget of the catalogue's toy tasks (40 decisions at 10 steps each): short
enough that their gap table (`benchmarks/catalogue_gaps.py`) is measured on 30 + 30 seeds and
3 task instances per task in minutes."""

_D = DomainSpec
CATALOGUE_DOMAINS: dict[str, tuple[DomainSpec, ...]] = {
    # one challenge per unit task (TeachMyAgent-style); sizes give the natural mixture
    "junk": (
        _D("prose", "easy", 0.5, 0.05, 5000),
        _D("code", "hard", 1.5, 0.05, 5000),
        _D("science", "related", 1.2, 0.05, 5000),
        _D("junk", "noise", 1.0, 1.0, 15000),
    ),
    "duplicates": (
        _D("code", "hard", 1.5, 0.05, 5000),
        _D("prose", "easy", 0.5, 0.05, 5000),
        _D("science", "related", 1.2, 0.05, 5000),
        _D("code-dup", "duplicate", 1.5, 0.05, 15000, "code", share=0.02),
    ),
    "constrained": (
        _D("web", "easy", 0.5, 0.05, 20000),
        _D("math", "hard", 1.5, 0.05, 100),
        _D("law", "hard", 1.2, 0.05, 200),
        _D("wiki", "related", 1.0, 0.05, 400, "web"),
    ),
    "conflict": (
        _D("forum", "easy", 0.8, 0.05, 5000),
        _D("code", "hard", 1.5, 0.05, 5000),
        _D("science", "related", 1.2, 0.05, 5000),
        _D("spam", "contradict", 0.8, 0.05, 5000, "forum"),
    ),
    "crawl": (
        _D("crawl", "crawl", 1.0, 0.2, 30000, share=0.3),
        _D("code", "hard", 1.5, 0.05, 1000),
        _D("prose", "easy", 0.5, 0.05, 1000),
        _D("science", "related", 1.2, 0.05, 1000, "code"),
    ),
    "curriculum": (
        _D("prose", "easy", 0.5, 0.05, 5000),
        _D("math", "hard", 2.5, 0.05, 300),
        _D("math-primer", "primer", 1.0, 0.05, 5000, "math"),
        _D("code", "hard", 2.0, 0.05, 5000),
    ),
    "pilemix": (
        _D("crawl", "crawl", 1.0, 0.2, 20000, share=0.3),
        _D("code", "hard", 1.5, 0.05, 4000),
        _D("prose", "easy", 0.5, 0.05, 3000),
        _D("science", "related", 1.2, 0.05, 2000, "code"),
        _D("crawl-dup", "duplicate", 1.0, 0.2, 6000, "crawl", share=0.05),
        _D("math", "hard", 2.5, 0.05, 150),
        _D("math-primer", "primer", 1.0, 0.05, 1500, "math"),
        _D("spam", "contradict", 0.5, 0.05, 1000, "prose"),
        _D("junk", "noise", 1.0, 1.0, 500),
    ),
}
"""The domains of each catalogue task (`TASK_PRESETS` names them ``mix-<name>``); each task's
measured gaps are in `CATALOGUE_GAPS`, its preset's `TaskPreset.gaps` and BENCHMARKS.md ("The
task catalogue")."""

CATALOGUE_GAPS: dict[str, str] = {
    # benchmarks/catalogue_gaps.py: mean over task_seed 0-2 of the gap on 30 fresh seeds, relative
    # to the reference, +- the 90% CI half-width over seeds; "set": uniform -> static >= 3x its
    # half-width and positive on every instance
    "junk": "uniform -> static +17.0% ± 1.4, natural -> static +30.0% ± 1.5, static -> 2-phase -0.2% ± 0.7; "
    "seed sd 6.8%; in the benchmark set",
    "crawl": "uniform -> static -0.1% ± 0.6, natural -> static +47.1% ± 1.2, static -> 2-phase +0.7% ± 0.3; "
    "seed sd 2.9%; not in the benchmark set",
    "duplicates": "uniform -> static +7.9% ± 1.4, natural -> static +19.1% ± 1.2, static -> 2-phase +0.4% ± 1.1; "
    "seed sd 6.9%; in the benchmark set",
    "constrained": "uniform -> static -0.1% ± 1.6, natural -> static +73.5% ± 1.5, static -> 2-phase +2.9% ± 1.0; "
    "seed sd 7.9%; not in the benchmark set",
    "conflict": "uniform -> static +68.5% ± 0.6, natural -> static +68.5% ± 0.6, static -> 2-phase -0.1% ± 0.7; "
    "seed sd 3.2%; in the benchmark set",
    "curriculum": "uniform -> static +4.2% ± 1.1, natural -> static +0.6% ± 1.0, static -> 2-phase +0.8% ± 0.8; "
    "seed sd 5.4%; in the benchmark set",
    "pilemix": "uniform -> static +33.7% ± 0.8, natural -> static +37.1% ± 1.1, static -> 2-phase -0.3% ± 0.6; "
    "seed sd 3.5%; in the benchmark set",
}
"""Measured gaps of each catalogue task (see the comment above for how)."""

@dataclass(frozen=True)
class TaskPreset:
    """A benchmark task (see the module docstring).

    Attributes:
        name: the task's name (``task=`` everywhere).
        env_id: its Gymnasium id, versioned (bump the version when its behaviour changes).
        summary: one line for listings.
        backend: the backend kind, "toy" or "hf".
        backend_options: the backend's options; any can be overridden.
        objective: what a run is scored on (`mixgym.llm_backend.objectives`).
        baselines: the reference mixtures a benchmark of the task runs beside the agents.
        required: backend options the user must give (with why), e.g. a corpus folder.
        gaps: for a catalogue task, its measured gaps (`CATALOGUE_GAPS`).
    """

    name: str
    env_id: str
    summary: str
    backend: str
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    objective: str = "domain-mean"
    baselines: tuple[str, ...] = ("natural", "uniform", "tempered")
    required: Mapping[str, str] = field(default_factory=dict)
    gaps: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend_options", MappingProxyType(dict(self.backend_options)))
        object.__setattr__(self, "required", MappingProxyType(dict(self.required)))

    def backend_kwargs(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The backend's options: the preset's, then `overrides`; an error if a required one is missing."""
        options = {**self.backend_options, **overrides}
        for key, why in self.required.items():
            if options.get(key) is None:
                raise ValueError(f"task {self.name!r} needs the backend option {key}=...: {why}")
        return options


TASK_PRESETS: dict[str, TaskPreset] = {
    preset.name: preset
    for preset in (
        TaskPreset(
            "classic5",
            "mixgym/MixingClassic-v0",
            "the K=5 toy: easy, hard, noise, redundant, conflict, equal sizes (natural = uniform)",
            "toy",
            {"num_domains": 5, "domains": None},
            baselines=("natural", "uniform", "oracle"),
        ),
        TaskPreset(
            "pile22",
            "mixgym/MixingPile-v0",
            "22 toy domains sized by The Pile's weights: skewed, noisy, duplicated, conflicting, related, repeating",
            "toy",
            {"domains": PILE22_DOMAINS},
            baselines=("natural", "uniform", "tempered", "oracle"),
        ),
        TaskPreset(
            "hf-pile",
            "mixgym/MixingPileLM-v0",
            "pythia-tiny from scratch on a corpus with its real size skew, a noise and a duplicated domain",
            "hf",
            {"model": "pythia-tiny", "total_steps": 600, "seq_len": 128, "micro_batch_size": 8, "grad_accumulation": 4},
            required={
                "corpus": "a corpus folder with real size skew, a noise and a duplicated domain; build one with "
                "`mixgym corpus build runs/corpus-pile --allow-apt --keep-skew --max-bytes 3000000 "
                "--noise-bytes 400000 --duplicate-bytes 400000` and pass corpus='runs/corpus-pile'"
            },
        ),
        TaskPreset(
            "lm-small",
            "mixgym/MixingLMSmall-v0",
            "a 0.23M-parameter GPT-NeoX trained to 20 tokens per parameter on a skewed real-text corpus, ~2 CPU minutes a run",
            "hf",
            LM_SMALL_OPTIONS,
            required={
                "corpus": "a corpus with real size skew, a noise and a duplicated domain; build it with "
                "`mixgym corpus build runs/corpus-lm --allow-apt --keep-skew --max-bytes 1000000 "
                "--noise-bytes 200000 --duplicate-bytes 100000 --vocab-size 1024` and pass corpus='runs/corpus-lm'"
            },
        ),
    )
} | {
    f"mix-{name}": TaskPreset(
        f"mix-{name}",
        f"mixgym/MixingCatalogue{name.capitalize()}-v0",
        f"catalogue task {name!r}: " + ", ".join(f"{d.name} ({d.kind}, {d.size})" for d in domains),
        "toy",
        {"domains": domains, "total_steps": CATALOGUE_STEPS},
        baselines=("natural", "uniform", "oracle"),
        gaps=CATALOGUE_GAPS.get(name, ""),
    )
    for name, domains in CATALOGUE_DOMAINS.items()
}
"""Every task, by name."""


def get_task(name: str) -> TaskPreset:
    """The preset called `name`, or the toy task of a task file (``*.yaml``, e.g. one written by
    ``mixgym calibrate``: `mixgym.calibration.read_task_file`); an error listing the known
    ones otherwise."""
    if isinstance(name, (str, Path)) and str(name).endswith((".yaml", ".yml")):
        from mixgym.calibration import read_task_file

        config = read_task_file(name).config
        options = {f: getattr(config, f) for f in config.__dataclass_fields__}
        return TaskPreset(str(name), "", f"the toy task in {name}", "toy", options, baselines=("natural", "uniform", "tempered"))
    if name not in TASK_PRESETS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_PRESETS)}")
    return TASK_PRESETS[name]

