//! Consumer groups against the real binary with librdkafka (and kafka-python as a member that is
//! SIGKILLed): assignment, exactly-once consumption with per-record commits, leave and session
//! expiry, resume after restarts, cooperative and static membership, the admin APIs, and groups
//! coordinated by different shards.

mod common;

use std::collections::BTreeSet;

use rdkafka::consumer::Consumer;

use common::group::*;
use common::{Broker, WAIT_MAX, admin_options, block_on, wire};

const PARTITIONS: i32 = 6;
/// Kafka's (and Sable's) default group.initial.rebalance.delay.ms.
const KAFKA_REBALANCE_DELAY_MS: u32 = 3000;

/// A broker whose groups wait only `TEST_REBALANCE_DELAY_MS` for more members before their first
/// rebalance, so that tests do not wait 3 s a group.
fn start_broker() -> Broker {
    Broker::start_with_rebalance_delay(TEST_REBALANCE_DELAY_MS)
}

#[test]
fn three_members_split_six_partitions_and_consume_each_record_once() {
    three_members("range");
}

#[test]
fn three_members_roundrobin() {
    three_members("roundrobin");
}

/// 3 members with `strategy` on 6 partitions: two partitions each, 600 records once in total.
fn three_members(strategy: &str) {
    let b = start_broker();
    block_on(b.create_topic("three", PARTITIONS));
    let cfg = [("partition.assignment.strategy", strategy)];
    let cs: Vec<GroupConsumer> = (0..3)
        .map(|_| consumer(&b, "g-three", "three", &cfg))
        .collect();
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
    assert_eq!(
        a,
        refs.iter().map(|c| assigned(c)).collect::<Vec<_>>(),
        "no rebalance"
    );
}

/// A Python interpreter that can `import kafka`: `SABLE_TEST_PYTHON` if set (CI points it at its
/// venv), else `python3` if it has kafka-python, else a venv made once under `target/` with
/// kafka-python from PyPI, so that `cargo test` works on a fresh machine.
fn kafka_python() -> String {
    use std::process::Command;
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(p) = std::env::var("SABLE_TEST_PYTHON") {
                return p;
            }
            let imports = |python: &str| {
                Command::new(python)
                    .args(["-c", "import kafka"])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if imports("python3") {
                return "python3".into();
            }
            let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv");
            let python = format!("{venv}/bin/python");
            if !imports(&python) {
                let made = Command::new("python3").args(["-m", "venv", venv]).status();
                assert!(
                    made.is_ok_and(|s| s.success()),
                    "python3 -m venv {venv} failed"
                );
                let pip = Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "-q",
                        "--disable-pip-version-check",
                        "kafka-python==3.0.12",
                    ])
                    .status();
                assert!(
                    pip.is_ok_and(|s| s.success()),
                    "pip install kafka-python failed"
                );
            }
            python
        })
        .clone()
}

/// A kafka-python member in a child process (tests/python/group_member.py), SIGKILLed by the
/// test: a member that dies without leaving. Its stdout lines arrive on `lines`.
struct PyMember {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    assigned: BTreeSet<i32>,
    got: Vec<(i32, String)>,
}

impl PyMember {
    fn start(b: &Broker, group: &str, topic: &str) -> PyMember {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/group_member.py");
        let python = kafka_python();
        let mut child = std::process::Command::new(python)
            .args([script, &b.bootstrap(), group, topic])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start python3 group member");
        let out = child
            .stdout
            .take()
            .expect("python member's stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        PyMember {
            child,
            lines,
            assigned: BTreeSet::new(),
            got: vec![],
        }
    }

    /// Reads what the member printed so far.
    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            let mut w = l.split(' ');
            match w.next() {
                Some("ASSIGNED") => {
                    self.assigned = w
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().expect("ASSIGNED lists partition numbers"))
                        .collect();
                }
                Some("COMMITTED") => {
                    let mut field = || w.next().unwrap_or_else(|| panic!("short line {l:?}"));
                    let p: i32 = field().parse().expect("COMMITTED names a partition");
                    let _offset = field();
                    self.got.push((p, field().to_string()));
                }
                Some("REFUSED") => eprintln!("python member: {l}"),
                _ => panic!("python member printed {l:?}"),
            }
        }
    }

    fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL python member");
        self.child.wait().expect("reap python member");
    }
}

