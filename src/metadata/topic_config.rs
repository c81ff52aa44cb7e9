//! Topic configs by their Kafka names: which exist, which values are valid, what a topic's
//! effective `LogConfig` is, how AlterConfigs / IncrementalAlterConfigs change the set, and how
//! DescribeConfigs lists them (value, source, synonyms, documentation). Pure: no I/O, no runtime.
//!
//! A topic stores only the configs set on it (`TopicRecord::configs`); everything else comes from
//! the broker flags (`--retention-ms`, ...) or Kafka's default.

use crate::limits::MESSAGE_SIZE_MAX_BYTES_DEFAULT;
use crate::log::{LogConfig, SEGMENT_SIZE_MAX_BYTES};

/// DescribeConfigs `config_source` values (Kafka's ConfigSource).
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// DescribeConfigs `config_type` values (Kafka's ConfigType, v3+).
pub const TYPE_BOOLEAN: i8 = 1;
pub const TYPE_STRING: i8 = 2;
pub const TYPE_INT: i8 = 3;
pub const TYPE_LONG: i8 = 5;
pub const TYPE_LIST: i8 = 7;

/// Smallest segment.bytes accepted: the broker flag has the same floor.
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 1024;
/// Configs one topic may carry: every known name once.
pub const TOPIC_CONFIGS_MAX: usize = TOPIC_CONFIG_DEFS.len();

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// INVALID_CONFIG: unknown name, bad value, or a feature Sable does not have.
    #[error("{0}")]
    Invalid(String),
}

/// What values a config takes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// One of these strings (case-sensitive, as Kafka).
    OneOf(&'static [&'static str]),
}

/// One topic config Sable knows.
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker setting it falls back to (Kafka's synonym).
    pub broker_name: &'static str,
    /// Kafka's default, used when the broker has no flag for it.
    pub kafka_default: &'static str,
    pub config_type: i8,
    kind: Kind,
    pub doc: &'static str,
}

const LONG_MAX: i64 = i64::MAX;
const INT_MAX: i64 = i32::MAX as i64;

pub const TOPIC_CONFIG_DEFS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        kafka_default: "delete",
        config_type: TYPE_LIST,
        kind: Kind::OneOf(&["delete"]),
        doc: "Only \"delete\" is supported: old segments are deleted by retention.ms / retention.bytes. Log compaction is not implemented.",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        kafka_default: "producer",
        config_type: TYPE_STRING,
        kind: Kind::OneOf(&["producer"]),
        doc: "Only \"producer\": batches are stored as the producer compressed them; Sable never recompresses.",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        kafka_default: "86400000",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility; it matters only to compaction, which Sable does not do.",
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        broker_name: "log.segment.delete.delay.ms",
        kafka_default: "60000",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility; Sable deletes a segment once no read holds it.",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        kafka_default: "9223372036854775807",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 1,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility. acks=all appends are always fsynced before the answer; others by the broker's --flush-interval-ms.",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        kafka_default: "9223372036854775807",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility. acks=all appends are always fsynced before the answer; others by the broker's --flush-interval-ms.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        kafka_default: "4096",
        config_type: TYPE_INT,
        kind: Kind::Int {
            min: 0,
            max: INT_MAX,
        },
        doc: "Log bytes between two entries of the sparse offset index.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        kafka_default: "1048588",
        config_type: TYPE_INT,
        kind: Kind::Int {
            min: 0,
            max: INT_MAX,
        },
        doc: "Largest record batch (after compression) Produce accepts for this topic.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_name: "log.message.timestamp.after.max.ms",
        kafka_default: "9223372036854775807",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility; not enforced.",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_name: "log.message.timestamp.before.max.ms",
        kafka_default: "9223372036854775807",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility; not enforced.",
    },
    TopicConfigDef {
        name: "message.timestamp.difference.max.ms",
        broker_name: "log.message.timestamp.difference.max.ms",
        kafka_default: "9223372036854775807",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Accepted for compatibility (deprecated in Kafka); not enforced.",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        kafka_default: "CreateTime",
        config_type: TYPE_STRING,
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock at append.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        kafka_default: "1",
        config_type: TYPE_INT,
        kind: Kind::Int { min: 1, max: 1 },
        doc: "Sable keeps one replica per partition, so only 1 is accepted.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        kafka_default: "-1",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: -1,
            max: LONG_MAX,
        },
        doc: "Old segments are deleted while the partition is larger than this; -1: no size limit.",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        kafka_default: "604800000",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: -1,
            max: LONG_MAX,
        },
        doc: "Segments whose newest record is older than this are deleted; -1 keeps everything.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        kafka_default: "1073741824",
        config_type: TYPE_INT,
        kind: Kind::Int {
            min: SEGMENT_SIZE_MIN_BYTES as i64,
            max: SEGMENT_SIZE_MAX_BYTES as i64,
        },
        doc: "A new segment is rolled before an append would take the active one past this size.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        kafka_default: "604800000",
        config_type: TYPE_LONG,
        kind: Kind::Int {
            min: 1,
            max: LONG_MAX,
        },
        doc: "The active segment is rolled at the next append once it is older than this.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        kafka_default: "false",
        config_type: TYPE_BOOLEAN,
        kind: Kind::Bool,
        doc: "Accepted for compatibility; with one replica per partition there is no election.",
    },
];

