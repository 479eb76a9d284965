"""The Redis backend's Lua scripts: their texts, and running them by SHA1 on a server.

Design decision: each write is **one Lua script**, so it is atomic (Redis runs a script alone, no
other command interleaves) and costs one round trip. Every script checks everything before it
writes anything: Redis does not roll a script back, so a check that fails after a write would
leave half a ``Commit``. The checks fail with an error reply ``PYWF_<WHAT> <detail>`` that
``script_refusal`` reads and the backend turns into the port's exceptions. Scripts are sent with
``EVALSHA``; after a ``SCRIPT FLUSH`` or a server restart the ``NOSCRIPT`` reply makes ``Scripts``
load the script and send it again.

The scripts keep the invariants of the indexes (key layout in
``pyworkflow.storage.redis.codec``): every timer is in exactly one of ``timers:free`` and
``timers:claimed``; a pending or running run is in ``leases:free`` when it has no lease owner and
in ``leases:held`` when its lease has an expiry (a lease without one never runs out); the scripts
keep these invariants whenever a status, lease, timer or ``updated_at`` changes. A schedule with a
poll time is in ``schedules:poll`` scored by it (claims move the score, ``update_schedule`` sets
or removes it), and every schedule is in the ``schedules`` listing indexes of its status and
workflow name (see ``_SCHEDULE_PRELUDE`` for the schedule keys). Sorted-set scores are doubles,
exact for microsecond times before the year 2255 (the bound the SQL backends and
``Event.restore`` read times with).

Scripts name keys they compute from the prefix rather than passing them in ``KEYS``, so the
backend needs one Redis server (or a replicated primary), not Redis Cluster.

This module must never open connections or write the protocol itself (it sends through
``pyworkflow.storage.redis.connection``), never encode or decode records (``codec`` does), and
never import the engine (only its event model) or a runtime. A script's text is part of the
stored layout's contract: a change to what a script writes needs a new ``LAYOUT_VERSION``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from pyworkflow.model.schemas import RESERVED_LEASE_PREFIX, RunStatus
from pyworkflow.storage.base import LEASABLE_STATUSES
from pyworkflow.storage.redis.connection import Command, RedisConnections


def _lua_set(statuses: Iterable[RunStatus]) -> str:
    """A Lua table with the statuses as keys: Lua and Python take them from ``RunStatus``."""
    return "{" + ", ".join(f"['{status.value}'] = true" for status in statuses) + "}"


# Shared by every script: ARGV[1] is the key prefix. Optional strings arrive as "" (None) or
# "=" .. value (see ``codec.opt``).
_PRELUDE = (
    f"""
local P = ARGV[1]
local TERMINAL = {_lua_set(s for s in RunStatus if s.is_terminal)}
local LEASABLE = {_lua_set(LEASABLE_STATUSES)}
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

-- set the run's timer to fire_at, unclaimed
local function set_timer(run_id, fire_at)
  redis.call('HSET', P .. ':timer', run_id, fire_at)
  redis.call('ZADD', P .. ':timers:free', fire_at, run_id)
  redis.call('ZREM', P .. ':timers:claimed', run_id)
end

-- store a new run: its hash fields ARGV[from..to], its first n events (3 arguments each, from
-- ARGV[first]) and its list_runs and lease index entries (<ix> ix)
local function insert_run(run_id, ix, status, name, from, to, first, n)
  redis.call('HSET', P .. ':run:' .. run_id, unpack(ARGV, from, to))
  append_events(run_id, 0, first, n)
  redis.call('ZADD', P .. ':runs', 0, ix)
  redis.call('ZADD', P .. ':runs:name:' .. name, 0, ix)
  index_status(ix, status, name, true)
  move_lease(run_id, {}, lease_state(run_id))
end

