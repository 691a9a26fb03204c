"""`RedisSessionStore`: sessions shared by a fleet in Redis (standalone, Sentinel or Cluster).

Key layout, for `prefix="siprec:"` and the default hash tag `siprec`::

    siprec:{siprec}:session:<id>        hash  data (JSON body), version, node, status, activity
                                              expires `ttl` after the last save, touch or claim
    siprec:{siprec}:index:active        zset  ids of non-terminal sessions, score = last activity
    siprec:{siprec}:index:node:<node>   zset  non-terminal sessions owned by <node>,
                                              score = activity at the last save or claim
    siprec:{siprec}:nodes               zset  node ids, score = last heartbeat
    siprec:{siprec}:nodes:stopped       hash  node id -> when it stopped cleanly (ms); a
                                              heartbeat removes the node's field

Times are milliseconds since the Unix epoch. Session keys live under `session:` and indexes under
`index:`, so no session id or node id can name an index key.

Every key carries the same `{hash tag}`, so in Redis Cluster they all hash to one slot and one
Lua script can change a record and its indexes atomically. The trade-off: a fleet's session data
lives on one shard (its master and replicas), so Cluster brings failover, not horizontal scale,
for one prefix. That is ample for this data (2,000 calls are a few MB and a few hundred writes
a second); fleets sharing one cluster can pass distinct `hash_tag`s to spread over shards.
The layout is the same in every mode, so data can move between standalone and Cluster as is.

The hash fields `version`, `node` and `activity` are authoritative over the copies in the JSON
body: `claim` and `touch` change them without rewriting the body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from .errors import (
    CorruptRecord,
    InvalidTransition,
    OwnershipConflict,
    SessionNotFound,
    StoreUnavailable,
    VersionConflict,
)
from .state import SessionState, as_utc, utcnow
from .store import (
    DEFAULT_NODE_TTL,
    DEFAULT_TTL,
    Clock,
    NodeInfo,
    SessionStore,
    decode_record,
    duration_ms,
    encode_for_save,
    from_ms,
    node_info,
    to_ms,
)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_FETCH_BATCH = 500
log = structlog.get_logger("siprec_node.session.redis_store")
_RECORD_FIELDS = ("data", "version", "node", "activity")

# KEYS: record, active index, owner's node index
# ARGV: id, data, node, status, activity_ms, ttl_ms|'', expected_version|'', terminal 0|1,
#       ",<allowed previous statuses>,"
_SAVE = """
local cur = redis.call('HMGET', KEYS[1], 'version', 'node', 'status', 'activity')
local ver = tonumber(cur[1]) or 0
if ARGV[7] ~= '' and tonumber(ARGV[7]) ~= ver then
  return {'version', tostring(ver)}
end
if cur[1] then
  if cur[2] ~= ARGV[3] then return {'owner', cur[2] or ''} end
  if not string.find(ARGV[9], ',' .. (cur[3] or '') .. ',', 1, true) then
    return {'status', cur[3] or ''}
  end
end
local act = ARGV[5]
if cur[4] and tonumber(cur[4]) > tonumber(act) then act = cur[4] end
ver = ver + 1
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', tostring(ver), 'node', ARGV[3],
           'status', ARGV[4], 'activity', act)
if ARGV[6] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
else
  redis.call('PERSIST', KEYS[1])
end
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[2], act, ARGV[1])
  redis.call('ZADD', KEYS[3], act, ARGV[1])
