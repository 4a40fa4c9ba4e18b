"""The bus worker loop: at-least-once processing of ShardRefs with retries and a dead-letter topic.

For each message: decode the ShardRef, run the stage (which writes its outputs atomically and
its completion marker last), publish the resulting ShardRef downstream, and only then commit
the offset. A failed shard is republished with ``attempt + 1`` after a backoff; after
``max_attempts`` deliveries it goes to the dead-letter topic with the error, and the worker goes
on. A message that is not a ShardRef at all goes to the dead-letter topic at once.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

import structlog

from shared.access import AccessDenied, InvalidReference
from shared.bus.base import Bus, Consumer, Message
from shared.messages import DeadLetter, PoisonMessage, ShardRef, decode_ref, encode_ref, message_key
from shared.service.metrics import SHARD_SECONDS, SHARDS
from shared.shards import ShardFormatError

log = structlog.get_logger(__name__)

# Errors that another attempt cannot fix: the input itself is wrong.
PERMANENT_ERRORS = (ShardFormatError, PoisonMessage)


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
        # checks a message's paths before the stage touches them (shared.access); None = trust them
        self.admit = admit
        self.stop_event = threading.Event()
        self.processed = 0
        self._consumer: Consumer | None = None

    def open(self) -> None:
        """Create the topics and join the consumer group (``run`` does it when not done before).

        Joining every worker of a process before any of them polls avoids a rebalance that
        would hand an in-flight shard to a second worker.
        """
        if self._consumer is None:
            topics = [self.input_topic, self.dead_letter_topic] + ([self.output_topic] if self.output_topic else [])
            self.bus.ensure_topics(topics)
            self._consumer = self.bus.consumer([self.input_topic], self.group_id)

    def run(self, idle_exit_s: float | None = None) -> None:
        """Process messages until ``stop()`` (or after ``idle_exit_s`` without any message)."""
        self.open()
        consumer = self._consumer
        log.info("worker_started", stage=self.stage, topic=self.input_topic, group=self.group_id)
        idle_since = time.monotonic()
        try:
            while not self.stop_event.is_set():
                messages = consumer.poll(timeout=0.5, max_messages=1)
                if not messages:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                for message in messages:
                    try:
                        self.process_message(message)
                    except InterruptedError:
                        return  # stopping mid-retry: leave the message uncommitted
                    consumer.commit(message)
                    self.processed += 1
                idle_since = time.monotonic()
        finally:
            consumer.close()
            self._consumer = None
            log.info("worker_stopped", stage=self.stage, processed=self.processed)

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
            result = self.handle(ref)
        except Exception as exc:  # a shard failure: retry or dead-letter, never crash the worker
            self._shard_failed(message, ref, exc, bound)
            return
        SHARD_SECONDS.labels(self.stage).observe(time.monotonic() - started)
        if result is not None and self.output_topic:
            self.bus.send(self.output_topic, message_key(result), encode_ref(result))
        SHARDS.labels(self.stage, "done").inc()
        bound.info("shard_done", seconds=round(time.monotonic() - started, 3),
                   samples=result.sample_count if result is not None else 0)

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
