"""Fail if the environment holds a pre-release (a, b, rc, dev) of anything kronos_exp pulls in.

Pip admits pre-releases of a package as soon as one requirement on it names one (the Hydra
plugins require ``hydra-core>=1.1.0.dev7``), so a fresh install can quietly get a release
candidate. This checks the installed versions of the direct dependencies of ``kronos_exp[dev]``
and of what those require directly (the plugins' hydra-core and omegaconf, say), and names
every pre-release. Deeper levels are left out: some libraries there only publish betas
(opentelemetry-semantic-conventions 0.x b-releases, pulled in by MLflow).

    python .ci/check_no_prereleases.py [extra ...]     # default extras: dev
"""
from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def requirements(dist: metadata.Distribution, extras: set[str]) -> list[Requirement]:
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def prereleases(root: str, extras: set[str], depth: int = 2) -> list[tuple[str, str, str]]:
    """(package, version, who requires it) for each pre-release within ``depth`` levels of
    ``root[extras]``'s requirements."""
    found, seen = [], set()
    todo = [(root, extras, "(root)", 0)]
    while todo:
        name, wanted, parent, level = todo.pop(0)  # breadth first: each package at its shallowest level
        key = canonicalize_name(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this platform or extra does not install
        if Version(dist.version).is_prerelease:
            found.append((dist.metadata["Name"], dist.version, parent))
        if level < depth:
            todo.extend((req.name, set(req.extras), dist.metadata["Name"], level + 1)
                        for req in requirements(dist, wanted))
    return found


def main(argv: list[str]) -> int:
    extras = set(argv) or {"dev"}
    found = prereleases("kronos_exp", extras)
    for name, version, parent in found:
        print(f"pre-release installed: {name} {version} (required by {parent})", file=sys.stderr)
    if found:
        print("pin these to final releases in pyproject.toml (e.g. an upper bound below the next release)",
              file=sys.stderr)
        return 1
    print(f"no pre-releases among the dependencies of kronos_exp[{','.join(sorted(extras))}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