impl Drop for PyMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn leave_and_kill_survivors_take_over_without_redelivery_or_loss() {
    let b = start_broker();
    block_on(b.create_topic("churn", PARTITIONS));
    let mut py = PyMember::start(&b, "g-churn", "churn");
    let survivors = [
        consumer(&b, "g-churn", "churn", &[]),
        consumer(&b, "g-churn", "churn", &[]),
    ];
    let leaver = consumer(&b, "g-churn", "churn", &[]);
    let rust: Vec<&GroupConsumer> = survivors.iter().chain([&leaver]).collect();

    // Everyone owns something before any record exists.
    let started = std::time::Instant::now();
    loop {
        py.drain();
        let mut a: Vec<BTreeSet<i32>> = rust.iter().map(|c| assigned(c)).collect();
        a.push(py.assigned.clone());
        if is_partition_of(&a, PARTITIONS) && a.iter().all(|s| !s.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < GROUP_WAIT_MAX,
            "no 4-member assignment: {a:?}"
        );
        for c in &rust {
            assert!(c.poll(std::time::Duration::from_millis(20)).is_none());
        }
    }
    let py_partitions = py.assigned.clone();

    // Phase 1: every member consumes (and commits) its share.
    produce(&b, "churn", PARTITIONS, 0, 40);
    let mut got = vec![vec![]; 3];
    let started = std::time::Instant::now();
    while got.iter().map(Vec::len).sum::<usize>() + py.got.len() < 240 {
        assert!(started.elapsed() < GROUP_WAIT_MAX, "phase 1 incomplete");
        py.drain();
        for (c, g) in rust.iter().zip(got.iter_mut()) {
            if let Some(r) = poll_commit(c, std::time::Duration::from_millis(20)) {
                g.push(r);
            }
        }
    }
    py.drain();
    assert_eq!(
        py.got.iter().map(|(p, _)| *p).collect::<BTreeSet<_>>(),
        py_partitions,
        "the python member consumed its partitions"
    );

    // The python member dies without leaving; one librdkafka member leaves (close on drop).
    py.sigkill();
    drop(leaver);
    let mut phase1: Vec<(i32, String)> = received(&got);
    phase1.extend(py.got.iter().cloned());
    phase1.sort();
    assert_eq!(
        phase1,
        expected(0..PARTITIONS, 0, 40),
        "phase 1 exactly once"
    );

    // Phase 2: the survivors take over every partition, from the committed offsets.
    produce(&b, "churn", PARTITIONS, 40, 80);
    let refs: Vec<&GroupConsumer> = survivors.iter().collect();
    let mut got2 = vec![vec![]; 2];
    poll_until(&refs, &mut got2, "240 records on the survivors", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 240
    });
    assert_eq!(
        received(&got2),
        expected(0..PARTITIONS, 40, 80),
        "phase 2 exactly once"
    );
    let a: Vec<BTreeSet<i32>> = refs.iter().map(|c| assigned(c)).collect();
    assert!(
        is_partition_of(&a, PARTITIONS),
        "survivors own everything: {a:?}"
    );
    assert_eq!(
        committed(&survivors[0], "churn", PARTITIONS),
        (0..PARTITIONS).map(|p| (p, 80)).collect()
    );
}

/// Committed offsets a single reader from offset 0 leaves: the records it got per partition,
/// or -1001 (librdkafka's "no offset") where it got none.
fn counts(got: &[Got], partitions: i32) -> std::collections::HashMap<i32, i64> {
    (0..partitions)
        .map(|p| match got.iter().filter(|g| g.partition == p).count() {
            0 => (p, -1001),
            n => (p, n as i64),
        })
        .collect()
}

