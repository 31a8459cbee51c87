"""Ranges in pyproject.toml, exact pins in requirements/constraints.txt and environment.yml.

pyproject.toml must not force a user's environment onto our versions (ranges, no `==`); the
pins are what the tests run with, the same in both pin files, and inside every range.
"""

from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    p = project()
    return [Requirement(r) for r in p["dependencies"]] + \
        [Requirement(r) for extra in p["optional-dependencies"].values() for r in extra]


def pins(lines) -> dict[str, str]:
    """name -> exact version of `name==version` lines (anything else is an error)."""
    out = {}
    for line in lines:
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{line!r}: a pin file holds exact versions only"
        out[canonicalize_name(req.name)] = spec.version
    return out


def constraint_pins() -> dict[str, str]:
    text = (ROOT / "requirements" / "constraints.txt").read_text()
    return pins(x.strip() for x in text.splitlines() if x.strip() and not x.startswith("#"))


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))


def test_pyproject_states_ranges_not_pins():
    for req in declared():
        assert all(s.operator not in ("==", "===") for s in req.specifier), \
            f"{req}: pyproject.toml states ranges; pins belong in requirements/constraints.txt"
        assert any(s.operator == ">=" for s in req.specifier), f"{req}: no lower bound"


def test_environment_yml_pins_what_the_constraints_file_pins():
    assert environment_pins() == constraint_pins()


def test_every_requirement_is_pinned_inside_its_range():
    pinned = constraint_pins()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name}: not pinned in requirements/constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"{req.name}=={pinned[name]} is outside pyproject.toml's {req.specifier}"


def test_torch_jupyterlab_and_plotly_are_not_capped():
    """An existing environment keeps its newer torch, JupyterLab and Plotly."""
    for req in declared():
        if canonicalize_name(req.name) in ("torch", "jupyterlab", "plotly"):
            assert all(s.operator == ">=" for s in req.specifier), str(req)


def test_make_installs_with_the_constraints_file():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c requirements/constraints.txt" in makefile


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make lab" in head and "make test" in head
