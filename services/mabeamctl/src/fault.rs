//! `mabeamctl fault inject|heal|list`: fault specs from flags, sent to the fault-injector.

use std::{collections::BTreeSet, io::Write};

use bytes::Bytes;
use mabeam_protocol::{
    fault::{AgentBehaviour, FaultHeal, FaultKind, FaultList, FaultSpec, Link, LinkFault},
    subjects, AgentId, PROTOCOL_VERSION,
};

use crate::{
    client::{self, Global},
    error::exit,
    render, CtlError,
};

#[derive(Debug, clap::Subcommand)]
pub enum FaultCommand {
    /// Inject a fault: agent behaviours, a partition, or a NATS/Redis link fault.
    #[command(after_long_help = INJECT_HELP)]
    Inject(InjectArgs),
    /// Heal one fault by id, or every fault with --all.
    Heal(HealArgs),
    /// List the active faults.
    List,
}

const INJECT_HELP: &str = "\
Targets (exactly one):
  --agents a1,a2 --behaviour B    B: crash | silent | slow:DELAY_MS[:JITTER_MS] | drop:PERCENT
                                  | corrupt | equivocate | invalid_signature | replay
                                  | timing_attack | coalition:VALUE | adaptive
  --partition \"a,b|c,d\"           agents in different groups cannot exchange messages;
                                  --flap-ms N makes it come and go every N ms
  --link nats|redis TOXIC         TOXIC: --latency MS[:JITTER_MS] | --blackhole | --reset
                                  | --bandwidth BYTES_PER_S | --slicing MAX_BYTES:DELAY_US

Timing: --start-after-ms N delays the start; --duration-ms N heals it after N ms.

Examples:
  mabeamctl fault inject --agents a3 --behaviour equivocate --duration-ms 60000
  mabeamctl fault inject --partition \"a1,a2|a3,a4,a5\" --flap-ms 500
  mabeamctl fault inject --link nats --latency 100:20";

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["agents", "partition", "link"])))]
pub struct InjectArgs {
    /// Fault id (chosen by the injector when absent).
    #[arg(long)]
    pub id: Option<String>,
    /// Agents that misbehave (with --behaviour).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ID,ID",
        requires = "behaviour"
    )]
    pub agents: Vec<AgentId>,
    /// How they misbehave.
    #[arg(long, value_parser = parse_behaviour, requires = "agents", value_name = "BEHAVIOUR")]
    pub behaviour: Option<AgentBehaviour>,
    /// Agent groups that cannot reach each other: "a,b|c,d".
    #[arg(long, value_parser = parse_partition, value_name = "GROUPS")]
    pub partition: Option<Groups>,
    /// Partition comes and goes at this period.
    #[arg(long, requires = "partition", value_name = "MS")]
    pub flap_ms: Option<u64>,
    /// The infrastructure link to degrade.
    #[arg(long, value_enum)]
    pub link: Option<LinkArg>,
    /// Latency toxic: MS[:JITTER_MS].
    #[arg(long, value_parser = parse_latency, value_name = "MS[:JITTER]", group = "toxic", requires = "link")]
    pub latency: Option<(u64, u64)>,
    /// Swallow all traffic.
    #[arg(long, group = "toxic", requires = "link")]
    pub blackhole: bool,
    /// Reset every connection.
    #[arg(long, group = "toxic", requires = "link")]
    pub reset: bool,
    /// Limit throughput (bytes per second).
    #[arg(long, group = "toxic", requires = "link", value_name = "BYTES_PER_S")]
    pub bandwidth: Option<u64>,
    /// Split writes into MAX_BYTES slices, DELAY_US apart.
    #[arg(long, value_parser = parse_slicing, group = "toxic", requires = "link", value_name = "MAX_BYTES:DELAY_US")]
    pub slicing: Option<(u32, u64)>,
    /// Delay before the fault starts.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub start_after_ms: u64,
    /// Healed automatically after this long (permanent when absent).
    #[arg(long, value_name = "MS")]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkArg {
    Nats,
    Redis,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct HealArgs {
    /// The fault to heal.
    pub id: Option<String>,
    /// Heal every active fault.
    #[arg(long)]
    pub all: bool,
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what} must be a non-negative integer, got {text:?}"))
}