#[test]
fn reopen_resumes_after_committed_offsets_also_after_broker_sigkill() {
    let mut b = start_broker();
    block_on(b.create_topic("resume", PARTITIONS));
    produce(&b, "resume", PARTITIONS, 0, 50);

    // Read part of the topic, commit, close.
    let c = consumer(&b, "g-resume", "resume", &[]);
    let mut first = vec![vec![]];
    poll_until(&[&c], &mut first, "100 records", |g| g[0].len() >= 100);
    drop(c);

    // Reopen: the group's offsets are what was read, and reading goes on from there.
    let c = consumer(&b, "g-resume", "resume", &[]);
    assert_eq!(
        committed(&c, "resume", PARTITIONS),
        counts(&first[0], PARTITIONS)
    );
    let mut second = vec![vec![]];
    poll_until(&[&c], &mut second, "the other 200 records", |g| {
        g[0].len() >= 200
    });
    let mut all = first.clone();
    all.extend(second.clone());
    assert_eq!(received(&all), expected(0..PARTITIONS, 0, 50));

    // Half of a new batch, then close and SIGKILL the broker.
    produce(&b, "resume", PARTITIONS, 50, 100);
    let mut third = vec![vec![]];
    poll_until(&[&c], &mut third, "100 new records", |g| g[0].len() >= 100);
    drop(c);
    let per_partition_before = {
        let mut reader: Vec<Got> = all.concat();
        reader.extend(third[0].iter().cloned());
        counts(&reader, PARTITIONS)
    };
    b.kill9();
    b.start_again();

    let c = consumer(&b, "g-resume", "resume", &[]);
    assert_eq!(
        committed(&c, "resume", PARTITIONS),
        per_partition_before,
        "commits survive SIGKILL"
    );
    let mut fourth = vec![vec![]];
    poll_until(&[&c], &mut fourth, "the last 200 records", |g| {
        g[0].len() >= 200
    });
    all.extend(third);
    all.extend(fourth);
    assert_eq!(received(&all), expected(0..PARTITIONS, 0, 100));
    // Nothing more arrives.
    assert!(poll_commit(&c, std::time::Duration::from_millis(500)).is_none());
}

/// Rebalance callbacks without the empty ones (librdkafka reports empty incremental steps).
fn nonempty(r: &Recorder) -> Vec<Event> {
    r.events()
        .into_iter()
        .filter(|e| match e {
            Event::Assign(s) | Event::Revoke(s) => !s.is_empty(),
        })
        .collect()
}

#[test]
fn cooperative_sticky_second_member_takes_half_incrementally() {
    let b = start_broker();
    block_on(b.create_topic("coop", PARTITIONS));
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let c1 = consumer(&b, "g-coop", "coop", &coop);
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    wait_assignments(&[&c1], "the first member to own everything", |a| {
        a[0] == all
    });
    produce(&b, "coop", PARTITIONS, 0, 20);
    let mut got = vec![vec![], vec![]];
    poll_until(
        &[&c1],
        &mut got[..1],
        "60 records on the first member",
        |g| g[0].len() >= 60,
    );

    // A second member joins while records are still to be read.
    let c2 = consumer(&b, "g-coop", "coop", &coop);
    poll_until(&[&c1, &c2], &mut got, "a 3/3 split and 120 records", |g| {
        let a = [assigned(&c1), assigned(&c2)];
        is_partition_of(&a, PARTITIONS)
            && a.iter().all(|s| s.len() == 3)
            && g.iter().map(Vec::len).sum::<usize>() >= 120
    });
    produce(&b, "coop", PARTITIONS, 20, 40);
    poll_until(&[&c1, &c2], &mut got, "240 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 240
    });
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 40));

    // Incremental: the first member gave up exactly the second one's partitions, once, and
    // never had everything revoked.
    let (a1, a2) = (assigned(&c1), assigned(&c2));
    assert_eq!(
        nonempty(c1.context()),
        vec![Event::Assign(all), Event::Revoke(a2.clone())]
    );
    assert_eq!(nonempty(c2.context()), vec![Event::Assign(a2.clone())]);
    let late: BTreeSet<i32> = got[1].iter().map(|g| g.partition).collect();
    assert!(late.is_subset(&a2), "{late:?} {a2:?}");
    let batch2_first: BTreeSet<i32> = got[0]
        .iter()
        .filter(|g| g.payload.ends_with("-r39"))
        .map(|g| g.partition)
        .collect();
    assert_eq!(batch2_first, a1);
}

