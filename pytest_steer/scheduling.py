"""xdist scheduling that keeps each steering config's cases on one worker.

Generation is batched per config; if a config's cases were spread over workers, each
would generate whole batches for cases that another worker runs. Steer cases are grouped
into one work unit per (test function, config); every other test is its own unit, which
schedules like ``--dist load``. Node ids are left untouched (unlike ``--dist loadgroup``).
"""

from __future__ import annotations

import re

from xdist.scheduler import LoadScopeScheduling

# test_module.py::test_name[<key>-<config>-t<trial>]
_STEER_CASE = re.compile(r"^(?P<function>.+)\[(?P<key>.+)-(?P<config>baseline|alpha[0-9.e+-]+)-t(?P<trial>\d+)\]$")


def work_unit(nodeid: str) -> str:
    match = _STEER_CASE.match(nodeid)
    if match is None:
        return nodeid
    return f"{match['function']}[{match['config']}]"


class SteerScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)
