"""Redis storage: every run's log and tables in one Redis server, written by Lua scripts.

Design decision: each write is **one Lua script**, so it is atomic (Redis runs a script alone, no
other command interleaves) and costs one round trip. Every script checks everything before it
writes anything: Redis does not roll a script back, so a check that fails after a write would
leave half a ``Commit``. The checks fail with an error reply ``PYWF_<WHAT> <detail>`` that
``commit``/``create_run`` turn into the port's exceptions. Scripts are sent with ``EVALSHA``;
after a ``SCRIPT FLUSH`` or a server restart the ``NOSCRIPT`` reply makes the backend load the
script and send it again.

Key layout (``P`` is the ``prefix``; ``<ix>`` is ``<created_at as 18 digits>:<run_id>``, so that
byte order is ``(created_at, run_id)`` order; ``<hk>`` is ``<run_id>\\0<hook_id>``, whose byte
order is ``(run_id, hook_id)`` order)::

    P:version                          layout version (``LAYOUT_VERSION``), set on connect
    P:run:<run_id>                     hash: the run record (times as integer microseconds)
    P:log:<run_id>                     list: event ``n`` at index ``n - 1``, as JSON text
                                       ``[type, timestamp micros, data]``
    P:done:<run_id>                    set: completion keys recorded in the log
    P:cmd:<run_id>                     hash: command_id -> comma-separated sequences of its events
    P:idem                             hash: idempotency key -> run_id
    P:runs, P:runs:status:<s>,         zsets (score 0, members <ix>): ``list_runs`` indexes, all
      P:runs:name:<n>,                 runs, by status, by workflow name, by both
      P:runs:status:<s>:name:<n>
    P:timer                            hash: run_id -> fire_at micros (one timer per run)
    P:timers:free                      zset: unclaimed timers scored by fire_at
    P:timers:claimed                   zset: claimed timers scored by claimed_until
    P:leases:free                      zset: pending/running runs without a lease, by updated_at
    P:leases:held                      zset: pending/running runs with a lease, by its expiry
    P:hook:<hk>                        hash: the hook record
    P:hooks, P:hooks:status:<s>        zsets (score 0, members <hk>): ``list_hooks`` indexes
    P:checkpoints:<run_id>             hash: step_id -> checkpoint data

Every timer is in exactly one of ``timers:free`` and ``timers:claimed``; a pending or running run
is in ``leases:free`` when it has no lease owner and in ``leases:held`` when its lease has an
expiry (a lease without one never runs out); the scripts keep these invariants whenever a status,
lease, timer or ``updated_at`` changes. Sorted-set scores are doubles, exact for microsecond
times before the year 2255 (the bound the SQL backends and ``Event.restore`` read times with).

Scripts name keys they compute from the prefix rather than passing them in ``KEYS``, so the
backend needs one Redis server (or a replicated primary), not Redis Cluster.

Values are encoded as the SQL backends encode their rows (``pyworkflow.storage.sql``): times as
integer microseconds since the Unix epoch, ``context``/``metadata``/event ``data`` as compact
JSON text; absent fields stand for None.

Connections: redis-py parses the URL and makes the connections (TLS, auth, database, RESP
version), but the backend keeps its idle connections in a plain list and writes the protocol
itself, because redis-py's pool and command layer cost several times the round trip on the hot
path (see ``_request``). A server that cannot be reached, or does not answer within the reply
timeout (``REPLY_TIMEOUT``, or ``socket_timeout`` in the URL), is one ``ConfigurationError``
naming the URL without its password, raised at once: nothing is retried, since a write whose
reply was lost may have been applied. Idle connections the server closed (a restart) are
reconnected before use, so a restarted server is used again without an error.

This module must never import the engine (only its event model) or a runtime.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import orjson
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyworkflow.model.events import Event, EventType
from pyworkflow.model.exceptions import ConfigurationError, SequenceConflictError
from pyworkflow.model.schemas import (
    RESERVED_LEASE_PREFIX,
    Commit,
    Hook,
    HookStatus,
    RunStatus,
    Timer,
    WorkflowRun,
)
from pyworkflow.serialization.jsontext import dump_text
from pyworkflow.storage.base import (
    LEASABLE_STATUSES,
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
)
from pyworkflow.storage.values import micros
from pyworkflow.utils.urls import shown_url

LAYOUT_VERSION = 1
DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "pyworkflow"
REPLY_TIMEOUT = 5.0  # seconds; a ``socket_timeout`` in the URL replaces it
# Connections are opened on demand, one per concurrent call; this many are kept when idle.
MAX_IDLE_CONNECTIONS = 32

# -- values -------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The ``list_runs`` index orders by text, so creation times are written as 18 digits counted from
# the earliest datetime: every datetime fits, none is negative.
_INDEX_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_INDEX_OFFSET = -((_INDEX_ORIGIN - _EPOCH) // timedelta(microseconds=1))
_dumps: Callable[[Any], str] = dump_text
# Event data is written by the engine (str keys, strings, small ints, bools): orjson reads it.
_loads: Callable[[str | bytes], Any] = orjson.loads
_EVENT_TYPES = {event_type.value: event_type for event_type in EventType}
_LEASABLE = LEASABLE_STATUSES
_Fields = list[str | int]


def _time(micros: str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(micros))


def _time_or_none(micros: str | None) -> datetime | None:
    return _time(micros) if micros is not None else None


def _pack(command: tuple[str | int, ...]) -> list[bytes]:
    """A command in RESP, the Redis protocol: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return parts


