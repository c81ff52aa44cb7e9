#!/usr/bin/env python3
"""One kafka-python consumer-group member, driven by tests/groups.rs (which SIGKILLs it).

Usage: group_member.py HOST:PORT GROUP TOPIC
Prints, one line each and flushed:
  ASSIGNED p,p,...   after every assignment
  COMMITTED p o v    a record whose offset commit (o + 1) succeeded: the group will not
                     deliver it again
  REFUSED p o        a record whose commit failed (revoked meanwhile): its next owner gets it
"""
import sys

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata


class Listener(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        parts = ",".join(str(tp.partition) for tp in sorted(assigned, key=lambda t: t.partition))
        print(f"ASSIGNED {parts}", flush=True)


def main():
    bootstrap, group, topic = sys.argv[1:4]
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="py-member",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=1,
    )
    c.subscribe([topic], listener=Listener())
    while True:
        for tp, records in c.poll(timeout_ms=100).items():
            for r in records:
                try:
                    c.commit({TopicPartition(tp.topic, tp.partition):
                              OffsetAndMetadata(r.offset + 1, "", -1)})
                except (CommitFailedError, KafkaError) as e:
                    print(f"REFUSED {r.partition} {r.offset} {e}", flush=True)
                    continue
                print(f"COMMITTED {r.partition} {r.offset} {r.value.decode()}", flush=True)


if __name__ == "__main__":
    main()