pub fn def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIG_DEFS.iter().find(|d| d.name == name)
}

/// Checks one name and value; the message says what is wrong, as Kafka's INVALID_CONFIG does.
pub fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |why: String| {
        Err(ConfigError::Invalid(format!(
            "Invalid value {value} for configuration {name}: {why}"
        )))
    };
    let Some(d) = def(name) else {
        return Err(ConfigError::Invalid(format!(
            "Unknown topic config name: {name}"
        )));
    };
    match d.kind {
        Kind::Int { min, max } => match value.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(_) => invalid(format!("Value must be in [{min}, {max}]")),
            Err(_) => invalid("Not a number".into()),
        },
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => invalid("Expected value to be either true or false".into()),
        },
        Kind::OneOf(allowed) => {
            // cleanup.policy is a list; every element must be allowed.
            let items: Vec<&str> = if d.config_type == TYPE_LIST {
                value.split(',').map(str::trim).collect()
            } else {
                vec![value.trim()]
            };
            if let Some(bad) = items.iter().find(|i| !allowed.contains(i)) {
                let why = match (name, *bad) {
                    ("cleanup.policy", "compact") => {
                        "log compaction is not implemented in Sable; only \"delete\" is supported"
                            .to_string()
                    }
                    ("compression.type", _) => {
                        "Sable stores batches as the producer compressed them; only \"producer\" is supported".to_string()
                    }
                    _ => format!("String must be one of: {}", allowed.join(", ")),
                };
                return invalid(why);
            }
            Ok(())
        }
    }
}

/// Checks a whole set (CreateTopics, AlterConfigs): every entry valid, no name twice.
pub fn validate_all(configs: &[(String, String)]) -> Result<(), ConfigError> {
    for (i, (name, value)) in configs.iter().enumerate() {
        if configs[..i].iter().any(|(n, _)| n == name) {
            return Err(ConfigError::Invalid(format!(
                "Config {name} is given more than once"
            )));
        }
        validate(name, value)?;
    }
    assert!(
        configs.len() <= TOPIC_CONFIGS_MAX,
        "names are unique and known"
    );
    Ok(())
}

fn get<'a>(configs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    configs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim())
}

fn get_i64(configs: &[(String, String)], name: &str) -> Option<i64> {
    get(configs, name).and_then(|v| v.parse().ok())
}

