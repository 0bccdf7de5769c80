"""Where readings go besides Kafka: a file (JSONL or CSV, for replay) or the HTTP API.

Every sink has the interface of :class:`~sensors_sim.producer.KafkaSink`: ``send(batch,
buckets)``, ``poll()``, ``flush(timeout_s)``, ``close(timeout_s)`` and the counters
``sent``, ``acked``, ``errors``, ``last_error``, plus ``target`` (what it writes to).
"""

from __future__ import annotations

import csv
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from cityagent.batch import ReadingBatch
from cityagent.errors import CityAgentError, describe_exception
from cityagent.readings import ALL_VALUE_FIELDS, VALUE_FIELDS, format_ts

__all__ = ("FileSink", "HttpSink", "SinkRefused", "SinkUnreachable", "reading_dicts")


class SinkUnreachable(CityAgentError):
    """The sink's destination did not answer within the allowed time."""


class SinkRefused(CityAgentError):
    """The API refused the run's key (HTTP 401 or 403): every request would be refused."""


def reading_dicts(batch: ReadingBatch) -> list[dict[str, object]]:
    """The readings in their public JSON shape (``ts`` as RFC 3339 UTC)."""
    ids, kinds = batch.sensor_id.tolist(), batch.kind.tolist()
    ts, lon, lat = batch.ts_ms.tolist(), batch.lon.tolist(), batch.lat.tolist()
    columns = {name: batch.values[name].tolist() for name in ALL_VALUE_FIELDS}
    out = []
    for i, kind in enumerate(kinds):
        doc: dict[str, object] = {"sensor_id": ids[i], "kind": kind, "ts": format_ts(ts[i]),
                                  "lon": lon[i], "lat": lat[i]}
        for name in VALUE_FIELDS[kind]:
            doc[name] = round(columns[name][i], 4)
        out.append(doc)
    return out


class _Counters:
    def __init__(self, target: str) -> None:
        self.target = target
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.last_error: str | None = None

    def poll(self) -> None:
        pass


class FileSink(_Counters):
    """Readings as JSON lines (public shape, ``ts_ms`` added) or CSV rows, for replay.

    Readings count as acknowledged once flushed to the file (every :meth:`poll`, so every
    tick). A write that fails (a full disk) raises :class:`SinkUnreachable` naming the file;
    the readings not flushed by then count as never acknowledged. Before, the ``OSError``
    ended the run in a traceback, and a failure at the last flush left every reading
    counted as acknowledged."""

    CSV_COLUMNS = ("sensor_id", "kind", "ts", "ts_ms", "lon", "lat", *ALL_VALUE_FIELDS)

    def __init__(self, path: Path, fmt: str | None = None) -> None:
        super().__init__(f"file {path}")
        self.path = path
        self.format = fmt or ("csv" if Path(path).suffix.lower() == ".csv" else "jsonl")
        try:
            self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise SinkUnreachable(f"cannot write readings to {path}: {exc}") from None
        self._unflushed = 0
        self._broken = False
        self._csv = None
        if self.format == "csv":
            self._csv = csv.writer(self._file, lineterminator="\n")
            self._write(lambda: self._csv.writerow(self.CSV_COLUMNS))

    def send(self, batch: ReadingBatch, buckets: np.ndarray | None = None) -> None:
        docs = reading_dicts(batch)
        if self._csv is not None:
            ts_ms = batch.ts_ms.tolist()
            rows = [[doc.get(c, ms if c == "ts_ms" else "") for c in self.CSV_COLUMNS]
                    for doc, ms in zip(docs, ts_ms, strict=True)]
            self._write(lambda: self._csv.writerows(rows))
        else:
            text = "".join(orjson.dumps(doc).decode() + "\n" for doc in docs)
            self._write(lambda: self._file.write(text))
        self.sent += len(docs)
        self._unflushed += len(docs)

    def poll(self) -> None:
        self.flush()

    def flush(self, timeout_s: float | None = None) -> None:
        if not self._broken:
            self._write(self._file.flush)
            self.acked += self._unflushed
            self._unflushed = 0

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.flush()
        finally:
            try:
                self._file.close()
            except OSError:
                if not self._broken:  # else said already; what was unflushed stays unacked
                    raise

    def _write(self, write) -> None:
        if self._broken:
            raise SinkUnreachable(f"cannot write readings to {self.path}: {self.last_error}")
        try:
            write()
        except OSError as exc:
            self._broken = True
            self.errors += 1
            self.last_error = str(exc)
            raise SinkUnreachable(f"cannot write readings to {self.path}: {exc}") from None


