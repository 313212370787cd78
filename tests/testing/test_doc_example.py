"""docs/testing-scripts.md's ten-line example, run exactly as written, so the page cannot
drift from the harness."""
import os
import re
import subprocess
import sys

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "testing-scripts.md")


def ten_line_example() -> str:
    text = open(DOC, encoding="utf-8").read()
    section = text.split("## Ten lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_is_ten_lines():
    lines = [line for line in ten_line_example().splitlines() if line.strip()]
    assert len(lines) <= 10


def run_example(tmp_path, source):
    (tmp_path / "test_myproxy.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_myproxy.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )


def test_the_example_passes(tmp_path):
    done = run_example(tmp_path, ten_line_example())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_example_can_fail(tmp_path):
    broken = ten_line_example().replace('"User not Registered"', '"Not Found"')
    done = run_example(tmp_path, broken)
    assert done.returncode == 1 and "1 failed" in done.stdout
