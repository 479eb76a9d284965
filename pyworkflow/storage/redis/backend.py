"""Redis storage: the ``StorageBackend`` port on one Redis server, every write one Lua script.

Every run's log and tables live in one Redis server (or the master a group of Redis Sentinels
names, for a ``sentinel://`` URL), under a key ``prefix``. This module maps the port's calls onto
the scripts (``scripts``) and plain reads, and the scripts' refusals (``PYWF_<WHAT> <detail>``)
onto the port's exceptions; the key layout and value encoding are in ``codec``, the connections
and the protocol in ``connection`` (and ``sentinel``, which finds the master). Schedules are kept
whole as ``schedule_to_json`` text in a hash beside their index entries (keys listed in
``scripts``, with the scripts that keep them).

This module must never write the protocol or manage connections (``connection`` does), never
hold a script's text (``scripts`` does) or spell a record's hash fields (``codec`` does), and
never import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from redis.exceptions import ResponseError

from pyworkflow.model.events import Event
from pyworkflow.model.exceptions import (
    ConfigurationError,
    CorruptHistoryError,
    SequenceConflictError,
)
from pyworkflow.model.schedules import (
    Schedule,
    ScheduleStatus,
    schedule_from_json,
    schedule_to_json,
)
from pyworkflow.model.schemas import (
    IN_LOG,
    Change,
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.storage.base import (
    SECRETS_RUN,
    StorageBackend,
    already_exists,
    check_hook_pending,
    check_run_open,
    decode_run_cursor,
    duplicate_completion,
    encode_run_cursor,
    lease_held,
    new_run_record,
    number_events,
    run_not_found,
    with_logged_args,
)
from pyworkflow.storage.redis.codec import (
    LAYOUT_VERSION,
    Fields,
    add_optional,
    event_args,
    events_from_entries,
    from_micros,
    hook_fields,
    hook_from_hash,
    hook_member,
    key_name,
    new_run_args,
    notice_args,
    opt,
    pairs,
    run_fields,
    run_from_hash,
    run_index_member,
)
from pyworkflow.storage.redis.connection import Command, RedisConnections
from pyworkflow.storage.redis.scripts import Scripts, load_commands, script_refusal
from pyworkflow.storage.redis.sentinel import SentinelConnections
from pyworkflow.storage.values import EPOCH, micros
from pyworkflow.utils.sentinel import is_sentinel_url
from pyworkflow.utils.urls import shown_url

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "pyworkflow"


def _refuse_commit(commit: Commit, what: str, detail: str) -> NoReturn:
    """Raise the port's exception for the commit script's refusal ``PYWF_<what> <detail>``."""
    run_id = commit.run_id
    if what == "NOT_FOUND":
        raise run_not_found(run_id)
    if what == "CONFLICT":
        raise SequenceConflictError(
            f"run {run_id}: expected log head {commit.expected_sequence}, found {detail}"
        )
    if what == "FINISHED":
        check_run_open(run_id, RunStatus(detail))
    if what == "DUPLICATE":
        raise duplicate_completion(run_id, [detail])
    if what == "LEASED":
        raise lease_held(run_id, detail)
    if what == "TAKEN":  # <index> of the run created
        raise already_exists(commit.runs_created[int(detail)][0].run_id)
    if what == "CREATED_DUPLICATE":  # <index> of the run created, <completion key>
        index, _, key = detail.partition(" ")
        raise duplicate_completion(commit.runs_created[int(index)][0].run_id, [key])
    assert what == "HOOK", what
    move, state = detail.split(" ")
    received, expired = commit.hook_received, commit.hook_expired
    hook_id = received[0] if move == "received" and received is not None else expired
    check_hook_pending(run_id, str(hook_id), HookStatus(state) if state != "-" else None)
    raise AssertionError(f"a pending hook was refused: {detail}")


# The layout version this process writes, recorded unless a newer one is (returned either way).
# Every older layout reads correctly here (``LAYOUT_VERSION``), so it is moved up: processes of
# the older release then refuse the data rather than misread what this one writes.
_RECORD_LAYOUT = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
if stored < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return stored
"""


