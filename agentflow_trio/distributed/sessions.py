"""`RedisSessionStore`: session state shared by every process and worker through Redis.

Two ``serve`` processes, or two workers, that host the same app see one history per
``session_id``: the runner loads the session from Redis before an event's agent and commits
it after a success, by compare-and-set and merge (the rule is `SessionBackend`'s; a key
changed by two overlapping events is a `SessionConflict`, never a lost write).
`open_session_store` picks the store ``[memory] backend`` names.

An entry is a Redis hash ``{prefix}{session id}`` with two fields: ``v``, the version (a
random non-zero 63-bit integer, new on every write, so an entry that expired and was
written again is never mistaken for the one an event read), and ``d``, the state: one
header byte (``0`` JSON, ``1`` zlib, ``2`` zstd), then the JSON object of the state,
compressed when ``[memory] enable_state_compression`` is on and it is larger than
``compression_threshold`` (and only if that makes it smaller). The entry expires
``state_cache_ttl`` after the last event that used it.

Bounds: a state over ``max_state_bytes`` encoded is refused (`SessionTooLarge`, nothing
written); an entry read back is refused (`SessionDataError`) if it is bigger than that
before or after decompression (a zip bomb never inflates past the bound), has an unknown
header, is not a JSON object, or has a version that is not a number. Session ids are
strings of 1 to `MAX_SESSION_ID` characters.
"""

from __future__ import annotations

import operator
import secrets
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, final

import attrs
import trio

from .._json import dumps, loads
from ..state import (
    SessionBackend,
    SessionConflict,
    SessionDataError,
    SessionError,
    SessionSnapshot,
    SessionStore,
    SessionTooLarge,
    State,
    merge_changes,
)
from ._errors import BrokerUnavailable
from ._redis import is_outage, open_redis, redact

if TYPE_CHECKING:
    from coredis import Redis

    from ..config import Config

__all__ = [
    "MAX_SESSION_ID",
    "RedisSessionStatistics",
    "RedisSessionStore",
    "open_session_store",
]

MAX_SESSION_ID: Final = 256
"""The longest session id (characters) the Redis store accepts."""

_RAW, _ZLIB, _ZSTD = 0, 1, 2
_CODECS: Final = {"zlib": _ZLIB, "zstd": _ZSTD}

# KEYS[1]: the session; ARGV: the version read ("0": none), the new version, the entry,
# the TTL in ms. Written only if the version is still the one read; else the newer one.
_COMPARE_AND_SET: Final = """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then
  return {0, v, redis.call('HGET', KEYS[1], 'd') or ''}
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, ARGV[2]}
"""


@attrs.frozen(slots=True)
class RedisSessionStatistics:
    """A `RedisSessionStore`'s counters since it was made.

    ``loads`` (``hits``: a stored session; ``misses``: none), ``saves`` (entries written),
    ``unchanged`` (events that changed nothing: only the TTL was refreshed), ``merges``
    (writes that found a newer version and merged over it), ``conflicts``
    (`SessionConflict`), ``too_large`` (`SessionTooLarge`), ``compressed`` (entries
    written compressed), ``bytes_encoded`` (JSON bytes of the states written) and
    ``bytes_stored`` (what those entries took in Redis, header included).
    """

    loads: int
    hits: int
    misses: int
    saves: int
    unchanged: int
    merges: int
    conflicts: int
    too_large: int
    compressed: int
    bytes_encoded: int
    bytes_stored: int

    @property
    def compression_ratio(self) -> float:
        """``bytes_encoded / bytes_stored`` (1.0 before any write): 3.0 means the written
        states took a third of their JSON size."""
        return self.bytes_encoded / self.bytes_stored if self.bytes_stored else 1.0


