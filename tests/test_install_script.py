"""tools/install.sh's progress output around long builds (``run_with_heartbeat``), run on short fake commands.

The installer defines its functions first and installs nothing when sourced, so the tests source it in a bash
that then calls ``run_with_heartbeat`` with a heartbeat every second (``POMP_HEARTBEAT_S=1``).
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

INSTALL = Path(__file__).resolve().parent.parent / "tools" / "install.sh"
HEARTBEAT = re.compile(r"^\[install\] fake build: (\d+)s so far(?:, compiled objects: (\S+))?$")


def run_script(tmp_path: Path, script: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``script`` in a bash that sourced install.sh; returns the result and the wall time until the pipes
    closed (a heartbeat left behind would hold them open)."""
    env = {
        **os.environ,
        "POMP_HEARTBEAT_S": "1",
        "POMP_VENV": str(tmp_path / "no_venv"),  # were the installer to run by mistake, it would stop at once
        "PYTHON": "false",
    }
    started = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", f'source "{INSTALL}"\n{script}'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.perf_counter() - started


def test_the_script_parses_and_sourcing_it_installs_nothing(tmp_path):
    assert subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True).returncode == 0
    result, _ = run_script(tmp_path, "type run_with_heartbeat >/dev/null && echo defined")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "defined\n" and result.stderr == ""
    assert not (tmp_path / "no_venv").exists()


def test_heartbeat_reports_time_and_ninja_counts_then_the_total(tmp_path):
    build = "bash -c 'for i in 1 2 3; do echo \"[$i/3] c++ -c op$i.cpp\"; sleep 1; done'"
    result, seconds = run_script(
        tmp_path, f'run_with_heartbeat "fake build" build.log objects {build}\necho "status $?"\nsleep 2\necho end'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "status 0\nend\n"
    lines = result.stderr.splitlines()
    beats = [HEARTBEAT.match(line) for line in lines[:-1]]
    assert len(lines) >= 3 and all(beats), lines  # a heartbeat a second during the 3 s build
    assert [int(beat[1]) for beat in beats] == sorted(int(beat[1]) for beat in beats)
    assert {beat[2] for beat in beats} <= {"1/3", "2/3", "3/3"} and beats[-1][2] in ("2/3", "3/3")
    assert re.fullmatch(r"\[install\] fake build done in [34]s", lines[-1])  # nothing after it: the heartbeat stopped
    assert seconds < 8  # 3 s build + 2 s sleep: no heartbeat (or its sleep) kept the output open
    assert (tmp_path / "build.log").read_text().count("c++ -c op") == 3


def test_without_ninja_counts_the_object_files_are_counted(tmp_path):
    build = "bash -c 'mkdir -p objects/sub; touch objects/a.o objects/sub/b.o objects/c.cpp; sleep 2.5'"
    result, _ = run_script(tmp_path, f'run_with_heartbeat "fake build" build.log objects {build}')
    assert result.returncode == 0, result.stderr
    counts = {HEARTBEAT.match(line)[2] for line in result.stderr.splitlines()[:-1]}
    assert counts == {"2"}, result.stderr


def test_a_failing_build_fails_the_script_and_shows_the_end_of_its_log(tmp_path):
    build = "bash -c 'echo compiling op1.cpp; sleep 1.5; echo \"op2.cpp:1: fatal error: missing.h\" >&2; exit 3'"
    result, seconds = run_script(
        tmp_path, f'run_with_heartbeat "fake build" build.log objects {build}\necho "not reached"'
    )
    assert result.returncode == 3  # set -e (from the sourced script) stops at the failing build with its status
    assert "not reached" not in result.stdout
    lines = result.stderr.splitlines()
    failed = next(i for i, line in enumerate(lines) if "failed" in line)
    assert re.fullmatch(
        r"\[install\] fake build failed \(exit status 3\) after [12]s; the end of build\.log:", lines[failed]
    )
    assert lines[failed + 1 :] == ["compiling op1.cpp", "op2.cpp:1: fatal error: missing.h"]
    assert all(HEARTBEAT.match(line) for line in lines[:failed])
    assert seconds < 5


def test_the_heartbeat_ends_when_the_installer_is_killed(tmp_path):
    # the fake build records the heartbeat's pid and its own; SIGKILL leaves no trap to run
    script = (
        'fake() { echo "$HEARTBEAT_PID" > heartbeat.pid; sleep 30 & echo $! > build.pid; wait; }\n'
        'run_with_heartbeat "fake build" build.log objects fake'
    )
    env = {**os.environ, "POMP_HEARTBEAT_S": "1", "POMP_VENV": str(tmp_path / "no_venv"), "PYTHON": "false"}
    with open(tmp_path / "output.txt", "w") as output:
        installer = subprocess.Popen(
            ["bash", "-c", f'source "{INSTALL}"\n{script}'], cwd=tmp_path, env=env, stdout=output, stderr=output
        )
    try:
        for _ in range(100):
            if (tmp_path / "build.pid").exists() and (tmp_path / "build.pid").read_text().strip():
                break
            time.sleep(0.05)
        heartbeat = int((tmp_path / "heartbeat.pid").read_text())
        time.sleep(1.5)
        assert alive(heartbeat)
        installer.kill()
        installer.wait()
        deadline = time.monotonic() + 4
        while alive(heartbeat) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(heartbeat), "the heartbeat outlived the installer"
        assert "so far" in (tmp_path / "output.txt").read_text()
    finally:
        if installer.poll() is None:
            installer.kill()
        build = (tmp_path / "build.pid").read_text().strip() if (tmp_path / "build.pid").exists() else ""
        if build:
            try:
                os.kill(int(build), signal.SIGTERM)
            except ProcessLookupError:
                pass


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
