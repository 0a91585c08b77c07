"""pyproject's dependencies, requirements.txt, constraints.txt and the repository URL agree."""

from __future__ import annotations

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from tests.train_helpers import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    # PEP 503 normalised distribution name of a requirement line.
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[;\s]", requirement.strip())[0]).lower()


def _requirement_lines(path):
    return [line for line in (REPO / path).read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]


def test_requirements_txt_lists_the_base_dependencies_and_the_train_and_tfds_extras():
    extras = PROJECT["optional-dependencies"]
    declared = {_name(d) for d in [*PROJECT["dependencies"], *extras["train"], *extras["tfds"]]}
    assert {_name(line) for line in _requirement_lines("requirements.txt")} == declared
    assert extras["core"] == []  # the core extra is the base dependencies


def test_the_core_extra_never_caps_a_version():
    # An upper bound would make pip downgrade a newer jax (Colab's) to install the notebook.
    for requirement in PROJECT["dependencies"]:
        assert "<" not in requirement, requirement


def test_constraints_pin_every_requirement_and_leave_the_package_out():
    pins = {}
    for line in _requirement_lines("constraints.txt"):
        assert "==" in line, line
        pins[_name(line)] = line
    assert "softlabel-ood" not in pins
    wanted = [*_requirement_lines("requirements.txt"), *_requirement_lines("requirements-dev.txt")]
    for line in wanted:
        assert _name(line) in pins, f"constraints.txt does not pin {_name(line)}"


def test_one_repository_url_everywhere():
    url = PROJECT["urls"]["Repository"]
    assert url.startswith("https://github.com/")
    citation = (REPO / "CITATION.cff").read_text()
    assert f'repository-code: "{url}"' in citation
    for path in ("README.md", "docs/reproduction.md", "notebooks/explore_results.ipynb"):
        text = (REPO / path).read_text()
        assert url in text, path
        others = set(re.findall(r"https://github\.com/[\w.-]+/softlabel_ood", text)) - {url}
        assert not others, (path, others)