/// Parses a behaviour: a name, with arguments after colons.
pub fn parse_behaviour(text: &str) -> Result<AgentBehaviour, String> {
    let mut parts = text.split(':');
    let name = parts
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .replace('-', "_");
    let args: Vec<&str> = parts.collect();
    let no_args = |b: AgentBehaviour| {
        if args.is_empty() {
            Ok(b)
        } else {
            Err(format!("{name} takes no arguments, got {text:?}"))
        }
    };
    match name.as_str() {
        "crash" => no_args(AgentBehaviour::Crash),
        "silent" => no_args(AgentBehaviour::Silent),
        "corrupt" => no_args(AgentBehaviour::Corrupt),
        "equivocate" => no_args(AgentBehaviour::Equivocate),
        "invalid_signature" => no_args(AgentBehaviour::InvalidSignature),
        "replay" => no_args(AgentBehaviour::Replay),
        "timing_attack" => no_args(AgentBehaviour::TimingAttack),
        "adaptive" => no_args(AgentBehaviour::Adaptive),
        "slow" => match args.as_slice() {
            [delay] => Ok(AgentBehaviour::Slow {
                delay_ms: number(delay, "slow's delay")?,
                jitter_ms: 0,
            }),
            [delay, jitter] => Ok(AgentBehaviour::Slow {
                delay_ms: number(delay, "slow's delay")?,
                jitter_ms: number(jitter, "slow's jitter")?,
            }),
            _ => Err("slow needs a delay: slow:DELAY_MS[:JITTER_MS], e.g. slow:200:50".into()),
        },
        "drop" => match args.as_slice() {
            [percent] => {
                let percent: f64 = percent
                    .trim()
                    .parse()
                    .map_err(|_| format!("drop's percentage must be a number, got {percent:?}"))?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(format!(
                        "drop's percentage must be within 0..100, got {percent}"
                    ));
                }
                Ok(AgentBehaviour::Drop { percent })
            }
            _ => Err("drop needs a percentage: drop:PERCENT, e.g. drop:30".into()),
        },
        "coalition" => match args.as_slice() {
            [value] if !value.is_empty() => Ok(AgentBehaviour::Coalition {
                value: (*value).to_owned(),
            }),
            _ => Err("coalition needs the value its members vote for: coalition:VALUE".into()),
        },
        _ => Err(format!(
            "unknown behaviour {text:?}; expected crash, silent, slow:MS[:JITTER], drop:PERCENT, \
             corrupt, equivocate, invalid_signature, replay, timing_attack, coalition:VALUE or \
             adaptive"
        )),
    }
}

/// The groups of a partition (a newtype, so clap takes the flag as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups(pub Vec<Vec<AgentId>>);

/// `"a,b|c,d"`: at least two non-empty groups, no agent in two.
pub fn parse_partition(text: &str) -> Result<Groups, String> {
    let mut seen = BTreeSet::new();
    let mut groups = Vec::new();
    for group in text.split('|') {
        let mut members = Vec::new();
        for id in group.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = AgentId::new(id).map_err(|e| e.to_string())?;
            if !seen.insert(id.clone()) {
                return Err(format!("{id} is in two groups of the partition"));
            }
            members.push(id);
        }
        if members.is_empty() {
            return Err(format!("partition {text:?} has an empty group"));
        }
        groups.push(members);
    }
    if groups.len() < 2 {
        return Err(format!(
            "a partition needs at least two groups separated by '|', e.g. \"a,b|c,d\"; got {text:?}"
        ));
    }
    Ok(Groups(groups))
}

/// `MS[:JITTER_MS]`.
pub fn parse_latency(text: &str) -> Result<(u64, u64), String> {
    match text.split_once(':') {
        Some((latency, jitter)) => Ok((number(latency, "latency")?, number(jitter, "jitter")?)),
        None => Ok((number(text, "latency")?, 0)),
    }
}

/// `MAX_BYTES:DELAY_US`.
pub fn parse_slicing(text: &str) -> Result<(u32, u64), String> {
    let (bytes, delay) = text
        .split_once(':')
        .ok_or_else(|| format!("expected MAX_BYTES:DELAY_US, e.g. 64:500; got {text:?}"))?;
    let bytes: u32 = number(bytes, "slice size")?;
    if bytes == 0 {
        return Err("slice size must be at least 1 byte".into());
    }
    Ok((bytes, number(delay, "slice delay")?))
}

/// The fault spec the flags describe.
pub fn spec(args: &InjectArgs) -> Result<FaultSpec, CtlError> {
    let fault = if let (false, Some(behaviour)) = (args.agents.is_empty(), &args.behaviour) {
        FaultKind::Agents {
            agents: args.agents.clone(),
            behaviour: behaviour.clone(),
        }
    } else if let Some(Groups(groups)) = &args.partition {
        FaultKind::Partition {
            groups: groups.clone(),
            flap_ms: args.flap_ms,
        }
    } else if let Some(link) = args.link {
        let fault = if let Some((latency_ms, jitter_ms)) = args.latency {
            LinkFault::Latency {
                latency_ms,
                jitter_ms,
            }
        } else if args.blackhole {
            LinkFault::Blackhole
        } else if args.reset {
            LinkFault::Reset
        } else if let Some(bytes_per_second) = args.bandwidth {
            LinkFault::Bandwidth { bytes_per_second }
        } else if let Some((max_bytes, delay_us)) = args.slicing {
            LinkFault::Slicing {
                max_bytes,
                delay_us,
            }
        } else {
            return Err(CtlError::usage(
                "--link needs a fault: --latency MS[:JITTER] | --blackhole | --reset | \
                 --bandwidth N | --slicing N:US",
            ));
        };
        FaultKind::Link {
            link: match link {
                LinkArg::Nats => Link::Nats,
                LinkArg::Redis => Link::Redis,
            },
            fault,
        }
    } else {
        return Err(CtlError::usage(
            "say what to break: --agents with --behaviour, --partition, or --link",
        ));
    };
    Ok(FaultSpec {
        v: PROTOCOL_VERSION,
        id: args.id.clone(),
        fault,
        start_after_ms: args.start_after_ms,
        duration_ms: args.duration_ms,
    })
}

