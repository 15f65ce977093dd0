"""Recovery after the agent restarts: the containers a previous run of it left behind.

An agent that was kill -9'd leaves containers running (in their cgroups or, in the
process fallback, in their sessions, found from the pid in ``container.json``) and the
folders of containers that had ended. :func:`sweep` kills the former and records
each as ``lost`` (not published: the master reconciles tasks the agent no longer
reports), and hands every folder with a record to the runtime, so that the output of
containers that had ended stays readable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from shoal.cluster.container_process import DESTROY_TIMEOUT_S
from shoal.cluster.container_records import (
    ContainerRecord,
    folders_oldest_first,
    load_record,
    load_status,
    remove_tree,
    save_status,
)
from shoal.cluster.isolation import Isolator, SessionGroup
from shoal.cluster.protocol import TERMINAL_STATES, TaskStatus

LOST_MESSAGE = "the agent restarted; its container was killed"


def sweep(root: Path, isolator: Isolator, live_ids: set[str], agent_id: str, log: logging.Logger,
          adopt: Callable[[Path, ContainerRecord, TaskStatus], None]) -> set[str]:
    """Kill the containers under ``root`` a previous run left (not those in ``live_ids``);
    call ``adopt`` on each folder with a record, oldest first, with its terminal status.
    Returns the ids of the containers killed."""
    swept: set[str] = set()
    for task_id in isolator.leftovers():
        group = isolator.attach(task_id) if task_id not in live_ids else None
        if group is not None:
            if not group.destroy(DESTROY_TIMEOUT_S):
                log.error("orphan container %s: processes left after %ss", task_id, DESTROY_TIMEOUT_S)
            swept.add(task_id)
    for folder in folders_oldest_first(root, live_ids):  # so pruning keeps the newest
        record = load_record(folder)
        if record is None:
            continue
        status = load_status(folder)
        if status is None or status.state not in TERMINAL_STATES or folder.name in swept:
            if record.pid and not SessionGroup(record.pid, record.start_ticks).destroy(DESTROY_TIMEOUT_S):
                log.error("orphan container %s: processes left after %ss", folder.name, DESTROY_TIMEOUT_S)
            swept.add(folder.name)
            status = TaskStatus(folder.name, "lost", agent_id, record.framework_id, LOST_MESSAGE, None, None,
                                time.time())
            remove_tree(folder / "sandbox", log)
            save_status(folder, status)
        adopt(folder, record, status)
    return swept