def _opt(value: str | None) -> str:
    """An optional string as a script argument: ``""`` for None, ``"=" + value`` otherwise."""
    return "" if value is None else "=" + value


def _run_index_member(created_at: datetime, run_id: str) -> str:
    return f"{micros(created_at) + _INDEX_OFFSET:018d}:{run_id}"


def _hook_member(run_id: str, hook_id: str) -> str:
    return f"{run_id}\0{hook_id}"


def _add_optional(fields: _Fields, name: str, value: str | int | None) -> None:
    if value is not None:
        fields += (name, value)


def _run_fields(run: WorkflowRun) -> _Fields:
    """The hash fields of a stored run (``None`` values are left out)."""
    assert run.created_at is not None and run.updated_at is not None
    fields: _Fields = [
        "run_id",
        run.run_id,
        "workflow_name",
        run.workflow_name,
        "status",
        run.status.value,
        "created_at",
        micros(run.created_at),
        "updated_at",
        micros(run.updated_at),
        "input_args",
        run.input_args,
        "input_kwargs",
        run.input_kwargs,
        "context",
        _dumps(run.context),
        "recovery_attempts",
        run.recovery_attempts,
        "max_recovery_attempts",
        run.max_recovery_attempts,
        "recover_on_worker_loss",
        int(run.recover_on_worker_loss),
        "nesting_depth",
        run.nesting_depth,
        "last_sequence",
        run.last_sequence,
        "_ix",
        _run_index_member(run.created_at, run.run_id),
    ]
    for name, value in (
        ("result", run.result),
        ("error", run.error),
        ("idempotency_key", run.idempotency_key),
        ("max_duration", run.max_duration),
        ("parent_run_id", run.parent_run_id),
        ("continued_from_run_id", run.continued_from_run_id),
        ("continued_to_run_id", run.continued_to_run_id),
        ("lease_owner", run.lease_owner),
    ):
        _add_optional(fields, name, value)
    for name, instant in (
        ("started_at", run.started_at),
        ("completed_at", run.completed_at),
        ("lease_expires_at", run.lease_expires_at),
    ):
        _add_optional(fields, name, micros(instant) if instant is not None else None)
    return fields


def _pairs(reply: list[str] | dict[str, str]) -> dict[str, str]:
    """A hash from an ``HGETALL`` reply: a map in RESP3, a flat list in RESP2 and in scripts."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _run_from_hash(h: dict[str, str]) -> WorkflowRun:
    get = h.get
    return WorkflowRun(
        run_id=h["run_id"],
        workflow_name=h["workflow_name"],
        status=RunStatus(h["status"]),
        created_at=_time(h["created_at"]),
        updated_at=_time(h["updated_at"]),
        started_at=_time_or_none(get("started_at")),
        completed_at=_time_or_none(get("completed_at")),
        input_args=h["input_args"],
        input_kwargs=h["input_kwargs"],
        result=get("result"),
        error=get("error"),
        idempotency_key=get("idempotency_key"),
        max_duration=get("max_duration"),
        context=_loads(h["context"]),
        recovery_attempts=int(h["recovery_attempts"]),
        max_recovery_attempts=int(h["max_recovery_attempts"]),
        recover_on_worker_loss=h["recover_on_worker_loss"] == "1",
        parent_run_id=get("parent_run_id"),
        nesting_depth=int(h["nesting_depth"]),
        continued_from_run_id=get("continued_from_run_id"),
        continued_to_run_id=get("continued_to_run_id"),
        last_sequence=int(h["last_sequence"]),
        lease_owner=get("lease_owner"),
        lease_expires_at=_time_or_none(get("lease_expires_at")),
    )


def _hook_fields(run_id: str, hook: Hook) -> _Fields:
    fields: _Fields = [
        "run_id",
        run_id,
        "hook_id",
        hook.hook_id,
        "name",
        hook.name,
        "token",
        hook.token,
        "command_id",
        hook.command_id,
        "status",
        hook.status.value,
        "metadata",
        _dumps(hook.metadata),
    ]
    _add_optional(fields, "payload", hook.payload)
    _add_optional(fields, "schema_path", hook.schema_path)
    for name, instant in (
        ("created_at", hook.created_at),
        ("expires_at", hook.expires_at),
        ("received_at", hook.received_at),
    ):
        _add_optional(fields, name, micros(instant) if instant is not None else None)
    return fields


def _hook_from_hash(h: dict[str, str]) -> Hook:
    get = h.get
    return Hook(
        hook_id=h["hook_id"],
        run_id=h["run_id"],
        name=h["name"],
        token=h["token"],
        command_id=h["command_id"],
        status=HookStatus(h["status"]),
        created_at=_time_or_none(get("created_at")),
        expires_at=_time_or_none(get("expires_at")),
        received_at=_time_or_none(get("received_at")),
        payload=get("payload"),
        schema_path=get("schema_path"),
        metadata=_loads(h["metadata"]),
    )


def _event_args(run_id: str, events: list[Event], now: datetime) -> _Fields:
    """Three script arguments per event: its log entry, completion key and command id."""
    args: _Fields = [len(events)]
    for event in events:
        if event.run_id != run_id:
            raise ValueError(f"an event of run {event.run_id} in a commit to run {run_id}")
        entry = _dumps([event.type.value, micros(event.timestamp or now), event.data])
        args += (entry, event.completion_key or "", _opt(event.command_id))
    return args


def _events_from_entries(run_id: str, first: int, entries: list[str]) -> list[Event]:
    """Events from consecutive log entries, the first of which has sequence ``first``."""
    # The hot loop of a cold replay: everything it calls is bound to a local first.
    # ``Event.restore`` converts its time lazily and exactly below 2**53 microseconds (until the
    # year 2255); a time beyond that is converted here, exactly.
    types, loads, restore, limit = _EVENT_TYPES, _loads, Event.restore, 2**53
    events = []
    for sequence, entry in enumerate(entries, start=first):
        kind, micros, data = loads(entry)
        if -limit < micros < limit:
            events.append(restore(run_id, types[kind], data, micros, sequence))
        else:
            events.append(Event(run_id, types[kind], data, _time(micros), sequence))
    return events


# -- scripts ------------------------------------------------------------------------------------


def _lua_set(statuses: Iterable[RunStatus]) -> str:
    """A Lua table with the statuses as keys: Lua and Python take them from ``RunStatus``."""
    return "{" + ", ".join(f"['{status.value}'] = true" for status in statuses) + "}"


# Shared by every script: ARGV[1] is the key prefix. Optional strings arrive as "" (None) or
# "=" .. value (see ``_opt``).
_PRELUDE = (
    f"""
