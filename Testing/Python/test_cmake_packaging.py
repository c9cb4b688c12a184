"""The Slicer extension's CMake files list every file the packaged extension needs.

Slicer's build copies only the files named in CMake into the extension package. A Python file of ``RenderFM/`` or
``RenderFMLib/`` (subpackages included), or a resource under ``Resources/`` or ``RenderFM/Resources/``, that is
missing from the lists would be missing from the package that users install. These tests

* compare the lists in ``CMakeLists.txt`` and ``RenderFM/CMakeLists.txt`` with the files in the tree, and
* configure the real top-level ``CMakeLists.txt`` with CMake against a stand-in Slicer whose macros copy files
  the way CTK's ``ctkMacroCompilePythonScript`` does, then check the resulting tree is exactly the expected
  ``qt-scripted-modules`` layout and that ``RenderFMLib`` imports from it and finds its ``Resources``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTED = "lib/Slicer-5.10/qt-scripted-modules"


def cmake_lists(path: Path) -> dict[str, list[str]]:
    """Every ``set(NAME item item ...)`` of a CMake file, with ``${MODULE_NAME}`` expanded."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    values: dict[str, list[str]] = {}
    for name, body in re.findall(r"\bset\(\s*([A-Za-z_][A-Za-z0-9_]*)\s+([^)]*)\)", text):
        items = [item.strip('"') for item in body.split()]
        values[name] = items
    module = values.get("MODULE_NAME", [""])[0]
    return {k: [v.replace("${MODULE_NAME}", module) for v in items] for k, items in values.items()}


def files_under(folder: Path, suffix: str | None = None) -> list[str]:
    """Files below ``folder`` relative to ``folder.parent``'s repository root, without caches."""
    out = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        if suffix and path.suffix != suffix:
            continue
        out.append(path)
    return out


def expected_lists() -> dict[str, list[str]]:
    """What each CMake list must hold, computed from the files present in the repository."""
    module_dir = REPO / "RenderFM"
    return {
        "MODULE_PYTHON_SCRIPTS": [p.relative_to(module_dir).as_posix() for p in module_dir.glob("*.py")],
        "MODULE_PYTHON_RESOURCES": [p.relative_to(module_dir).as_posix()
                                    for p in files_under(module_dir / "Resources")],
        "RENDERFM_LIB_PYTHON_SCRIPTS": [p.relative_to(REPO).as_posix()
                                        for p in files_under(REPO / "RenderFMLib", ".py")],
        "RENDERFM_LIB_PYTHON_RESOURCES": [p.relative_to(REPO).as_posix() for p in files_under(REPO / "Resources")],
    }


def test_every_file_is_listed_in_cmake():
    listed = {**cmake_lists(REPO / "RenderFM" / "CMakeLists.txt"), **cmake_lists(REPO / "CMakeLists.txt")}
    problems = []
    for name, expected in expected_lists().items():
        have = listed.get(name)
        if have is None:
            problems.append(f"{name} is not set in CMake")
            continue
        duplicates = sorted({item for item in have if have.count(item) > 1})
        missing = sorted(set(expected) - set(have))
        stale = sorted(set(have) - set(expected))
        if duplicates:
            problems.append(f"{name} lists these twice: {duplicates}")
        if missing:
            problems.append(f"{name} lacks (the package would miss them):\n    " + "\n    ".join(missing))
        if stale:
            problems.append(f"{name} names files that do not exist (CMake would fail):\n    " + "\n    ".join(stale))
    assert not problems, "CMake file lists are out of date:\n" + "\n".join(problems)


def test_resources_include_module_ui_and_icon():
    resources = cmake_lists(REPO / "RenderFM" / "CMakeLists.txt")["MODULE_PYTHON_RESOURCES"]
    assert "Resources/UI/RenderFM.ui" in resources
    assert "Resources/Icons/RenderFM.png" in resources
    assert (REPO / "RenderFM" / "Resources" / "Icons" / "RenderFM.png").stat().st_size > 100


