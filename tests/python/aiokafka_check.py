"""aiokafka against Sable: produce (acks=all, idempotent, gzip), a group consumer, commits.

Usage: python tests/python/aiokafka_check.py HOST:PORT (run by .ci/run).
"""
import asyncio, sys, time
from aiokafka import AIOKafkaProducer, AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOT = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
COUNT = 200

async def main():
    topic = f"aio-{int(time.time() * 1000)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    producer = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all", enable_idempotence=True,
                                compression_type="gzip")
    await producer.start()
    for i in range(COUNT):
        await producer.send(topic, key=f"k{i % 7}".encode(), value=f"v{i}".encode())
    await producer.flush()
    await producer.stop()
    group = topic + "-g"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOT, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen = set()
    deadline = time.monotonic() + 60
    while len(seen) < COUNT and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=1000)
        for records in batches.values():
            seen.update(r.value.decode() for r in records)
    await consumer.commit()
    await consumer.stop()
    if len(seen) != COUNT:
        sys.exit(f"FAIL: consumed {len(seen)} of {COUNT}")
    offsets = await admin.list_consumer_group_offsets(group)
    committed = sum(m.offset for m in offsets.values())
    await admin.delete_topics([topic])
    await admin.close()
    if committed != COUNT:
        sys.exit(f"FAIL: committed {committed}, want {COUNT}")
    print(f"aiokafka ok: {COUNT} records produced (acks=all, idempotent, gzip), consumed by a group, {committed} committed")

asyncio.run(main())
