"""`handoff down` signals a recorded pid only while it is the process `handoff up` started (real
processes, no Ray): a reused pid is left alone."""

import subprocess
import sys

from cluster.process_identity import ProcessIdentity, identity_of, still_the_same
from cluster.services import ServicesState, down
from cluster.settings import Settings


def sleeper(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *extra], start_new_session=True)


def test_a_process_is_known_by_its_start_time_and_command_line_not_its_pid():
    proc = sleeper("mlflow-look-alike")
    try:
        me = identity_of(proc.pid)
        assert me is not None and "mlflow-look-alike" in me.command
        assert still_the_same(me, proc.pid, "mlflow") == (True, "")
        # the wall-clock start moved (the system clock stepped) while the kernel's start is the same: the same process
        stepped = me.model_copy(update={"started": "Mon Jan  1 00:00:00 2024"})
        assert me.start_ticks is not None and still_the_same(stepped, proc.pid, "mlflow") == (True, "")
        assert still_the_same(stepped.model_copy(update={"start_ticks": None}), proc.pid, "mlflow")[0] is False
        other = me.model_copy(update={"start_ticks": me.start_ticks - 1})
        ok, why = still_the_same(other, proc.pid, "mlflow")
        assert not ok and "now another process" in why
        ok, why = still_the_same(None, proc.pid, "ray")  # recorded before identities were kept: the command decides
        assert not ok and "not ray" in why
    finally:
        proc.kill()
        proc.wait()
    assert identity_of(proc.pid) is None and still_the_same(me, proc.pid, "mlflow")[0] is False


def test_down_leaves_a_reused_pid_alone_and_says_so(tmp_path):
    stranger = sleeper("someone-elses-program")
    settings = Settings(home=tmp_path)
    try:
        ghost = ProcessIdentity(pid=stranger.pid, started="Mon Jan  1 00:00:00 2024", command="ray start --head --block")
        settings.services_file.write_text(ServicesState(
            ray_address="127.0.0.1:1", dashboard_url="http://127.0.0.1:2", mlflow_uri="http://127.0.0.1:3",
            mlflow_pid=stranger.pid, ray_pid=stranger.pid, ray_process=ghost,
            mlflow_process=ghost.model_copy(update={"command": "mlflow server"})).model_dump_json())
        warnings: list[str] = []
        assert down(settings, warn=warnings.append) is True
        assert stranger.poll() is None  # still running: not ours, not signalled
        assert len(warnings) == 2 and all("left alone" in w and "now another process" in w for w in warnings)
        assert not settings.services_file.exists()
    finally:
        stranger.kill()
        stranger.wait()