def _fill_args(run: WorkflowRun, entry: str) -> None:
    """Arguments of ``run`` from its log's first entry (a damaged one leaves ``IN_LOG``: the
    activation reports it, ``corrupt_history``)."""
    with contextlib.suppress(CorruptHistoryError):
        with_logged_args(run, events_from_entries(run.run_id, 1, [entry])[0])


class RedisStorageBackend(StorageBackend):
    """Storage in one Redis server; any number of processes and hosts may share it.

    ``url`` is a ``redis://`` (``rediss://``, ``unix://``) URL, or a ``sentinel://`` URL naming
    the sentinels and the master's name (``pyworkflow.utils.sentinel``): the master is then found
    through them, and found again after a failover. ``prefix`` namespaces every key, so several
    deployments (or test runs) can share a database. Constructing does no I/O (a malformed
    ``sentinel://`` URL is refused at once); the first call connects, records the layout version
    and loads the scripts.
    """

    kind = "Redis database"

    def __init__(self, url: str = DEFAULT_URL, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        version = key_name(prefix, "version")
        # On connect, in one trip: record the layout version (moving an older, compatible one
        # up; a newer one is refused by ``_check_layout``), load the scripts.
        greeting: list[Command] = [("EVAL", _RECORD_LAYOUT, 1, version, LAYOUT_VERSION)]
        connections = SentinelConnections if is_sentinel_url(url) else RedisConnections
        self._redis = connections(url, greeting + load_commands(), self._check_layout)
        self._scripts = Scripts(self._redis, prefix)

    def __repr__(self) -> str:
        return f"RedisStorageBackend({shown_url(self.url)}, prefix={self.prefix!r})"

    def to_config(self) -> dict[str, Any]:
        """What ``storage_to_config`` reports: ``config_to_storage`` builds this backend again."""
        return {"type": "redis", "url": self.url, "prefix": self.prefix}

    # -- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._redis.connect()

    async def close(self) -> None:
        await self._redis.close()

    def _check_layout(self, replies: list[Any]) -> ConfigurationError | None:
        """The refusal of a server whose data has another layout version (from the greeting)."""
        version = int(replies[0])
        if version == LAYOUT_VERSION:
            return None
        return ConfigurationError(
            f"the Redis data under prefix {self.prefix!r} at {shown_url(self.url)} has layout"
            f" version {version}, which this PyWorkflow does not understand"
            f" ({LAYOUT_VERSION}): upgrade pyworkflow-engine"
        )

    def _key(self, *parts: str) -> str:
        return key_name(self.prefix, *parts)

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        record, numbered = new_run_record(run, events, datetime.now(UTC))
        assert record.created_at is not None
        fields = run_fields(record)
        try:
            reply = await self._scripts.run(
                "create_run",
                record.run_id,
                opt(record.idempotency_key),
                run_index_member(record.created_at, record.run_id),
                record.status.value,
                record.workflow_name,
                len(fields),
                *fields,
                *event_args(record.run_id, numbered, record.created_at),
            )
        except ResponseError as exc:
            what, detail = script_refusal(exc)
        else:
            if reply[0] == 1:
                return with_logged_args(record, numbered[0] if numbered else None), True
            [existing] = await self._with_logged_args([run_from_hash(pairs(reply[1]))])
            return existing, False
        if what == "EXISTS":
            raise already_exists(record.run_id)
        raise duplicate_completion(record.run_id, [detail])

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        fields, first = await self._scripts.run("run_record", run_id)
        if not fields:
            return None
        run = run_from_hash(pairs(fields))
        if first:
            _fill_args(run, first)
        return run

    async def _with_logged_args(self, runs: list[WorkflowRun]) -> list[WorkflowRun]:
        """``runs`` with the arguments their records keep in their logs (``IN_LOG``)."""
        missing = [run for run in runs if run.input_args == IN_LOG]
        if missing:
            ids = [run.run_id for run in missing]
            entries = await self._scripts.run("first_entries", *ids)
            for run, entry in zip(missing, entries, strict=True):
                if entry:
                    _fill_args(run, entry)
        return runs

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        run_id = await self._redis.call("HGET", self._key("idem"), key)
        return await self.get_run(run_id) if run_id is not None else None

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        if limit < 1:
            raise ValueError(f"list_runs limit must be at least 1, got {limit}")
        index = "runs"
        if status is not None:
            index += f":status:{RunStatus(status).value}"
        if workflow_name is not None:
            index += f":name:{workflow_name}"
        start = "-"
        if cursor is not None:
            start = "(" + run_index_member(*decode_run_cursor(cursor))
        # <ix> is 18 digits and ":" before the run id: the id starts at character 20.
        records = await self._scripts.run("range_records", index, start, "+", limit + 1, "run:", 20)
        page = await self._with_logged_args(
            [run_from_hash(pairs(flat)) for flat in records[:limit]]
        )
        if len(records) <= limit:
            return page, None
        last = page[-1]
        assert last.created_at is not None
        return page, encode_run_cursor(last.created_at, last.run_id)

    # -- the log ------------------------------------------------------------------------------

    async def commit(self, commit: Commit) -> int:
        now = commit.now or datetime.now(UTC)
        if commit.expected_sequence is not None:
            number_events(commit, commit.expected_sequence, now)
        try:
            head: int = await self._scripts.run("commit", *self._commit_args(commit, now))
        except ResponseError as exc:
            what, detail = script_refusal(exc)
        else:
            if commit.expected_sequence is None and commit.events:
                # Only now is the head known that these events follow.
                number_events(commit, head - len(commit.events), now)
            return head
        _refuse_commit(commit, what, detail)

    @staticmethod
    def _commit_args(commit: Commit, now: datetime) -> Fields:
        run_id = commit.run_id
        fields: Fields = []
        for name, value in (
            ("result", commit.result),
            ("error", commit.error),
            ("recovery_attempts", commit.recovery_attempts),
            ("continued_to_run_id", commit.continued_to_run_id),
        ):
            add_optional(fields, name, value)
        for name, instant in (
            ("started_at", commit.started_at),
            ("completed_at", commit.completed_at),
        ):
            add_optional(fields, name, micros(instant) if instant is not None else None)
        # The script's encoding of a change: "" keep, "-" clear, else the value ("=" + owner).
        lease, lease_arg, lease_expires = commit.lease_change, "", ""
        if lease.change is Change.SET:
            assert lease.owner is not None and lease.expires_at is not None
            lease_arg, lease_expires = "=" + lease.owner, str(micros(lease.expires_at))
        elif lease.change is Change.CLEAR:
            lease_arg = "-"
        timer, timer_arg = commit.timer_change, ""
        if timer.change is Change.SET:
            assert timer.fire_at is not None
            timer_arg = str(micros(timer.fire_at))
        elif timer.change is Change.CLEAR:
            timer_arg = "-"
        received = commit.hook_received
        hooks: Fields = [len(commit.hooks_created)]
        for hook in commit.hooks_created:
            hook_record = hook_fields(run_id, hook)
            hooks += (hook_member(run_id, hook.hook_id), hook.status.value, len(hook_record))
            hooks += hook_record
        args: Fields = [
            run_id,
            "" if commit.expected_sequence is None else commit.expected_sequence,
            micros(now),
            commit.status.value if commit.status is not None else "",
            lease_arg,
            lease_expires,
            timer_arg,
            opt(received[0] if received is not None else None),
            (received[1] or "") if received is not None else "",
            opt(commit.hook_expired),
            len(fields),
            *fields,
            *event_args(run_id, commit.events, now),
            *hooks,
            opt(commit.owner),
        ]
        if commit.runs_created or commit.notices or commit.hooks_disposed:
            # The trailing section, sent only by commits that reach other runs or dispose hooks.
            args.append(len(commit.runs_created))
            for run, events in commit.runs_created:
                if run.idempotency_key is not None:
                    raise ValueError("a run created by a commit cannot have an idempotency key")
                args += new_run_args(*new_run_record(run, events, now))
            args.append(len(commit.notices))
            for notice in commit.notices:
                args += notice_args(notice, now)
            if commit.hooks_disposed:
                args.append(len(commit.hooks_disposed))
                args += commit.hooks_disposed
        return args

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        after = max(after_sequence, 0)
        if command_id is None:
            entries = await self._redis.call("LRANGE", self._key("log", run_id), after, -1)
            return events_from_entries(run_id, after + 1, entries)
        flat = await self._scripts.run("command_events", run_id, command_id, after)
        return [
            event
            for sequence, entry in zip(flat[::2], flat[1::2], strict=True)
            for event in events_from_entries(run_id, sequence, [entry])
        ]

    # -- timers -------------------------------------------------------------------------------

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        if limit < 1:
            return []
        flat = await self._scripts.run(
            "claim_due_timers", micros(now), limit, micros(now + claim_for)
        )
        return [
            Timer(run_id, from_micros(fire_at))
            for run_id, fire_at in zip(flat[::2], flat[1::2], strict=True)
        ]

    async def get_timer(self, run_id: str) -> Timer | None:
        fire_at = await self._redis.call("HGET", self._key("timer"), run_id)
        return Timer(run_id, from_micros(fire_at)) if fire_at is not None else None

    # -- leases -------------------------------------------------------------------------------

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        if run_ids:
            await self._scripts.run("renew_leases", owner, micros(expires_at), *run_ids)

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        if limit < 1:
            return []
        run_ids = await self._scripts.run(
            "claim_expired_leases", micros(now), owner, micros(expires_at), limit
        )
        return list(run_ids)

    # -- hooks --------------------------------------------------------------------------------

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        fields = await self._redis.call("HGETALL", self._key("hook", hook_member(run_id, hook_id)))
        return hook_from_hash(pairs(fields)) if fields else None

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        index = "hooks" if status is None else f"hooks:status:{HookStatus(status).value}"
        # Members are <run_id>\0<hook_id>: one run's hooks lie between <run_id>\0 and <run_id>\1.
        low, high = ("-", "+") if run_id is None else (f"[{run_id}\0", f"({run_id}\1")
        records = await self._scripts.run("range_records", index, low, high, -1, "hook:", 1)
        return [hook_from_hash(pairs(flat)) for flat in records]

    # -- schedules ----------------------------------------------------------------------------

    @staticmethod
    def _schedule_args(schedule: Schedule) -> Fields:
        """<ix>, status, workflow_name, poll time ('' none) and data, as the scripts read them."""
        return [
            run_index_member(schedule.created_at or EPOCH, schedule.schedule_id),
            ScheduleStatus(schedule.status).value,
            schedule.workflow_name,
            micros(schedule.poll_at) if schedule.poll_at is not None else "",
            schedule_to_json(schedule),
        ]

    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        stored = schedule.copy()
        stored.revision = 1
        reply = await self._scripts.run(
            "create_schedule", stored.schedule_id, *self._schedule_args(stored)
        )
        if reply[0] == 1:
            return stored, True
        return schedule_from_json(reply[1]), False

    async def update_schedule(self, schedule: Schedule, expected_revision: int) -> Schedule | None:
        stored = schedule.copy()
        stored.revision = expected_revision + 1
        updated = await self._scripts.run(
            "update_schedule",
            stored.schedule_id,
            expected_revision,
            *self._schedule_args(stored),
        )
        return stored if updated == 1 else None

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        data = await self._redis.call("HGET", self._key("schedule", schedule_id), "data")
        return schedule_from_json(data) if data is not None else None

    async def list_schedules(
        self,
        *,
        workflow_name: str | None = None,
        status: ScheduleStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Schedule]:
        if limit < 1:
            return []
        index = "schedules"
        if status is not None:
            index += f":status:{ScheduleStatus(status).value}"
        if workflow_name is not None:
            index += f":name:{workflow_name}"
        records = await self._scripts.run("list_schedules", index, max(offset, 0), limit)
        return [schedule_from_json(data) for data in records]

    async def claim_due_schedules(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=10)
    ) -> list[Schedule]:
        if limit < 1:
            return []
        records = await self._scripts.run(
            "claim_due_schedules", micros(now), limit, micros(now + claim_for)
        )
        return [schedule_from_json(data) for data in records]

    # -- step checkpoints ---------------------------------------------------------------------

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        await self._redis.call("HSET", self._key("checkpoints", run_id), step_id, data)

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        data: str | None = await self._redis.call("HGET", self._key("checkpoints", run_id), step_id)
        return data

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        await self._redis.call("HDEL", self._key("checkpoints", run_id), step_id)

    async def keep_secret(self, name: str, candidate: str) -> str:
        key = self._key("checkpoints", SECRETS_RUN)
        await self._redis.call("HSETNX", key, name, candidate)
        stored: str = await self._redis.call("HGET", key, name)
        return stored


__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "RedisStorageBackend"]