/// The partition settings of a topic: its own configs over the broker's defaults.
pub fn effective_log_config(configs: &[(String, String)], broker: &LogConfig) -> LogConfig {
    let mut c = broker.clone();
    if let Some(v) = get_i64(configs, "segment.bytes") {
        c.segment_bytes = (v as u64).clamp(SEGMENT_SIZE_MIN_BYTES, SEGMENT_SIZE_MAX_BYTES);
    }
    if let Some(v) = get_i64(configs, "segment.ms") {
        c.segment_ms = v.max(1);
    }
    if let Some(v) = get_i64(configs, "index.interval.bytes") {
        c.index_interval_bytes = v.clamp(0, INT_MAX) as u32;
    }
    if let Some(v) = get_i64(configs, "retention.ms") {
        c.retention_ms = v;
    }
    if let Some(v) = get_i64(configs, "retention.bytes") {
        c.retention_bytes = v;
    }
    c
}

/// max.message.bytes of a topic, or the broker's message.max.bytes.
pub fn max_message_bytes(configs: &[(String, String)], broker_default: u32) -> u32 {
    get_i64(configs, "max.message.bytes").map_or(broker_default, |v| v.clamp(0, INT_MAX) as u32)
}

/// Whether Produce stamps batches with the broker's clock (message.timestamp.type=LogAppendTime).
pub fn log_append_time(configs: &[(String, String)]) -> bool {
    get(configs, "message.timestamp.type") == Some("LogAppendTime")
}

/// The broker-wide values topic configs fall back to (from the broker flags).
#[derive(Clone, Debug)]
pub struct BrokerDefaults {
    pub log: LogConfig,
    pub message_max_bytes: u32,
}

impl BrokerDefaults {
    /// The broker's value for a topic config, if a flag sets it.
    fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            "segment.bytes" => self.log.segment_bytes.to_string(),
            "segment.ms" => self.log.segment_ms.to_string(),
            "index.interval.bytes" => self.log.index_interval_bytes.to_string(),
            "retention.ms" => self.log.retention_ms.to_string(),
            "retention.bytes" => self.log.retention_bytes.to_string(),
            "max.message.bytes" => self.message_max_bytes.to_string(),
            _ => return None,
        })
    }
}

const _: () = assert!(MESSAGE_SIZE_MAX_BYTES_DEFAULT == 1_048_588);

/// What DescribeConfigs shows for one config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
    pub config_type: i8,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(String, String, i8)>,
    pub doc: &'static str,
}

/// Every topic config with its effective value, sorted by name as Kafka lists them.
pub fn describe_topic(configs: &[(String, String)], broker: &BrokerDefaults) -> Vec<ConfigEntry> {
    TOPIC_CONFIG_DEFS
        .iter()
        .map(|d| {
            let own = get(configs, d.name).map(str::to_string);
            // A broker flag that differs from Kafka's default counts as a static broker config.
            let from_broker = broker.value(d.name).filter(|v| v != d.kafka_default);
            let mut synonyms = Vec::new();
            if let Some(v) = &own {
                synonyms.push((d.name.to_string(), v.clone(), SOURCE_DYNAMIC_TOPIC_CONFIG));
            }
            if let Some(v) = &from_broker {
                synonyms.push((
                    d.broker_name.to_string(),
                    v.clone(),
                    SOURCE_STATIC_BROKER_CONFIG,
                ));
            }
            synonyms.push((
                d.broker_name.to_string(),
                d.kafka_default.to_string(),
                SOURCE_DEFAULT_CONFIG,
            ));
            let (value, source) = (synonyms[0].1.clone(), synonyms[0].2);
            ConfigEntry {
                name: d.name.to_string(),
                value: Some(value),
                source,
                read_only: false,
                sensitive: false,
                config_type: d.config_type,
                synonyms,
                doc: d.doc,
            }
        })
        .collect()
}

/// One change of IncrementalAlterConfigs (Kafka's OpType 0..=3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlterOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

