//! Solving the web tier's bot check as a client does, with ALTCHA's own
//! crate: for tests and the benchmark, which sign up with proofs.

use base64::Engine as _;

/// `challenge` solved: the base64 JSON payload a sign-up sends as `altcha`.
pub fn solve(challenge: altcha::Challenge) -> String {
    let solution = altcha::solve_challenge(altcha::SolveChallengeOptions::new(&challenge))
        .expect("a challenge of ours is solvable")
        .expect("solved before the timeout");
    encode(challenge, solution)
}

/// The payload of `challenge` with `solution` (a wrong one, for a test):
/// base64 of their JSON.
pub fn encode(challenge: altcha::Challenge, solution: altcha::Solution) -> String {
    let payload = altcha::Payload { challenge, solution };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&payload).expect("JSON"))
}