#[test]
fn static_member_restart_gets_its_partitions_back_without_rebalancing_the_other() {
    let b = start_broker();
    block_on(b.create_topic("static", PARTITIONS));
    let cfg = |id| [("group.instance.id", id), ("session.timeout.ms", "30000")];
    let a = consumer(&b, "g-static", "static", &cfg("member-a"));
    let s = consumer(&b, "g-static", "static", &cfg("member-b"));
    let before = wait_assignments(&[&a, &s], "a 3/3 split", |x| {
        is_partition_of(x, PARTITIONS) && x.iter().all(|s| s.len() == 3)
    });
    produce(&b, "static", PARTITIONS, 0, 10);
    let mut got = vec![vec![], vec![]];
    poll_until(&[&a, &s], &mut got, "60 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 60
    });
    let a_events = a.context().events();
    assert_eq!(a_events, vec![Event::Assign(before[0].clone())]);

    // The static member goes (librdkafka does not send LeaveGroup for a static member) and
    // comes back with the same group.instance.id within its session.
    drop(s);
    let s = consumer(&b, "g-static", "static", &cfg("member-b"));
    let after = wait_assignments(&[&a, &s], "the restarted member's partitions", |x| {
        !x[1].is_empty()
    });
    assert_eq!(after, before, "same owners");
    produce(&b, "static", PARTITIONS, 10, 20);
    poll_until(&[&a, &s], &mut got, "120 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 120
    });
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 20));
    assert_eq!(
        a.context().events(),
        a_events,
        "no rebalance callback on the other member"
    );
    let s_events = vec![Event::Assign(before[1].clone())];
    assert_eq!(s.context().events(), s_events);

    // The same for the other one (the leader: the first to join).
    drop(a);
    let a = consumer(&b, "g-static", "static", &cfg("member-a"));
    let after = wait_assignments(&[&a, &s], "the restarted leader's partitions", |x| {
        !x[0].is_empty()
    });
    assert_eq!(after, before, "same owners");
    produce(&b, "static", PARTITIONS, 20, 30);
    poll_until(&[&a, &s], &mut got, "180 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 180
    });
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 30));
    assert_eq!(
        s.context().events(),
        s_events,
        "no rebalance callback on the other member"
    );
    assert_eq!(a.context().events(), vec![Event::Assign(before[0].clone())]);
}

/// A ConsumerProtocolAssignment (version, [topic, [partition]], user data) -> partitions of `topic`.
fn decode_assignment(bytes: &[u8], topic: &str) -> BTreeSet<i32> {
    let mut b = bytes;
    let mut take = |n: usize| {
        let (h, t) = b.split_at(n);
        b = t;
        h.to_vec()
    };
    take(2);
    let topics = i32::from_be_bytes(take(4).try_into().unwrap());
    let mut out = BTreeSet::new();
    for _ in 0..topics {
        let len = i16::from_be_bytes(take(2).try_into().unwrap()) as usize;
        let name = String::from_utf8(take(len)).unwrap();
        let n = i32::from_be_bytes(take(4).try_into().unwrap());
        for _ in 0..n {
            let p = i32::from_be_bytes(take(4).try_into().unwrap());
            if name == topic {
                out.insert(p);
            }
        }
    }
    out
}

fn commit_offsets(c: &GroupConsumer, topic: &str, offsets: &[(i32, i64)]) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o))
            .unwrap();
    }
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
}

fn delete_groups(b: &Broker, groups: &[&str]) -> Vec<rdkafka::admin::GroupResult> {
    block_on(b.admin().delete_groups(groups, &admin_options())).expect("delete_groups")
}

