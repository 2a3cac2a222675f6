# Shared by every stage: config validation, the experiment's layout, and helpers for rules.
import os
import re
import sys
from itertools import combinations
from pathlib import Path

from snakemake.exceptions import WorkflowError

BASEDIR = Path(workflow.basedir)
SRC = str(BASEDIR / "src")
# Steps import the library from this checkout, with or without `pip install`, in conda envs
# and on cluster nodes (jobs inherit the environment).
sys.path.insert(0, SRC)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))

from convergent.config import ConfigError, validate  # noqa: E402
from convergent.architectures import factory_file, source_config  # noqa: E402
from convergent.layer_plan import plan_layers  # noqa: E402
from convergent.step_code import code_digest  # noqa: E402

# A preset given with --configfile is a complete experiment: it replaces config.yaml instead of
# being merged into it (a merge would leak MNIST settings into, say, a CIFAR run).
if not workflow.overwrite_configfiles:
    configfile: str(BASEDIR / "config.yaml")

try:
    _validated = validate(config, BASEDIR / "workflow" / "schemas" / "config.schema.yaml")
    # Any model source: the layers are resolved (and checked) on the model itself, before any job.
    LAYERS = plan_layers(_validated)
except (ConfigError, ValueError) as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_validated)

EXP = config["experiment"]
OUT = f"results/{EXP}"
SEEDS = sorted(config["seeds"])
UNTRAINED = sorted(config["untrained_seeds"])
PAIRS = list(combinations(SEEDS, 2))
FIRST_PAIR = PAIRS[0]
FORMATS = config["figures"]["formats"]
CHECKPOINTS = {int(seed): path for seed, path in (config["checkpoints"] or {}).items()}
# What decides a network's weights (the `model` section without `layers`: editing the layers
# reruns extraction, never training), and the factory file defining it, an input of the rules
# that build networks (editing it reruns them).
MODEL_SOURCE = source_config(config["model"])
_factory = factory_file(config["model"])
MODEL_FILES = [str(_factory)] if _factory is not None else []

_unknown = sorted(set(CHECKPOINTS) - set(SEEDS))
if _unknown:
    raise WorkflowError(f"config key 'checkpoints': seeds {_unknown} are not in 'seeds' {SEEDS}")

# Language models (model.huggingface) on probe text (dataset.name: text): read, never trained.
HUGGINGFACE = config["model"].get("huggingface") is not None
TEXT = config["dataset"]["name"] == "text"
if TEXT != HUGGINGFACE:
    raise WorkflowError("config key 'dataset.name': probe text (name: text) goes with a Hugging Face model "
                        "(model.huggingface) and a Hugging Face model with probe text"
                        if TEXT else "config key 'model.huggingface': a language model is probed with text; "
                        "set dataset.name: text and dataset.path to a text file")
_untrained_lm = [s for s in SEEDS if s not in CHECKPOINTS] if HUGGINGFACE else []
if _untrained_lm:
    raise WorkflowError(f"config key 'checkpoints': language models are not trained by the pipeline; give a hub id "
                        f"or directory for seeds {_untrained_lm} (untrained baselines go in 'untrained_seeds')")

if config["similarity"]["pooling"] == "first" and not TEXT:
    raise WorkflowError("config key 'similarity.pooling': first-token pooling is for probe text (dataset.name: "
                        "text); images are pooled by their mean over positions (pooling: mean)")

if TEXT:
    print("probe text: Li et al. Figs. 2/4, 5, 6 and 12 show units by their strongest tokens in context; the "
          "functional stages (interpolation, stitching: image classifiers) are not built; every other analysis "
          "runs on the token rows", file=sys.stderr)


def checkpoint_input(wildcards):
    """A seed's checkpoint file, an input of its import; a Hugging Face hub id is no file (a local
    save_pretrained directory is)."""
    path = CHECKPOINTS[int(wildcards.seed)]
    return [] if HUGGINGFACE and not Path(path).exists() else path



class _Targets(list):
    """Paths only: `report(...)` flags belong to the rule that makes a file, and on `rule all`'s
    inputs Snakemake would format their labels with `all`'s (missing) wildcards."""

    def __iadd__(self, paths):
        self.extend(paths)
        return self

    def extend(self, paths):
        super().extend(str(p) for p in paths)

    def append(self, path):
        super().append(str(path))


# Targets that `rule all` builds; each stage file appends its own.
TARGETS = _Targets()


def section(name, drop=(), keep=None):
    """Config section ``name`` for a rule's params: each rule gets only its own section, so editing
    another one never reruns it. ``drop``: keys that only pick jobs or shape other rules' outputs
    (e.g. ``pairs``), so that editing them reruns nothing here; ``keep``: only these keys."""
    cfg = config[name]
    return {k: cfg[k] for k in (keep if keep is not None else [k for k in cfg if k not in drop])}


