"""The manual speaks of the product: no lab-notebook traces, and every relative link resolves.

Figures live in documentation/results.md; the other pages state rules. A page that mentions a working session,
a machine's load average or a commit hash describes how the project was made, not what samunet does, and goes
stale as soon as the code moves on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted((REPO / "documentation").glob("*.md")) + [REPO / "README.md"]

SESSION = re.compile(r"\bsessions?[ -]?[0-9]", re.IGNORECASE)
LOAD = re.compile(r"\bload average|\bload [0-9]+\.[0-9]", re.IGNORECASE)
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
HEX_TOKEN = re.compile(r"\b[0-9a-f]{7,40}\b", re.IGNORECASE)
# A checksum is reference content (which file to download), not a commit: it is named by its algorithm.
CHECKSUM_LABEL = re.compile(r"(md5|sha1|sha256|sha512|checksum)\W{0,3}$", re.IGNORECASE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def commit_hashes(text: str) -> list[str]:
    """Hex tokens of 7-40 characters that look like commit hashes (a digit and a letter a-f among them).

    Not counted: anything inside a URL, a token that is part of a file name or path (``sam_vit_b_01ec64.pth``,
    ``dir/abc1234``), and checksums named by their algorithm (``md5 `0b31...```).
    """
    found = []
    for line in text.splitlines():
        line = URL.sub(" ", line)
        for match in HEX_TOKEN.finditer(line):
            token = match.group(0)
            if not (re.search(r"[0-9]", token) and re.search(r"[a-f]", token, re.IGNORECASE)):
                continue
            before, after = line[: match.start()], line[match.end():]
            if before.endswith(("/", "_", "-", ".")) or re.match(r"[_-]|\.[A-Za-z]", after):
                continue
            if CHECKSUM_LABEL.search(before):
                continue
            found.append(token)
    return found


def problems_in(text: str) -> list[str]:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in ((SESSION, "a session"), (LOAD, "a load average")):
            match = pattern.search(line)
            if match:
                problems.append(f"line {number}: {what} ({match.group(0)!r})")
        for token in commit_hashes(line):
            problems.append(f"line {number}: a commit hash ({token!r})")
    return problems


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (lower case, punctuation dropped, spaces to hyphens)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor = github_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def broken_links(page: Path) -> list[str]:
    broken = []
    in_code = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # http(s), mailto: not checked offline
            path_part, _, anchor = target.partition("#")
            destination = (page.parent / path_part).resolve() if path_part else page
            if not destination.exists():
                broken.append(f"line {number}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors_of(destination):
                broken.append(f"line {number}: {target} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize(
    "text",
    [
        "fold 0 at commit 4f7fc98 reached 0.853",
        "trained at 1bda8b8's code.",
        "(ebcb57c: 2 variants)",
        "the full hash 0123456789abcdef0123456789abcdef01234567 as well",
    ],
)
def test_a_commit_hash_is_found(text):
    assert commit_hashes(text)


@pytest.mark.parametrize(
    "text",
    [
        "a decade of facade work, added and deduced",
        "`checkpoint_sha256` and `base_weights_sha256` fields; sha256 of the file",
        "https://github.com/example/repo/commit/4f7fc98 and https://dl.example.com/x_4b8939a.pth",
        "`sam_vit_b_01ec64.pth` and `sam_vit_h_4b8939.pth`",
        "size + md5 `0b3195507c641ddb6910d2bb5adee89c`",
        "260 cases, 1234567 voxels, lr 1e-3",
    ],
)
def test_legitimate_words_are_not_commit_hashes(text):
    assert commit_hashes(text) == []


def test_sessions_and_load_averages_are_found():
    assert problems_in("As session 16 measured") and problems_in("the session-17 bullet")
    assert problems_in("load average 0.39 at the start") and problems_in("(load 1.54 at the start)")
    assert problems_in("a working session of planning, loaded 3 files") == []


def test_anchors_follow_github():
    assert github_anchor("Probability smoothing (`samunet.evaluation.smoothing`)") == (
        "probability-smoothing-samunetevaluationsmoothing"
    )
    assert github_anchor("Regions (BraTS-style overlapping labels)") == "regions-brats-style-overlapping-labels"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_page_speaks_of_the_product(page):
    problems = problems_in(page.read_text(encoding="utf-8"))
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}:\n" + "\n".join(broken)
