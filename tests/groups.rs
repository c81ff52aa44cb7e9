//! Consumer groups against the real binary with librdkafka (and kafka-python as a member that is
//! SIGKILLed): assignment, exactly-once consumption with per-record commits, leave and session
//! expiry, resume after restarts, cooperative and static membership, the admin APIs, and groups
//! coordinated by different shards.

mod support_groups;

use std::collections::BTreeSet;

use support_groups::*;

const PARTITIONS: i32 = 6;

#[test]
fn three_members_split_six_partitions_and_consume_each_record_once() {
    let b = Broker::start();
    create_topic(&b, "three", PARTITIONS);
    let cs: Vec<GroupConsumer> = (0..3).map(|_| consumer(&b, "g-three", "three", &[])).collect();
    let refs: Vec<&GroupConsumer> = cs.iter().collect();
    let a = wait_assignments(&refs, "three members to share six partitions", |a| {
        is_partition_of(a, PARTITIONS) && a.iter().all(|s| s.len() == 2)
    });
    produce(&b, "three", PARTITIONS, 0, 100);
    let mut got = vec![vec![]; 3];
    poll_until(&refs, &mut got, "600 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 600
    });
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 100));
    for (i, g) in got.iter().enumerate() {
        let from: BTreeSet<i32> = g.iter().map(|r| r.partition).collect();
        assert_eq!(from, a[i], "consumer {i} read only what it owns");
        assert_eq!(g.len(), 200);
    }
    // Per-record commits: the group's committed offset is the end of every partition.
    let c = committed(&cs[0], "three", PARTITIONS);
    assert_eq!(c, (0..PARTITIONS).map(|p| (p, 100)).collect());
    assert_eq!(a, refs.iter().map(|c| assigned(c)).collect::<Vec<_>>(), "no rebalance");
}
