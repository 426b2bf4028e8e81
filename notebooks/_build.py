"""Write the notebooks of this folder, outputs stripped: ``python notebooks/_build.py``.

The notebooks are this script's output: edit a cell here, rerun the script and commit both.
`tests/test_notebooks.py` executes every notebook with ``MIXGYM_NOTEBOOK_QUICK=1`` and checks
that each one matches this script.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    (
        "markdown",
        """
        # mixgym quickstart

        Data mixing as a Gymnasium environment: every few optimizer steps you (or an agent) choose the mixture over the data domains, the backend trains on it, and the environment reports what happened. This notebook uses the fast **toy backend** (a real multi-domain learning problem that runs in milliseconds).

        `QUICK` keeps the run small when the test suite executes this notebook; set it to `False` for longer runs.
        """,
    ),
    (
        "code",
        """
        import os
        QUICK = os.environ.get("MIXGYM_NOTEBOOK_QUICK", "0") == "1"
        TOTAL_STEPS = 300 if QUICK else 1000     # optimizer steps per run
        SAC_STEPS = 120 if QUICK else 1500       # SAC learning steps (decisions)
        EPISODES = 3 if QUICK else 10            # evaluation runs per agent

        import gymnasium as gym
        import matplotlib.pyplot as plt
        import numpy as np
        import mixgym  # registers mixgym/Mixing-v1
        """,
    ),
    ("markdown", "## Make the environment and step it by hand"),
    (
        "code",
        """
        env = gym.make("mixgym/Mixing-v1", backend="toy", reward="alignment", total_steps=TOTAL_STEPS)
        print(env.unwrapped.domains)
        print(env.observation_space, env.action_space)
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0, -1.0, 0.0, 0.0], dtype=np.float32))
        print("mixture:", info["mixture"].round(3))
        print("reward:", round(reward, 4), "components:", {k: round(float(v), 4) for k, v in info.items() if k.startswith("reward/") and np.ndim(v) == 0})
        print("held-out loss per domain:", info["eval_loss"].round(3))
        """,
    ),
    (
        "markdown",
        """
        ## One run under a hand-made schedule, then plot the mixture and the losses

        Early on favour the easy domain, later the hard ones; never the noise.
        """,
    ),
    (
        "code",
        """
        def run(policy, seed=0):
            obs, info = env.reset(seed=seed)
            mixtures, losses, steps = [], [], []
            terminated = False
            while not terminated:
                obs, reward, terminated, truncated, info = env.step(policy(obs))
                mixtures.append(info["mixture"]); losses.append(info["eval_loss"]); steps.append(info["step"])
            return np.array(steps), np.array(mixtures), np.array(losses), info["objective"]

        def schedule(obs):
            progress = obs[-1]
            return np.array([1 - 2 * progress, 2 * progress - 0.5, -1, 0.3, 0.2], dtype=np.float32).clip(-1, 1)

        steps, mixtures, losses, objective = run(schedule)
        domains = env.unwrapped.domains
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
        left.stackplot(steps, mixtures.T, labels=domains); left.set(xlabel="optimizer step", ylabel="mixture", title="mixture")
        left.legend(loc="upper left", fontsize=7)
        right.plot(steps, losses, label=domains); right.set(xlabel="optimizer step", ylabel="held-out loss", title=f"objective {objective:.4f}")
        plt.tight_layout(); plt.show()
        """,
    ),
    (
        "markdown",
        """
        ## Train a stock SB3 SAC on it

        Every run is one episode of `TOTAL_STEPS / 10` decisions, so SAC learns over several runs. Its networks are small: one torch thread is as fast as several, and much faster than several on a busy machine.
        """,
    ),
    (
        "code",
        """
        import torch
        from stable_baselines3 import SAC

        torch.set_num_threads(1)
        model = SAC("MlpPolicy", env, learning_starts=50, seed=0, device="cpu")
        model.learn(total_timesteps=SAC_STEPS)
        print(f"SAC learned from {SAC_STEPS} decisions, {SAC_STEPS / env.unwrapped.num_decisions:.0f} runs")
        """,
    ),
    (
        "markdown",
        """
        ## Compare SAC with EXP3 and uniform

        `mixgym.agents` makes the other agents and runs any of them: `evaluate(agent, env, episodes, seed)` plays `episodes` runs seeded `seed`, `seed + 1`, ... and returns `Results`, one row per decision (mixture, rewards, per-domain losses, objective). SAC acts deterministically with what it learned, on seeds it never trained on. EXP3 (ODM's bandit) needs no training: it adapts within each run from the per-domain training losses. Bandits and static mixtures give the mixture itself, so they drive the environment with `action_map="simplex"`: the same backend, so a seed trains the same model on the same data whoever chooses the mixture.

        The **oracle** is the toy's best static mixture, found by search (it is known only for the toy); *regret* is an agent's final held-out loss minus the oracle's.
        """,
    ),
    (
        "code",
        """
        import pandas as pd
        from mixgym.agents import evaluate, make_agent

        simplex_env = gym.make(
            "mixgym/Mixing-v1", backend="toy", reward="alignment", total_steps=TOTAL_STEPS, action_map="simplex"
        )
        contenders = {
            "SAC": (model, env),
            "EXP3": (make_agent("exp3", simplex_env), simplex_env),
            "uniform": (make_agent("uniform", simplex_env), simplex_env),
            "oracle": (make_agent("oracle", simplex_env), simplex_env),
        }
        results = {name: evaluate(agent, on, episodes=EPISODES, seed=100) for name, (agent, on) in contenders.items()}

        best = results["oracle"].final_objectives().mean()
        pd.DataFrame(
            {
                name: {
                    "final held-out loss": r.final_objectives().mean(),
                    "sd over runs": r.final_objectives().std(ddof=1),
                    "regret vs oracle": r.final_objectives().mean() - best,
                }
                for name, r in results.items()
            }
        ).T.round(4)
        """,
    ),
    (
        "code",
        """
        fig, axes = plt.subplots(1, len(results) + 1, figsize=(3.4 * (len(results) + 1), 3.2))
        for name, r in results.items():
            curve = r.objective_curve()
            axes[0].plot(curve.index, curve.to_numpy(), label=name)
        axes[0].set(xlabel="decision", ylabel=f"held-out loss, mean of {EPISODES} runs", title="objective")
        axes[0].legend(fontsize=8)
        for ax, (name, r) in zip(axes[1:], results.items()):
            mixture = r.mixture_curve()
            ax.stackplot(mixture.index, mixture.to_numpy().T, labels=domains)
            ax.set(xlabel="decision", ylim=(0, 1), title=f"{name}: mixture")
        axes[1].legend(loc="upper left", fontsize=7)
        plt.tight_layout(); plt.show()
        """,
    ),
    (
        "markdown",
        """
        Do not expect either learner to beat uniform here. SAC has learned from 4 runs (15 with `QUICK = False`), far fewer than an RL policy needs, and acts on seeds it has not seen. EXP3's reward is a domain's training loss, so it drifts towards the noise domain, whose loss stays high whatever it is fed. The oracle shows what there is to gain: it gives the noise domain nothing. `mixgym demo` runs the full comparison (more agents, regret, decisions to reach uniform's final loss), and `benchmarks/` keeps the recorded results.
        """,
    ),
]

REAL_LM = [
    (
        "markdown",
        """
        # Mixing data for a real language model

        The same environment with the **HF backend**: a `transformers` GPT-NeoX (`pythia-tiny`, 0.72M parameters, random initialisation) pretrained from scratch on a multi-domain text corpus, on the CPU. Every `steps_per_action` optimizer steps the agent chooses the mixture; each micro-batch comes from one domain drawn from it. Nothing is downloaded: the corpus comes from this machine, the tokenizer (a byte-level BPE) is trained on it, the model starts from random weights.

        `QUICK` (set by the test suite) trains each agent for 40 optimizer steps (41 thousand tokens) on the packaged sample corpus, a few seconds a run. With `QUICK = False` the notebook builds a corpus from every source of text this machine has (up to 10 domains) and gives each agent two runs of 300 steps (1.2 million tokens each): about 90 seconds a run on two busy CPU cores, a quarter of an hour in all.
        """,
    ),
    (
        "code",
        """
        import json
        import os
        import tempfile
        import time
        from pathlib import Path

        QUICK = os.environ.get("MIXGYM_NOTEBOOK_QUICK", "0") == "1"
        TOTAL_STEPS = 40 if QUICK else 300       # optimizer steps per run
        STEPS_PER_ACTION = 5 if QUICK else 10    # optimizer steps per decision
        SIZES = dict(seq_len=64 if QUICK else 128, micro_batch_size=4 if QUICK else 8, grad_accumulation=4)
        SEEDS = [0] if QUICK else [0, 1]         # one run per agent and seed

        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        import torch

        # A model this small gains nothing from more threads, and on a busy machine a second
        # thread per core makes torch many times slower.
        torch.set_num_threads(1)
        """,
    ),
    (
        "markdown",
        """
        ## The corpus

        A corpus is a folder with one entry per domain. Three ways to get one:

        - **`mixgym.data.SAMPLE_CORPUS`** ships with mixgym: five domains (Python standard library, C headers, manual pages, Debian changelogs, licences) of about 80 KB of text each, 10% held out, with its tokenizer. `QUICK` uses it.
        - **`build_corpus(folder, ...)`** (or `mixgym corpus build FOLDER` on the command line) makes one from text on this machine, one domain per source: the Python standard library anywhere; on Debian also C headers, manual pages, changelogs and licences, and Python's documentation, a dictionary, the King James Bible, fortunes and WordNet when their packages are installed (`allow_apt=True` installs them). Sources this machine lacks are skipped and listed in the manifest. It writes `DOMAIN/train.jsonl` and `DOMAIN/validation.jsonl`, a `manifest.json` and the tokenizer.
        - **your own folder**, next section.
        """,
    ),
    (
        "code",
        """
        from mixgym.data import SAMPLE_CORPUS
        from mixgym.llm_backend.corpus import build_corpus

        if QUICK:
            corpus = SAMPLE_CORPUS
        else:
            corpus = Path(tempfile.mkdtemp()) / "corpus"
            build_corpus(corpus, max_bytes_per_domain=500_000)  # every source this machine has
        manifest = json.loads((corpus / "manifest.json").read_text())
        pd.DataFrame(
            [
                {
                    "domain": d["domain"],
                    "source": d["source"],
                    "documents": d["documents"]["train"] + d["documents"]["validation"],
                    "train tokens": d["tokens"]["train"],
                    "held-out tokens": d["tokens"]["validation"],
                }
                for d in manifest["domains"]
            ]
        ).set_index("domain")
        """,
    ),
    (
        "markdown",
        """
        ### Your own corpus

        One file or sub-folder per domain, named after the domain: `recipes.txt` (documents separated by a blank line), `code.jsonl` (a `text` field per line), `books/part-0.parquet` (a `text` column), or `news/train.jsonl` + `news/validation.jsonl` to give the held-out split yourself; otherwise a deterministic 5% of each domain's bytes is held out. `load_corpus` reads it with `datasets`, from local files only.
        """,
    ),
    (
        "code",
        """
        import inspect
        import textwrap
        from mixgym.llm_backend.corpus import load_corpus

        mine = Path(tempfile.mkdtemp()) / "my_corpus"
        mine.mkdir()
        recipes = [
            "Whisk two eggs with a pinch of salt.",
            "Boil the pasta for nine minutes.",
            "Toast the bread, then rub it with garlic.",
        ]
        (mine / "recipes.txt").write_text("\\n\\n".join(recipes) + "\\n")
        (mine / "code.jsonl").write_text(
            "".join(json.dumps({"text": inspect.getsource(f)}) + "\\n" for f in (textwrap.dedent, textwrap.indent, json.dumps))
        )
        for domain in load_corpus(mine).domains:
            print(f"{domain.name}: {len(domain.train)} training and {len(domain.validation)} held-out documents")
        """,
    ),
    (
        "markdown",
        """
        `MixingEnv(backend="hf", corpus=mine, ...)` would train on it; a usable corpus needs far more text (every domain's held-out split must hold at least a few `seq_len`-token sequences, and the tokenizer is trained on it).

        ## The environment

        `total_steps` is the run's optimizer-step budget (the learning-rate schedule's length), `steps_per_action` the optimizer steps per decision; `seq_len`, `micro_batch_size` and `grad_accumulation` fix the tokens per step. Each micro-batch holds one domain, and every decision gives every domain at least one micro-batch (as HDS and AC-ODM do, so that each domain has a loss and a gradient): here that is a quarter of the micro-batches, so every realised mixture leans towards uniform. `action_map="simplex"` means the action *is* the mixture.
        """,
    ),
    (
        "code",
        """
        from mixgym.envs import MixingEnv

        env = MixingEnv(
            backend="hf", model="pythia-tiny", corpus=corpus,
            total_steps=TOTAL_STEPS, steps_per_action=STEPS_PER_ACTION, action_map="simplex", **SIZES,
        )
        tokens_per_step = SIZES["seq_len"] * SIZES["micro_batch_size"] * SIZES["grad_accumulation"]
        print(f"{len(env.domains)} domains {env.domains}")
        parameters = sum(p.numel() for p in env.backend.model.parameters())
        print(f"{parameters:,} parameters; {env.num_decisions} decisions of {STEPS_PER_ACTION * tokens_per_step:,} tokens; "
              f"{TOTAL_STEPS * tokens_per_step:,} tokens a run")

        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(np.full(len(env.domains), 1 / len(env.domains)))
        print("mixture:              ", info["mixture"].round(3))
        print("sequences per domain: ", info["samples"])
        print("training loss:        ", info["train_loss"].round(3))
        print("held-out loss:        ", info["eval_loss"].round(3), f"(objective {info['objective']:.3f})")
        print("reward (alignment):   ", round(reward, 4))
        """,
    ),
    (
        "markdown",
        """
        ## One run per agent

        `learn_online(name, env, seeds)` is the non-proxy mode: for each seed a fresh agent learns during the one run it drives, and that run is its result, as ODM, AC-ODM and HDS ran. (`evaluate(agent, env)` is for an agent that has learned already, for instance on a smaller proxy model, and now only acts; see the README.) For uniform, EXP3 and DoReMi the two are the same: they have nothing to learn across runs and adapt within the run from what `info` reports.

        - `uniform`: the same mixture throughout, the baseline to beat.
        - `exp3`: ODM's EXP3 bandit; a domain's reward is its training loss, so domains the model still finds hard get more. It starts from the corpus' natural proportions and mixes exactly uniformly while its exploration rate is at its ceiling 1/K, the first K ln K decisions: 8 at K = 5 (all of the `QUICK` run), 23 at K = 10.
        - `doremi`: DoReMi's group reweighting, online: domains whose held-out loss is furthest above a reference model's get more. The reference is a run on the uniform mixture; the uniform run above is one, so its final losses are passed in (otherwise `make_agent("doremi", env)` first trains its own).
        - `hds`: HDS, a stock SB3 SAC with HDS's holistic reward (gradient alignment, diversity, stability), acting through the default softmax action map. In one short run it has only a few transitions to learn from.
        """,
    ),
    (
        "code",
        """
        from mixgym.agents import learn_online

        hds_env = MixingEnv(
            backend="hf", model="pythia-tiny", corpus=corpus,
            total_steps=TOTAL_STEPS, steps_per_action=STEPS_PER_ACTION, reward="holistic", **SIZES,
        )
        results, seconds = {}, {}

        def run(name, on, **options):
            start = time.perf_counter()
            results[name], _ = learn_online(name, on, SEEDS, **options)
            seconds[name] = time.perf_counter() - start
            print(f"{name}: {seconds[name]:.0f} s")

        run("uniform", env)
        run("exp3", env)
        # DoReMi's reference: each domain's held-out loss over the last 10% of the uniform run(s)
        uniform_tail = results["uniform"].decisions["decision"] > 0.9 * env.num_decisions
        reference = results["uniform"].per_domain("eval_loss")[uniform_tail].mean()
        run("doremi", env, reference_loss=reference.tolist())
        run("hds", hds_env)
        """,
    ),
    (
        "code",
        """
        def final_rows(r):
            return r.decisions[r.decisions["decision"] == r.decisions["decision"].max()]

        table = pd.DataFrame(
            {
                name: {
                    **final_rows(r)[[f"eval_loss/{d}" for d in r.domains]].mean().set_axis(r.domains),
                    "objective": r.final_objectives().mean(),
                    "seconds": seconds[name],
                }
                for name, r in results.items()
            }
        ).T
        print(f"final held-out loss per domain and their mean (the objective), mean over {len(SEEDS)} run(s)")
        table.round(3)
        """,
    ),
    (
        "code",
        """
        fig, axes = plt.subplots(1, len(results) + 1, figsize=(3.4 * (len(results) + 1), 3.2))
        for name, r in results.items():
            by_decision = r.decisions.groupby("decision")
            axes[0].plot(by_decision["tokens"].mean(), by_decision["objective"].mean(), label=name)
        axes[0].set(xlabel="tokens trained", ylabel="held-out loss (objective)", title="held-out loss")
        axes[0].legend(fontsize=8)
        for ax, (name, r) in zip(axes[1:], results.items()):
            mixture = r.mixture_curve()
            ax.stackplot(mixture.index, mixture.to_numpy().T, labels=r.domains)
            ax.set(xlabel="decision", ylim=(0, 1), title=f"{name}: mixture")
        axes[1].legend(loc="upper left", fontsize=7)
        plt.tight_layout(); plt.show()
        """,
    ),
    (
        "markdown",
        """
        ## What this shows, and what it does not

        At this scale the differences between agents are small and mostly noise. In the `QUICK` run the model sees 41 thousand tokens: every domain's loss is still falling steeply from the random-initialisation value (the log of the vocabulary size, about 8.3), and at that stage a model mostly learns which tokens are frequent, which helps every domain at once. Each agent has one run; EXP3 is still exploring uniformly, and the forced micro-batch per domain pulls every mixture towards uniform. SAC (`hds`) has a few transitions to learn from, so its mixtures show its initialisation and exploration, not a learned policy. Even the longer run is two seeds of a 0.7M-parameter model; a gap smaller than the spread between its two seeds says nothing.

        What the notebook does show is the plumbing, end to end: a corpus, a tokenizer and a model made offline, every agent driving the same training runs (same seed, same initial weights, same data order within each domain), and the per-decision record (`Results.decisions`) to analyse. To compare agents in earnest: longer runs and more seeds with `mixgym bench` (`benchmarks/configs/hf-tiny.yaml`: 600 steps, 10 domains, 3 seeds), a larger model (`model="pythia-small"`), or, for developing an agent, the toy backend, whose oracle gives a regret.
        """,
    ),
]

HF_TRAINER = [
    (
        "markdown",
        """
        # Bring your own trainer: a mixgym agent steers a Hugging Face `Trainer`

        Most people who pretrain a language model already have a training loop, very often the Hugging Face `Trainer`. `mixgym.integrations` lets any mixgym agent choose the data mixture of such a run, without changing the loop:

        - `MixtureDataset`: a torch `IterableDataset` over K domains that follows a mixture which may change while training. Each domain is read in its own seeded order through its own cursor, so a change of mixture never loses or repeats an example within an epoch of a domain; per-domain examples, tokens and epochs are counted exactly; `max_epochs` retires a domain instead of repeating it silently.
        - `MixtureCallback`: a `TrainerCallback` that, every few optimizer steps, gives the agent the observation and reward `MixingEnv` computes (per-domain training loss of the rows trained on, held-out loss per domain, weight norms) and sets the agent's mixture on the dataset. It logs through the Trainer and saves its state with the Trainer's checkpoints.

        `QUICK` (set by the test suite) trains a 0.5M-parameter GPT-2 for a few dozen steps on the packaged sample corpus; `QUICK = False` trains longer.
        """,
    ),
    (
        "code",
        """
        import os
        import tempfile
        from pathlib import Path

        QUICK = os.environ.get("MIXGYM_NOTEBOOK_QUICK", "0") == "1"
        MAX_STEPS = 16 if QUICK else 300         # optimizer steps of the run
        EVERY = 4 if QUICK else 10               # optimizer steps per decision
        SEQ_LEN, BATCH = (32, 4) if QUICK else (64, 8)

        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        import torch
        import transformers

        torch.set_num_threads(1)  # a tiny model: one thread is faster than two contending ones
        transformers.logging.set_verbosity_error()
        """,
    ),
    (
        "markdown",
        """
        ## The data: one dataset per domain

        Any `datasets.Dataset` or `IterableDataset` per domain works, tokenised (an `input_ids` column) or as text with a tokenizer and a sequence length (documents are packed into rows of exactly `seq_len` tokens). Here: the sample corpus that ships with mixgym, its byte-level BPE trained locally, and `datasets.Dataset`s built from it. `max_epochs=2`: no domain is read more than twice.
        """,
    ),
    (
        "code",
        """
        import datasets
        from mixgym.data import SAMPLE_CORPUS
        from mixgym.integrations import MixtureCallback, MixtureDataset
        from mixgym.llm_backend.corpus import load_corpus
        from mixgym.llm_backend.hf import preset_config
        from mixgym.llm_backend.tokenizer import corpus_tokenizer

        corpus = load_corpus(SAMPLE_CORPUS)
        tokenizer = corpus_tokenizer(corpus.train_texts(), corpus.path)
        train_sets = {d.name: datasets.Dataset.from_dict({"text": list(d.train)}) for d in corpus.domains}
        held_out = {d.name: datasets.Dataset.from_dict({"text": list(d.validation)}) for d in corpus.domains}

        def make_dataset():
            return MixtureDataset(train_sets, tokenizer=tokenizer, seq_len=SEQ_LEN, seed=0, max_epochs=2)

        train = make_dataset()
        pd.DataFrame({"rows": train.sizes, "tokens": train.domain_tokens}, index=train.domains)
        """,
    ),
    (
        "markdown",
        """
        ## The run: a stock `Trainer`, plus the callback

        `exp3` is ODM's bandit: a domain's reward is its training loss, so domains the model still finds hard get more. `mixing.install(trainer)` puts the callback first among the Trainer's callbacks, so TensorBoard or W&B (when `report_to` names them) receive its `mixgym/...` metrics too.
        """,
    ),
    (
        "code",
        """
        def make_trainer(dataset, callback, output_dir, **overrides):
            config = preset_config("gpt2-tiny", tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
            torch.manual_seed(0)
            model = transformers.AutoModelForCausalLM.from_config(config)
            options = dict(output_dir=str(output_dir), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                           learning_rate=2e-3, logging_steps=EVERY, save_steps=MAX_STEPS // 2, report_to=[],
                           use_cpu=True, seed=0, disable_tqdm=True)
            args = transformers.TrainingArguments(**{**options, **overrides})
            trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback])
            trainer.remove_callback(transformers.PrinterCallback)  # the logs are in trainer.state.log_history
            callback.install(trainer)
            return trainer

        runs = Path(tempfile.mkdtemp())
        mixing = MixtureCallback(train, "exp3", held_out, steps_per_decision=EVERY, eval_rows=4 if QUICK else 16)
        trainer = make_trainer(train, mixing, runs / "exp3")
        trainer.train()
        print(f"{len(mixing.history) - 1} decisions; final training loss {trainer.state.log_history[-2]['loss']:.3f}")
        """,
    ),
    (
        "markdown",
        """
        ## What the agent chose, and what was served

        Each decision's `info` (the same dict `MixingEnv.step` returns) is in `mixing.history`: the mixture chosen, the *realised* mixture (the share of the examples actually trained on in the decision, drawn from the mixture), per-domain training and held-out losses, the reward. The dataset's `accounting()` is exact: it counts what the loop consumed.
        """,
    ),
    (
        "code",
        """
        steps = [int(h["step"]) for h in mixing.history[1:]]
        chosen = np.array([h["mixture"] for h in mixing.history[1:]])
        realised = np.array([h["realised_mixture"] for h in mixing.history[1:]])
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        axes[0].stackplot(steps, chosen.T, labels=train.domains)
        axes[0].set(title="mixture chosen (exp3)", xlabel="optimizer step", ylim=(0, 1))
        axes[0].legend(loc="upper left", fontsize=7)
        axes[1].stackplot(steps, realised.T)
        axes[1].set(title="share of examples served", xlabel="optimizer step", ylim=(0, 1))
        for i, name in enumerate(train.domains):
            axes[2].plot([0] + steps, [h["eval_loss"][i] for h in mixing.history], label=name)
        axes[2].set(title="held-out loss per domain", xlabel="optimizer step")
        plt.tight_layout(); plt.show()

        book = train.accounting()
        pd.DataFrame({"examples": book.examples, "tokens": book.tokens, "epochs": book.epochs.round(3),
                      "share": book.realised_mixture.round(3), "last mixture": chosen[-1].round(3)}, index=book.domains)
        """,
    ),
    (
        "markdown",
        """
        ## Resume from a Trainer checkpoint: the same examples, the same decisions

        The callback writes its state (agent, environment, the dataset's cursors and mixture schedule) as `mixgym_mixture.ckpt` into every Trainer checkpoint. Stop a run half way, resume it with `trainer.train(resume_from_checkpoint=True)`, and the examples served, the mixtures and the model's weights are those of the uninterrupted run above.
        """,
    ),
    (
        "code",
        """
        class StopHalfWay(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                control.should_training_stop = state.global_step == MAX_STEPS // 2

        first = MixtureCallback(make_dataset(), "exp3", held_out, steps_per_decision=EVERY, eval_rows=4 if QUICK else 16)
        cut = make_trainer(first.dataset, first, runs / "cut")
        cut.add_callback(StopHalfWay())
        cut.train()
        again = MixtureCallback(make_dataset(), "exp3", held_out, steps_per_decision=EVERY, eval_rows=4 if QUICK else 16)
        resumed = make_trainer(again.dataset, again, runs / "cut")
        resumed.train(resume_from_checkpoint=True)

        same_mixtures = all(np.array_equal(a["mixture"], b["mixture"]) for a, b in zip(mixing.history, again.history))
        same_weights = all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), resumed.model.state_dict().values()))
        print("same decisions:", same_mixtures and len(mixing.history) == len(again.history), "| same final weights:", same_weights)
        print("same examples per domain:", again.dataset.accounting().examples.tolist() == book.examples.tolist())
        """,
    ),
    (
        "markdown",
        """
        ## Any agent: a policy learned on a proxy, acting on this run

        Proxy mode, as AC-ODM uses it: learn a policy on a small, cheap run (here the toy backend with the same number of domains and the same observation layout), save it, and let it act on the real run. `MixtureCallback(train, path, ...)` loads it and acts deterministically (it warns that the policy learned on other domain names and acts position by position); an agent *name* such as `"hds"` or `"acodm"` would instead learn online during this run (SB3's own `learn`, in a thread that takes turns with the Trainer).
        """,
    ),
    (
        "code",
        """
        from mixgym.agents import make_agent
        from mixgym.envs import MixingEnv

        proxy = MixingEnv(num_domains=len(train.domains), total_steps=100, steps_per_action=EVERY, reward="eval_loss")
        policy = make_agent("td3", proxy, seed=0, sb3_kwargs={"learning_starts": 5})
        policy.learn(total_timesteps=10 if QUICK else 200)
        policy.save(runs / "td3.zip")

        acting = MixtureCallback(make_dataset(), runs / "td3.zip", held_out, steps_per_decision=EVERY, eval_rows=4 if QUICK else 16)
        make_trainer(acting.dataset, acting, runs / "td3").train()
        pd.DataFrame([h["mixture"] for h in acting.history[1:]], columns=train.domains,
                     index=[int(h["step"]) for h in acting.history[1:]]).round(3).rename_axis("step")
        """,
    ),
    (
        "markdown",
        """
        ## Your own loop

        For a loop that is not the `Trainer` (plain PyTorch, litgpt, torchtitan, ...), `MixtureDriver` is the same thing without the callback: `driver.observe(step, per_example_losses, domains=batch["domain"])` every step, `driver.mixture()` when you want it (the README shows a complete loop). At this scale the mixtures above say little about which data is better: a few dozen steps of a tiny model, one seed. What this notebook shows is the plumbing: any agent, a stock Trainer, exact accounting and an exact resume.
        """,
    ),
]

NOTEBOOKS = {"quickstart.ipynb": QUICKSTART, "real_lm.ipynb": REAL_LM, "hf_trainer.ipynb": HF_TRAINER}


def notebook(cells: list[tuple[str, str]], stem: str) -> nbformat.NotebookNode:
    """A notebook of `cells` (kind, source), without outputs, with ids that depend only on the order."""
    made = []
    for index, (kind, source) in enumerate(cells):
        text = textwrap.dedent(source).strip("\n")
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"{stem}-{index:02d}"
        made.append(cell)
    book = nbformat.v4.new_notebook(cells=made)
    book.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return book


def build() -> dict[str, nbformat.NotebookNode]:
    """Every notebook of this folder, by file name."""
    return {name: notebook(cells, Path(name).stem.replace("_", "-")) for name, cells in NOTEBOOKS.items()}


if __name__ == "__main__":
    for name, book in build().items():
        nbformat.validate(book)
        nbformat.write(book, HERE / name)
        print(f"wrote {HERE / name}")
