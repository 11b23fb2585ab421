"""The output folder's lock: one job at a time, the lock of a killed job taken over, and the
interrupted commits and temporary files of a killed job dealt with before work starts."""

import os
import signal
import subprocess
import sys

import pytest

from instseg.config import ConfigError
from instseg.inference.output_dir import LOCK_FILE, OutputLock, check_output_dir
from instseg.io.atomic import commit_journal, temp_path

HOLD = """
import sys, time
from instseg.inference.output_dir import OutputLock
with OutputLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_job_is_refused_with_the_holders_pid(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(ConfigError) as info:
            OutputLock(tmp_path).acquire()
        message = str(info.value)
        assert f"pid {proc.pid}" in message and str(tmp_path) in message
        assert "\n" not in message
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_job_is_taken_over(tmp_path, caplog):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with caplog.at_level("INFO"), OutputLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert f"pid {proc.pid}" in caplog.text
    with OutputLock(tmp_path):  # released cleanly: taken again at once
        pass


def test_taking_the_lock_completes_commits_and_removes_temporaries(tmp_path):
    video, jsonl = tmp_path / "a" / "clip.mp4", tmp_path / "a" / "clip.predictions.jsonl"
    video.parent.mkdir()
    tmp_video, tmp_jsonl = temp_path(video), temp_path(jsonl)
    tmp_video.write_bytes(b"video")
    tmp_jsonl.write_text("{}\n")
    stray = temp_path(tmp_path / "b" / "x.jpg")
    stray.write_bytes(b"half")
    # A kill after the first of two renames: the journal names both.
    journal = commit_journal(tmp_path, "clip")
    journal.write_text(f'[["{tmp_jsonl}", "{jsonl}"], ["{tmp_video}", "{video}"]]')
    os.replace(tmp_jsonl, jsonl)
    with OutputLock(tmp_path):
        pass
    assert video.read_bytes() == b"video" and jsonl.read_text() == "{}\n"
    assert not journal.exists() and not stray.exists()


def test_check_output_dir_ignores_only_bookkeeping(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")
    check_output_dir(tmp_path, "refuse")
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="folder is not empty"):
        check_output_dir(tmp_path, "refuse")
    check_output_dir(tmp_path, "skip")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_dir(tmp_path / "x.jpg", "skip")


def test_lock_is_released_on_error(tmp_path):
    with pytest.raises(RuntimeError), OutputLock(tmp_path):
        raise RuntimeError("boom")
    with OutputLock(tmp_path):  # a held lock refuses at once, so this takes it released
        pass
