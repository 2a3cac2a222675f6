"""The conda environments (`envs/*.yaml`) and `pyproject.toml` require the same packages.

Users with conda run `snakemake --use-conda`, users without it `pip install .`; both routes
must get the same minimum versions, or a bug fixed by raising a bound in one file comes
back through the other. Names are compared after mapping conda-forge names to PyPI names
(`pytorch` is `torch`) and PEP 503 normalisation; versions by their lower bounds (an
exact pin, as in a lock file, agrees when pyproject.toml allows the pinned version).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml")) + sorted((ROOT / "envs").glob("*.yml"))

# conda-forge package name -> the PyPI distribution it provides
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "matplotlib-base": "matplotlib",
    "snakemake-minimal": "snakemake",
}
# Run the workflow rather than a rule's script (which gets Snakemake's own path from the
# `script:` preamble), so no rule environment needs them.
DRIVER_ONLY = {"snakemake"}
LOWER_OPS = {">=", "==", "===", "~=", ">"}


def conda_requirement(entry: str) -> tuple[str, SpecifierSet]:
    """`numpy>=1.26`, `numpy =1.26.4`, `numpy 1.26.*`, `conda-forge::numpy=1.26=py311_0`."""
    entry = entry.split("#", 1)[0].strip().split("::")[-1]
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry)
    if not match:
        raise ValueError(f"cannot parse conda dependency {entry!r}")
    name, spec = match.group(1), match.group(2).strip()
    if spec and (spec[0].isdigit() or spec.startswith("=") and not spec.startswith("==")):
        # conda's own forms: "1.26.*", "1.26.4 build", "=1.26" (fuzzy), "=1.26.4=build"
        version = spec.lstrip("=").split("=")[0].split()[0].rstrip(".*")
        spec = f">={version}"
    spec = re.sub(r"(?<![<>=!~])=(?!=)", "==", spec.replace(" ", ""))
    pypi = CONDA_TO_PYPI.get(name.lower(), name)
    return canonicalize_name(pypi), SpecifierSet(spec)


def lower_bound(spec: SpecifierSet) -> Version | None:
    bounds = [Version(s.version.rstrip(".*")) for s in spec if s.operator in LOWER_OPS]
    return max(bounds) if bounds else None


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {canonicalize_name(r.name): r.specifier
            for r in map(Requirement, project["dependencies"]) if r.marker is None or r.marker.evaluate()}
    reqs["python"] = SpecifierSet(project["requires-python"])
    return reqs


def env_requirements(path: Path) -> dict[str, SpecifierSet]:
    env = yaml.safe_load(path.read_text())
    reqs: dict[str, SpecifierSet] = {}
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict):
            for pip_dep in dep.get("pip") or []:
                if pip_dep.startswith(("-", ".", "/", "git+")) or "://" in pip_dep:
                    continue  # editable installs, local paths, URLs: not version requirements
                req = Requirement(pip_dep)
                reqs[canonicalize_name(req.name)] = req.specifier
        else:
            name, spec = conda_requirement(str(dep))
            reqs[name] = spec
    return reqs


def rule_blocks(text: str):
    """(name, body) of every `rule`/`checkpoint` in a .smk file."""
    heads = list(re.finditer(r"^(?:rule|checkpoint)\s+(\w+)\s*:", text, flags=re.M))
    for head, nxt in zip(heads, heads[1:] + [None]):
        yield head.group(1), text[head.end(): nxt.start() if nxt else len(text)]


needs_envs = pytest.mark.skipif(not ENV_FILES, reason="no envs/*.yaml in this checkout yet")


@needs_envs
@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_lower_bounds_equal_pyproject(env_file):
    project = pyproject_requirements()
    env = env_requirements(env_file)
    disagree = []
    for name, env_spec in env.items():
        if name not in project:
            continue
        want, have = lower_bound(project[name]), lower_bound(env_spec)
        exact = any(s.operator in ("==", "===") and "*" not in s.version for s in env_spec)
        if exact:
            # an exact pin (a lock) agrees when pyproject.toml allows the pinned version
            if not project[name].contains(have, prereleases=True):
                disagree.append(f"{name}: {env_file.name} pins {env_spec}, outside "
                                f"pyproject.toml's {project[name]}")
        elif want != have:
            disagree.append(f"{name}: pyproject.toml {project[name] or 'any'} vs "
                            f"{env_file.name} {env_spec or 'any'}")
    assert not disagree, "envs and pyproject.toml disagree:\n" + "\n".join(disagree)


@needs_envs
def test_envs_cover_every_dependency():
    project = pyproject_requirements()
    covered = set().union(*(env_requirements(p) for p in ENV_FILES))
    missing = sorted(set(project) - DRIVER_ONLY - covered)
    assert not missing, f"pyproject.toml requires {missing}, but no envs/*.yaml installs them"


@needs_envs
def test_every_rule_has_a_conda_env():
    missing, dangling = [], []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, body in rule_blocks(smk.read_text()):
            if not re.search(r"^\s+(script|shell|notebook|wrapper)\s*:", body, flags=re.M):
                continue  # a rule with only input (a target list) or `run:` runs no environment
            conda = re.search(r"^\s+conda\s*:\s*\n?\s*[\"']([^\"']+)[\"']", body, flags=re.M)
            if conda is None:
                missing.append(f"{smk.name}: rule {name}")
            elif not (smk.parent / conda.group(1)).resolve().is_file():
                dangling.append(f"{smk.name}: rule {name} -> {conda.group(1)}")
    assert not missing, "rules without a conda: env:\n" + "\n".join(missing)
    assert not dangling, "conda: envs that do not exist:\n" + "\n".join(dangling)


@pytest.mark.parametrize("entry, name, bound", [
    ("numpy>=1.26", "numpy", "1.26"),
    ("numpy =1.26.4", "numpy", "1.26.4"),
    ("numpy 1.26.*", "numpy", "1.26"),
    ("conda-forge::pytorch=2.4.1=cpu_py311", "torch", "2.4.1"),
    ("matplotlib-base >=3.8,<4", "matplotlib", "3.8"),
    ("scikit-learn==1.4.2", "scikit-learn", "1.4.2"),
    ("PyYAML", "pyyaml", None),
])
def test_conda_requirement_parsing(entry, name, bound):
    parsed_name, spec = conda_requirement(entry)
    assert parsed_name == name
    assert lower_bound(spec) == (Version(bound) if bound else None)