local P = ARGV[1]
local TERMINAL = {_lua_set(s for s in RunStatus if s.is_terminal)}
local LEASABLE = {_lua_set(_LEASABLE)}
local RESERVED = '{RESERVED_LEASE_PREFIX}'
local RESERVED_LENGTH = {len(RESERVED_LEASE_PREFIX)}
"""
    + """
local function opt(s) if s == '' then return nil end return string.sub(s, 2) end
local function fail(what) return redis.error_reply('PYWF_' .. what) end

-- byte order (Lua's "<" on strings follows the server's locale)
local function before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function by_score_then_id(x, y)
  if x[1] ~= y[1] then return x[1] < y[1] end
  return before(x[2], y[2])
end

-- the lease index a run with this {status, lease_owner, lease_expires_at, updated_at} belongs
-- in (see the module docstring) and its score there, or nil
local function lease_slot(run)
  if not LEASABLE[run[1]] then return nil, nil end
  if not run[2] then return P .. ':leases:free', run[4] end
  if run[3] then return P .. ':leases:held', run[3] end
  return nil, nil
end

-- move a run from the lease index its old state put it in to the one its new state does
local function move_lease(run_id, old, new)
  local from = lease_slot(old)
  local to, score = lease_slot(new)
  if from and from ~= to then redis.call('ZREM', from, run_id) end
  if to then redis.call('ZADD', to, score, run_id) end
end

local LEASE_FIELDS = {'status', 'lease_owner', 'lease_expires_at', 'updated_at'}

local function lease_state(run_id)
  return redis.call('HMGET', P .. ':run:' .. run_id, unpack(LEASE_FIELDS))
end