#[test]
fn admin_lists_describes_alters_and_deletes_groups() {
    use rdkafka::types::RDKafkaErrorCode;
    let b = start_broker();
    block_on(b.create_topic("adm", 2));
    let c1 = consumer(&b, "g-adm", "adm", &[("client.id", "adm-client")]);
    let c2 = consumer(&b, "g-adm", "adm", &[("client.id", "adm-client")]);
    let a = wait_assignments(&[&c1, &c2], "a 1/1 split", |a| {
        is_partition_of(a, 2) && a.iter().all(|s| s.len() == 1)
    });
    // An offsets-only group: its "alter offsets" is a commit outside any generation.
    let oc = offsets_client(&b, "g-adm-offsets");
    commit_offsets(&oc, "adm", &[(0, 5), (1, 7)]);
    assert_eq!(committed(&oc, "adm", 2), [(0, 5), (1, 7)].into());
    commit_offsets(&oc, "adm", &[(1, 3)]);
    assert_eq!(committed(&oc, "adm", 2), [(0, 5), (1, 3)].into());

    // Describe: members, their assignments, the protocol.
    let list = c1
        .fetch_group_list(Some("g-adm"), WAIT_MAX)
        .expect("describe");
    let g = &list.groups()[0];
    assert_eq!(
        (g.name(), g.state(), g.protocol_type(), g.protocol()),
        ("g-adm", "Stable", "consumer", "range")
    );
    assert_eq!(g.members().len(), 2);
    let mut owned: Vec<BTreeSet<i32>> = g
        .members()
        .iter()
        .map(|m| {
            assert_eq!(m.client_id(), "adm-client");
            assert_eq!(m.client_host(), "/127.0.0.1", "the member's connection");
            decode_assignment(m.assignment().expect("assignment"), "adm")
        })
        .collect();
    owned.sort();
    let mut want = a.clone();
    want.sort();
    assert_eq!(owned, want);

    // List (every broker is asked; rdkafka describes each group for its state).
    let list = c1.fetch_group_list(None, WAIT_MAX).expect("list");
    let mut states: Vec<(String, String)> = list
        .groups()
        .iter()
        .map(|g| (g.name().to_string(), g.state().to_string()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [("g-adm", "Stable"), ("g-adm-offsets", "Empty")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Delete: refused while the group has members; an Empty group goes with its offsets.
    let r = delete_groups(&b, &["g-adm", "g-adm-offsets", "g-none"]);
    assert_eq!(
        r,
        vec![
            Err(("g-adm".to_string(), RDKafkaErrorCode::NonEmptyGroup)),
            Ok("g-adm-offsets".to_string()),
            Err(("g-none".to_string(), RDKafkaErrorCode::GroupIdNotFound)),
        ]
    );
    assert_eq!(committed(&oc, "adm", 2), [(0, -1001), (1, -1001)].into());
    drop((c1, c2));
    let list = oc
        .fetch_group_list(Some("g-adm"), WAIT_MAX)
        .expect("describe");
    assert_eq!(list.groups()[0].state(), "Empty");
    assert_eq!(list.groups()[0].members().len(), 0);
    assert_eq!(delete_groups(&b, &["g-adm"]), vec![Ok("g-adm".to_string())]);
    // librdkafka describes only groups that ListGroups named: a deleted group is absent.
    let list = oc.fetch_group_list(None, WAIT_MAX).expect("list");
    assert!(
        list.groups().is_empty(),
        "{:?}",
        list.groups().iter().map(|g| g.name()).collect::<Vec<_>>()
    );
}

/// FindCoordinator v0 by hand (rdkafka has no API for it): the coordinator's (node id, port).
fn find_coordinator(b: &Broker, group: &str) -> (i32, i32) {
    const CORRELATION_ID: i32 = 7;
    let mut s = wire::connect(b.bootstrap());
    wire::send_frame(
        &mut s,
        &wire::find_coordinator_v0_request(CORRELATION_ID, group),
    );
    let r = wire::decode_find_coordinator_v0(&wire::read_frame(&mut s));
    assert_eq!(r.correlation_id, CORRELATION_ID, "correlation id");
    assert_eq!(r.error_code, wire::ERROR_NONE, "error code");
    (r.node_id, r.port)
}

#[test]
fn groups_coordinated_by_different_shards_work_side_by_side() {
    let b = start_broker();
    block_on(b.create_topic("sides", PARTITIONS));
    let groups = [
        group_on_shard("g-side", 0, b.shards()),
        group_on_shard("g-side", 1, b.shards()),
    ];
    for (shard, g) in groups.iter().enumerate() {
        assert_eq!(
            find_coordinator(&b, g),
            (shard as i32, i32::from(b.base_port()) + 1 + shard as i32),
            "{g}"
        );
    }
    let members: Vec<GroupConsumer> = groups
        .iter()
        .flat_map(|g| [consumer(&b, g, "sides", &[]), consumer(&b, g, "sides", &[])])
        .collect();
    let refs: Vec<&GroupConsumer> = members.iter().collect();
    wait_assignments(&refs, "both groups split 3/3", |a| {
        is_partition_of(&a[..2], PARTITIONS)
            && is_partition_of(&a[2..], PARTITIONS)
            && a.iter().all(|s| s.len() == 3)
    });
    produce(&b, "sides", PARTITIONS, 0, 30);
    // The first group reads everything, the second only 90 records: their offsets differ.
    let mut got = vec![vec![]; 4];
    poll_until(&refs[2..], &mut got[2..], "90 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 90
    });
    poll_until(&refs[..2], &mut got[..2], "180 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 180
    });
    assert_eq!(received(&got[..2]), expected(0..PARTITIONS, 0, 30));
    let second = received(&got[2..]);
    assert_eq!(second.len(), 90);
    let unique: BTreeSet<_> = second.iter().collect();
    assert_eq!(unique.len(), 90, "no duplicates in the second group");
    assert_eq!(
        committed(&members[0], "sides", PARTITIONS),
        (0..PARTITIONS).map(|p| (p, 30)).collect()
    );
    let second_offsets = committed(&members[2], "sides", PARTITIONS);
    let read: i64 = second_offsets.values().map(|o| (*o).max(0)).sum();
    assert_eq!(read, 90, "{second_offsets:?}");
    let list = members[0].fetch_group_list(None, WAIT_MAX).expect("list");
    let mut names: Vec<&str> = list.groups().iter().map(|g| g.name()).collect();
    names.sort();
    let mut want = [groups[0].as_str(), groups[1].as_str()];
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn default_initial_delay_lone_consumer_gets_its_first_record() {
    let b = Broker::start_with_rebalance_delay(KAFKA_REBALANCE_DELAY_MS);
    block_on(b.create_topic("lone", 1));
    produce(&b, "lone", 1, 0, 5);
    let c = consumer(&b, "g-lone", "lone", &[]);
    let mut got = vec![vec![]];
    poll_until(&[&c], &mut got, "5 records", |g| g[0].len() >= 5);
    assert_eq!(received(&got), expected([0], 0, 5));
    assert_eq!(committed(&c, "lone", 1), [(0, 5)].into());
}

#[test]
fn live_members_carry_on_across_a_broker_sigkill() {
    let mut b = start_broker();
    block_on(b.create_topic("live", PARTITIONS));
    let cs = [
        consumer(&b, "g-live", "live", &[]),
        consumer(&b, "g-live", "live", &[]),
    ];
    let refs: Vec<&GroupConsumer> = cs.iter().collect();
    wait_assignments(&refs, "a 3/3 split", |a| {
        is_partition_of(a, PARTITIONS) && a.iter().all(|s| s.len() == 3)
    });
    produce(&b, "live", PARTITIONS, 0, 20);
    let mut got = vec![vec![], vec![]];
    poll_until(&refs, &mut got, "60 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 60
    });

    // The broker dies under the members and comes back: the group's members and generation
    // are gone (only offsets are durable), so they rejoin and resume from their commits.
    b.kill9();
    b.start_again();
    poll_until(&refs, &mut got, "the other 60 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 120
    });
    produce(&b, "live", PARTITIONS, 20, 30);
    poll_until(&refs, &mut got, "60 more records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 180
    });
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 30));
    let a: Vec<BTreeSet<i32>> = refs.iter().map(|c| assigned(c)).collect();
    assert!(is_partition_of(&a, PARTITIONS), "{a:?}");
    assert_eq!(
        committed(&cs[0], "live", PARTITIONS),
        (0..PARTITIONS).map(|p| (p, 30)).collect()
    );
}

