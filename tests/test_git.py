"""hubploy.git against real repositories built in the test (tests/helpers/gitrepo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepo import Repo, git_env, init_repo

from hubploy.errors import GitError
from hubploy.git import (
    candidate_tags,
    changed_files,
    commit_exists,
    commit_messages,
    head_sha,
    image_tag,
    path_changed,
    shortest_alpha_prefix,
    uncommitted_changes,
)

IMAGE = "deployments/hub/image"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = init_repo(tmp_path / "repo")
    repo.commit(
        {f"{IMAGE}/Dockerfile": "FROM scratch\n", "deployments/hub/config/common.yaml": "a: 1\n"}, "initial"
    )
    return repo


@pytest.mark.parametrize(
    ("sha", "expected"),
    [
        ("abcdef0123456789abcdef0123456789abcdef01", "abcdef0"),
        ("123456a789abcdef0123456789abcdef01234567", "123456a"),
        ("1234567a89abcdef0123456789abcdef01234567", "1234567a"),
        ("1234567890a2cdef0123456789abcdef01234567", "1234567890a"),
        ("12e4567890123456789012345678901234567890", "12e4567"),
        ("1234567890123456789012345678901234567890", "1234567890123456789012345678901234567890"),
    ],
)
def test_shortest_alpha_prefix(sha: str, expected: str) -> None:
    assert shortest_alpha_prefix(sha) == expected


def test_image_tag_is_last_commit_touching_the_image_dir(repo: Repo) -> None:
    first = repo.head()
    tag = image_tag(repo.root, IMAGE, env=git_env())
    assert tag == shortest_alpha_prefix(first)
    assert len(tag) >= 7 and any(c.isalpha() for c in tag) and first.startswith(tag)

    # Commits elsewhere do not move the tag; absolute paths work as well as relative ones.
    repo.commit({"deployments/hub/config/common.yaml": "a: 2\n"}, "config only")
    repo.commit({"README.md": "hi\n"}, "docs")
    assert image_tag(repo.root, IMAGE) == tag
    assert image_tag(repo.root, repo.root / IMAGE) == tag

    # A change in the image dir does.
    changed = repo.commit({f"{IMAGE}/environment.yml": "dependencies: []\n"}, "image change")
    assert image_tag(repo.root, IMAGE) == shortest_alpha_prefix(changed) != tag


def test_image_tag_extends_an_all_digit_prefix_on_a_real_repo(repo: Repo) -> None:
    # Commit into the image dir until a SHA's first 7 characters are all digits (p = (10/16)^7 per
    # commit); commits are deterministic, so this takes the same number of steps on every run.
    for i in range(2000):
        sha = repo.commit({f"{IMAGE}/counter": f"{i}\n"}, f"bump {i}")
        if sha[:7].isdigit():
            break
    else:
        pytest.fail("no all-digit 7-character SHA prefix found")
    tag = image_tag(repo.root, IMAGE)
    assert len(tag) > 7 and tag[-1].isalpha() and tag[:-1].isdigit() and sha.startswith(tag)


def test_dirty_image_dir_is_reported_not_tagged(repo: Repo) -> None:
    clean = image_tag(repo.root, IMAGE)
    repo.write(
        {
            f"{IMAGE}/Dockerfile": "FROM busybox\n",
            f"{IMAGE}/new-file.txt": "x\n",
            "deployments/hub/config/common.yaml": "a: 3\n",
        }
    )
    assert uncommitted_changes(repo.root, IMAGE) == [f"{IMAGE}/Dockerfile", f"{IMAGE}/new-file.txt"]
    with pytest.raises(GitError) as err:
        image_tag(repo.root, IMAGE)
    assert "uncommitted changes" in err.value.message
    assert f"{IMAGE}/Dockerfile" in err.value.message and f"{IMAGE}/new-file.txt" in err.value.message
    assert "commit" in (err.value.hint or "")
    assert image_tag(repo.root, IMAGE, allow_dirty=True) == clean

    # Staged changes and deletions count too.
    repo.git("add", f"{IMAGE}/new-file.txt")
    repo.git("checkout", "--", f"{IMAGE}/Dockerfile")
    assert uncommitted_changes(repo.root, IMAGE) == [f"{IMAGE}/new-file.txt"]
    repo.git("reset", "-q")
    (repo.root / IMAGE / "new-file.txt").unlink()
    (repo.root / IMAGE / "Dockerfile").unlink()
    assert uncommitted_changes(repo.root, IMAGE) == [f"{IMAGE}/Dockerfile"]


def test_ignored_files_are_not_dirty(repo: Repo) -> None:
    repo.commit({".gitignore": "*.pyc\n"}, "ignore")
    repo.write({f"{IMAGE}/x.pyc": "junk"})
    assert uncommitted_changes(repo.root, IMAGE) == []


def test_image_dir_never_committed(repo: Repo) -> None:
    with pytest.raises(GitError, match="no commit touches"):
        image_tag(repo.root, "deployments/other/image")


def test_candidate_tags_are_older_commits_newest_first(repo: Repo) -> None:
    shas = [repo.head()]
    for i in range(4):
        shas.append(repo.commit({f"{IMAGE}/v": f"{i}\n"}, f"image {i}"))
        repo.commit({"README.md": f"{i}\n"}, f"docs {i}")
    expected = [shortest_alpha_prefix(s) for s in reversed(shas[:-1])]
    assert candidate_tags(repo.root, IMAGE) == expected
    assert candidate_tags(repo.root, IMAGE, n=3) == expected[:2]
    assert image_tag(repo.root, IMAGE) == shortest_alpha_prefix(shas[-1])


def test_candidate_tags_default_depth_is_15(repo: Repo) -> None:
    for i in range(20):
        repo.commit({f"{IMAGE}/v": f"{i}\n"}, f"image {i}")
    assert len(candidate_tags(repo.root, IMAGE)) == 14


def test_changed_files_and_path_changed(repo: Repo) -> None:
    base = repo.head()
    repo.commit({"deployments/hub/config/prod.yaml": "b: 1\n"}, "prod config")
    assert changed_files(repo.root, f"{base}...HEAD") == ["deployments/hub/config/prod.yaml"]
    assert not path_changed(repo.root, f"{base}...HEAD", IMAGE)
    assert path_changed(repo.root, f"{base}...HEAD", "deployments/hub")
    repo.commit({f"{IMAGE}/Dockerfile": "FROM busybox\n"}, "image")
    assert changed_files(repo.root, f"{base}..HEAD") == [
        "deployments/hub/config/prod.yaml",
        f"{IMAGE}/Dockerfile",
    ]
    assert path_changed(repo.root, f"{base}..HEAD", repo.root / IMAGE)


def test_range_across_branches(repo: Repo) -> None:
    base = repo.head()
    repo.checkout("feature", create=True)
    repo.commit({f"{IMAGE}/Dockerfile": "FROM busybox\n"}, "feature image")
    repo.checkout("main")
    repo.commit({"README.md": "main\n"}, "main docs")
    # Three dots: what the feature branch changed since it forked, as for a PR.
    assert changed_files(repo.root, "main...feature") == [f"{IMAGE}/Dockerfile"]
    merged = repo.merge("feature")
    assert path_changed(repo.root, f"{base}...{merged}", IMAGE)
    assert [s for _, s in commit_messages(repo.root, f"{base}..HEAD")] == [
        "merge",
        "main docs",
        "feature image",
    ]


def test_commit_exists_and_head(repo: Repo) -> None:
    sha = repo.head()
    assert head_sha(repo.root) == sha
    assert commit_exists(repo.root, sha)
    assert commit_exists(repo.root, sha[:10])
    assert not commit_exists(repo.root, "0" * 40)
    tree = repo.git("rev-parse", "HEAD^{tree}")
    assert not commit_exists(repo.root, tree)


def test_commit_messages(repo: Repo) -> None:
    base = repo.head()
    a = repo.commit({"a": "1"}, "first change")
    b = repo.commit({"b": "1"}, "second: with colon\tand tab")
    assert commit_messages(repo.root, f"{base}..HEAD") == [
        (b, "second: with colon\tand tab"),
        (a, "first change"),
    ]


def test_bad_range_is_a_git_error(repo: Repo) -> None:
    with pytest.raises(GitError, match="failed") as err:
        changed_files(repo.root, f"{'0' * 40}...HEAD")
    assert "shallow" in (err.value.hint or "")
    with pytest.raises(GitError, match="failed"):
        commit_messages(repo.root, "nosuchbranch..HEAD")
    with pytest.raises(GitError, match="invalid commit range"):
        changed_files(repo.root, "--output=/tmp/x")
    with pytest.raises(GitError, match="invalid commit"):
        commit_exists(repo.root, "-e")


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    env = git_env({"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    for call in (
        lambda: image_tag(plain, "image", env=env),
        lambda: head_sha(plain, env=env),
        lambda: changed_files(plain, "a...b", env=env),
        lambda: commit_exists(plain, "abc", env=env),
        lambda: uncommitted_changes(plain, ".", env=env),
    ):
        with pytest.raises(GitError, match="not inside a git work tree"):
            call()
    with pytest.raises(GitError, match="not a directory"):
        head_sha(tmp_path / "missing")


def test_empty_repository_has_no_head(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "empty")
    with pytest.raises(GitError):
        head_sha(repo.root, env=repo.env)


def test_repo_root_may_be_a_subdirectory_of_the_work_tree(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "project")
    sha = repo.commit({"examples/deploy/deployments/hub/image/Dockerfile": "FROM scratch\n"}, "example")
    root = repo.root / "examples" / "deploy"
    assert image_tag(root, "deployments/hub/image") == shortest_alpha_prefix(sha)
    (root / "deployments/hub/image/extra").write_text("x")
    assert uncommitted_changes(root, "deployments/hub/image") == [
        "examples/deploy/deployments/hub/image/extra"
    ]


def test_dirty_paths_with_spaces_and_renames(repo: Repo) -> None:
    repo.commit({f"{IMAGE}/old name.txt": "x\n"}, "file with a space")
    repo.git("mv", f"{IMAGE}/old name.txt", f"{IMAGE}/new name.txt")
    assert uncommitted_changes(repo.root, IMAGE) == [f"{IMAGE}/new name.txt", f"{IMAGE}/old name.txt"]
