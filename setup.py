"""The package layout of the winnow distribution; everything else is in pyproject.toml.

The repository keeps its top-level folders (``protos/ services/ shared/``), but the installed
distribution claims one import name, ``winnow``: each folder is mapped under it.

    winnow/    -> winnow            (the application and operations tooling)
    shared/    -> winnow.shared     (the library)
    services/  -> winnow.services   (one package per stage)
    protos/    -> winnow.protos     (the .proto sources and their generated code)

pyproject's ``[tool.setuptools.packages.find]`` names packages after their folders and cannot
map a folder under another name, hence this file: ``find_packages`` per folder, prefixed. A new
subpackage is picked up without editing anything here. ``tests/infra/test_distribution.py``
checks that the wheel's only top-level name is ``winnow``.
"""

from setuptools import find_packages, setup

#: import name -> folder, relative to the repository root
PACKAGE_DIRS = {
    "winnow": "winnow",
    "winnow.shared": "shared",
    "winnow.services": "services",
    "winnow.protos": "protos",
}


def packages() -> list[str]:
    found = []
    for name, folder in PACKAGE_DIRS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder)]
    return sorted(set(found))


setup(package_dir=PACKAGE_DIRS, packages=packages())
