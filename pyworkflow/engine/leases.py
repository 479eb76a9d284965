"""Who may hold a run: the reserved lease owners every part of the engine agrees on.

A lease held by an activation (its engine's ``owner``) is exclusive until it expires: storage
refuses another activation's commit meanwhile (``Commit.owner``). The owners below, all under
``RESERVED_LEASE_PREFIX``, are *reservations*: they keep a run from the sweeper for a while,
and any activation takes them over. Pure names: this module imports only the data model.
"""

from __future__ import annotations

from pyworkflow.model.schemas import RESERVED_LEASE_PREFIX

# - the executors of a run's dispatched steps, once its activation blocked waiting on them:
#   every process executing one renews it (``Engine.renew_leases``), so the lease runs out, and
#   a sweeper recovers the run, only when no attempt made progress anywhere for a lease_ttl;
STEP_EXECUTORS = f"{RESERVED_LEASE_PREFIX}step-executors"
# - a run created by a caller that leaves its first activation to a worker (Celery, simulator);
STARTING = f"{RESERVED_LEASE_PREFIX}starting"
# - a run the sweeper took back from a lost worker, until an activation takes it;
RECOVERED = f"{RESERVED_LEASE_PREFIX}recovered"
# - a run whose activation failed (storage or broker away): whoever comes next carries on.
HANDED_BACK = f"{RESERVED_LEASE_PREFIX}handed-back"

__all__ = ["HANDED_BACK", "RECOVERED", "STARTING", "STEP_EXECUTORS"]
