"""The bus worker loop: at-least-once processing of ShardRefs with retries and a dead-letter topic.

For each message: decode the ShardRef, run the stage (which writes its outputs atomically and
its completion marker last), publish the resulting ShardRef downstream, and only then commit
the offset. A failed shard is republished with ``attempt + 1`` after a backoff; after
``max_attempts`` deliveries it goes to the dead-letter topic with the error, and the worker goes
on. A message that is not a ShardRef at all goes to the dead-letter topic at once.

Outages are not the shard's fault. A shard that fails because a dependency is down (Triton
restarting, the object store unreachable: ``winnow.shared.outages.is_outage``) is tried again in place,
with backoff, for up to ``dependency_wait_s`` before it spends a delivery attempt; and when the
broker itself is unreachable the worker drops its consumer, reports that it is not consuming, and
joins the group again once the broker answers, from the committed offsets, so nothing is lost.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

import structlog

from winnow.shared.access import AccessDenied, InvalidReference
from winnow.shared.bus.base import Bus, BusUnavailable, Consumer, Message
from winnow.shared.messages import DeadLetter, PoisonMessage, ShardRef, decode_ref, encode_ref, message_key
from winnow.shared.outages import is_outage
from winnow.shared.service.metrics import SHARD_SECONDS, SHARDS
from winnow.shared.shards import ShardFormatError

log = structlog.get_logger(__name__)

# Errors that another attempt cannot fix: the input itself is wrong.
# A refused path stays refused: no retry can help (a ledger naming an image source outside the roots).
PERMANENT_ERRORS = (ShardFormatError, PoisonMessage, AccessDenied)

# Waiting for a dependency or the broker: first pause, doubled up to the cap.
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 15.0


class ShardWorker:
    """Consumes ``input_topic`` in ``group_id`` and runs ``handle(ref) -> ref`` on every shard."""

    def __init__(
        self,
        bus: Bus,
        handle: Callable[[ShardRef], ShardRef | None],
        *,
        stage: str,
        input_topic: str,
        output_topic: str | None,
        group_id: str,
        max_attempts: int = 3,
        retry_backoff_s: float = 2.0,
        dependency_wait_s: float = 900.0,
        on_consuming: Callable[[bool], None] | None = None,
        admit: Callable[[ShardRef], None] | None = None,
    ) -> None:
        self.bus = bus
        self.handle = handle
        self.stage = stage
        self.input_topic = input_topic
        self.output_topic = output_topic or None
        self.group_id = group_id
        self.dead_letter_topic = f"{input_topic}.dlq"
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.dependency_wait_s = dependency_wait_s
        self.on_consuming = on_consuming or (lambda consuming: None)
        self.consuming = False
        # checks a message's paths before the stage touches them (winnow.shared.access); None = trust them
        self.admit = admit
        self.stop_event = threading.Event()
        self.processed = 0
        self._consumer: Consumer | None = None

    def open(self) -> None:
        """Create the topics and join the consumer group (``run`` does it when not done before).

        Joining every worker of a process before any of them polls avoids a rebalance that
        would hand an in-flight shard to a second worker. Raises ``BusUnavailable`` while the
        broker cannot be reached.
        """
        if self._consumer is None:
            topics = [self.input_topic, self.dead_letter_topic] + ([self.output_topic] if self.output_topic else [])
            self.bus.ensure_topics(topics)
            self._consumer = self.bus.consumer([self.input_topic], self.group_id)

    def run(self, idle_exit_s: float | None = None) -> None:
        """Process messages until ``stop()`` (or after ``idle_exit_s`` without any message).

        A broker outage never ends the loop: the consumer is dropped, and a new one joins the
        group once the broker answers again.
        """
        log.info("worker_started", stage=self.stage, topic=self.input_topic, group=self.group_id)
        idle_since = time.monotonic()
        outage_backoff = BACKOFF_START_S
        try:
            while not self.stop_event.is_set():
                try:
                    self.open()
                    messages = self._consumer.poll(timeout=0.5, max_messages=1)
                    self._set_consuming(self._consumer_connected())
                    outage_backoff = BACKOFF_START_S
                    if not messages:
                        if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                            break
                        continue
                    for message in messages:
                        try:
                            self.process_message(message)
                        except InterruptedError:
                            return  # stopping mid-retry: leave the message uncommitted
                        self._consumer.commit(message)
                        self.processed += 1
                    idle_since = time.monotonic()
                except BusUnavailable as exc:
                    # Uncommitted messages come back to whoever owns their partition next.
                    log.warning("bus_unavailable", stage=self.stage, error=str(exc), retry_in_s=outage_backoff)
                    self._set_consuming(False)
                    self._drop_consumer()
                    if self.stop_event.wait(outage_backoff):
                        return
                    outage_backoff = min(outage_backoff * 2, BACKOFF_CAP_S)
        finally:
            self._set_consuming(False)
            self._drop_consumer()
            log.info("worker_stopped", stage=self.stage, processed=self.processed)

    def _consumer_connected(self) -> bool:
        connected = getattr(self._consumer, "connected", None)  # buses that can tell (Kafka) say so
        return connected() if connected is not None else True

    def _set_consuming(self, consuming: bool) -> None:
        if consuming != self.consuming:
            self.consuming = consuming
            self.on_consuming(consuming)

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def stop(self) -> None:
        self.stop_event.set()

    def process_message(self, message: Message) -> None:
        """Everything that must happen before ``message`` may be committed."""
        try:
            ref = decode_ref(message.value)
        except PoisonMessage as exc:
            log.error("poison_message", topic=message.topic, partition=message.partition,
                      offset=message.offset, error=str(exc))
            self._dead_letter(message, None, exc)
            SHARDS.labels(self.stage, "poison").inc()
            return
        bound = log.bind(stage=self.stage, job_id=ref.job_id, shard_id=ref.shard_id, attempt=ref.attempt)
        if self.admit is not None:
            try:
                self.admit(ref)
            except (AccessDenied, InvalidReference) as exc:  # nothing was read: no retry can help
                bound.error("message_refused", error=str(exc), error_type=type(exc).__name__)
                self._dead_letter(message, ref, exc)
                SHARDS.labels(self.stage, "refused").inc()
                return
        started = time.monotonic()
        try:
            result = self._handle_waiting_out_outages(ref, bound)
        except (BusUnavailable, InterruptedError):
            raise  # the broker, not the shard: the run loop reconnects and the message comes back
        except Exception as exc:  # a shard failure: retry or dead-letter, never crash the worker
            self._shard_failed(message, ref, exc, bound)
            return
        SHARD_SECONDS.labels(self.stage).observe(time.monotonic() - started)
        if result is not None and self.output_topic:
            self.bus.send(self.output_topic, message_key(result), encode_ref(result))
        SHARDS.labels(self.stage, "done").inc()
        bound.info("shard_done", seconds=round(time.monotonic() - started, 3),
                   samples=result.sample_count if result is not None else 0)

    def _handle_waiting_out_outages(self, ref: ShardRef, bound) -> ShardRef | None:
        """``handle(ref)``, tried again in place while a dependency is down, for ``dependency_wait_s``."""
        deadline = time.monotonic() + self.dependency_wait_s
        backoff = BACKOFF_START_S
        while True:
            try:
                return self.handle(ref)
            except Exception as exc:
                if not is_outage(exc) or time.monotonic() + backoff > deadline:
                    raise
                bound.warning("dependency_unavailable_waiting", error=str(exc), error_type=type(exc).__name__,
                              retry_in_s=backoff)
                SHARDS.labels(self.stage, "waited").inc()
                if self.stop_event.wait(backoff):
                    raise InterruptedError("worker stopping; the shard stays uncommitted and is redelivered") from exc
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    def _shard_failed(self, message: Message, ref: ShardRef, exc: Exception, bound) -> None:
        attempts = ref.attempt + 1
        if isinstance(exc, PERMANENT_ERRORS) or attempts >= self.max_attempts:
            bound.error("shard_dead_lettered", error=str(exc), error_type=type(exc).__name__, attempts=attempts)
            self._dead_letter(message, ref, exc)
            SHARDS.labels(self.stage, "dead_lettered").inc()
            return
        backoff = self.retry_backoff_s * (2 ** ref.attempt)
        bound.warning("shard_failed_will_retry", error=str(exc), error_type=type(exc).__name__,
                      retry_in_s=backoff)
        SHARDS.labels(self.stage, "retried").inc()
        if self.stop_event.wait(backoff):
            raise InterruptedError("worker stopping; the shard stays uncommitted and is redelivered")
        retry = ShardRef()
        retry.CopyFrom(ref)
        retry.attempt = attempts
        self.bus.send(self.input_topic, message_key(retry), encode_ref(retry))

    def _dead_letter(self, message: Message, ref: ShardRef | None, exc: Exception) -> None:
        letter = DeadLetter(stage=self.stage, error=f"{exc}\n{traceback.format_exc(limit=5)}",
                            error_type=type(exc).__name__, topic=message.topic,
                            partition=message.partition, offset=message.offset)
        if ref is not None:
            letter.ref.CopyFrom(ref)
        else:
            letter.raw_value = message.value or b""
        self.bus.send(self.dead_letter_topic, message.key or "", letter.SerializeToString())
