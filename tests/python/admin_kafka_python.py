#!/usr/bin/env python3
"""Sable's admin APIs through kafka-python's KafkaAdminClient (written for kafka-python 3.x).

Usage: admin_kafka_python.py HOST:PORT
Exits non-zero on the first failed check. Topic names carry a random suffix, so the script can
run against a broker other tests use.
"""
import sys
import uuid

from kafka import KafkaProducer
from kafka.admin import (AlterConfigOp, ConfigResource, ConfigResourceType, KafkaAdminClient,
                         NewPartitions, NewTopic)
from kafka.errors import InvalidConfigurationError, InvalidPartitionsError


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def topic_configs(admin, topic, config_filter="all"):
    r = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                               include_synonyms=True, config_filter=config_filter)
    return r["topic"][topic]


def value(entry):
    return entry["value"] if isinstance(entry, dict) else entry


def log_dir_size(admin, topic):
    total = 0
    for broker in admin.describe_log_dirs():
        for d in broker["log_dirs"]:
            for t in d["topics"]:
                if t["name"] == topic:
                    total += sum(p["partition_size"] for p in t["partitions"])
    return total


def main():
    bootstrap = sys.argv[1]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    topic = f"py-admin-{uuid.uuid4().hex[:8]}"

    admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"retention.ms": "100000"})])
    configs = topic_configs(admin, topic)
    print(configs.get("retention.ms"))
    check(value(configs["retention.ms"]) == "100000", "describe_configs shows the topic's retention.ms")
    check(value(configs["cleanup.policy"]) == "delete", "describe_configs lists defaults (cleanup.policy)")
    check(value(configs["max.message.bytes"]) == "1048588", "max.message.bytes default")

    # Incremental (the client's default against a broker that supports it).
    r = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={
        "retention.ms": (AlterConfigOp.SET, "5000"),
        "max.message.bytes": (AlterConfigOp.SET, "4096"),
    })], incremental=True)
    print(r)
    configs = topic_configs(admin, topic)
    check(value(configs["retention.ms"]) == "5000", "incremental SET retention.ms")
    check(value(configs["max.message.bytes"]) == "4096", "incremental SET max.message.bytes")
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={
        "max.message.bytes": (AlterConfigOp.DELETE, None),
    })])
    configs = topic_configs(admin, topic)
    check(value(configs["max.message.bytes"]) == "1048588", "incremental DELETE restores the default")
    check(value(configs["retention.ms"]) == "5000", "DELETE of one key keeps the others")

    # Refusals carry INVALID_CONFIG (40).
    failed = None
    try:
        r = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                configs={"cleanup.policy": "compact"})])
        failed = str(r)
    except InvalidConfigurationError as e:
        failed = str(e)
    print(failed)
    check(failed is not None and "40" in failed and "compaction" in failed,
          "cleanup.policy=compact refused with INVALID_CONFIG")
    check(value(topic_configs(admin, topic)["retention.ms"]) == "5000", "a refused change changes nothing")

    # Broker configs: described per node id, static.
    brokers = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")],
                                     config_filter="all")["broker"]["0"]
    check(value(brokers["node.id"]) == "0", "broker config node.id")
    check("log.retention.ms" in brokers and "num.partitions" in brokers, "broker configs listed")

    try:
        r = str(admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "0",
                                                    configs={"log.retention.ms": "1"})],
                                    raise_on_unknown=False))
    except Exception as e:  # noqa: BLE001 - any refusal will do
        r = f"Error {e}"
    print(r)
    check("Error" in r, "broker configs cannot be altered")

    # CreatePartitions: grow only.
    admin.create_partitions({topic: NewPartitions(4)})
    try:
        admin.create_partitions({topic: NewPartitions(3)})
        check(False, "shrinking partitions is refused")
    except InvalidPartitionsError:
        check(True, "shrinking partitions is refused (INVALID_PARTITIONS)")

    cluster = admin.describe_cluster()
    check(bool(cluster["cluster_id"]), "describe_cluster has a cluster id")
    check(len(cluster["brokers"]) >= 1, "describe_cluster lists the shards as brokers")
    check(cluster["controller_id"] in [b["broker_id"] for b in cluster["brokers"]],
          "the controller is one of the brokers")

    before = log_dir_size(admin, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for p in range(4):
        for _ in range(10):
            producer.send(topic, b"x" * 100, partition=p).get(timeout=20)
    producer.flush()
    producer.close()
    after = log_dir_size(admin, topic)
    check(after > before, f"describe_log_dirs sizes grow after producing ({before} -> {after})")

    admin.delete_topics([topic])
    admin.close()
    print("all admin checks passed")


if __name__ == "__main__":
    main()
