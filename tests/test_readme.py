"""The README's tour runs as written: its Python blocks, and its shell lines that call finerank
(run from a folder where ``tests/data`` is the repository's, so nothing is written into the clone)."""

import re
import shlex
from pathlib import Path

import pytest

from finerank.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_readmes_python_runs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    (code,) = blocks("python")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[-1] == "car-1"  # the answer, where BM25 put an insurance page first
    assert printed[-2:] == ["Reward a puppy with a treat the moment it sits.", "one red apple"]


def test_the_readmes_tour_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    setup, tour = blocks("bash")
    assert setup.startswith("pip install torch==2.13.0")  # the two set-up lines stay first
    lines = [shlex.split(line, comments=True) for line in tour.splitlines() if line.startswith("finerank ")]
    assert len(lines) == 5
    for words in lines:
        assert main(["-q", *words[1:]]) == 0, words
        printed = capsys.readouterr().out
        assert printed.strip(), words
    assert "car-1" in printed or "ndcg@10" in printed.lower()


@pytest.mark.parametrize("link", re.findall(r"\]\((docs/[^)#]+)", README))
def test_the_readmes_links_lead_somewhere(link):
    assert (ROOT / link).is_file()