def test_extension_metadata():
    top = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(RenderFM\)", top, re.M)
    assert 'set(EXTENSION_CATEGORY "Rendering")' in top
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', top)
    assert "add_subdirectory(RenderFM)" in top
    module = (REPO / "RenderFM" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in module
    entry = json.loads((REPO / "docs" / "RenderFM.json").read_text())
    assert entry["category"] == "Rendering"
    assert "PyTorch" in entry["build_dependencies"]
    assert entry["scm_url"].startswith("https://")
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text


# ---- a real CMake configure against a stand-in Slicer ---------------------------------------------------------
FAKE_SLICER_CONFIG = """
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "@SCRIPTED@")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "@SCRIPTED@")
set(Slicer_FOUND TRUE)
"""

# Copy rules of CTK's ctkMacroCompilePythonScript: a script or resource FILE (relative) is read from
# SOURCE_DIR/FILE (older CTK: resources from CMAKE_CURRENT_SOURCE_DIR/FILE) and written to DESTINATION_DIR/FILE.
# Slicer's slicerMacroBuildScriptedModule fails on nonexistent files and copies into the qt-scripted-modules dir.
FAKE_USE_SLICER = r"""
function(_fake_copy kind src_dir dest_dir)
  foreach(file IN LISTS ARGN)
    if(kind STREQUAL "script" AND NOT file MATCHES "\\.py$")
      set(file "${file}.py")
    endif()
    if(IS_ABSOLUTE "${file}" OR file MATCHES "(^|/)\\.\\.(/|$)")
      message(FATAL_ERROR "${kind} '${file}' is not a path below its source folder: it would be copied outside "
                          "the package")
    endif()
    if(NOT EXISTS "${src_dir}/${file}")
      message(FATAL_ERROR "given nonexistent file '${file}' (looked in ${src_dir})")
    endif()
    configure_file("${src_dir}/${file}" "${dest_dir}/${file}" COPYONLY)
    file(APPEND "${CMAKE_BINARY_DIR}/manifest.txt" "${kind}|${src_dir}/${file}|${dest_dir}/${file}\n")
  endforeach()
endfunction()

macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET"
    "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(var TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${var})
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${var} is mandatory")
    endif()
  endforeach()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  get_filename_component(_src "${MY_SOURCE_DIR}" REALPATH)
  get_filename_component(_cur "${CMAKE_CURRENT_SOURCE_DIR}" REALPATH)
  if(MY_RESOURCES AND NOT _src STREQUAL _cur)
    message(FATAL_ERROR "RESOURCES with a SOURCE_DIR other than the current source folder break on older CTK")
  endif()
  _fake_copy(script "${MY_SOURCE_DIR}" "${MY_DESTINATION_DIR}" ${MY_SCRIPTS})
  _fake_copy(resource "${MY_SOURCE_DIR}" "${MY_DESTINATION_DIR}" ${MY_RESOURCES})
endmacro()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR)
endmacro()

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest: no script ${MY_SCRIPT}")
  endif()
  file(APPEND "${CMAKE_BINARY_DIR}/manifest.txt" "test|${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}|\n")
endfunction()
"""


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    """Configure the repository with CMake against the stand-in Slicer; returns the qt-scripted-modules folder."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    root = tmp_path_factory.mktemp("cmake")
    fake = root / "FakeSlicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(FAKE_SLICER_CONFIG.replace("@SCRIPTED@", SCRIPTED))
    (fake / "UseSlicer.cmake").write_text(FAKE_USE_SLICER)
    (fake / "Empty.cmake").write_text("")
    build = root / "build"
    result = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={fake}", "-DBUILD_TESTING=ON",
                             "-DCMAKE_C_COMPILER_WORKS=1", "-DCMAKE_CXX_COMPILER_WORKS=1"],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and re.search(r"No CMAKE_(C|CXX)_COMPILER could be found", result.stderr):
        pytest.skip("no C/C++ compiler for CMake's project() on this machine")
    assert result.returncode == 0, f"CMake configure failed:\n{result.stdout}\n{result.stderr}"
    return build / SCRIPTED


def test_cmake_configure_produces_the_extension_layout(packaged):
    got = {p.relative_to(packaged).as_posix() for p in packaged.rglob("*") if p.is_file()}
    expected = {"RenderFM.py"}
    expected |= {p.relative_to(REPO / "RenderFM").as_posix() for p in files_under(REPO / "RenderFM" / "Resources")}
    expected |= {p.relative_to(REPO).as_posix() for p in files_under(REPO / "RenderFMLib", ".py")}
    expected |= {p.relative_to(REPO).as_posix() for p in files_under(REPO / "Resources")}
    assert got == expected, (f"packaged but not in the tree: {sorted(got - expected)}; "
                             f"in the tree but not packaged: {sorted(expected - got)}")
    manifest = (packaged.parents[2] / "manifest.txt").read_text().splitlines()
    assert any(line.startswith("test|") and line.split("|")[1].endswith("RenderFM/RenderFM.py") for line in manifest)


def test_packaged_library_imports_and_finds_its_resources(packaged):
    code = (
        "import importlib.util, pkgutil, sys\n"
        f"sys.path.insert(0, {str(packaged)!r})\n"
        "import RenderFMLib\n"
        "from RenderFMLib.resources import resources_dir\n"
        f"assert RenderFMLib.__file__.startswith({str(packaged)!r}), RenderFMLib.__file__\n"
        "where = resources_dir()\n"
        f"assert str(where).startswith({str(packaged)!r}), where\n"
        "assert (where / 'UI' / 'RenderFM.ui').is_file() and (where / 'presets').is_dir()\n"
        "names = [m.name for m in pkgutil.walk_packages(RenderFMLib.__path__, 'RenderFMLib.')]\n"
        "missing = [n for n in names if importlib.util.find_spec(n) is None]\n"
        "assert not missing, missing\n"
        "print(len(names))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RENDERFM_RESOURCES"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=packaged, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= len(files_under(REPO / "RenderFMLib", ".py")) - 1


def write_lists() -> None:
    """Rewrite the four file lists in the CMake files from the tree (run this file with ``--write``)."""
    module_dir = REPO / "RenderFM"
    targets = {REPO / "RenderFM" / "CMakeLists.txt": ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"),
               REPO / "CMakeLists.txt": ("RENDERFM_LIB_PYTHON_SCRIPTS", "RENDERFM_LIB_PYTHON_RESOURCES")}
    lists = expected_lists()
    for path, names in targets.items():
        text = path.read_text()
        for name in names:
            items = lists[name]
            if path.parent == module_dir:
                items = [item.replace("RenderFM.", "${MODULE_NAME}.") for item in items]
            block = f"set({name}\n" + "".join(f"  {item}\n" for item in items) + "  )"
            text, count = re.subn(rf"set\({name}\n.*?\n  \)", lambda _, new=block: new, text, flags=re.S)
            if count != 1:
                raise SystemExit(f"{path}: cannot find the set({name} ...) block to rewrite")
        path.write_text(text)
        print(f"updated {path.relative_to(REPO)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python Testing/Python/test_cmake_packaging.py --write   (re-sync the CMake lists)")
    write_lists()