class HttpSink(_Counters):
    """POST JSON arrays of readings to ``{api}/v1/readings``, retrying with backoff.

    A request that fails (connection refused, timeout, 5xx, 429) is retried with exponential
    backoff; once ``give_up_s`` passes without a successful request, :meth:`send` raises
    :class:`SinkUnreachable` naming the URL. A 401, or a 403 of a key that may not post
    readings, raises :class:`SinkRefused` at once: every later request would be refused
    alike, and the run went on sending into it, counting errors. Another 4xx but 429 (a 403
    whose readings were all outside a scoped key's cities or prefixes, which the next
    request's may not be, included) counts as an error and is not retried (retrying the
    same readings would fail the same way).

    Every body carries an ``Idempotency-Key`` of its own, the same on each of its retries, as
    docs/api.md asks of integrators: a timeout whose request was in fact stored, or an API
    that restarted under it, would otherwise store its readings twice.
    """

    def __init__(self, api: str, *, batch_rows: int = 1000, give_up_s: float = 30.0,
                 api_key: str | None = None, timeout_s: float = 10.0,
                 on_retry: Callable[[str], None] | None = None) -> None:
        import httpx

        self.url = api.rstrip("/") + "/v1/readings"
        super().__init__(f"API {self.url}")
        self.batch_rows = batch_rows
        self.give_up_s = give_up_s
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self.requests = 0
        self.retries = 0
        self._stop_by: float | None = None
        #: Told of each retry (what failed, how long it goes on), as the run's progress
        #: line is not printed while a request is retried: an API down for --give-up (30 s)
        #: froze the output that long, then the run either went on or gave up.
        self.on_retry = on_retry

    def stopping(self, within_s: float) -> None:
        """The run was stopped (Ctrl-C, SIGTERM): retry for ``within_s`` more seconds at most,
        the request under way included. The held late readings were sent with a fresh
        ``give_up_s`` each, so a stopped run into an unreachable API took that long (30 s) to
        end, saying nothing; a SIGTERM during a retry waited for all of it."""
        by = time.monotonic() + within_s
        self._stop_by = by if self._stop_by is None else min(self._stop_by, by)

    def send(self, batch: ReadingBatch, buckets: np.ndarray | None = None) -> None:
        for lo in range(0, len(batch), self.batch_rows):
            piece = batch.take(np.arange(lo, min(len(batch), lo + self.batch_rows)))
            self._post(orjson.dumps(reading_dicts(piece)), len(piece))

    def _post(self, body: bytes, rows: int) -> None:
        import httpx

        deadline = time.monotonic() + self.give_up_s
        delay = 0.2
        self.sent += rows
        key = {"idempotency-key": uuid.uuid4().hex}
        while True:
            try:
                response = self._client.post(self.url, content=body, headers=key)
                self.requests += 1
                if response.status_code < 300:
                    self._stored(response, rows)
                    return
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if _key_refused(response):
                    self.errors += 1
                    self.last_error = problem
                    raise SinkRefused(_refusal(self.url, response))
                if response.status_code < 500 and response.status_code != 429:
                    self.errors += 1  # the readings were refused: retrying would not help
                    self.last_error = problem
                    return
            except httpx.HTTPError as exc:
                problem = f"{describe_exception(exc)}"
            self.retries += 1
            self.last_error = problem
            left = deadline - time.monotonic()
            if self._stop_by is not None and self._stop_by - time.monotonic() < left:
                left = self._stop_by - time.monotonic()
                if left <= 0:
                    self.errors += 1
                    raise SinkUnreachable(
                        f"cannot reach the API at {self.url} before stopping ({problem})")
            if left <= 0:
                self.errors += 1
                raise SinkUnreachable(
                    f"cannot reach the API at {self.url} within {self.give_up_s:g}s "
                    f"({problem})"
                )
            if self.on_retry is not None:
                self.on_retry(f"retrying {self.url} ({problem}) for {left:.0f} s more")
            # The last wait is cut short, so that the last try comes at the deadline: giving
            # up as soon as a whole wait would pass it gave up early (--give-up 3 after
            # 1.4 s, 30 after 26 s), before an API restarting under the run was back.
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)

    def _stored(self, response, rows: int) -> None:
        """Count what a 2xx answer says was stored: a 202 stores the valid readings and lists
        the others under ``rejected`` (out of the key's scope, dated too far ahead, ...).
        Every row counted as acknowledged before: a key scoped to 济南 had 91 % of a run
        refused, and the run said all acknowledged, 0 errors, exit 0."""
        try:
            answer = orjson.loads(response.content)
            accepted = int(answer["accepted"])
            rejected = answer.get("rejected") or []
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            accepted, rejected = rows, []  # not the API's answer: trust the status
        self.acked += min(accepted, rows)
        if accepted < rows:
            self.errors += 1
            first = rejected[0] if rejected and isinstance(rejected[0], dict) else {}
            self.last_error = (f"HTTP {response.status_code}: {rows - accepted:,} of {rows:,} "
                               f"readings rejected, e.g. {first.get('reason', '?')}")

    def flush(self, timeout_s: float | None = None) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        self._client.close()


def _key_refused(response) -> bool:
    """A 401, or a 403 refusing the key's role. The API's other 403, every reading outside
    the key's scope, lists them under ``rejected``: a refusal of those readings only."""
    if response.status_code == 401:
        return True
    if response.status_code != 403:
        return False
    try:
        return "rejected" not in orjson.loads(response.content)
    except (orjson.JSONDecodeError, TypeError):
        return True


def _refusal(url: str, response) -> str:
    """One line on a 401 or 403: what the API said (its ``detail``) and what to give."""
    try:
        detail = str(orjson.loads(response.content)["detail"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = response.text
    detail = " ".join(detail.split())[:200]
    fix = ("give an integrator or admin key with --api-key" if response.status_code == 401
           else "give an integrator or admin key with --api-key (a viewer or operator key "
                "may not post readings)")
    return (f"the API at {url} refused the key: HTTP {response.status_code}"
            + (f" ({detail})" if detail else "") + f"; stopping: {fix}, see docs/api.md")