/// Faults as a table (or the list as JSON). `none` is printed for an empty list.
pub fn print_list(
    global: &Global,
    list: &FaultList,
    none: &str,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    if global.json {
        let text = serde_json::to_string_pretty(list).map_err(CtlError::Encode)?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    if list.faults.is_empty() {
        writeln!(out, "{none}")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .faults
        .iter()
        .map(|f| {
            vec![
                f.id.clone(),
                mabeam_fault_injector::spec::describe(&f.fault),
                render::utc(f.started_ms),
                f.ends_ms
                    .map_or_else(|| "until healed".to_owned(), render::utc),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render::table(&["ID", "FAULT", "STARTS", "ENDS"], &rows)
    )?;
    Ok(())
}

/// Sends the command. The injector answers inject with the new fault, heal with the
/// healed ones and list with the active ones.
pub async fn run(
    global: &Global,
    command: &FaultCommand,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    // Flags are checked before connecting: a usage error needs no server.
    let spec = match command {
        FaultCommand::Inject(args) => Some(spec(args)?),
        _ => None,
    };
    let client = client::connect(global).await?;
    let (list, none): (FaultList, &str) = match (command, spec) {
        (FaultCommand::Inject(_), Some(spec)) => (
            client::request(&client, subjects::FAULTS_INJECT, &spec, global.timeout).await?,
            "nothing injected",
        ),
        (FaultCommand::Heal(args), _) => {
            let heal = FaultHeal {
                v: PROTOCOL_VERSION,
                id: if args.all { None } else { args.id.clone() },
            };
            (
                client::request(&client, subjects::FAULTS_HEAL, &heal, global.timeout).await?,
                "no active faults: nothing to heal",
            )
        }
        // `list` takes no body.
        _ => (
            client::request_raw(&client, subjects::FAULTS_LIST, Bytes::new(), global.timeout)
                .await?,
            "no active faults",
        ),
    };
    if !global.json && !list.faults.is_empty() {
        match command {
            FaultCommand::Inject(_) => writeln!(out, "injected:")?,
            FaultCommand::Heal(_) => writeln!(out, "healed:")?,
            FaultCommand::List => {}
        }
    }
    print_list(global, &list, none, out)?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_parse_with_their_arguments() {
        assert_eq!(
            parse_behaviour("equivocate").unwrap(),
            AgentBehaviour::Equivocate
        );
        assert_eq!(
            parse_behaviour("invalid-signature").unwrap(),
            AgentBehaviour::InvalidSignature
        );
        assert_eq!(
            parse_behaviour("slow:200:50").unwrap(),
            AgentBehaviour::Slow {
                delay_ms: 200,
                jitter_ms: 50
            }
        );
        assert_eq!(
            parse_behaviour("slow:200").unwrap(),
            AgentBehaviour::Slow {
                delay_ms: 200,
                jitter_ms: 0
            }
        );
        assert_eq!(
            parse_behaviour("drop:30").unwrap(),
            AgentBehaviour::Drop { percent: 30.0 }
        );
        assert_eq!(
            parse_behaviour("coalition:B").unwrap(),
            AgentBehaviour::Coalition { value: "B".into() }
        );
        for (bad, needle) in [
            ("slow", "needs a delay"),
            ("slow:x", "non-negative integer"),
            ("drop:130", "within 0..100"),
            ("drop", "needs a percentage"),
            ("coalition", "needs the value"),
            ("crash:1", "takes no arguments"),
            ("explode", "unknown behaviour"),
        ] {
            let e = parse_behaviour(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn partitions_need_two_disjoint_groups() {
        let Groups(groups) = parse_partition("a,b|c").unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), 2);
        for (bad, needle) in [
            ("a,b", "at least two groups"),
            ("a|", "empty group"),
            ("a,b|b,c", "in two groups"),
            ("a.x|b", "contains '.'"),
        ] {
            let e = parse_partition(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn link_toxics_parse() {
        assert_eq!(parse_latency("100").unwrap(), (100, 0));
        assert_eq!(parse_latency("100:20").unwrap(), (100, 20));
        assert!(parse_latency("fast").is_err());
        assert_eq!(parse_slicing("64:500").unwrap(), (64, 500));
        assert!(parse_slicing("64").is_err());
        assert!(parse_slicing("0:5").is_err());
    }
}