-- append a notice (5 arguments from ARGV[at]: run_id, wake_at ('' none), then its event's 3) to
-- the run that carries its run on (followed along continued_to_run_id), at now; skipped when
-- that run does not exist, has ended or holds the event's completion key already
local function deliver(at, now)
  local fields = {'continued_to_run_id', 'status', 'last_sequence', 'lease_owner',
    'lease_expires_at', 'updated_at'}
  local follow, target, seen = string.sub(ARGV[at], 1, 1) == '+', string.sub(ARGV[at], 2), {}
  local row = redis.call('HMGET', P .. ':run:' .. target, unpack(fields))
  if row[1] and not follow then return end  -- it continued as new: ended, for this notice
  while row[1] do
    -- a chain that loops has no run carrying it on (and must not hang the server)
    if seen[target] then return end
    seen[target] = true
    target = row[1]
    row = redis.call('HMGET', P .. ':run:' .. target, unpack(fields))
  end
  local status = row[2]
  if not status or TERMINAL[status] then return end
  local key = ARGV[at + 3]
  if key ~= '' and redis.call('SISMEMBER', P .. ':done:' .. target, key) == 1 then return end
  local head = tonumber(row[3])
  append_events(target, head, at + 2, 1)
  redis.call('HSET', P .. ':run:' .. target, 'last_sequence', head + 1, 'updated_at', now)
  move_lease(target, {status, row[4], row[5], row[6]}, {status, row[4], row[5], now})
  if ARGV[at + 1] ~= '' then set_timer(target, ARGV[at + 1]) end
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
insert_run(run_id, ix, status, name, 8, 7 + n_fields, first, n_events)
if key then redis.call('HSET', P .. ':idem', key, run_id) end
return {1}
"""

# ARGV: prefix, run_id, expected (''), now, status (''), lease ('' keep, '-' release,
# '=owner' set), lease expiry, timer ('' keep, '-' clear, micros), hook received (opt), payload,
# hook expired (opt), n, n run field values, events (count, 3 each), hooks created (count, then
# member, status, n, n field values each), the committing owner (opt). Then, only when the commit
# creates runs, sends notices or disposes hooks, a trailing section: the runs created (count, then
# run_id, <ix>, status, workflow_name, n, n field values, events (count, 3 each) each), the
# notices (count, then run_id, wake_at ('' none), event (3) each) and, when any, the hooks
# disposed (count, then hook_id each). Returns the new head.
_COMMIT = """
local run_id, now = ARGV[2], ARGV[4]
local run = P .. ':run:' .. run_id
local row = redis.call('HMGET', run, 'last_sequence', 'status', 'workflow_name', '_ix',
  'lease_owner', 'lease_expires_at', 'updated_at')
if not row[1] then return fail('NOT_FOUND') end
local head, status = tonumber(row[1]), row[2]
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= head then return fail('CONFLICT ' .. head) end
if TERMINAL[status] then return fail('FINISHED ' .. status) end
local n_fields = tonumber(ARGV[12])
local first = 13 + n_fields + 1
local n_events = tonumber(ARGV[first - 1])
local hooks_at = first + 3 * n_events
local tail = hooks_at
for _ = 1, tonumber(ARGV[hooks_at]) do tail = tail + 3 + tonumber(ARGV[tail + 3]) end
tail = tail + 1
local committer, holder = opt(ARGV[tail]), row[5]
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
local duplicate = duplicate_key(run_id, first, n_events)
if duplicate then return fail('DUPLICATE ' .. duplicate) end
-- the runs created, {run_id, first argument, n fields, first event, n events} each
local created, notices_at = {}, nil
if #ARGV > tail then
  local at, taken = tail + 2, {}
  for i = 1, tonumber(ARGV[tail + 1]) do
    local id, n = ARGV[at], tonumber(ARGV[at + 4])
    if taken[id] or redis.call('EXISTS', P .. ':run:' .. id) == 1 then
      return fail('TAKEN ' .. (i - 1))
    end
    taken[id] = true
    local events_at = at + 5 + n
    local count = tonumber(ARGV[events_at])
    local repeated = duplicate_key(id, events_at + 1, count)
    if repeated then return fail('CREATED_DUPLICATE ' .. (i - 1) .. ' ' .. repeated) end
    created[i] = {id, at, n, events_at + 1, count}
    at = events_at + 1 + 3 * count
  end
  notices_at = at
end
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
  set_timer(run_id, timer)
end
local at = hooks_at
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
if notices_at then
  for _, c in ipairs(created) do
    local at = c[2]
    insert_run(c[1], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], at + 5, at + 4 + c[3], c[4], c[5])
  end
  -- after everything above: a notice sees the runs and links this commit wrote
  for i = 1, tonumber(ARGV[notices_at]) do deliver(notices_at + 5 * i - 4, now) end
  local disposed_at = notices_at + 1 + 5 * tonumber(ARGV[notices_at])
  if #ARGV >= disposed_at then
    for i = 1, tonumber(ARGV[disposed_at]) do
      local member = run_id .. '\\0' .. ARGV[disposed_at + i]
      local hook = P .. ':hook:' .. member
      if redis.call('HGET', hook, 'status') == 'pending' then
        redis.call('HSET', hook, 'status', 'disposed')
        move_hook(member, 'pending', 'disposed')
      end
    end
  end
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

