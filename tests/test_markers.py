"""The ``real_data`` and ``requires_cuda`` markers (tests/conftest.py): skip with the fix, or fail when required.

Each test runs pytest in a subprocess on a small generated test file, with the course's hooks loaded
(``-p tests.conftest``), the shared data copies pointed at empty places, and CUDA's availability decided
by an environment variable of the generated conftest, so the outcome never depends on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests import helpers
from tests.helpers import REPO

GENERATED_TESTS = """
import pytest


@pytest.mark.real_data
def test_eurosat():
    pass


@pytest.mark.real_data("sst2")
def test_sst2():
    pass


@pytest.mark.real_data("eurosat", "sst2")
def test_both():
    pass


@pytest.mark.real_data("imagenet")
def test_unknown_data_set():
    pass


@pytest.mark.requires_cuda
def test_cuda():
    pass


@pytest.mark.requires_cuda
@pytest.mark.skipif(True, reason="the test's own skipif")
def test_cuda_with_its_own_skipif():
    pass


def test_unmarked():
    pass
"""

# The generated folder's conftest: the shared copies of the data live nowhere, and CUDA is "available"
# exactly when FAKE_CUDA=1 (the hook asks tests.helpers.cuda_available at run time).
GENERATED_CONFTEST = """
import os
from pathlib import Path

from tests import helpers

helpers.SHARED_ARCHIVE = Path(__file__).parent / "no-shared-archive.zip"
helpers.SHARED_SST2 = Path(__file__).parent / "no-shared-sst2"
helpers.cuda_available = lambda: os.environ.get("FAKE_CUDA") == "1"
"""


def run_generated(tmp_path: Path, **env: str) -> dict[str, tuple[str, str]]:
    """Run the generated tests with ``env``; ``{test name: (outcome, message)}`` from the JUnit report."""
    folder = tmp_path / "generated"
    folder.mkdir(exist_ok=True)
    (folder / "test_generated.py").write_text(GENERATED_TESTS)
    (folder / "conftest.py").write_text(GENERATED_CONFTEST)
    (folder / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers\nmarkers =\n    real_data\n    requires_cuda\n"
    )
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*.xml')))}.xml"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TL_", "PYTEST_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    base["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # nbval and friends are not needed here (2 s less per run)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest", "-q"]
        + ["-c", str(folder / "pytest.ini"), "--rootdir", str(folder), f"--junitxml={report}", str(folder)],
        cwd=folder,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.is_file(), proc.stdout + proc.stderr
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        found = [
            (child.tag, child.get("message", "")) for child in case if child.tag in ("skipped", "error", "failure")
        ]
        outcomes[case.get("name")] = found[0] if found else ("passed", "")
    assert len(outcomes) == 7, proc.stdout + proc.stderr
    return outcomes


def test_missing_data_and_gpu_skip_with_the_setting_to_make(tmp_path):
    outcomes = run_generated(tmp_path)
    kind, message = outcomes["test_eurosat"]
    assert kind == "skipped" and "TL_EUROSAT_ARCHIVE" in message and "no-shared-archive.zip" in message
    kind, message = outcomes["test_sst2"]
    assert kind == "skipped" and "TL_SST2_DIR" in message and "no-shared-sst2" in message
    assert outcomes["test_both"][0] == "skipped"
    kind, message = outcomes["test_cuda"]
    assert kind == "skipped" and "CUDA" in message
    assert outcomes["test_cuda_with_its_own_skipif"][0] == "skipped"
    assert outcomes["test_unmarked"] == ("passed", "")
    # a data set the marker does not know is a mistake in the test, never a skip
    kind, message = outcomes["test_unknown_data_set"]
    assert kind == "error" and "imagenet" in message and "eurosat" in message


def test_required_data_and_gpu_fail_instead_of_skipping(tmp_path):
    outcomes = run_generated(tmp_path, TL_REQUIRE_REAL_DATA="1", TL_REQUIRE_CUDA="1")
    for name, setting in (
        ("test_eurosat", "TL_EUROSAT_ARCHIVE"),
        ("test_sst2", "TL_SST2_DIR"),
        ("test_both", "TL_EUROSAT_ARCHIVE"),
    ):
        kind, message = outcomes[name]
        assert kind == "error" and setting in message and "TL_REQUIRE_REAL_DATA=1" in message, (name, kind, message)
    for name in ("test_cuda", "test_cuda_with_its_own_skipif"):  # the marker wins over a skipif
        kind, message = outcomes[name]
        assert kind == "error" and "CUDA" in message and "TL_REQUIRE_CUDA=1" in message, (name, kind, message)
    assert outcomes["test_unmarked"] == ("passed", "")


def test_required_settings_set_to_zero_still_skip(tmp_path):
    outcomes = run_generated(tmp_path, TL_REQUIRE_REAL_DATA="0", TL_REQUIRE_CUDA="0")
    assert outcomes["test_eurosat"][0] == outcomes["test_cuda"][0] == "skipped"


def test_present_data_and_gpu_run_the_tests(tmp_path):
    archive = tmp_path / "EuroSAT_RGB.zip"
    archive.write_bytes(b"")  # the marker only looks for the files; the tests themselves verify them
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (sst2 / name).write_text("label\tsentence\n")
    outcomes = run_generated(
        tmp_path,
        TL_EUROSAT_ARCHIVE=str(archive),
        TL_SST2_DIR=str(sst2),
        TL_REQUIRE_REAL_DATA="1",
        TL_REQUIRE_CUDA="1",
        FAKE_CUDA="1",
    )
    for name in ("test_eurosat", "test_sst2", "test_both", "test_cuda", "test_unmarked"):
        assert outcomes[name] == ("passed", ""), (name, outcomes[name])
    assert outcomes["test_cuda_with_its_own_skipif"][0] == "skipped"  # its own skipif still applies


def test_each_test_needs_exactly_the_data_sets_it_names(tmp_path):
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (sst2 / name).write_text("label\tsentence\n")
    outcomes = run_generated(tmp_path, TL_SST2_DIR=str(sst2))
    assert outcomes["test_sst2"] == ("passed", "")
    assert outcomes["test_eurosat"][0] == outcomes["test_both"][0] == "skipped"
    assert "TL_EUROSAT_ARCHIVE" in outcomes["test_both"][1]


def test_the_markers_look_for_sst2_as_the_course_does():
    from tl_helpers import text

    assert helpers.SST2_DIR_ENV == text.SST2_DIR_ENV
    assert set(helpers.SST2_FILES) == set(text.SST2_FILES)
