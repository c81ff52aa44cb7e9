#!/usr/bin/env python3
"""Sable's consumer groups through kafka-python (written for kafka-python 3.0.x): two members
split a topic and read every record once, then the admin side (list, describe, list/alter/
delete committed offsets, delete groups, with the refusals a non-empty group gets).

Usage: groups_kafka_python.py HOST:PORT
Exits non-zero on the first failed check. Topic and group names carry a random suffix, so the
script can run against a broker other tests use.
"""
import sys
import threading
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, MemberToRemove, NewTopic
from kafka.errors import GroupIdNotFoundError, GroupSubscribedToTopicError, NonEmptyGroupError
from kafka.structs import OffsetAndMetadata

PARTITIONS = 4
PER_PARTITION = 10
WAIT_CAP_S = 60


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def errname(e):
    """kafka-python reports an error as a class, an instance or its name, by API."""
    if e is None or e == "OK":
        return "NoError"
    if isinstance(e, str):
        return e
    return e.__name__ if isinstance(e, type) else type(e).__name__


class Member(threading.Thread):
    """A group member polling in its own thread: kafka-python completes a rebalance only inside
    poll(), so two members taking turns in one thread with short polls can keep restarting
    their joins. Each record is committed before it counts (see tests/groups.rs)."""

    def __init__(self, bootstrap, group, topic, client_id, instance_id=None):
        super().__init__(daemon=True)
        self.c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=client_id,
                               group_instance_id=instance_id,
                               enable_auto_commit=False, auto_offset_reset="earliest",
                               session_timeout_ms=30000, heartbeat_interval_ms=1000,
                               max_poll_records=1)
        self.c.subscribe([topic])
        self.lock = threading.Lock()
        self.got = []
        self.assigned = set()
        self.stopping = threading.Event()
        self.start()

    def run(self):
        while not self.stopping.is_set():
            for tp, records in self.c.poll(timeout_ms=200).items():
                for r in records:
                    self.c.commit({tp: OffsetAndMetadata(r.offset + 1, "", -1)})
                    with self.lock:
                        self.got.append((r.partition, r.offset, r.value.decode()))
            with self.lock:
                self.assigned = {tp.partition for tp in self.c.assignment()}
        self.c.close()  # LeaveGroup, unless static

    def snapshot(self):
        with self.lock:
            return list(self.got), set(self.assigned)

    def close(self):
        self.stopping.set()
        self.join(WAIT_CAP_S)
        check(not self.is_alive(), "member closed")


def until(what, cond):
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > WAIT_CAP_S:
            check(False, f"timed out waiting for {what}")
        time.sleep(0.05)


