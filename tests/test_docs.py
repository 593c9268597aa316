"""Every `vsyn` command the READMEs show in a bash block parses with the CLI as it is: a renamed sub-command or
option shows up here, not in a user's terminal. (Running them needs datasets and clusters; the commands' behaviour
is tested where each part is.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vsyn.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "shards/README.md", "slurm/README.md", "serve/README.md", "docs/contracts.md"]
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def doc_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for block in BASH_BLOCK.findall((REPO / doc).read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):  # VAR=value prefixes
                    tokens.pop(0)
                if tokens[:1] == ["vsyn"]:
                    found.append((doc, tokens[1:]))
                elif "-m" in tokens and tokens[tokens.index("-m") + 1: tokens.index("-m") + 2] == ["vsyn"]:
                    found.append((doc, tokens[tokens.index("-m") + 2:]))  # accelerate launch ... -m vsyn ...
    return found


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30 and {doc for doc, _ in COMMANDS} >= {"README.md", "shards/README.md",
                                                                     "slurm/README.md", "serve/README.md"}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("doc, argv", COMMANDS, ids=[f"{d}: {' '.join(a)}"[:90] for d, a in COMMANDS])
def test_doc_command_parses(parser, doc, argv):
    args = parser.parse_args(argv)  # argparse exits (SystemExit 2) on an unknown sub-command or option
    assert callable(getattr(args, "func", None)), f"{doc}: 'vsyn {' '.join(argv)}' names no command"
