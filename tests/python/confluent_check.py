"""confluent-kafka (librdkafka 2.16, the newest librdkafka Sable promises to serve) against Sable:
admin (create, describe, list offsets, delete), an idempotent acks=all producer with zstd and
lz4, a group consumer that commits by hand, and the committed offsets read back by the admin.

Usage: python tests/python/confluent_check.py HOST:PORT (run by .ci/run).
"""
import sys, time
from confluent_kafka import (ConsumerGroupTopicPartitions, Consumer, KafkaException, Producer,
                             TopicCollection, TopicPartition, libversion)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

BOOT = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
COUNT = 300
PARTITIONS = 3


def fail(why):
    sys.exit(f"FAIL: {why}")


def main():
    topic = f"confluent-{int(time.time() * 1000)}"
    admin = AdminClient({"bootstrap.servers": BOOT})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    described = admin.describe_topics(TopicCollection([topic]))[topic].result(30)
    if len(described.partitions) != PARTITIONS:
        fail(f"describe_topics: {len(described.partitions)} partitions, want {PARTITIONS}")

    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or (msg.partition(), msg.offset()))

    # Half zstd, half lz4: two producers, each idempotent with acks=all.
    for codec in ("zstd", "lz4"):
        producer = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "acks": "all",
                             "compression.type": codec, "linger.ms": 5})
        for i in range(COUNT // 2):
            producer.produce(topic, key=f"k{i % 11}", value=f"{codec}-{i}", on_delivery=on_delivery)
            producer.poll(0)
        if producer.flush(30) != 0:
            fail(f"{codec}: messages left unflushed")
    if errors or len(delivered) != COUNT:
        fail(f"delivered {len(delivered)} of {COUNT}, errors {errors[:3]}")

    latest = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest()
                                 for p in range(PARTITIONS)})
    end = sum(f.result(30).offset for f in latest.values())
    if end != COUNT:
        fail(f"list_offsets latest sums to {end}, want {COUNT}")

    group = topic + "-g"
    consumer = Consumer({"bootstrap.servers": BOOT, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = set()
    deadline = time.monotonic() + 60
    while len(seen) < COUNT and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=500, timeout=1.0):
            if msg.error():
                fail(f"consume: {msg.error()}")
            seen.add(msg.value().decode())
    if len(seen) != COUNT:
        fail(f"consumed {len(seen)} of {COUNT}")
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    consumer.close()
    if sum(tp.offset for tp in committed) != COUNT:
        fail(f"committed {[tp.offset for tp in committed]}, want a sum of {COUNT}")

    groups = admin.describe_consumer_groups([group])[group].result(30)
    listed = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)])[group].result(30)
    read_back = sum(tp.offset for tp in listed.topic_partitions if tp.topic == topic)
    if read_back != COUNT:
        fail(f"admin reads back committed offsets summing to {read_back}, want {COUNT}")
    admin.delete_topics([topic])[topic].result(30)
    print(f"confluent-kafka ok (librdkafka {libversion()[0]}): {COUNT} records produced "
          f"(acks=all, idempotent, zstd + lz4), consumed by a group ({groups.state}), "
          f"{read_back} committed and read back")


try:
    main()
except KafkaException as e:
    fail(e)