# ARGV: prefix, run_id. A run's record and, when the record keeps its arguments in its log
# (``input_args`` empty: ``IN_LOG``), its first log entry (``workflow.started``); else false.
_RUN_RECORD = """
local fields = redis.call('HGETALL', P .. ':run:' .. ARGV[2])
for i = 1, #fields, 2 do
  if fields[i] == 'input_args' then
    if fields[i + 1] == '' then
      return {fields, redis.call('LINDEX', P .. ':log:' .. ARGV[2], 0)}
    end
    break
  end
end
return {fields, false}
"""

# ARGV: prefix, run_id... The first log entry of each run (false for a run without one).
_FIRST_ENTRIES = """
local entries = {}
for i = 2, #ARGV do
  entries[i - 1] = redis.call('LINDEX', P .. ':log:' .. ARGV[i], 0)
end
return entries
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


# Schedules. Keys (besides those in ``codec``)::
#
#     P:schedule:<schedule_id>           hash: ``data`` (the record, ``schedule_to_json``),
#                                        ``revision``, and what its index entries are:
#                                        ``status``, ``workflow_name``, ``_ix``
#     P:schedules:poll                   zset: schedule ids scored by poll time (micros); only
#                                        schedules with one; a claim moves the score
#     P:schedules, P:schedules:status:<s>,  zsets (score 0, members ``<ix>`` of created_at and
#       P:schedules:name:<n>,            schedule_id, as runs'): ``list_schedules`` indexes, all,
#       P:schedules:status:<s>:name:<n>  by status, by workflow name, by both
_SCHEDULE_PRELUDE = """
-- add the schedule's <ix> to (or remove it from) the list_schedules indexes
local function index_schedule(ix, status, name, add)
  local all, by_status = P .. ':schedules', P .. ':schedules:status:' .. status
  local indexes = {all, all .. ':name:' .. name, by_status, by_status .. ':name:' .. name}
  for _, index in ipairs(indexes) do
    if add then redis.call('ZADD', index, 0, ix) else redis.call('ZREM', index, ix) end
  end
end

-- put the schedule's poll time (micros, '' for none) in the poll index
local function set_poll(schedule_id, poll_at)
  if poll_at == '' then
    redis.call('ZREM', P .. ':schedules:poll', schedule_id)
  else
    redis.call('ZADD', P .. ':schedules:poll', poll_at, schedule_id)
  end
end
"""

# ARGV: prefix, schedule_id, <ix>, status, workflow_name, poll_at ('' none), data. Returns {1}
# when created (revision 1), {0, data} of the stored schedule when the id is taken.
_CREATE_SCHEDULE = """
local schedule_id, ix, status, name = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = P .. ':schedule:' .. schedule_id
local existing = redis.call('HGET', key, 'data')
if existing then return {0, existing} end
redis.call('HSET', key, 'data', ARGV[7], 'revision', 1, 'status', status, 'workflow_name', name,
  '_ix', ix)
