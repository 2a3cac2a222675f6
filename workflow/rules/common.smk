# Shared by every stage: config validation, the experiment's layout, and helpers for rules.
import os
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
from convergent.models import select_layers  # noqa: E402

# A preset given with --configfile is a complete experiment: it replaces config.yaml instead of
# being merged into it (a merge would leak MNIST settings into, say, a CIFAR run).
if not workflow.overwrite_configfiles:
    configfile: str(BASEDIR / "config.yaml")

try:
    _validated = validate(config, BASEDIR / "workflow" / "schemas" / "config.schema.yaml")
    LAYERS = select_layers(_validated["model"]["architecture"], _validated["model"]["layers"])
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

_unknown = sorted(set(CHECKPOINTS) - set(SEEDS))
if _unknown:
    raise WorkflowError(f"config key 'checkpoints': seeds {_unknown} are not in 'seeds' {SEEDS}")

# Targets that `rule all` builds; each stage file appends its own.
TARGETS = []

# Training depends on the dataset's split, not on which held-out images are probed.
TRAINING_DATASET = {k: v for k, v in config["dataset"].items() if k not in ("probe_images", "probe_seed")}


def one_of(values):
    """A wildcard constraint matching exactly these values (and nothing when there are none)."""
    return "|".join(str(v) for v in values) if values else "(?!x)x"


def library(*modules):
    """Library modules a step uses, declared as inputs: editing one reruns the steps using it."""
    return [str(BASEDIR / "src" / "convergent" / f"{m}.py") for m in modules]


def step(name):
    return str(BASEDIR / "src" / "convergent" / "steps" / f"{name}.py")


def figure(stem):
    """One figure in every configured format."""
    return [f"{OUT}/figures/{stem}.{fmt}" for fmt in FORMATS]


def table(stem):
    return multiext(f"{OUT}/tables/{stem}", ".csv", ".md", ".tex")


def activations(net):
    return f"{OUT}/activations/{net}.h5"


def pair_files(pattern, layers=None):
    """``pattern`` (with {layer}, {a}, {b}) for every layer and seed pair."""
    return [pattern.format(layer=layer, a=a, b=b) for layer in (layers or LAYERS) for a, b in PAIRS]


wildcard_constraints:
    seed=r"\d+",
    net=r"(seed|untrained)\d+",
    layer="|".join(LAYERS),
    a=r"\d+",
    b=r"\d+",
