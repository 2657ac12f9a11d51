"""xdist scheduling that keeps each generation batch's cases on one worker.

Batches are planned at collection from the case list alone (pytest_steer.plan.collection), so
the controller plans the same batches as every worker. Each batch is one work unit, with
every test that requests one of its cases (several test functions, or a test
parametrized further, may request the same case): `-n N` keeps N workers busy whenever a
run has N batches, whatever its number of configs, and no batch is generated twice.
Every other test is its own unit, which schedules like ``--dist load``. Node ids are left
untouched (unlike ``--dist loadgroup``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

UnitOf = Callable[[str], "str | None"]  # node id -> its batch's unit; None for a test that is no steer case


def work_unit(nodeid: str, unit_of: UnitOf | None = None) -> str:
    """A steer case's unit is its generation batch; any other test is a unit of its own."""
    unit = unit_of(nodeid) if unit_of is not None else None
    return f"steer-batch[{unit}]" if unit else nodeid


class SteerScheduling(LoadScopeScheduling):
    def __init__(self, config: Any, log: Any = None, *, units: UnitOf | None = None) -> None:
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
