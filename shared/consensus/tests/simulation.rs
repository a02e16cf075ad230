use mabeam_protocol::{
    session::{Ballot, Phase, VoteValue},
    signing::EnvelopeHeader,
    AgentId, AgentKeypair, SessionId, SignedEnvelope,
};
#[test]
fn speed() {
    let key = AgentKeypair::from_secret_bytes([3; 32]);
    let pk = key.public_key();
    let t = std::time::Instant::now();
    let mut envs = vec![];
    for i in 0..200u64 {
        let h = EnvelopeHeader {
            sender: AgentId::new("a1").unwrap(),
            session: SessionId::new("s").unwrap(),
            round: 1,
            sequence: i,
            timestamp_ms: 5,
        };
        envs.push(
            SignedEnvelope::seal(
                &key,
                h,
                &Ballot::new(Phase::Prepare, VoteValue::Choice("a".into()), 1.0),
            )
            .unwrap(),
        );
    }
    let s = t.elapsed();
    let t = std::time::Instant::now();
    for e in &envs {
        e.verify(&pk).unwrap();
    }
    println!("seal {:?}/op verify {:?}/op", s / 200, t.elapsed() / 200);
}
