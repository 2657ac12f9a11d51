"""xdist scheduling that keeps each steering config's cases on one worker.

Generation is batched per config; if a config's cases were spread over workers, each
would generate whole batches for cases that another worker runs. Steer cases are grouped
into one work unit per (test function, config); every other test is its own unit, which
schedules like ``--dist load``. Node ids are left untouched (unlike ``--dist loadgroup``).
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

from pytest_steer.cases import CASE_NODEID


def work_unit(nodeid: str) -> str:
    match = CASE_NODEID.match(nodeid)
    if match is None:
        return nodeid
    return f"{match['function']}[{match['config']}]"


class SteerScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)

    def remove_node(self, node: WorkerController) -> str | None:
        """Like the base class, but the test that crashed a worker is not run again.

        Re-running it would crash the replacement worker too, until xdist gives up on
        every remaining case; this way only the crashing case is lost.
        """
        workload = self.assigned_work.get(node, {})
        crashed = next((nodeid for unit in workload.values() for nodeid, done in unit.items() if not done), None)
        if crashed is not None:
            workload[work_unit(crashed)][crashed] = True
        super().remove_node(node)
        return crashed