impl AlterOp {
    /// Decodes the wire operation; `None` for an unknown op code.
    pub fn from_wire(name: String, op: i8, value: Option<String>) -> Option<AlterOp> {
        let value = value.unwrap_or_default();
        Some(match op {
            0 => AlterOp::Set(name, value),
            1 => AlterOp::Delete(name),
            2 => AlterOp::Append(name, value),
            3 => AlterOp::Subtract(name, value),
            _ => return None,
        })
    }
}

/// How a topic's configs change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alteration {
    /// AlterConfigs: the given set replaces all the topic's configs.
    Replace(Vec<(String, String)>),
    /// IncrementalAlterConfigs: operations on the current set, in order.
    Incremental(Vec<AlterOp>),
}

/// A change for one topic, sent to the controller.
#[derive(Clone, Debug)]
pub struct TopicAlteration {
    pub topic: String,
    pub alteration: Alteration,
}

/// The topic's configs after `alteration`, validated.
pub fn apply(
    current: &[(String, String)],
    alteration: &Alteration,
) -> Result<Vec<(String, String)>, ConfigError> {
    let next = match alteration {
        Alteration::Replace(all) => all.clone(),
        Alteration::Incremental(ops) => {
            let mut next = current.to_vec();
            for op in ops {
                apply_op(&mut next, op)?;
            }
            next
        }
    };
    validate_all(&next)?;
    Ok(next)
}

fn apply_op(configs: &mut Vec<(String, String)>, op: &AlterOp) -> Result<(), ConfigError> {
    let set = |configs: &mut Vec<(String, String)>, name: &str, value: String| match configs
        .iter_mut()
        .find(|(n, _)| n == name)
    {
        Some(slot) => slot.1 = value,
        None => configs.push((name.to_string(), value)),
    };
    let list = |name: &str| -> Result<&'static TopicConfigDef, ConfigError> {
        match def(name) {
            Some(d) if d.config_type == TYPE_LIST => Ok(d),
            Some(_) => Err(ConfigError::Invalid(format!(
                "Config value append/subtract is not allowed for config key {name}: it is not a list"
            ))),
            None => Err(ConfigError::Invalid(format!(
                "Unknown topic config name: {name}"
            ))),
        }
    };
    match op {
        AlterOp::Set(name, value) => set(configs, name, value.clone()),
        AlterOp::Delete(name) => {
            if def(name).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "Unknown topic config name: {name}"
                )));
            }
            configs.retain(|(n, _)| n != name);
        }
        AlterOp::Append(name, value) | AlterOp::Subtract(name, value) => {
            let d = list(name)?;
            let current = get(configs, name).unwrap_or(d.kafka_default);
            let mut items: Vec<String> = current
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for v in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if matches!(op, AlterOp::Append(..)) {
                    if !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    }
                } else {
                    items.retain(|i| i != v);
                }
            }
            set(configs, name, items.join(","));
        }
    }
    Ok(())
}