# The `statistics` keys that shape intervals (not the replicates): each table rule with intervals
# takes these (issue 12).
INTERVAL_KEYS = ("replicates", "seed", "level", "interval", "correct")
INTERVAL_SECTION = section("statistics", keep=INTERVAL_KEYS)


# Training depends on the dataset's split, not on which held-out images are probed.
TRAINING_DATASET = section("dataset", drop=("probe_images", "probe_seed"))
# Image training never reads where probe text comes from (language models are imported, never
# trained; their import reads the passages through TRAINING_DATASET): these keys stay out of its
# params, so that adding them to the schema retrains no network.
IMAGE_TRAINING_DATASET = section("dataset", drop=("probe_images", "probe_seed", "hub", "hub_config", "split",
                                                  "data_files", "min_words"))


def one_of(values):
    """A wildcard constraint matching exactly these values (and nothing when there are none)."""
    return "|".join(str(v) for v in values) if values else "(?!x)x"


def code(step):
    """The library code step script ``steps/<step>.py`` runs, for its rule's params: a digest of
    every ``convergent`` module it imports, transitively (convergent.step_code). Editing a module
    reruns exactly the steps that import it; moving the project reruns nothing (paths and mtimes
    are not part of it). Snakemake watches the step script itself."""
    return code_digest(Path(SRC) / "convergent" / "steps" / f"{step}.py", root=SRC)


REPORT = BASEDIR / "workflow" / "report"
_REPORT_CATEGORIES = {"li2016": "Li et al. 2016", "wang2018": "Wang et al. 2018", "similarity": "Beyond the papers",
                      "functional": "Functional equivalence"}


def _in_report(path, stem, prefix=""):
    """``path`` as a result of `snakemake --report`, captioned by the longest ``stem`` prefix with a
    ``workflow/report/<prefix><name>.rst`` (``li2016_fig3_{layer}`` -> ``li2016_fig3.rst``); the rest
    of the stem (a layer, a measure) becomes a label."""
    parts = stem.split("_")
    for n in range(len(parts), 0, -1):
        name = "_".join(parts[:n])
        if (REPORT / f"{prefix}{name}.rst").exists():
            break
    else:
        name, n = "", 0
    rest = "_".join(parts[n:])
    title = _report_title(name or stem)
    labels = {"table" if prefix else "figure": title}
    if rest:
        labels["layer" if rest in LAYERS or rest == "{layer}" else "variant"] = rest
    return report(path, caption=str(REPORT / f"{prefix}{name or prefix.rstrip('_') or 'figure'}.rst"),
                  category=_REPORT_CATEGORIES.get(parts[0], "Networks"),
                  subcategory="Tables" if prefix else title, labels=labels)


def _report_title(name):
    """``li2016_fig3`` -> ``Fig. 3``, ``li2016_table1`` -> ``Table 1``, ``li2016_mean_activation`` ->
    ``mean activation``: the paper's own names, under the paper's category."""
    import re

    short = re.sub(r"^(li2016|wang2018)_", "", name)
    match = re.fullmatch(r"(fig|table)(\d+)", short)
    if match:
        return f"{'Fig.' if match.group(1) == 'fig' else 'Table'} {match.group(2)}"
    return short.replace("_", " ")


def figure(stem):
    """One figure in every configured format; the first raster one (PNG) goes into the report."""
    paths = [f"{OUT}/figures/{stem}.{fmt}" for fmt in FORMATS]
    shown = next((i for i, fmt in enumerate(FORMATS) if fmt in ("png", "svg", "jpg")), 0)
    paths[shown] = _in_report(paths[shown], stem)
    return paths


def table(stem):
    """A table's named outputs ``csv``, ``md``, ``tex`` (``output: **table(stem)``); the CSV is
    shown in the report."""
    return {"csv": _in_report(f"{OUT}/tables/{stem}.csv", stem, prefix="table_"),
            "md": f"{OUT}/tables/{stem}.md", "tex": f"{OUT}/tables/{stem}.tex"}


def activations(net):
    return f"{OUT}/activations/{net}.h5"


def pair_files(pattern, pairs=None, layers=None):
    """``pattern`` (with {layer}, {a}, {b}) for every layer and seed pair (or the pairs given)."""
    return [pattern.format(layer=layer, a=a, b=b) for layer in (layers or LAYERS) for a, b in (pairs or PAIRS)]


def layer_figures(*stems):
    """Every layer's figure for each stem (``li2016_fig13`` -> ``li2016_fig13_{layer}``)."""
    return [path for layer in LAYERS for stem in stems for path in figure(f"{stem}_{layer}")]


wildcard_constraints:
    seed=r"\d+",
    net=r"(seed|untrained)\d+",
    layer="|".join(re.escape(layer) for layer in LAYERS),
    a=r"\d+",
    b=r"\d+",
