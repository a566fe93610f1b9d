"""The benchmark scripts run and print their tables (a tiny setting: no timing is asserted)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_bench_run_prints_its_table(tmp_path):
    output = tmp_path / "results.md"
    out = subprocess.run([sys.executable, "bench/run.py", "--duration", "1", "--repeat", "1",
                          "--servers", "lilush_http", "--scenarios", "a", "--output", str(output)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| a 13-byte body, keep-alive | lilush_http |" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("| a 13-byte body, keep-alive | lilush_http |"))
    assert float(row.split("|")[3]) > 0  # requests per second were measured
    assert output.read_text().startswith("# Benchmark results")


def test_idle_connections_script_reports_rss():
    out = subprocess.run([sys.executable, "bench/idle.py", "--connections", "200"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "idle keep-alive connections: 200" in out.stdout
    assert "server RSS:" in out.stdout and "a new request meanwhile: answered in" in out.stdout


def test_websocket_echo_script_prints_its_table():
    out = subprocess.run([sys.executable, "bench/websocket_echo.py", "--duration", "0.3", "--repeat", "1", "--clients", "4",
                          "--servers", "lilush_http,websockets"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| 64 ")]
    assert {(r[1].strip(), r[2].strip()) for r in rows} >= {("64 B", "lilush_http"), ("64 KB", "websockets")}
    assert all(float(r[3]) > 0 for r in rows if len(r) > 6)  # messages per second were measured
    assert "lilush_http / websockets" in out.stdout


def test_bigfiles_script_reports_rss_and_checks_bytes():
    out = subprocess.run([sys.executable, "bench/bigfiles.py", "--clients", "50", "--file-mb", "2", "--seconds", "1",
                          "--upload-mb", "20"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "heads received: 50 of 50" in out.stdout and "mismatches: 0" in out.stdout
    assert "on disk" in out.stdout and ": match" in out.stdout


def test_fuzz_script_runs_clean():
    """A few hundred mutants of bench/fuzz.py: no failure, no framing disagreement with h11."""
    out = subprocess.run([sys.executable, "bench/fuzz.py", "--count", "300", "--workers", "4", "--seed", "7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "fuzz: 300 mutated requests" in out.stdout
    assert "0 framing disagreements" in out.stdout and "fuzz: OK" in out.stdout
