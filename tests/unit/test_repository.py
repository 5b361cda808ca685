"""What the repository itself holds: nothing committed may point outside it.

A committed link into /tmp (a bench's side environment) resolved on the machine that made it and
broke `ray up` (it hashes every file mount) and so `make test` on every fresh clone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tracked_links(repo: Path) -> dict[str, str]:
    """Every symbolic link git tracks in `repo`: its path → the target it was committed with."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-s", "-z"], capture_output=True, check=True).stdout
    links = {}
    for entry in filter(None, listed.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        if meta.split()[0] == b"120000":
            blob = meta.split()[1].decode()
            target = subprocess.run(["git", "-C", str(repo), "cat-file", "blob", blob], capture_output=True,
                                    check=True).stdout
            links[path.decode()] = target.decode()
    return links


def leaves_the_tree(repo: Path, path: str, target: str) -> bool:
    """True for a link target that is absolute or climbs out of the repository."""
    if os.path.isabs(target):
        return True
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


def test_no_committed_link_leaves_the_repository():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    outside = {p: t for p, t in tracked_links(REPO).items() if leaves_the_tree(REPO, p, t)}
    assert not outside, f"committed links that point outside the repository: {outside}"


@pytest.mark.parametrize("path, target, outside", [
    ("bench/.venv-evidently", "/tmp/evd/venv", True),
    ("bench/x", "../../elsewhere", True),
    ("bench/x", "../configs/serving.yaml", False),
    ("a/b/c", "../../d", False),
    ("x", "..", True),
])
def test_a_link_is_outside_when_absolute_or_climbing_out(path, target, outside):
    assert leaves_the_tree(REPO, path, target) is outside


def test_the_link_check_reads_what_git_tracks(tmp_path):
    """The check itself, on a repository that commits one link inside and one outside."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "inside").symlink_to("target.txt")
    (tmp_path / "outside").symlink_to("/tmp/somewhere")
    (tmp_path / "target.txt").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    links = tracked_links(tmp_path)
    assert links == {"inside": "target.txt", "outside": "/tmp/somewhere"}
    assert [p for p, t in links.items() if leaves_the_tree(tmp_path, p, t)] == ["outside"]