#[test]
fn deleted_groups_stay_deleted_after_a_broker_sigkill() {
    let mut b = start_broker();
    block_on(b.create_topic("gone", 2));
    let groups = [
        group_on_shard("g-gone", 0, b.shards()),
        group_on_shard("g-gone", 1, b.shards()),
    ];
    for g in &groups {
        let oc = offsets_client(&b, g);
        commit_offsets(&oc, "gone", &[(0, 5), (1, 7)]);
    }
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let r = delete_groups(&b, &names);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    // The first group comes back with one new commit; the second stays deleted.
    let oc = offsets_client(&b, &groups[0]);
    commit_offsets(&oc, "gone", &[(1, 2)]);
    drop(oc);

    b.kill9();
    b.start_again();
    let after: Vec<_> = groups
        .iter()
        .map(|g| committed(&offsets_client(&b, g), "gone", 2))
        .collect();
    assert_eq!(
        after,
        vec![[(0, -1001), (1, 2)].into(), [(0, -1001), (1, -1001)].into()]
    );
    let r = delete_groups(&b, &[names[1]]);
    assert_eq!(
        r,
        vec![Err((
            groups[1].clone(),
            rdkafka::types::RDKafkaErrorCode::GroupIdNotFound
        ))]
    );
}

#[test]
fn static_member_that_does_not_return_expires_and_its_partitions_move() {
    let b = start_broker();
    block_on(b.create_topic("static-gone", PARTITIONS));
    let cfg = |id| [("group.instance.id", id), ("session.timeout.ms", "6000")];
    let stay = consumer(&b, "g-static-gone", "static-gone", &cfg("stay"));
    let gone = consumer(&b, "g-static-gone", "static-gone", &cfg("gone"));
    wait_assignments(&[&stay, &gone], "a 3/3 split", |x| {
        is_partition_of(x, PARTITIONS) && x.iter().all(|s| s.len() == 3)
    });
    produce(&b, "static-gone", PARTITIONS, 0, 10);
    let mut got = vec![vec![], vec![]];
    poll_until(&[&stay, &gone], &mut got, "60 records", |g| {
        g.iter().map(Vec::len).sum::<usize>() >= 60
    });
    // No LeaveGroup from a static member: the coordinator must expire its session.
    drop(gone);
    produce(&b, "static-gone", PARTITIONS, 10, 20);
    let mut rest = vec![vec![]];
    poll_until(
        &[&stay],
        &mut rest,
        "the other 60 records on the last member",
        |g| g[0].len() >= 60,
    );
    got.extend(rest);
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 20));
    assert_eq!(assigned(&stay), (0..PARTITIONS).collect());
    let list = stay
        .fetch_group_list(Some("g-static-gone"), WAIT_MAX)
        .expect("describe");
    assert_eq!(list.groups()[0].members().len(), 1);
}

