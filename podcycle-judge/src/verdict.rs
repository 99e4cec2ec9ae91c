//! The outcome of a judgement.
//!
//! ```
//! use podcycle_judge::Verdict;
//!
//! assert_eq!(Verdict::Inconclusive.exit_code(), 2);
//! assert_eq!(Verdict::Fail.to_string(), "FAIL");
//! ```

use std::fmt;

use serde::Serialize;

/// The outcome of a judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Evidence that the canary is no worse than the stable by more than the
    /// margins, and no guardrail violated.
    Pass,
    /// Evidence that the canary is worse than the stable by more than a
    /// margin, or a guardrail violated.
    Fail,
    /// Neither by the deadline, or too little traffic. Never a pass.
    Inconclusive,
}

impl Verdict {
    /// Process exit code: 0 pass, 1 fail, 2 inconclusive.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Inconclusive => 2,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}
