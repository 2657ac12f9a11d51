"""xdist scheduling that keeps each generation batch's cases on one worker.

Batches are planned at collection from the case list alone (pytest_steer.collection), so
the controller plans the same batches as every worker. Each (test function, batch) is one
work unit: `-n N` keeps N workers busy whenever a run has N batches, whatever its number
of configs, and no batch is generated twice. Every other test is its own unit, which
schedules like ``--dist load``. Node ids are left untouched (unlike ``--dist loadgroup``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

from pytest_steer.cases import CASE_NODEID, case_id


def work_unit(nodeid: str, units: Mapping[str, str] | None = None) -> str:
    """A steer case's unit is its config's generation batch (``units``: case id -> unit), or its config."""
    match = CASE_NODEID.match(nodeid)
    if match is None:
        return nodeid
    unit = (units or {}).get(case_id(match["key"], match["config"], int(match["trial"])))
    return f"{match['function']}[{unit or match['config']}]"


class SteerScheduling(LoadScopeScheduling):
    def __init__(self, config: Any, log: Any = None, *, units: Mapping[str, str] | None = None) -> None:
        super().__init__(config, log)
        self.units = units

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid, self.units)

    def remove_node(self, node: WorkerController) -> str | None:
        """Like the base class, but the test that crashed a worker is not run again.

        Re-running it would crash the replacement worker too, until xdist gives up on
        every remaining case; this way only the crashing case is lost.
        """
        workload = self.assigned_work.get(node, {})
        crashed = next((nodeid for unit in workload.values() for nodeid, done in unit.items() if not done), None)
        if crashed is not None:
            workload[work_unit(crashed, self.units)][crashed] = True
        super().remove_node(node)
        return crashed