@final
class RedisSessionStore:
    """A `SessionBackend` on Redis: every process using the same Redis and ``prefix``
    shares each session's state and history.

    ``load`` is one ``HMGET``; ``save`` one compare-and-set script (plus, per newer version
    found, one merge and another try, at most ``max_attempts`` in all: past that the event
    fails with `SessionConflict` rather than retry forever); an event that changed nothing
    only refreshes the TTL. Saves of one session from one store take turns (a lock per
    session being saved), so its tries race only other processes' saves. ``compression``
    is None (never compress), ``"zlib"`` or ``"zstd"`` (the ``zstandard`` package);
    entries written with either are read whatever the setting. Each Redis command is
    bounded by ``command_timeout`` seconds.

    Guarantees: two events of one session never overwrite each other's writes silently
    (see `SessionBackend` for the merge rule; values are compared as decoded JSON, so a
    value mutated in place is still seen as changed). A save is atomic in Redis: if the
    event is cancelled or times out while its save is in flight, the state is either
    wholly written or not at all (the event ends ``timed_out``/``cancelled`` either way).
    Values must be JSON (a tuple comes back a list); anything else fails the event with
    a `SessionError` and nothing is written. Redis unreachable: `BrokerUnavailable`.

    Raises (when built):
        ValueError: a bound below 1, or ``compression`` not None, "zlib" or "zstd".
        ImportError: ``compression="zstd"`` without ``zstandard``.
    """

    def __init__(
        self,
        redis: Redis[bytes],
        *,
        ttl: float = 3600.0,
        max_state_bytes: int = 2**20,
        compression: Literal["zlib", "zstd"] | None = None,
        compression_threshold: int = 4096,
        prefix: str = "agentflow:session:",
        max_attempts: int = 16,
        command_timeout: float = 5.0,
        url: str = "",
    ) -> None:
        if min(ttl, max_state_bytes, max_attempts, command_timeout) <= 0:
            raise ValueError("ttl, max_state_bytes, max_attempts, command_timeout must be > 0")
        if compression_threshold < 0:
            raise ValueError(f"compression_threshold must be >= 0, got {compression_threshold}")
        if compression is not None and compression not in _CODECS:
            raise ValueError(f'compression must be None, "zlib" or "zstd", got {compression!r}')
        if compression == "zstd":
            _zstd()
        self.redis = redis
        self.ttl = float(ttl)
        self.max_state_bytes = max_state_bytes
        self.compression = compression
        self.compression_threshold = compression_threshold
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.command_timeout = command_timeout
        self._url = redact(url) if url else "redis"
        self._script = redis.register_script(_COMPARE_AND_SET)
        self._n = dict.fromkeys(attrs.fields_dict(RedisSessionStatistics), 0)
        self._locks: dict[str, tuple[trio.Lock, int]] = {}  # sessions being saved here

    @classmethod
    def from_config(cls, redis: Redis[bytes], config: Config) -> RedisSessionStore:
        """A store by ``[memory]`` (TTL, bound, compression) on ``redis``; keys under
        ``[distributed] key_prefix``."""
        memory = config.memory
        return cls(
            redis,
            ttl=memory.state_cache_ttl,
            max_state_bytes=memory.max_state_bytes,
            compression=memory.codec if memory.enable_state_compression else None,
            compression_threshold=memory.compression_threshold,
            prefix=f"{config.distributed.key_prefix}:session:",
            command_timeout=config.distributed.command_timeout,
            url=config.distributed.redis_url,
        )

    async def load(self, session_id: Any) -> SessionSnapshot:
        """The session's state and version (an empty state, version 0, if none).

        Raises:
            SessionError: a session id that is not a string of 1 to `MAX_SESSION_ID`.
            SessionDataError: the stored entry breaks its format or a bound.
            BrokerUnavailable: Redis is unreachable.
        """
        key = self._key(session_id)
        version, entry = await self._redis("load", self.redis.hmget(key, ["v", "d"]))
        self._n["loads"] += 1
        if version is None:
            self._n["misses"] += 1
            return SessionSnapshot(session_id, State(), 0, None)
        self._n["hits"] += 1
        number = self._version(session_id, version)
        raw = self._inflate(session_id, entry or b"")
        return SessionSnapshot(session_id, State(self._decode(session_id, raw)), number, raw)

    async def save(self, snapshot: SessionSnapshot) -> int:
        """Commit the event's state by compare-and-set, merging over a newer version.

        Raises:
            SessionConflict: another event changed one of this event's keys too,
                or the session kept changing for ``max_attempts`` tries.
            SessionTooLarge: the state (or the merged one) is over ``max_state_bytes``.
            SessionError: a value is not JSON.
            SessionDataError: a newer entry found on the way is malformed.
            BrokerUnavailable: Redis is unreachable.
        """
        session_id, origin = snapshot.session_id, snapshot.origin
        key = self._key(session_id)
        mine = self._encode(session_id, snapshot.state)
        if mine == (origin or b"{}"):  # the event changed nothing: keep it alive
            self._n["unchanged"] += 1
            if snapshot.version:
                await self._redis("save", self.redis.pexpire(key, self._ttl_ms()))
            return snapshot.version
        async with self._turn(session_id):
            return await self._commit(key, snapshot, mine)

    async def _commit(self, key: str, snapshot: SessionSnapshot, mine: bytes) -> int:
        """Compare-and-set ``mine``; on a newer version merge over it and try again."""
        session_id, origin = snapshot.session_id, snapshot.origin
        expected, candidate = snapshot.version, mine
        for _ in range(self.max_attempts):
            version = secrets.randbits(63) or 1
            entry = self._deflate(candidate)
            args: list[str | bytes] = [str(expected), str(version), entry, str(self._ttl_ms())]
            reply = await self._redis("save", self._script(keys=[key], args=args))
            if int(reply[0]) == 1:
                self._n["saves"] += 1
                self._n["bytes_encoded"] += len(candidate)
                self._n["bytes_stored"] += len(entry)
                return version
            expected = self._version(session_id, reply[1])
            if expected == 0:  # expired while the event ran: write it back whole
                candidate = mine
                continue
            latest = self._decode(session_id, self._inflate(session_id, reply[2]))
            base = self._decode(session_id, origin) if origin else {}
            try:
                merged = merge_changes(session_id, base, loads(mine), latest, same=operator.eq)
            except SessionConflict:
                self._n["conflicts"] += 1
                raise
            self._n["merges"] += 1
            candidate = self._encode(session_id, merged)
        self._n["conflicts"] += 1
        detail = f"the session kept changing for {self.max_attempts} tries"
        raise SessionConflict(session_id, (), detail)

    def statistics(self) -> RedisSessionStatistics:
        """Counters; cheap, no checkpoint."""
        return RedisSessionStatistics(**self._n)

    @asynccontextmanager
    async def _turn(self, session_id: str) -> AsyncIterator[None]:
        """One save of a session at a time in this process: events of one process then
        race only other processes' saves, not each other's (no starving retries)."""
        lock, users = self._locks.get(session_id, (None, 0))
        if lock is None:
            lock = trio.Lock()
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    # ----------------------------------------------------------------- internals
    def _key(self, session_id: Any) -> str:
        if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_SESSION_ID:
            raise SessionError(
                f"a session id must be a string of 1 to {MAX_SESSION_ID} characters, "
                f"got {session_id!r:.80}",
                session_id,
            )
        return self.prefix + session_id

    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def _redis(self, operation: str, command: Any) -> Any:
        """Await ``command`` under ``command_timeout``; an outage (or no answer in time)
        becomes `BrokerUnavailable` naming ``operation``."""
        try:
            with trio.fail_after(self.command_timeout):
                return await command
        except Exception as exc:
            if not is_outage(exc):
                raise
            raise BrokerUnavailable(self._url, f"session {operation}", exc) from exc

    def _encode(self, session_id: Any, state: Mapping[str, Any]) -> bytes:
        """The state's JSON, checked against ``max_state_bytes``."""
        try:
            raw = dumps(state)
        except (TypeError, ValueError) as exc:
            raise SessionError(
                f"session {session_id!r}: its state cannot be stored as JSON: {exc}", session_id
            ) from exc
        if len(raw) > self.max_state_bytes:
            self._n["too_large"] += 1
            raise SessionTooLarge(session_id, len(raw), self.max_state_bytes)
        return raw

    def _deflate(self, raw: bytes) -> bytes:
        """The entry for ``raw``: the header byte, then ``raw`` compressed if worth it."""
        if self.compression is not None and len(raw) > self.compression_threshold:
            packed: bytes
            if self.compression == "zstd":
                packed = _zstd().ZstdCompressor(level=3).compress(raw)
            else:
                packed = zlib.compress(raw, 6)
            if len(packed) < len(raw):
                self._n["compressed"] += 1
                return bytes((_CODECS[self.compression],)) + packed
        return bytes((_RAW,)) + raw

    def _inflate(self, session_id: Any, entry: bytes) -> bytes:
        """The JSON of a stored entry; never more than ``max_state_bytes`` of it.

        Raises:
            SessionDataError: empty, too big, an unknown header, a broken or oversized
                compressed body.
        """
        limit = self.max_state_bytes
        if not entry or len(entry) - 1 > limit:
            raise self._bad(session_id, f"{len(entry)} bytes stored (max_state_bytes {limit})")
        header, body = entry[0], entry[1:]
        if header == _RAW:
            return body
        if header == _ZLIB:
            return self._unzlib(session_id, body, limit)
        if header == _ZSTD:
            return self._unzstd(session_id, body, limit)
        raise self._bad(session_id, f"unknown header byte {header}")

    def _unzlib(self, session_id: Any, body: bytes, limit: int) -> bytes:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise self._bad(session_id, f"broken zlib data: {exc}") from exc
        if len(raw) > limit or inflater.unconsumed_tail:
            raise self._bad(session_id, f"inflates past max_state_bytes {limit}")
        if not inflater.eof or inflater.unused_data:
            raise self._bad(session_id, "truncated or trailing zlib data")
        return raw

    def _unzstd(self, session_id: Any, body: bytes, limit: int) -> bytes:
        try:
            zstd = _zstd()
        except ImportError as exc:
            raise self._bad(session_id, "written with zstd: pip install zstandard") from exc
        try:
            size = zstd.frame_content_size(body)
            if size < 0 or size > limit:  # unknown (-1) or too big: never inflate it
                raise self._bad(session_id, f"zstd frame of {size} bytes (max {limit})")
            raw: bytes = zstd.ZstdDecompressor().decompress(body, max_output_size=limit)
        except zstd.ZstdError as exc:
            raise self._bad(session_id, f"broken zstd data: {exc}") from exc
        if len(raw) != size:
            raise self._bad(session_id, "zstd data does not match its frame size")
        return raw

    def _decode(self, session_id: Any, raw: bytes) -> dict[str, Any]:
        try:
            value = loads(raw)
        except (ValueError, RecursionError) as exc:
            raise self._bad(session_id, f"not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise self._bad(session_id, f"a JSON {type(value).__name__}, not an object")
        return value

    def _version(self, session_id: Any, value: Any) -> int:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        if not (text.isdigit() and len(text) <= 20):
            raise self._bad(session_id, f"version {text[:40]!r} is not a number")
        return int(text)

    @staticmethod
    def _bad(session_id: Any, why: str) -> SessionDataError:
        return SessionDataError(f"session {session_id!r}: stored entry refused: {why}", session_id)


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise ImportError(
            "zstd session compression needs zstandard: pip install 'agentflow_trio[redis]'"
        ) from exc
    return zstandard


@asynccontextmanager
async def open_session_store(config: Config) -> AsyncIterator[SessionBackend]:
    """The session store ``[memory] backend`` names, owned by this block: an in-process
    `SessionStore`, or a `RedisSessionStore` on ``[distributed] redis_url`` (its own
    connection pool, closed on exit).

    Raises:
        ConfigError: a Redis backend with a ``redis_url`` that is not a Redis URL.
    """
    memory = config.memory
    if memory.backend != "redis":
        yield SessionStore.from_config(memory)
        return
    d = config.distributed
    async with open_redis(
        d.redis_url, password=d.redis_password, connect_timeout=d.connect_timeout
    ) as redis:
        yield RedisSessionStore.from_config(redis, config)