-- call a variadic command on key with the items, 500 at a time (Lua's unpack has a limit)
local function call_with_all(command, key, items)
  for i = 1, #items, 500 do
    redis.call(command, key, unpack(items, i, math.min(i + 499, #items)))
  end
end

-- the first completion key among n events (3 arguments each, from ARGV[first]) that is recorded
-- already or repeats among them, or nil
local function duplicate_key(run_id, first, n)
  local done, seen = P .. ':done:' .. run_id, {}
  for e = 0, n - 1 do
    local key = ARGV[first + 3 * e + 1]
    if key ~= '' then
      if seen[key] or redis.call('SISMEMBER', done, key) == 1 then return key end
      seen[key] = true
    end
  end
  return nil
end

-- append n events (3 arguments each, from ARGV[first]) after sequence head
local function append_events(run_id, head, first, n)
  if n == 0 then return end
  local entries, keys, commands, sequences = {}, {}, {}, {}
  for e = 0, n - 1 do
    local at = first + 3 * e
    entries[#entries + 1] = ARGV[at]
    if ARGV[at + 1] ~= '' then keys[#keys + 1] = ARGV[at + 1] end
    local command_id = opt(ARGV[at + 2])
    if command_id then
      local seq = tostring(head + e + 1)
      if sequences[command_id] then
        sequences[command_id] = sequences[command_id] .. ',' .. seq
      else
        commands[#commands + 1], sequences[command_id] = command_id, seq
      end
    end
  end
  call_with_all('RPUSH', P .. ':log:' .. run_id, entries)
  call_with_all('SADD', P .. ':done:' .. run_id, keys)
  local cmd = P .. ':cmd:' .. run_id
  for _, command_id in ipairs(commands) do
    local recorded = redis.call('HGET', cmd, command_id)
    local seqs = sequences[command_id]
    redis.call('HSET', cmd, command_id, recorded and (recorded .. ',' .. seqs) or seqs)
  end
end

-- add the run to (or remove it from) the list_runs indexes of one status
local function index_status(ix, status, name, add)
  local key = P .. ':runs:status:' .. status
  for _, index in ipairs({key, key .. ':name:' .. name}) do
    if add then redis.call('ZADD', index, 0, ix) else redis.call('ZREM', index, ix) end
  end
end

local function move_hook(member, from, to)
  redis.call('ZREM', P .. ':hooks:status:' .. from, member)
  redis.call('ZADD', P .. ':hooks:status:' .. to, 0, member)
end
"""
)

# ARGV: prefix, run_id, idempotency key (opt), <ix>, status, workflow_name, n, n field values,
# then the events (count, 3 each). Returns {1} when created, {0, run fields} when the key exists.
_CREATE_RUN = """
local run_id, ix, status, name = ARGV[2], ARGV[4], ARGV[5], ARGV[6]
local key = opt(ARGV[3])
if key then
  local existing = redis.call('HGET', P .. ':idem', key)
  if existing then return {0, redis.call('HGETALL', P .. ':run:' .. existing)} end
end
local run = P .. ':run:' .. run_id
if redis.call('EXISTS', run) == 1 then return fail('EXISTS') end
local n_fields = tonumber(ARGV[7])
local first = 8 + n_fields + 1
local n_events = tonumber(ARGV[first - 1])
local duplicate = duplicate_key(run_id, first, n_events)
if duplicate then return fail('DUPLICATE ' .. duplicate) end
-- checked; from here on nothing fails
redis.call('HSET', run, unpack(ARGV, 8, 7 + n_fields))
append_events(run_id, 0, first, n_events)
redis.call('ZADD', P .. ':runs', 0, ix)
redis.call('ZADD', P .. ':runs:name:' .. name, 0, ix)
index_status(ix, status, name, true)
if key then redis.call('HSET', P .. ':idem', key, run_id) end
move_lease(run_id, {}, lease_state(run_id))
return {1}
"""

# ARGV: prefix, run_id, expected (''), now, status (''), lease ('' keep, '-' release,
# '=owner' set), lease expiry, timer ('' keep, '-' clear, micros), hook received (opt), payload,
# hook expired (opt), n, n run field values, events (count, 3 each), hooks created (count, then
# member, status, n, n field values each), the committing owner (opt, last). Returns the new head.
_COMMIT = """
local run_id, now = ARGV[2], ARGV[4]
local run = P .. ':run:' .. run_id
local row = redis.call('HMGET', run, 'last_sequence', 'status', 'workflow_name', '_ix',
  'lease_owner', 'lease_expires_at', 'updated_at')
if not row[1] then return fail('NOT_FOUND') end
local head, status = tonumber(row[1]), row[2]
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= head then return fail('CONFLICT ' .. head) end
if TERMINAL[status] then return fail('FINISHED ' .. status) end
local committer, holder = opt(ARGV[#ARGV]), row[5]
if committer and holder and holder ~= committer
    and string.sub(holder, 1, RESERVED_LENGTH) ~= RESERVED
    and (not row[6] or tonumber(row[6]) > tonumber(now)) then
  return fail('LEASED ' .. holder)
end
-- Hook moves are checked before completion keys: a second payload for a hook is "already
-- received" even though its hook.received event is a duplicate completion too.
local received, expired = opt(ARGV[9]), opt(ARGV[11])
for _, move in ipairs({{'received', received}, {'expired', expired}}) do
  if move[2] then
    local state = redis.call('HGET', P .. ':hook:' .. run_id .. '\\0' .. move[2], 'status')
    if state ~= 'pending' then return fail('HOOK ' .. move[1] .. ' ' .. (state or '-')) end
  end
end
local n_fields = tonumber(ARGV[12])
local first = 13 + n_fields + 1
local n_events = tonumber(ARGV[first - 1])
local duplicate = duplicate_key(run_id, first, n_events)
if duplicate then return fail('DUPLICATE ' .. duplicate) end
-- checked; from here on nothing fails
local new_head = head + n_events
append_events(run_id, head, first, n_events)
redis.call('HSET', run, 'updated_at', now, 'last_sequence', new_head,
  unpack(ARGV, 13, 12 + n_fields))
local new_status = ARGV[5]
if new_status ~= '' and new_status ~= status then
  redis.call('HSET', run, 'status', new_status)
  index_status(row[4], status, row[3], false)
  index_status(row[4], new_status, row[3], true)
else
  new_status = status
end
local lease, owner, expires = ARGV[6], row[5], row[6]
if lease == '-' then
  redis.call('HDEL', run, 'lease_owner', 'lease_expires_at')
  owner, expires = false, false
elseif lease ~= '' then
  owner, expires = opt(lease), ARGV[7]
  redis.call('HSET', run, 'lease_owner', owner, 'lease_expires_at', expires)
end
move_lease(run_id, {status, row[5], row[6], row[7]}, {new_status, owner, expires, now})
local timer = ARGV[8]
if timer == '-' then
  redis.call('HDEL', P .. ':timer', run_id)
  redis.call('ZREM', P .. ':timers:free', run_id)
  redis.call('ZREM', P .. ':timers:claimed', run_id)
elseif timer ~= '' then
  redis.call('HSET', P .. ':timer', run_id, timer)
  redis.call('ZADD', P .. ':timers:free', timer, run_id)
  redis.call('ZREM', P .. ':timers:claimed', run_id)
end
local at = first + 3 * n_events
for _ = 1, tonumber(ARGV[at]) do
  local member, hook_status, n = ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local hook = P .. ':hook:' .. member
  if redis.call('EXISTS', hook) == 0 then
    redis.call('HSET', hook, unpack(ARGV, at + 4, at + 3 + n))
    redis.call('ZADD', P .. ':hooks', 0, member)
    redis.call('ZADD', P .. ':hooks:status:' .. hook_status, 0, member)
  end
  at = at + 3 + n
end
if received then
  local member = run_id .. '\\0' .. received
  redis.call('HSET', P .. ':hook:' .. member,
    'status', 'received', 'payload', ARGV[10], 'received_at', now)
  move_hook(member, 'pending', 'received')
end
if expired then
  local member = run_id .. '\\0' .. expired
  redis.call('HSET', P .. ':hook:' .. member, 'status', 'expired')
  move_hook(member, 'pending', 'expired')
end
return new_head
"""

# ARGV: prefix, run_id, command_id, after. Returns {sequence, entry, ...} of the command's events.
_COMMAND_EVENTS = """
local seqs = redis.call('HGET', P .. ':cmd:' .. ARGV[2], ARGV[3])
local out = {}
if not seqs then return out end
local log, after = P .. ':log:' .. ARGV[2], tonumber(ARGV[4])
for seq in string.gmatch(seqs, '%d+') do
  local n = tonumber(seq)
  if n > after then
    out[#out + 1] = n
    out[#out + 1] = redis.call('LINDEX', log, n - 1)
  end
end
return out
"""

# ARGV: prefix, index key suffix, min, max, limit (-1: all), record key prefix, offset of the
# record's id in a member. Returns the HGETALL of each record in index order.
_RANGE_RECORDS = """
local members = redis.call('ZRANGEBYLEX', P .. ':' .. ARGV[2], ARGV[3], ARGV[4],
  'LIMIT', 0, tonumber(ARGV[5]))
local records, prefix, offset = {}, P .. ':' .. ARGV[6], tonumber(ARGV[7])
for i, member in ipairs(members) do
  records[i] = redis.call('HGETALL', prefix .. string.sub(member, offset))
end
return records
"""

# ARGV: prefix, run_id, fire_at.
_SCHEDULE_TIMER = """
redis.call('HSET', P .. ':timer', ARGV[2], ARGV[3])
redis.call('ZADD', P .. ':timers:free', ARGV[3], ARGV[2])
redis.call('ZREM', P .. ':timers:claimed', ARGV[2])
"""

# ARGV: prefix, now, limit, claimed_until. Due timers are the unclaimed ones with fire_at <= now
# and the claimed ones whose claim ran out; the first ``limit`` by (fire_at, run_id) are claimed.
# Returns {run_id, fire_at, ...}.
_CLAIM_DUE_TIMERS = """
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local free, claimed, fire = P .. ':timers:free', P .. ':timers:claimed', P .. ':timer'
local due = {}
for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', free, '-inf', ARGV[2], 'LIMIT', 0, limit)) do
  local at = redis.call('HGET', fire, run_id)
  due[#due + 1] = {tonumber(at), run_id, at}
end
for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', claimed, '-inf', ARGV[2])) do
  local at = redis.call('HGET', fire, run_id)
  if tonumber(at) <= now then due[#due + 1] = {tonumber(at), run_id, at} end
end
table.sort(due, by_score_then_id)
local out = {}
for i = 1, math.min(limit, #due) do
  local run_id = due[i][2]
  redis.call('ZREM', free, run_id)
  redis.call('ZADD', claimed, ARGV[4], run_id)
  out[#out + 1] = run_id
  out[#out + 1] = due[i][3]
end
return out
"""

# ARGV: prefix, run_id, owner, expires_at, now. Returns 1 when the lease was taken.
_ACQUIRE_LEASE = """
local r = lease_state(ARGV[2])
if not r[1] then return 0 end
if r[2] and r[2] ~= ARGV[3] and not (r[3] and tonumber(r[3]) <= tonumber(ARGV[5])) then
  return 0
end
redis.call('HSET', P .. ':run:' .. ARGV[2], 'lease_owner', ARGV[3], 'lease_expires_at', ARGV[4])
move_lease(ARGV[2], r, {r[1], ARGV[3], ARGV[4], r[4]})
return 1
"""

# ARGV: prefix, owner, expires_at, run_id...
_RENEW_LEASES = """
for i = 4, #ARGV do
  local r = lease_state(ARGV[i])
  if r[2] == ARGV[2] then
    redis.call('HSET', P .. ':run:' .. ARGV[i], 'lease_expires_at', ARGV[3])
    move_lease(ARGV[i], r, {r[1], r[2], ARGV[3], r[4]})
  end
end
"""

# ARGV: prefix, now, owner, expires_at, limit. Takes the first ``limit`` pending/running runs
# without a lease or with an expired one, by (updated_at, run_id). Returns their ids.
_CLAIM_EXPIRED_LEASES = """
local limit = tonumber(ARGV[5])
local free, held = P .. ':leases:free', P .. ':leases:held'
local stuck = {}
local unleased = redis.call('ZRANGE', free, 0, limit - 1, 'WITHSCORES')
for i = 1, #unleased, 2 do stuck[#stuck + 1] = {tonumber(unleased[i + 1]), unleased[i]} end
for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', ARGV[2])) do
  local updated = redis.call('HGET', P .. ':run:' .. run_id, 'updated_at')
  stuck[#stuck + 1] = {tonumber(updated), run_id}
end
table.sort(stuck, by_score_then_id)
local out = {}
for i = 1, math.min(limit, #stuck) do
  local run_id = stuck[i][2]
  local r = lease_state(run_id)
  redis.call('HSET', P .. ':run:' .. run_id, 'lease_owner', ARGV[3], 'lease_expires_at', ARGV[4])
  move_lease(run_id, r, {r[1], ARGV[3], ARGV[4], r[4]})
  out[i] = run_id
end
return out
"""


class _Script:
    """A Lua script with the shared prelude, sent by its SHA1 (``EVALSHA``)."""

    def __init__(self, body: str) -> None:
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


_SCRIPTS = {
    name: _Script(body)
    for name, body in {
        "create_run": _CREATE_RUN,
        "commit": _COMMIT,
        "command_events": _COMMAND_EVENTS,
        "range_records": _RANGE_RECORDS,
        "schedule_timer": _SCHEDULE_TIMER,
        "claim_due_timers": _CLAIM_DUE_TIMERS,
        "acquire_lease": _ACQUIRE_LEASE,
        "renew_leases": _RENEW_LEASES,
        "claim_expired_leases": _CLAIM_EXPIRED_LEASES,
    }.items()
}


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
    assert what == "HOOK", what
    move, state = detail.split(" ")
    received, expired = commit.hook_received, commit.hook_expired
    hook_id = received[0] if move == "received" and received is not None else expired
    check_hook_pending(run_id, str(hook_id), HookStatus(state) if state != "-" else None)
    raise AssertionError(f"a pending hook was refused: {detail}")


def _script_error(exc: ResponseError) -> tuple[str, str]:
    """The ``PYWF_<WHAT>`` code and detail of a script's refusal; re-raises any other error."""
    message = str(exc)
    start = message.find("PYWF_")
    if start < 0:
        raise exc
    what, _, detail = message[start + 5 :].partition(" ")
    return what, detail


async def _closed_or_dirty(conn: AbstractConnection) -> bool:
    """Whether an idle connection was closed by the server or holds an unread reply."""
    try:
        if _HAS_CAN_READ:
            return await conn.can_read()
        return await conn.can_read_destructive()  # redis-py before 8
    except RedisConnectionError:
        return True


_HAS_CAN_READ = hasattr(AbstractConnection, "can_read")


class RedisStorageBackend(StorageBackend):
    """Storage in one Redis server; any number of processes and hosts may share it.

    ``prefix`` namespaces every key, so several deployments (or test runs) can share a database.
    Constructing does no I/O; the first call connects, records the layout version and loads the
    scripts.
    """

    kind = "Redis database"

    def __init__(self, url: str = DEFAULT_URL, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self._pool: ConnectionPool | None = None
        self._idle: list[AbstractConnection] = []  # connected (or to reconnect) and unused
        self._loop: asyncio.AbstractEventLoop | None = None  # where the connections live
        self._reply_timeout = REPLY_TIMEOUT

    def __repr__(self) -> str:
        return f"RedisStorageBackend({shown_url(self.url)}, prefix={self.prefix!r})"

    def to_config(self) -> dict[str, Any]:
        """What ``storage_to_config`` reports: ``config_to_storage`` builds this backend again."""
        return {"type": "redis", "url": self.url, "prefix": self.prefix}

    # -- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return
        if self._loop is not loop:
            # Connections belong to the event loop that opened them; after another
            # ``asyncio.run`` that loop is gone, so its connections are dropped, not reused.
            self._pool, self._idle = None, []
        pool = self._new_pool()
        conn = pool.make_connection()
        try:
            await self._prepare(conn)
        except BaseException:
            await conn.disconnect()
            raise
        if self._pool is not None and self._loop is loop:  # another task connected meanwhile
            await conn.disconnect()
            return
        self._pool, self._idle, self._loop = pool, [conn], loop

    def _new_pool(self) -> ConnectionPool:
        """redis-py's pool: parses the URL (TLS, auth, database) and makes our connections."""
        try:
            pool = ConnectionPool.from_url(self.url, decode_responses=True, socket_timeout=None)
        except ValueError as exc:
            raise ConfigurationError(f"malformed Redis URL {shown_url(self.url)}: {exc}") from None
        # redis-py waits for a reply with ``asyncio.wait_for``, a task per read; the backend
        # keeps the deadline itself (``asyncio.timeout``), which costs a timer handle.
        kwargs = pool.connection_kwargs
        self._reply_timeout = float(kwargs.get("socket_timeout") or REPLY_TIMEOUT)
        kwargs["socket_timeout"] = None
        return pool

    async def _prepare(self, conn: AbstractConnection) -> None:
        """Record the layout version (refusing a newer one) and load the scripts: one trip."""
        key = f"{self.prefix}:version"
        commands: list[tuple[str | int, ...]] = [("SET", key, LAYOUT_VERSION, "NX"), ("GET", key)]
        commands += [("SCRIPT", "LOAD", script.source) for script in _SCRIPTS.values()]
        try:
            async with asyncio.timeout(self._reply_timeout):
                await conn.send_packed_command([part for c in commands for part in _pack(c)])
                replies = [await conn.read_response() for _ in commands]
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, ResponseError) as exc:
            error = self._unreachable(exc)
        else:
            version = int(replies[1])
            if version == LAYOUT_VERSION:
                return
            error = ConfigurationError(
                f"the Redis data under prefix {self.prefix!r} at {shown_url(self.url)} has layout"
                f" version {version}, which this PyWorkflow does not understand"
                f" ({LAYOUT_VERSION}): upgrade pyworkflow-engine"
            )
        raise error  # outside the handler: one error, without redis-py's chain

    async def close(self) -> None:
        idle, self._pool, self._idle = self._idle, None, []
        if self._loop is asyncio.get_running_loop():
            for conn in idle:
                await conn.disconnect()
        self._loop = None

    def _unreachable(self, exc: BaseException) -> ConfigurationError:
        reason = str(exc) or f"no reply within {self._reply_timeout:g}s"
        return ConfigurationError(f"cannot use Redis at {shown_url(self.url)}: {reason}")

    async def _call(self, *command: str | int) -> Any:
        """Send one command and return its reply; a server out of reach is a ConfigurationError.

        Nothing is retried: a write whose reply was lost may have been applied, and only the
        caller knows whether sending it again is safe.
        """
        try:
            return await self._request(_pack(command))
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            error = self._unreachable(exc)
        raise error  # outside the handler: one error, without redis-py's chain

    async def _request(self, packet: list[bytes]) -> Any:
        """One exchange on an idle connection (or a new one), which goes back to the idle list.

        redis-py's own pool and command layer cost several times the round trip itself on the
        hot path, so the backend keeps a plain list of idle connections: asyncio runs one task
        at a time, so popping and appending need no lock. An idle connection the server closed
        (a restart, an idle timeout) is reconnected before use; one that failed or was cancelled
        mid-exchange has been disconnected by redis-py and reconnects when next used.
        """
        if self._pool is None or self._loop is not asyncio.get_running_loop():
            await self.connect()
        assert self._pool is not None
        idle = self._idle
        conn = idle.pop() if idle else self._pool.make_connection()
        try:
            async with asyncio.timeout(self._reply_timeout):
                if conn.is_connected and await _closed_or_dirty(conn):
                    await conn.disconnect()
                await conn.send_packed_command(packet, check_health=False)
                return await conn.read_response()
        finally:
            if idle is self._idle and len(idle) < MAX_IDLE_CONNECTIONS:
                idle.append(conn)
            else:  # closed meanwhile, or enough are idle already
                await conn.disconnect()

    async def _script(self, name: str, *args: str | int) -> Any:
        """Run a script by SHA1, loading it first if the server lost it (``SCRIPT FLUSH``)."""
        script = _SCRIPTS[name]
        try:
            return await self._call("EVALSHA", script.sha, 0, self.prefix, *args)
        except NoScriptError:
            pass
        await self._call("SCRIPT", "LOAD", script.source)
        return await self._call("EVALSHA", script.sha, 0, self.prefix, *args)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: WorkflowRun, events: list[Event]) -> tuple[WorkflowRun, bool]:
        record, numbered = new_run_record(run, events, datetime.now(UTC))
        assert record.created_at is not None
        fields = _run_fields(record)
        try:
            reply = await self._script(
                "create_run",
                record.run_id,
                _opt(record.idempotency_key),
                _run_index_member(record.created_at, record.run_id),
                record.status.value,
                record.workflow_name,
                len(fields),
                *fields,
                *_event_args(record.run_id, numbered, record.created_at),
            )
        except ResponseError as exc:
            what, detail = _script_error(exc)
        else:
            if reply[0] == 1:
                return record, True
            return _run_from_hash(_pairs(reply[1])), False
        if what == "EXISTS":
            raise already_exists(record.run_id)
        raise duplicate_completion(record.run_id, [detail])

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        fields = await self._call("HGETALL", self._key("run", run_id))
        return _run_from_hash(_pairs(fields)) if fields else None

    async def get_run_by_idempotency_key(self, key: str) -> WorkflowRun | None:
        run_id = await self._call("HGET", self._key("idem"), key)
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
            start = "(" + _run_index_member(*decode_run_cursor(cursor))
        # <ix> is 18 digits and ":" before the run id: the id starts at character 20.
        records = await self._script("range_records", index, start, "+", limit + 1, "run:", 20)
        page = [_run_from_hash(_pairs(flat)) for flat in records[:limit]]
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
            head: int = await self._script("commit", *self._commit_args(commit, now))
        except ResponseError as exc:
            what, detail = _script_error(exc)
        else:
            if commit.expected_sequence is None and commit.events:
                # Only now is the head known that these events follow.
                number_events(commit, head - len(commit.events), now)
            return head
        _refuse_commit(commit, what, detail)

    @staticmethod
    def _commit_args(commit: Commit, now: datetime) -> _Fields:
        run_id = commit.run_id
        fields: _Fields = []
        for name, value in (
            ("result", commit.result),
            ("error", commit.error),
            ("recovery_attempts", commit.recovery_attempts),
        ):
            _add_optional(fields, name, value)
        for name, instant in (
            ("started_at", commit.started_at),
            ("completed_at", commit.completed_at),
        ):
            _add_optional(fields, name, micros(instant) if instant is not None else None)
        lease, lease_expires = commit.lease, ""
        if isinstance(lease, tuple):
            lease_arg, lease_expires = "=" + lease[0], str(micros(lease[1]))
        else:
            lease_arg = "-" if lease is None else ""
        timer, timer_arg = commit.timer, ""
        if isinstance(timer, datetime):
            timer_arg = str(micros(timer))
        elif timer is None:
            timer_arg = "-"
        received = commit.hook_received
        hooks: _Fields = [len(commit.hooks_created)]
        for hook in commit.hooks_created:
            hook_fields = _hook_fields(run_id, hook)
            hooks += (_hook_member(run_id, hook.hook_id), hook.status.value, len(hook_fields))
            hooks += hook_fields
        return [
            run_id,
            "" if commit.expected_sequence is None else commit.expected_sequence,
            micros(now),
            commit.status.value if commit.status is not None else "",
            lease_arg,
            lease_expires,
            timer_arg,
            _opt(received[0] if received is not None else None),
            received[1] if received is not None else "",
            _opt(commit.hook_expired),
            len(fields),
            *fields,
            *_event_args(run_id, commit.events, now),
            *hooks,
            _opt(commit.owner),
        ]

    async def get_events(
        self, run_id: str, after_sequence: int = 0, command_id: str | None = None
    ) -> list[Event]:
        after = max(after_sequence, 0)
        if command_id is None:
            entries = await self._call("LRANGE", self._key("log", run_id), after, -1)
            return _events_from_entries(run_id, after + 1, entries)
        flat = await self._script("command_events", run_id, command_id, after)
        return [
            event
            for sequence, entry in zip(flat[::2], flat[1::2], strict=True)
            for event in _events_from_entries(run_id, sequence, [entry])
        ]

    # -- timers -------------------------------------------------------------------------------

    async def schedule_timer(self, run_id: str, fire_at: datetime) -> None:
        await self._script("schedule_timer", run_id, micros(fire_at))

    async def claim_due_timers(
        self, now: datetime, limit: int = 100, claim_for: timedelta = timedelta(seconds=30)
    ) -> list[Timer]:
        if limit < 1:
            return []
        flat = await self._script("claim_due_timers", micros(now), limit, micros(now + claim_for))
        return [
            Timer(run_id, _time(fire_at))
            for run_id, fire_at in zip(flat[::2], flat[1::2], strict=True)
        ]

    async def get_timer(self, run_id: str) -> Timer | None:
        fire_at = await self._call("HGET", self._key("timer"), run_id)
        return Timer(run_id, _time(fire_at)) if fire_at is not None else None

    # -- leases -------------------------------------------------------------------------------

    async def acquire_lease(
        self, run_id: str, owner: str, expires_at: datetime, now: datetime
    ) -> bool:
        taken = await self._script("acquire_lease", run_id, owner, micros(expires_at), micros(now))
        return bool(taken == 1)

    async def renew_leases(self, run_ids: list[str], owner: str, expires_at: datetime) -> None:
        if run_ids:
            await self._script("renew_leases", owner, micros(expires_at), *run_ids)

    async def claim_expired_leases(
        self, now: datetime, owner: str, expires_at: datetime, limit: int = 100
    ) -> list[str]:
        if limit < 1:
            return []
        run_ids = await self._script(
            "claim_expired_leases", micros(now), owner, micros(expires_at), limit
        )
        return list(run_ids)

    # -- hooks --------------------------------------------------------------------------------

    async def get_hook(self, run_id: str, hook_id: str) -> Hook | None:
        fields = await self._call("HGETALL", self._key("hook", _hook_member(run_id, hook_id)))
        return _hook_from_hash(_pairs(fields)) if fields else None

    async def list_hooks(
        self, run_id: str | None = None, status: HookStatus | None = None
    ) -> list[Hook]:
        index = "hooks" if status is None else f"hooks:status:{HookStatus(status).value}"
        # Members are <run_id>\0<hook_id>: one run's hooks lie between <run_id>\0 and <run_id>\1.
        low, high = ("-", "+") if run_id is None else (f"[{run_id}\0", f"({run_id}\1")
        records = await self._script("range_records", index, low, high, -1, "hook:", 1)
        return [_hook_from_hash(_pairs(flat)) for flat in records]

    # -- step checkpoints ---------------------------------------------------------------------

    async def put_checkpoint(self, run_id: str, step_id: str, data: str) -> None:
        await self._call("HSET", self._key("checkpoints", run_id), step_id, data)

    async def get_checkpoint(self, run_id: str, step_id: str) -> str | None:
        data: str | None = await self._call("HGET", self._key("checkpoints", run_id), step_id)
        return data

    async def delete_checkpoint(self, run_id: str, step_id: str) -> None:
        await self._call("HDEL", self._key("checkpoints", run_id), step_id)


__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "LAYOUT_VERSION", "RedisStorageBackend"]
