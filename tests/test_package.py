"""The package that `pip install .` builds: every module and data file of the source tree is in
the wheel, and an installed copy gives a working ``deflow`` command.

The expected contents are derived from the tree (``git ls-files`` of hw/, sw/, models/, sim/,
untracked files that git does not ignore included), so a new module or data file that
pyproject's package discovery or package-data misses fails here. The wheel is built from a copy
of exactly those files plus ``pyproject.toml`` and ``README.md`` (what a fresh clone has), with
``pip wheel --no-deps --no-build-isolation`` (setuptools from the project's venv, no network).

The installed check makes a bare virtualenv whose only extra path is the project venv's
site-packages (the dependencies, 1.8 GB, are not reinstalled), installs the wheel into it
without dependencies and runs its ``deflow`` console script outside the source tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE_ROOTS = ("hw", "sw", "models", "sim")
# board-side scripts: copied into the deploy folder and run on the board beside driver.py,
# not importable as part of the package
BOARD_SIDE = ("hw/boards/deploy/",)


def tree_files() -> list[str]:
    """Files of hw/, sw/, models/, sim/ as a clone has them: tracked plus untracked-not-ignored
    (paths relative to the repository root, '/'-separated). Caches and build outputs are
    ignored by .gitignore and so left out."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tree's file list comes from git")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z",
                          *PACKAGE_ROOTS], cwd=REPO, capture_output=True, check=True).stdout
    files = [f for f in out.decode().split("\0") if f]
    return sorted(f for f in files if (REPO / f).is_file())  # a deleted tracked file is gone


