"""Split requirements.lock for one image variant: the packages to sync, and the torch wheels.

    python docker/lock_variant.py cpu  requirements.lock BASE.txt TORCH.txt
    python docker/lock_variant.py cuda requirements.lock BASE.txt TORCH.txt

``cuda``: BASE is the lock unchanged (PyPI's Linux torch wheels carry their CUDA runtime in the
``nvidia-*`` packages) and TORCH is empty.

``cpu``: the same versions from PyTorch's CPU index. BASE is the lock without ``torch``,
``torchvision`` and the CUDA-only packages (``nvidia-*``, ``cuda-*``, ``triton``), and TORCH pins
``torch==X+cpu`` and ``torchvision==Y+cpu`` at the lock's own versions. A CUDA-only package is
dropped only when the lock says nothing but torch needs it (its ``# via`` lines, followed to the
top); otherwise this fails, because dropping it would break the lock.

Standard library only: it runs in the image's builder stage before anything is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TORCH_PACKAGES = ("torch", "torchvision")
CUDA_ONLY = re.compile(r"^(nvidia-.+|cuda-.+|triton)$")
CPU_LOCAL_VERSION = "cpu"  # PyTorch's CPU index: torch==2.x.y+cpu
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)")


class LockError(ValueError):
    """The lock cannot be split for this variant."""


def parse_lock(text: str) -> dict[str, tuple[str, set[str]]]:
    """``name -> (version, names it is required by)`` from uv's ``pip compile`` output."""
    packages: dict[str, tuple[str, set[str]]] = {}
    current = None
    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            current = pin.group(1).lower()
            packages[current] = (pin.group(2), set())
            continue
        via = _VIA.match(line)
        if current and via and via.group(1) != "via":
            packages[current][1].add(via.group(1).lower())
    return packages


def needed_only_by(packages: dict[str, tuple[str, set[str]]], name: str, roots: tuple[str, ...]) -> bool:
    """Whether every chain of ``# via`` from ``name`` to the top passes through one of ``roots``."""
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        required_by = packages.get(current, ("", set()))[1]
        if not required_by:  # the project itself, or a package nobody is recorded to need
            return False
        for parent in required_by:
            if parent in roots:
                continue
            if parent not in packages:  # "winnow (pyproject.toml)", "-r requirements..."
                return False
            pending.append(parent)
    return True


def split(text: str, variant: str) -> tuple[str, str]:
    """The (BASE, TORCH) requirement texts for ``variant``."""
    if variant == "cuda":
        return text, ""
    if variant != "cpu":
        raise LockError(f"unknown variant {variant!r}: cpu or cuda")
    packages = parse_lock(text)
    missing = [name for name in TORCH_PACKAGES if name not in packages]
    if missing:
        raise LockError(f"the lock pins no {', '.join(missing)}")
    cuda_only = sorted(name for name in packages if CUDA_ONLY.match(name))
    needed_elsewhere = [name for name in cuda_only if not needed_only_by(packages, name, TORCH_PACKAGES)]
    if needed_elsewhere:
        raise LockError(f"{', '.join(needed_elsewhere)} would be dropped for the CPU torch wheels, "
                        "but the lock says something besides torch needs them")
    dropped = set(cuda_only) | set(TORCH_PACKAGES)
    kept, dropping = [], False
    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            dropping = pin.group(1).lower() in dropped
        elif not line.startswith((" ", "\t")):
            dropping = False
        if not dropping:  # a dropped pin goes with its "# via" lines
            kept.append(line)
    torch = [f"{name}=={packages[name][0].split('+')[0]}+{CPU_LOCAL_VERSION}" for name in TORCH_PACKAGES]
    return "\n".join(kept) + "\n", "\n".join(torch) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    variant, lock, base_out, torch_out = argv
    try:
        base, torch = split(Path(lock).read_text(), variant)
    except LockError as exc:
        sys.stderr.write(f"lock_variant: {exc}\n")
        return 1
    Path(base_out).write_text(base)
    Path(torch_out).write_text(torch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
