"""A few hundred seeded fuzz cases of every file reader (tests/fuzz.py), Python and C++: none may crash, hang or
print a traceback. `make fuzz` runs 10,000 and more."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


def test_readers_survive_mutated_files() -> None:
    """ZOO_RUNNER_BACKEND=xnnpack-asan fuzzes the C++ runner built with AddressSanitizer + UBSan (CI's sanitizer job)."""
    from runners.tests.conftest import build_runner
    from tests.fuzz import fuzz

    runner = build_runner("llama3", os.environ.get("ZOO_RUNNER_BACKEND", "xnnpack"))
    report = fuzz(cases=250, seconds=240, seed=20261126, cpp_runner=runner, log=None)
    assert sum(report.outcomes.values()) >= 100, report.outcomes  # the time bound left enough cases
    assert {outcome for _, outcome in report.outcomes} <= {"accepted", "refused"}, report.failures
    refused = {target for target, outcome in report.outcomes if outcome == "refused"}
    assert {"gguf", "config.json", "tokenizer.json (c++)", "pte (c++)"} <= refused  # the mutations reached them