def module_name(path: str) -> str:
    """'sw/transforms/ops.py' -> 'sw.transforms.ops'; 'hw/__init__.py' -> 'hw'."""
    return path[:-3].replace("/", ".").removesuffix(".__init__")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the tree's files; return its path."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for f in tree_files() + ["pyproject.toml", "README.md"]:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "--quiet", "--wheel-dir", str(dist), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"pip wheel failed:\n{r.stdout}\n{r.stderr}"
    wheels = list(dist.glob("deflow-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = tree_files()
    assert any(f.endswith(".py") for f in expected) and "sim/native_tb.cpp" in expected
    missing = [f for f in expected if f not in names]
    assert not missing, f"in the tree but not in the wheel (pyproject's package discovery or " \
                        f"package-data misses them): {missing}"
    # and nothing from outside the four packages besides the wheel's metadata
    stray = sorted(n for n in names if n.split("/")[0] not in PACKAGE_ROOTS
                   and not n.startswith("deflow-"))
    assert not stray, stray


def test_wheel_entry_point_names_a_module_in_it(wheel):
    z = zipfile.ZipFile(wheel)
    ep = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = z.read(ep).decode()
    m = re.search(r"^deflow\s*=\s*([\w.]+):(\w+)$", text, re.M)
    assert m, text
    assert m.group(1).replace(".", "/") + ".py" in z.namelist(), m.group(1)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A bare venv with the wheel installed (no deps; the project venv's site-packages on its
    path for them). Returns the venv's bin folder."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: a plain path entry (its .pth files, among them the project's editable
    # install, are not processed), after the new venv's own site-packages
    (purelib / "zz_deflow_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the project's own editable deflow on that path is left alone
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                        "--ignore-installed", "--no-index", "--quiet", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"pip install failed:\n{r.stdout}\n{r.stderr}"
    return venv / "bin"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installed_modules_import_from_the_venv(installed, tmp_path):
    """Every module of the tree imports from the installed copy, not from the source tree."""
    mods = [module_name(f) for f in tree_files()
            if f.endswith(".py") and not f.startswith(BOARD_SIDE)]
    script = ("import importlib, sys\n"
              f"mods = {mods!r}\n"
              "bad = []\n"
              "for m in mods:\n"
              "    try:\n"
              "        mod = importlib.import_module(m)\n"
              f"        if not mod.__file__.startswith({str(installed.parent)!r}):\n"
              "            bad.append(f'{m}: imported from {mod.__file__}')\n"
              "    except Exception as exc:\n"
              "        bad.append(f'{m}: {type(exc).__name__}: {exc}')\n"
              "print('\\n'.join(bad))\n"
              "sys.exit(1 if bad else 0)\n")
    r = _run([str(installed / "python"), "-c", script], cwd=tmp_path)
    assert r.returncode == 0, f"modules that do not import from the installed package:\n{r.stdout}{r.stderr}"


def test_installed_deflow_command_and_subcommands_start(installed, tmp_path):
    """``deflow --help`` lists the subcommands; each one's ``--help`` works, and ``deflow
    compile`` runs up to its argument check (which imports the whole compiler) with one line."""
    deflow = str(installed / "deflow")
    r = _run([deflow, "--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # argparse lists each subcommand indented by four spaces under "positional arguments:"
    positional = r.stdout.split("positional arguments:")[1].split("\n\n")[0]
    subs = re.findall(r"^    ([a-z][\w-]*)", positional, re.M)
    assert {"compile", "demo", "simulate", "bitstream"} <= set(subs), subs
    for sub in subs:
        h = _run([deflow, sub, "--help"], cwd=tmp_path)
        assert h.returncode == 0 and h.stdout.startswith(f"usage: deflow {sub}"), (sub, h.stdout, h.stderr)
    c = _run([deflow, "compile", "missing.onnx", "--board", "ultra96v2", "--out", "x"], cwd=tmp_path)
    assert c.returncode == 2, (c.stdout, c.stderr)
    lines = c.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deflow:") and "missing.onnx" in lines[0], c.stderr
    assert not (tmp_path / "x").exists()


def test_installed_data_files_sit_beside_their_modules(installed, tmp_path):
    """The code finds its data files relative to its own modules (``Path(__file__)``): the
    native testbench source, folding configs, the shipped checkpoints, the deploy folder. Each
    non-Python file of the tree is at the same place relative to the installed packages."""
    data = [f for f in tree_files() if not f.endswith(".py")]
    assert "models/checkpoints/small_w4a8.pt" in data and "sim/native_tb.cpp" in data, data
    script = ("import importlib, sys\n"
              "from pathlib import Path\n"
              "root = Path(importlib.import_module('sw').__file__).resolve().parent.parent\n"
              f"missing = [f for f in {data!r} if not (root / f).is_file()]\n"
              "print(root, missing)\n"
              "sys.exit(1 if missing else 0)\n")
    r = _run([str(installed / "python"), "-c", script], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(str(installed.parent)), r.stdout


# ---- the documents a clone ships -----------------------------------------------------------

DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
#: a path inside the project written in backticks or as a link target: `sw/flows/cli.py`, `hw/boards/`
_PATH_RE = re.compile(r"(?:`|\]\()((?:hw|sw|models|sim|tests|docs)/[\w./-]*?)(?:[`)#]|:\w)")


def test_readme_is_a_guide_of_at_most_200_lines():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    head = "\n".join(lines[:40])
    assert "What is not real yet" in head and "Vivado" in head


def _exists(path: str) -> bool:
    """A file or folder of the tree; ``sw/execute.run_graph`` (module.name) names sw/compiler/execute.py."""
    if (REPO / path.rstrip("/")).exists():
        return True
    stem, _, name = path.rpartition("/")[2].partition(".")
    return bool(name) and name not in _EXTENSIONS and \
        (REPO / path.rpartition("/")[0] / f"{stem}.py").is_file()


_EXTENSIONS = {"py", "md", "json", "cpp", "pt", "onnx", "v", "txt", "png", "npy", "toml"}


@pytest.mark.parametrize("doc", DOCS)
def test_doc_paths_exist(doc):
    """Every project path a document names (in backticks or as a link) exists in the tree, and
    links to other documents resolve."""
    text = (REPO / doc).read_text()
    named = set(_PATH_RE.findall(text))
    for target in re.findall(r"\]\(([\w./-]+\.md)\)", text):  # relative links between docs
        named.add(str((REPO / doc).parent.joinpath(target).resolve().relative_to(REPO)))
    missing = sorted(p for p in named if "*" not in p and not _exists(p))
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_nothing_points_outside_the_repository():
    """No file of the project refers to design notes outside the clone (../shared/...); the VOC
    folder's runtime default is the one allowed mention of a sibling folder."""
    out = subprocess.run(["git", "grep", "-n", "-I", "-E", r"DESIGN\.md|\.\./shared/", "--",
                          ".", ":!tests/test_package.py"], cwd=REPO, capture_output=True, text=True)
    bad = [line for line in out.stdout.splitlines() if "voc2012-subset" not in line]
    assert not bad, bad


def test_every_imported_library_is_a_declared_dependency():
    """Each third-party module the package imports (board-side scripts aside) comes from a
    distribution pyproject.toml lists, or from finn-plus, which `make setup` installs with
    --no-deps (its pins cannot resolve beside torch 2.13)."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    declared.add("finn-plus")
    dists = packages_distributions()
    imported = set()
    for f in tree_files():
        if f.endswith(".py") and not f.startswith(BOARD_SIDE):
            for node in ast.walk(ast.parse((REPO / f).read_text())):
                if isinstance(node, ast.Import):
                    imported.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third = imported - set(sys.stdlib_module_names) - set(PACKAGE_ROOTS)
    undeclared = {m: dists.get(m) for m in sorted(third)
                  if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & declared}
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    """The README's Python example (Brevitas model -> QONNX -> deflow compile -> native RTL run)
    runs as written and prints what the README says it prints."""
    text = (REPO / "README.md").read_text()
    section = text.split("## From a Brevitas model to Verilog and an RTL run")[1].split("\n## ")[0]
    block = re.search(r"\n\n((?:    .*\n|\n)+)", section).group(1)
    code = "\n".join(line[4:] for line in block.splitlines())
    claimed = re.search(r"ends with `([^`]+)`", section).group(1)
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "largest difference 0 output LSB, 100.00% of 20,480 values identical" in r.stdout, r.stdout
    assert r.stdout.strip().splitlines()[-1] == claimed, r.stdout[-2000:]
    assert (tmp_path / "build" / "tiny" / "deflow_top.v").is_file()
