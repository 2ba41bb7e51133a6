"""When a machine's disks are erased, and how much: the server's half of
the erase policy (the management OS's half is pxed/agent/erase.py).

Each machine has a policy, applied when its next work belongs to another
user than the one whose data its disks may hold (the owner of its last
work done; nobody known counts as another user: a machine new to pxed, a
failed work of a new user, a deleted user).  A work may also ask for an
erase when queued, whoever's it is.  The decision is made once, when the
work is taken, and kept with it: a management OS that restarts is told
the same."""

from __future__ import annotations

from dataclasses import dataclass

# Erasing more each: nothing; partition tables and filesystem signatures;
# those and a discard (TRIM/UNMAP) of every block; those and zeros over
# every block.
POLICIES = ("none", "metadata", "discard", "full")
ASKABLE = POLICIES[1:]
DEFAULT = "metadata"


@dataclass(frozen=True)
class Plan:
    erase: str
    reason: str
    # The disks have held another user's work: nothing is captured from them.
    new_user: bool


def decide(
    policy: str,
    asked: str | None,
    owner_id: int | None,
    last_user_id: int | None,
    worked: bool,
) -> Plan:
    """*worked*: the machine has finished work before.  Its disks count as
    another user's unless the last work done was this owner's; nothing is
    captured from them if they have held pxed work of another user (a
    machine's first work may capture what it came with)."""
    other = owner_id is None or last_user_id is None or owner_id != last_user_id
    new_user = other and worked
    if asked is not None:
        return Plan(asked, "asked for when the work was queued", new_user)
    if not other:
        return Plan("none", "", False)
    if last_user_id is None:
        reason = "no user's data is on record for this machine's disks"
    else:
        reason = "the machine's last work was another user's"
    if policy == "none":
        return Plan("none", f"{reason}; the machine's erase policy is none", new_user)
    return Plan(policy, reason, new_user)