impl From<ConfigError> for super::controller::TopicError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(m) => super::controller::TopicError::InvalidConfig(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn broker() -> BrokerDefaults {
        BrokerDefaults {
            log: LogConfig::default(),
            message_max_bytes: MESSAGE_SIZE_MAX_BYTES_DEFAULT,
        }
    }

    #[test]
    fn validation_follows_kafka_names_and_ranges() {
        for (n, v) in [
            ("retention.ms", "-1"),
            ("retention.ms", "1000"),
            ("cleanup.policy", "delete"),
            ("message.timestamp.type", "LogAppendTime"),
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "TRUE"),
            ("segment.bytes", "1048576"),
            ("flush.ms", "1000"),
        ] {
            assert_eq!(validate(n, v), Ok(()), "{n}={v}");
        }
        for (n, v, msg) in [
            ("retention.ms", "-2", "[-1, "),
            ("retention.ms", "soon", "Not a number"),
            ("cleanup.policy", "compact", "compaction is not implemented"),
            (
                "cleanup.policy",
                "delete,compact",
                "compaction is not implemented",
            ),
            ("compression.type", "zstd", "only \"producer\""),
            ("min.insync.replicas", "2", "[1, 1]"),
            ("segment.bytes", "10", "[1024, "),
            ("message.timestamp.type", "Now", "CreateTime, LogAppendTime"),
            (
                "no.such.config",
                "1",
                "Unknown topic config name: no.such.config",
            ),
        ] {
            let Err(ConfigError::Invalid(m)) = validate(n, v) else {
                panic!("{n}={v} accepted")
            };
            assert!(m.contains(msg), "{m}");
        }
        assert!(validate_all(&kv(&[("retention.ms", "1"), ("retention.ms", "2")])).is_err());
    }

    #[test]
    fn effective_config_overrides_broker_defaults() {
        let c = effective_log_config(
            &kv(&[("retention.ms", "5000"), ("segment.bytes", "2048")]),
            &LogConfig::default(),
        );
        assert_eq!(c.retention_ms, 5000);
        assert_eq!(c.segment_bytes, 2048);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(
            max_message_bytes(&kv(&[("max.message.bytes", "100")]), 7),
            100
        );
        assert_eq!(max_message_bytes(&[], 7), 7);
        assert!(log_append_time(&kv(&[(
            "message.timestamp.type",
            "LogAppendTime"
        )])));
        assert!(!log_append_time(&[]));
    }

    #[test]
    fn describe_reports_sources_and_synonyms() {
        let mut b = broker();
        b.log.retention_bytes = 1 << 30;
        let entries = describe_topic(&kv(&[("retention.ms", "5000")]), &b);
        assert_eq!(entries.len(), TOPIC_CONFIG_DEFS.len());
        let e = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
        let r = e("retention.ms");
        assert_eq!(
            (r.value.as_deref(), r.source),
            (Some("5000"), SOURCE_DYNAMIC_TOPIC_CONFIG)
        );
        assert_eq!(r.synonyms.len(), 2);
        let r = e("retention.bytes");
        assert_eq!(
            (r.value.as_deref(), r.source),
            (Some("1073741824"), SOURCE_STATIC_BROKER_CONFIG)
        );
        assert_eq!(r.synonyms[0].0, "log.retention.bytes");
        let r = e("cleanup.policy");
        assert_eq!(
            (r.value.as_deref(), r.source),
            (Some("delete"), SOURCE_DEFAULT_CONFIG)
        );
    }

    #[test]
    fn incremental_operations() {
        let cur = kv(&[("retention.ms", "1000"), ("segment.ms", "60000")]);
        let next = apply(
            &cur,
            &Alteration::Incremental(vec![
                AlterOp::Set("retention.ms".into(), "2000".into()),
                AlterOp::Delete("segment.ms".into()),
                AlterOp::Set("max.message.bytes".into(), "500".into()),
            ]),
        )
        .unwrap();
        assert_eq!(
            next,
            kv(&[("retention.ms", "2000"), ("max.message.bytes", "500")])
        );
        // Appending "delete" to the default "delete" changes nothing; "compact" is refused.
        let next = apply(
            &[],
            &Alteration::Incremental(vec![AlterOp::Append(
                "cleanup.policy".into(),
                "delete".into(),
            )]),
        )
        .unwrap();
        assert_eq!(next, kv(&[("cleanup.policy", "delete")]));
        assert!(
            apply(
                &[],
                &Alteration::Incremental(vec![AlterOp::Append(
                    "cleanup.policy".into(),
                    "compact".into()
                )])
            )
            .is_err()
        );
        assert!(
            apply(
                &[],
                &Alteration::Incremental(vec![AlterOp::Append("retention.ms".into(), "1".into())])
            )
            .is_err()
        );
        // A replace drops what it does not name.
        assert_eq!(
            apply(&cur, &Alteration::Replace(kv(&[("flush.ms", "10")]))).unwrap(),
            kv(&[("flush.ms", "10")])
        );
        assert_eq!(AlterOp::from_wire("x".into(), 9, None), None);
    }
}