def main():
    bootstrap = sys.argv[1]
    suffix = uuid.uuid4().hex[:8]
    topic, group, other = f"py-groups-{suffix}", f"py-g-{suffix}", f"py-g-offsets-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])

    # Two members split the topic before anything is produced.
    a = Member(bootstrap, group, topic, "py-a")
    b = Member(bootstrap, group, topic, "py-b")

    def split():
        owned = [m.snapshot()[1] for m in (a, b)]
        return all(len(o) == PARTITIONS // 2 for o in owned) and \
            owned[0] | owned[1] == set(range(PARTITIONS))

    until("a 2/2 split", split)
    check(a.snapshot()[0] == [] and b.snapshot()[0] == [], "nothing to read yet")

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(PER_PARTITION):
        for part in range(PARTITIONS):
            p.send(topic, value=f"p{part}-r{i}".encode(), partition=part)
    p.flush(timeout=20)
    total = PARTITIONS * PER_PARTITION
    until(f"{total} records", lambda: len(a.snapshot()[0]) + len(b.snapshot()[0]) >= total)
    (got_a, owned_a), (got_b, _) = a.snapshot(), b.snapshot()
    values = sorted(v for _, _, v in got_a + got_b)
    check(values == sorted(f"p{q}-r{i}" for q in range(PARTITIONS) for i in range(PER_PARTITION)),
          "every record read exactly once by the group")
    check({q for q, _, _ in got_a} == owned_a, "a member reads only its partitions")

    # ListGroups (every broker asked) with states.
    listed = [g for g in admin.list_groups() if g["group_id"] == group]
    check([g["group_state"] for g in listed] == ["Stable"], f"list_groups: {group} once, Stable")
    check(listed[0]["protocol_type"] == "consumer", "listed protocol type")
    names = [g["group_id"] for g in admin.list_groups(states_filter=["stable"])]
    check(group in names, "the states filter (any case) keeps the Stable group")
    names = [g["group_id"] for g in admin.list_groups(states_filter=["Empty"])]
    check(group not in names, "the Empty filter leaves it out")

    # DescribeGroups: members, protocol, state.
    d = admin.describe_groups([group])[group]
    print("describe:", d)
    check(d["error"] is None, "describe without error")
    check(d["group_state"] == "Stable", "described Stable")
    check(d["protocol_type"] == "consumer", "protocol type consumer")
    check(d["protocol_data"] == "range", "protocol range")
    members = d["members"]
    check(sorted(m["client_id"] for m in members) == ["py-a", "py-b"], "two members, by client id")
    ids = sorted(m["member_id"] for m in members)
    check(ids[0].startswith("py-a-") and ids[1].startswith("py-b-"), f"member ids {ids}")

    # Committed offsets: every partition at its end.
    offsets = admin.list_group_offsets({group: None})
    offsets = offsets.get(group, offsets)
    print("offsets:", offsets)
    check({tp.partition: o.offset for tp, o in offsets.items()} ==
          {q: PER_PARTITION for q in range(PARTITIONS)}, "list_group_offsets")

    # A group with members refuses deletion, alteration and deletion of offsets of its topic.
    r = dict(admin.delete_groups([group]))
    print("delete non-empty:", r)
    check(errname(r[group]) == NonEmptyGroupError.__name__,
          "delete_groups of a group with members: NON_EMPTY_GROUP")
    r = admin.delete_group_offsets(group, [TopicPartition(topic, 0)])
    print("delete offsets with members:", r)
    err = r[TopicPartition(topic, 0)]
    check(errname(err) == GroupSubscribedToTopicError.__name__,
          "delete_group_offsets of a subscribed topic: GROUP_SUBSCRIBED_TO_TOPIC")

    # An offsets-only group: alter, list, delete offsets, delete the group.
    r = admin.alter_group_offsets(other, {TopicPartition(topic, 0): OffsetAndMetadata(3, "m", -1),
                                          TopicPartition(topic, 1): OffsetAndMetadata(7, "", -1)})
    print("alter:", r)
    check(all(errname(e) == "NoError" for e in r.values()), "alter_group_offsets")
    offsets = admin.list_group_offsets({other: None})
    offsets = offsets.get(other, offsets)
    check({tp.partition: (o.offset, o.metadata) for tp, o in offsets.items()} ==
          {0: (3, "m"), 1: (7, "")}, f"altered offsets read back: {offsets}")
    # OffsetFetch v8 asks for several groups at once (batched per coordinator).
    both = admin.list_group_offsets({group: None, other: None})
    check({g: {tp.partition: o.offset for tp, o in offs.items()} for g, offs in both.items()} ==
          {group: {q: PER_PARTITION for q in range(PARTITIONS)}, other: {0: 3, 1: 7}},
          f"list_group_offsets of two groups at once: {both}")
    r = admin.delete_group_offsets(other, [TopicPartition(topic, 0)])
    check(all(errname(e) == "NoError" for e in r.values()), f"delete_group_offsets {r}")
    offsets = admin.list_group_offsets({other: None})
    offsets = offsets.get(other, offsets)
    check({tp.partition: o.offset for tp, o in offsets.items()} == {1: 7},
          f"one offset left: {offsets}")

    # Members leave (LeaveGroup on close): the group is Empty and can go.
    a.close()
    b.close()
    d = admin.describe_groups([group])[group]
    check(d["group_state"] == "Empty" and d["members"] == [],
          f"Empty after both members closed: {d}")
    r = dict(admin.delete_groups([group, other, f"py-g-none-{suffix}"]))
    print("delete:", r)
    check(errname(r[group]) == errname(r[other]) == "NoError", "delete_groups of Empty groups")
    missing = r[f"py-g-none-{suffix}"]
    check(errname(missing) == GroupIdNotFoundError.__name__,
          "delete_groups of an unknown group: GROUP_ID_NOT_FOUND")
    listed = [g["group_id"] for g in admin.list_groups()]
    check(group not in listed and other not in listed, "deleted groups are not listed")
    offsets = admin.list_group_offsets({group: None})
    offsets = offsets.get(group, offsets)
    check(not offsets, f"a deleted group has no offsets: {offsets}")

    # A static member stays after its consumer closes (no LeaveGroup), until an admin removes
    # it by group.instance.id (batched LeaveGroup, KIP-345).
    static = f"py-g-static-{suffix}"
    m = Member(bootstrap, static, topic, "py-static", instance_id="py-instance-1")
    until("the static member's assignment", lambda: m.snapshot()[1] == set(range(PARTITIONS)))
    m.close()
    d = admin.describe_groups([static])[static]
    print("static:", d)
    check(d["group_state"] == "Stable", "a closed static member keeps its group Stable")
    check([x["group_instance_id"] for x in d["members"]] == ["py-instance-1"],
          "described with its group.instance.id")
    r = admin.remove_group_members(static, [MemberToRemove(group_instance_id="py-instance-1"),
                                            MemberToRemove(group_instance_id="py-nobody")])
    print("remove:", r)
    by_instance = {getattr(k, "group_instance_id", k): errname(e) for k, e in r.items()}
    check(by_instance == {"py-instance-1": "NoError", "py-nobody": "UnknownMemberIdError"},
          f"remove_group_members by instance id: {by_instance}")
    d = admin.describe_groups([static])[static]
    check(d["group_state"] == "Empty" and d["members"] == [], f"removed: {d}")
    r = dict(admin.delete_groups([static]))
    check(errname(r[static]) == "NoError", "the emptied static group can be deleted")
    print("all group checks passed")


if __name__ == "__main__":
    main()
