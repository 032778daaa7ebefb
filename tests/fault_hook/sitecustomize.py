"""Test-only fault injection, loaded at start-up by Python processes whose PYTHONPATH holds this folder.

With ``FAULT_RUN_DIR`` (a run folder) set, the process that is about to replace that run's
``resume_state.pth.tar`` for the second time (so its first epoch's resume state is on disk) does
``FAULT_ACTION``, once (``FAULT_MARKER``, a file, records that it fired):

- ``kill``: SIGKILL itself (a worker dying mid-run);
- ``slurm-usr1``: ask Slurm to send SIGUSR1 to this batch job, as ``--signal=B:USR1@...`` does before
  the time limit, then wait for the signal (its handler stops the run).

An audit hook on ``os.rename`` (which ``os.replace`` raises): nothing in the code under test changes.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

RUN_DIR = os.environ.get("FAULT_RUN_DIR")


def _fault(event, args):
    if event != "os.rename" or osp.basename(str(args[1])) != "resume_state.pth.tar":
        return
    if osp.realpath(osp.dirname(str(args[1]))) != osp.realpath(RUN_DIR):
        return
    _fault.seen += 1
    marker = os.environ["FAULT_MARKER"]
    if _fault.seen < 2 or osp.exists(marker):
        return
    open(marker, "w").close()
    if os.environ["FAULT_ACTION"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    subprocess.run(["scancel", "--signal=USR1", "--batch", os.environ["SLURM_JOB_ID"]], check=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # the signal handler raises out of this wait
        time.sleep(0.05)
    raise RuntimeError("SIGUSR1 did not arrive within 60 s")


if RUN_DIR:
    _fault.seen = 0
    sys.addaudithook(_fault)
