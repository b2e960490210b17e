"""The examples run as a user would run them."""

import subprocess
import sys

from tests.serving import ROOT


def test_deploy_and_query_example_runs():
    run = subprocess.run([sys.executable, "examples/deploy_and_query.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "v1: {'query_id'" in run.stdout and "'output': 10.0" in run.stdout
    assert "v2:" in run.stdout and "'output': 100.0" in run.stdout
    assert "rolled back:" in run.stdout