index_schedule(ix, status, name, true)
set_poll(schedule_id, ARGV[6])
return {1}
"""

# ARGV: prefix, schedule_id, expected revision, <ix>, status, workflow_name, poll_at ('' none),
# data (at revision expected + 1). Compare-and-set: returns 1 when written, 0 (nothing written)
# when the schedule does not exist or its revision is not the expected one.
_UPDATE_SCHEDULE = """
local schedule_id, expected = ARGV[2], tonumber(ARGV[3])
local key = P .. ':schedule:' .. schedule_id
local row = redis.call('HMGET', key, 'revision', '_ix', 'status', 'workflow_name')
if not row[1] or tonumber(row[1]) ~= expected then return 0 end
local ix, status, name = ARGV[4], ARGV[5], ARGV[6]
index_schedule(row[2], row[3], row[4], false)
index_schedule(ix, status, name, true)
redis.call('HSET', key, 'data', ARGV[8], 'revision', expected + 1, 'status', status,
  'workflow_name', name, '_ix', ix)
set_poll(schedule_id, ARGV[7])
return 1
"""

# ARGV: prefix, now, limit, poll_at after the claim. The first ``limit`` schedules with a poll
# time <= now, by (poll time, schedule_id), move to the new poll time. Returns their data.
_CLAIM_DUE_SCHEDULES = """
local poll = P .. ':schedules:poll'
local due = redis.call('ZRANGEBYSCORE', poll, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i, schedule_id in ipairs(due) do
  redis.call('ZADD', poll, ARGV[4], schedule_id)
  out[i] = redis.call('HGET', P .. ':schedule:' .. schedule_id, 'data')
end
return out
"""

# ARGV: prefix, index key suffix, offset, limit. Returns the data of the schedules of one page of
# the index (members are <ix>: the schedule id starts at character 20).
_LIST_SCHEDULES = """
local members = redis.call('ZRANGEBYLEX', P .. ':' .. ARGV[2], '-', '+', 'LIMIT',
  tonumber(ARGV[3]), tonumber(ARGV[4]))
local out = {}
for i, member in ipairs(members) do
  out[i] = redis.call('HGET', P .. ':schedule:' .. string.sub(member, 20), 'data')
end
return out
"""


class Script:
    """A Lua script with the shared prelude, sent by its SHA1 (``EVALSHA``)."""

    def __init__(self, body: str) -> None:
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


SCRIPTS = {
    name: Script(body)
    for name, body in {
        "create_run": _CREATE_RUN,
        "commit": _COMMIT,
        "command_events": _COMMAND_EVENTS,
        "range_records": _RANGE_RECORDS,
        "run_record": _RUN_RECORD,
        "first_entries": _FIRST_ENTRIES,
        "claim_due_timers": _CLAIM_DUE_TIMERS,
        "renew_leases": _RENEW_LEASES,
        "claim_expired_leases": _CLAIM_EXPIRED_LEASES,
        "create_schedule": _SCHEDULE_PRELUDE + _CREATE_SCHEDULE,
        "update_schedule": _SCHEDULE_PRELUDE + _UPDATE_SCHEDULE,
        "claim_due_schedules": _CLAIM_DUE_SCHEDULES,
        "list_schedules": _LIST_SCHEDULES,
    }.items()
}


def load_commands() -> list[Command]:
    """The commands that load every script into a server (``SCRIPT LOAD``), to send on connect."""
    return [("SCRIPT", "LOAD", script.source) for script in SCRIPTS.values()]


def script_refusal(exc: ResponseError) -> tuple[str, str]:
    """The ``PYWF_<WHAT>`` code and detail of a script's refusal; re-raises any other error."""
    message = str(exc)
    start = message.find("PYWF_")
    if start < 0:
        raise exc
    what, _, detail = message[start + 5 :].partition(" ")
    return what, detail


class Scripts:
    """The scripts on one Redis server, under one key prefix (every script's ``ARGV[1]``)."""

    def __init__(self, redis: RedisConnections, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def run(self, name: str, *args: str | int) -> Any:
        """Run a script by SHA1, loading it first if the server lost it (``SCRIPT FLUSH``)."""
        script = SCRIPTS[name]
        call = self._redis.call
        try:
            return await call("EVALSHA", script.sha, 0, self._prefix, *args)
        except NoScriptError:
            pass
        await call("SCRIPT", "LOAD", script.source)
        return await call("EVALSHA", script.sha, 0, self._prefix, *args)