#[test]
fn cooperative_sticky_third_member_joins_and_one_leaves() {
    let b = start_broker();
    block_on(b.create_topic("coop3", PARTITIONS));
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let c1 = consumer(&b, "g-coop3", "coop3", &coop);
    let c2 = consumer(&b, "g-coop3", "coop3", &coop);
    wait_assignments(&[&c1, &c2], "a 3/3 split", |a| {
        is_partition_of(a, PARTITIONS) && a.iter().all(|s| s.len() == 3)
    });
    produce(&b, "coop3", PARTITIONS, 0, 10);
    let c3 = consumer(&b, "g-coop3", "coop3", &coop);
    let mut got = vec![vec![], vec![], vec![]];
    poll_until(
        &[&c1, &c2, &c3],
        &mut got,
        "a 2/2/2 split and 60 records",
        |g| {
            let a = [assigned(&c1), assigned(&c2), assigned(&c3)];
            is_partition_of(&a, PARTITIONS)
                && a.iter().all(|s| s.len() == 2)
                && g.iter().map(Vec::len).sum::<usize>() >= 60
        },
    );
    // Sticky: each of the first two kept two of its three partitions.
    let revoked: Vec<usize> = [&c1, &c2]
        .iter()
        .map(|c| {
            nonempty(c.context())
                .iter()
                .filter_map(|e| match e {
                    Event::Revoke(s) => Some(s.len()),
                    Event::Assign(_) => None,
                })
                .sum()
        })
        .collect();
    assert_eq!(revoked, vec![1, 1]);

    // One leaves: the others take its partitions, nothing read twice, nothing lost.
    drop(c2);
    let left = got.remove(1);
    produce(&b, "coop3", PARTITIONS, 10, 20);
    poll_until(&[&c1, &c3], &mut got, "120 records", |g| {
        let a = [assigned(&c1), assigned(&c3)];
        is_partition_of(&a, PARTITIONS) && g.iter().map(Vec::len).sum::<usize>() + left.len() >= 120
    });
    got.push(left);
    assert_eq!(received(&got), expected(0..PARTITIONS, 0, 20));
}
