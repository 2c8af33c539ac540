"""``-num_parts N -part_id K``: N ``samunet_predict`` calls (machines, GPUs, a SLURM array) share one input
folder, each predicting a fixed 1/N of the cases, as in nnU-Net: the sorted case list, cases[K::N]. The split
is made before already-predicted cases are skipped, so a re-run part keeps the same cases."""
from __future__ import annotations

from typing import Sequence, TypeVar

from samunet.core.errors import SamunetUserError

T = TypeVar("T")


class PartError(SamunetUserError, ValueError):
    pass


def check_part(num_parts: int, part_id: int) -> None:
    if num_parts < 1:
        raise PartError(f"-num_parts {num_parts}: must be at least 1")
    if not 0 <= part_id < num_parts:
        raise PartError(f"-part_id {part_id}: must be between 0 and num_parts-1 = {num_parts - 1} "
                        f"(parts are counted from 0)")


def part_of(case_ids: Sequence[T], num_parts: int, part_id: int) -> list[T]:
    """This part's cases: every ``num_parts``-th of the sorted ids, starting at ``part_id``."""
    check_part(num_parts, part_id)
    return sorted(case_ids)[part_id::num_parts]