end
return {'ok', tostring(ver), act}
"""

# KEYS: record, active index, from-node index, to-node index
# ARGV: id, from_node, to_node, ttl_ms|''
_CLAIM = """
local cur = redis.call('HMGET', KEYS[1], 'node', 'status', 'version', 'activity')
if not cur[1] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
if cur[1] ~= ARGV[2] or cur[2] == 'ended' or cur[2] == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'version', tostring((tonumber(cur[3]) or 0) + 1))
if ARGV[4] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
local act = cur[4] or '0'
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], act, ARGV[1])
redis.call('ZADD', KEYS[2], act, ARGV[1])
return 1
"""

# Activity of sessions (RTP): a later time is kept, the TTL refreshed, the active index's score
# raised for sessions not over. Many in one round trip (the driver reports every live call's
# activity each interval: 2,000 calls were 2,000 round trips and 0.2 s of the node's CPU).
# KEYS: active index, then one record per session.  ARGV: ttl_ms|'', then id, at_ms per session.
# Returns the ids whose record is gone.
_TOUCH_MANY = """
local missing = {}
for i = 2, #KEYS do
  local id, at = ARGV[2 * i - 2], ARGV[2 * i - 1]
  local cur = redis.call('HMGET', KEYS[i], 'activity', 'status')
  if not cur[1] and redis.call('EXISTS', KEYS[i]) == 0 then
    missing[#missing + 1] = id
  else
    local act = cur[1] or '0'
    if tonumber(at) > tonumber(act) then
      act = at
      redis.call('HSET', KEYS[i], 'activity', act)
    end
    if ARGV[1] ~= '' then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
    if cur[2] ~= 'ended' and cur[2] ~= 'failed' then
      redis.call('ZADD', KEYS[1], 'XX', 'GT', act, id)
    end
  end
end
return missing
"""

_TOUCH_BATCH = 200
"""Sessions per _TOUCH_MANY call: Redis runs nothing else while a script runs (~1 ms here)."""

# KEYS: record, active index, owner's node index.  ARGV: id, owner read before the call
_DELETE = """
local node = redis.call('HGET', KEYS[1], 'node')
if not node then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if node ~= ARGV[2] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: index, record of each id.  ARGV: check_owner 0|1, owner, id...
# Removes ids whose record is gone (expired) or, with check_owner, belongs to another node.
_PRUNE = """
local removed = 0
for i = 2, #KEYS do
  local id = ARGV[i + 1]
  local node = redis.call('HGET', KEYS[i], 'node')
  if (not node) or (ARGV[1] == '1' and node ~= ARGV[2]) then
    removed = removed + redis.call('ZREM', KEYS[1], id)
  end
end
return removed
"""

# KEYS: nodes, node index, stopped nodes.  ARGV: node, dead_before_ms
_FORGET_NODE = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or tonumber(beat) >= tonumber(ARGV[2]) then return 0 end
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# KEYS: nodes, stopped nodes.  ARGV: node, at_ms
_STOPPED = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
"""


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None


def _split_multi_host(url: str) -> tuple[str | None, str | None, list[str], str, dict[str, str]]:
    """Split `scheme://[user[:password]@]h:p[,h:p]/path?query` (urlsplit rejects host lists)."""
    _, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    user = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user_part, has_pw, pw = userinfo.partition(":")
        user = unquote(user_part) or None
        password = unquote(pw) if has_pw else None
    hosts = [h for h in netloc.split(",") if h.strip()]
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    return user, password, hosts, path, params


def _cluster_from_list(urls: list[str], options: dict[str, Any]) -> RedisCluster:
    """A cluster client from seed nodes given as `redis://host:port` or `host:port`."""
    if not urls:
        raise ValueError("store url: empty list of cluster nodes")
    nodes = []
    username = password = None
    ssl = False
    for i, item in enumerate(urls):
        text = item.strip()
        if "://" not in text:
            nodes.append(ClusterNode(*_host_port(text, 6379)))
            continue
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"store url: cluster node {item!r} must be host:port or redis://…")
        nodes.append(ClusterNode(parts.hostname, parts.port or 6379))
        if i == 0:  # credentials and TLS are taken from the first node
            username = unquote(parts.username) if parts.username else None
            password = unquote(parts.password) if parts.password else None
            ssl = parts.scheme == "rediss"
    return RedisCluster(
        startup_nodes=nodes, username=username, password=password, ssl=ssl, **options
    )


def _connect(url: str | Sequence[str], options: dict[str, Any]) -> tuple[Any, Sentinel | None]:
    """A redis.asyncio client for `url` (and the Sentinel manager, if any)."""
    if not isinstance(url, str):
        return _cluster_from_list(list(url), options), None
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis+cluster", "rediss+cluster"):
        user, password, hosts, _, _ = _split_multi_host(url)
        if not hosts:
            raise ValueError(f"store url {url!r}: no cluster node")
        nodes = [ClusterNode(*_host_port(h, 6379)) for h in hosts]
        return RedisCluster(
            startup_nodes=nodes,
            username=user,
            password=password,
            ssl=scheme == "rediss+cluster",
            **options,
        ), None
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        user, password, hosts, path, params = _split_multi_host(url)
        if not hosts:
            raise ValueError(f"store url {url!r}: no sentinel host")
        service, _, db = path.strip("/").partition("/")
        if not service:
            raise ValueError(f"store url {url!r}: missing service name (…/service_name/db)")
        try:
            db_index = int(db) if db else 0
        except ValueError:
            raise ValueError(f"store url {url!r}: db must be an integer, got {db!r}") from None
        sentinel_kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
        if "sentinel_password" in params:
            sentinel_kwargs["password"] = params["sentinel_password"]
        sentinel = Sentinel(
            [_host_port(h, 26379) for h in hosts],
            sentinel_kwargs=sentinel_kwargs,
            **options,
        )
        master = sentinel.master_for(
            service,
            db=db_index,
            username=user,
            password=password,
            ssl=scheme == "rediss+sentinel",
        )
        return master, sentinel
    if scheme in ("redis", "rediss", "unix"):
        return aioredis.Redis.from_url(url, **options), None
    raise ValueError(
        f"store url {url!r}: scheme must be redis, rediss, unix, redis+sentinel or redis+cluster"
    )


def _decode_row(session_id: str, row: list[Any]) -> SessionState:
    """A state from an HMGET of `_RECORD_FIELDS`; `CorruptRecord` if it does not decode."""
    data, version, node, activity = row
    try:
        version_n, activity_ms = int(version or 0), int(activity or 0)
    except ValueError as exc:
        raise CorruptRecord(session_id, f"bad version or activity: {exc}") from exc
    return decode_record(
        session_id, data, version=version_n, node_id=node or "", activity_ms=activity_ms
    )


def _decode_listed(session_id: str, row: list[Any]) -> SessionState | None:
    """Like `_decode_row`, but a corrupt record is logged and skipped, so that one bad record
    does not stop listing (and with it cleanup and takeover) for the whole fleet."""
    try:
        return _decode_row(session_id, row)
    except CorruptRecord as exc:
        log.warning("skipping corrupt session record", session_id=session_id, error=exc.reason)
        return None


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisSessionStore(SessionStore):
    """Session store on Redis via redis.asyncio.

    `url`: `redis://[:password@]host:port/db`, `rediss://…`, `unix://…`,
    `redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]`,
    `redis+cluster://host:port[,host:port]`, or a list of cluster seed nodes (`redis://host:port`
    or `host:port`; a list always means Cluster, even of one node).
    Connections are opened lazily, so constructing never blocks.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = "siprec:",
        ttl: timedelta | None = DEFAULT_TTL,
        hash_tag: str = "siprec",
        socket_timeout: float = 5.0,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(ttl=ttl, clock=clock)
        if not hash_tag or "{" in hash_tag or "}" in hash_tag:
            raise ValueError(f"hash_tag must be non-empty without braces, got {hash_tag!r}")
        self.prefix = prefix
        self.url = url
        self._base = f"{prefix}{{{hash_tag}}}:"
        self._active_key = self._base + "index:active"
        self._nodes_key = self._base + "nodes"
        self._stopped_key = self._base + "nodes:stopped"
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
        }
        self._client, self._sentinel = _connect(url, options)
        self.is_cluster = isinstance(self._client, RedisCluster)
        self._ttl_arg = "" if ttl is None else str(max(1, duration_ms(ttl)))
        reg = self._client.register_script
        self._save_script = reg(_SAVE)
        self._claim_script = reg(_CLAIM)
        self._touch_many_script = reg(_TOUCH_MANY)
        self._delete_script = reg(_DELETE)
        self._prune_script = reg(_PRUNE)
        self._forget_script = reg(_FORGET_NODE)
        self._stopped_script = reg(_STOPPED)

    def __repr__(self) -> str:
        return f"RedisSessionStore({self.url!r}, prefix={self.prefix!r})"

    # -- keys --------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The redis.asyncio client (for other structures sharing the store, e.g. the
        transcription queue's stream)."""
        return self._client

    def key(self, name: str) -> str:
        """A key of the store's prefix and hash tag (same Cluster slot as the sessions)."""
        return f"{self._base}{name}"

    def session_key(self, session_id: str) -> str:
        """Key of a session record."""
        return f"{self._base}session:{session_id}"

    def node_index_key(self, node_id: str) -> str:
        """Key of the index of a node's active sessions."""
        return f"{self._base}index:node:{node_id}"

    @property
    def active_index_key(self) -> str:
        """Key of the index of all active sessions."""
        return self._active_key

    @property
    def nodes_key(self) -> str:
        """Key of the node heartbeat index."""
        return self._nodes_key

    # -- internals ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def _fetch(self, ids: list[str]) -> dict[str, list[Any]]:
        """HMGET of each record, pipelined in batches; missing records map to all-None."""
        found: dict[str, list[Any]] = {}
        for start in range(0, len(ids), _FETCH_BATCH):
            batch = ids[start : start + _FETCH_BATCH]
            pipe = self._client.pipeline(transaction=False)
            for session_id in batch:
                pipe.hmget(self.session_key(session_id), *_RECORD_FIELDS)
            rows = await pipe.execute()
            found.update(zip(batch, rows, strict=True))
        return found

    async def _states(
        self, index_key: str, ids: list[str], owner: str | None = None
    ) -> list[SessionState]:
        """Decode the records of `ids` (in order), pruning ids from `index_key` whose record is
        gone or (with `owner`) belongs to another node."""
        rows = await self._fetch(ids)
        states: list[SessionState] = []
        ghosts: list[str] = []
        for session_id in ids:
            row = rows[session_id]
            if row[0] is None or (owner is not None and row[2] != owner):
                ghosts.append(session_id)
            elif (state := _decode_listed(session_id, row)) is not None:
                states.append(state)
        for start in range(0, len(ghosts), _FETCH_BATCH):
            batch = ghosts[start : start + _FETCH_BATCH]
            await self._prune_script(
                keys=[index_key, *(self.session_key(i) for i in batch)],
                args=["0" if owner is None else "1", owner or "", *batch],
            )
        return states

    # -- sessions ----------------------------------------------------------------------------

    async def save(self, state: SessionState, *, expected_version: int | None = None) -> int:
        with self._errors():
            now = self._now()
            activity_ms = max(to_ms(state.last_activity), to_ms(now))
            data = encode_for_save(state, now=now, activity=from_ms(activity_ms))
            allowed = ",".join(s.value for s in state.status.predecessors())
            reply = await self._save_script(
                keys=[
                    self.session_key(state.id),
                    self._active_key,
                    self.node_index_key(state.node_id),
                ],
                args=[
                    state.id,
                    data,
                    state.node_id,
                    state.status.value,
                    str(activity_ms),
                    self._ttl_arg,
                    "" if expected_version is None else str(expected_version),
                    "1" if state.status.is_terminal else "0",
                    f",{allowed},",
                ],
            )
        outcome = reply[0]
        if outcome == "version":
            raise VersionConflict(state.id, expected_version or 0, int(reply[1]))
        if outcome == "owner":
            raise OwnershipConflict(state.id, reply[1], state.node_id)
        if outcome == "status":
            raise InvalidTransition(state.id, reply[1], state.status)
        state.version = int(reply[1])
        state.updated_at = now
        state.last_activity = max(state.last_activity, from_ms(int(reply[2])))
        return state.version

    async def load(self, session_id: str) -> SessionState:
        with self._errors():
            data, version, node, activity = await self._client.hmget(
                self.session_key(session_id), *_RECORD_FIELDS
            )
        if data is None:
            raise SessionNotFound(session_id)
        return _decode_row(session_id, [data, version, node, activity])

    async def delete(self, session_id: str) -> bool:
        key = self.session_key(session_id)
        for _ in range(16):  # retried only if a claim moved the session in between
            with self._errors():
                node = await self._client.hget(key, "node")
                result = await self._delete_script(
                    keys=[key, self._active_key, self.node_index_key(node or "")],
                    args=[session_id, node or ""],
                )
            if result != -1:
                return bool(result == 1)
        raise StoreUnavailable(f"delete {session_id!r}: owner kept changing")

    async def list_active(self) -> list[SessionState]:
        with self._errors():
            ids = await self._client.zrange(self._active_key, 0, -1)
            return await self._states(self._active_key, ids)

    async def list_all(self) -> list[SessionState]:
        with self._errors():
            pattern = _escape_glob(self._base + "session:") + "*"
            skip = len(self._base) + len("session:")
            kwargs: dict[str, Any] = {"match": pattern, "count": 1000}
            if self.is_cluster:
                kwargs["target_nodes"] = self._client.get_node_from_key(self._active_key)
            ids = sorted({key[skip:] async for key in self._client.scan_iter(**kwargs)})
            rows = await self._fetch(ids)
        states = []
        for session_id in ids:
            if rows[session_id][0] is not None:
                state = _decode_listed(session_id, rows[session_id])
                if state is not None:
                    states.append(state)
        return states

    async def list_by_node(
        self, node_id: str, *, idle_before: datetime | None = None
    ) -> list[SessionState]:
        key = self.node_index_key(node_id)
        with self._errors():
            if idle_before is None:
                ids = await self._client.zrange(key, 0, -1)
            else:
                cutoff = to_ms(as_utc(idle_before, "idle_before"))
                # Index scores lag behind touch(), so this is a superset; filtered below.
                ids = await self._client.zrangebyscore(key, "-inf", cutoff)
            states = await self._states(key, ids, owner=node_id)
        if idle_before is not None:
            states = [s for s in states if s.last_activity <= idle_before]
        return states

    async def touch(self, session_id: str, at: datetime | None = None) -> None:
        if await self.touch_many({session_id: self._now() if at is None else at}):
            raise SessionNotFound(session_id)

    async def touch_many(self, touches: Mapping[str, datetime]) -> list[str]:
        items = list(touches.items())
        missing: list[str] = []
        for start in range(0, len(items), _TOUCH_BATCH):
            batch = items[start : start + _TOUCH_BATCH]
            args = [self._ttl_arg]
            for session_id, at in batch:
                args += [session_id, str(to_ms(at))]
            with self._errors():
                gone = await self._touch_many_script(
                    keys=[self._active_key, *(self.session_key(i) for i, _ in batch)], args=args
                )
            missing += gone
        return missing

    async def claim(self, session_id: str, from_node: str, to_node: str) -> bool:
        with self._errors():
            won = await self._claim_script(
                keys=[
                    self.session_key(session_id),
                    self._active_key,
                    self.node_index_key(from_node),
                    self.node_index_key(to_node),
                ],
                args=[session_id, from_node, to_node, self._ttl_arg],
            )
        return bool(won)

    # -- nodes -------------------------------------------------------------------------------

    async def update_heartbeat(self, node_id: str, at: datetime | None = None) -> None:
        with self._errors():
            at_ms = to_ms(self._now() if at is None else at)
            # One command whatever the number of calls; a stop mark older than this beat is
            # stale (``node_info``), so a node that comes back needs no second command to clear it.
            await self._client.zadd(self._nodes_key, {node_id: at_ms})

    async def mark_node_stopped(self, node_id: str, at: datetime | None = None) -> None:
        with self._errors():
            at_ms = to_ms(self._now() if at is None else at)
            await self._stopped_script(
                keys=[self._nodes_key, self._stopped_key], args=[node_id, str(at_ms)]
            )

    async def list_nodes(
        self, node_ttl: timedelta = DEFAULT_NODE_TTL, *, now: datetime | None = None
    ) -> list[NodeInfo]:
        with self._errors():
            now_ms = to_ms(self._now() if now is None else now)
            rows = await self._client.zrange(self._nodes_key, 0, -1, withscores=True)
            stopped = await self._client.hgetall(self._stopped_key)
        ttl_ms = duration_ms(node_ttl)
        infos: list[NodeInfo] = []
        for node, beat in rows:
            mark = stopped.get(node)
            stopped_ms = int(mark) if mark is not None and mark.isdigit() else None
            infos.append(node_info(node, beat, stopped_ms, now_ms, ttl_ms))
        return sorted(infos, key=lambda n: n.node_id)

    async def forget_node(self, node_id: str, *, dead_before: datetime) -> bool:
        await self.list_by_node(node_id)  # prunes expired records from the node's index
        with self._errors():
            removed = await self._forget_script(
                keys=[self._nodes_key, self.node_index_key(node_id), self._stopped_key],
                args=[node_id, str(to_ms(dead_before))],
            )
        return bool(removed)

    # -- lifecycle ---------------------------------------------------------------------------

    async def ping(self) -> bool:
        self._check_open()
        try:
            return bool(await self._client.ping())
        except (RedisError, RedisClusterException, OSError):
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self._client.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._sentinel.aclose()
